//! `cargo xtask bench`: every benchmark of the project in one run, summed up in one table.
//!
//! 1. The Worker's release bundle is built; its wasm size (raw and gzipped) is checked against
//!    the budgets ([`build::WASM_GZ_BUDGET`], [`build::MAX_FUNCTION_BYTES`]).
//! 2. The Worker's CPU cost per request on the host (criterion, `worker/benches/request_cost.rs`).
//! 3. The client's stream parsing against async-openai on the same stream.
//! 4. The proxy's CPU, latency and throughput against the provider directly and JavaScript
//!    Workers on the same workerd, with a calibration row (`bench_proxy`).
//! 5. What provider prompt caching saves on a writer's session, `PROMPT_CACHE` auto vs off
//!    (`bench_cache`).
//!
//! The summary is printed as Markdown and written to `target/bench/summary.md`; `--record`
//! also writes it, with the machine and the command, to `BENCHMARKS.md`. Over the size budget
//! the command fails, after printing everything (the tests never fail on a measurement).

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use storycad_e2e::workerd::{target_dir, workspace_root};

use crate::build::{MAX_FUNCTION_BYTES, WASM_GZ_BUDGET};
use crate::{bench_cache, bench_proxy, build, cmd};

/// The criterion benchmarks summed up: (id under `target/criterion`, what it measures).
const HOST_COSTS: &[(&str, &str)] = &[
    ("config/parse", "configuration parsed (once per isolate)"),
    (
        "jwt/cached",
        "token found in the isolate's cache (SHA-256 + lookup)",
    ),
    (
        "jwt/RS256",
        "token verified, RS256 (the host's RustCrypto; the Worker's signature check is WebCrypto's)",
    ),
    ("jwt/ES256", "token verified, ES256 (the same)"),
    ("jwt/EdDSA", "token verified, EdDSA (the same)"),
    (
        "request/openai",
        "request read, plan checked, routed, upstream request built: OpenAI",
    ),
    ("request/anthropic", "the same, translated for Anthropic"),
    ("relay/openai_200_chunks", "200-chunk OpenAI stream relayed"),
    (
        "relay/anthropic_200_chunks",
        "200-chunk Anthropic stream translated and relayed",
    ),
    (
        "total/openai_stream",
        "per request: RS256 check + request + 200-chunk relay, OpenAI",
    ),
    (
        "total/anthropic_stream",
        "per request: the same through Anthropic",
    ),
];

pub fn run(record: bool, settings: &bench_proxy::Settings) -> Result<()> {
    if settings.cold_only {
        bail!("--cold-only measures one thing: run it as `cargo xtask bench proxy --cold-only`");
    }
    if settings.json_only {
        bail!("--json-only measures part of the proxy: run it as `cargo xtask bench proxy --json-only`");
    }
    let started = std::time::Instant::now();
    let load_before = load_average();

    build::worker(false)?;
    let (raw, gz) = build::wasm_bytes().context("the built wasm was not found")?;

    let mut c = cmd::cargo();
    c.args(["bench", "-p", "storycad-worker", "--bench", "request_cost"]);
    cmd::run(&mut c)?;
    let host = read_criterion(&target_dir().join("criterion"));

    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    let client_summary = out_dir.join("client.json");
    let _ = fs::remove_file(&client_summary);
    let mut c = cmd::cargo();
    c.args(["bench", "-p", "storycad-client", "--bench", "stream_parse"])
        .env("STORYCAD_BENCH_SUMMARY", &client_summary);
    cmd::run(&mut c)?;
    let client: Value = serde_json::from_str(
        &fs::read_to_string(&client_summary).context("the client bench wrote no summary")?,
    )?;

    let proxy = bench_proxy::measure(settings)?;
    bench_proxy::print(&proxy);

    let cache = bench_cache::measure()?;

    let mut md = String::new();
    tables(&mut md, &proxy, &host, &client, raw, gz)?;
    md.push('\n');
    md.push_str(&bench_cache::markdown(&cache)?);
    println!("\n{md}");
    fs::write(out_dir.join("summary.md"), &md)?;
    if record {
        let doc = document(&md, load_before, started.elapsed())?;
        fs::write(workspace_root().join("BENCHMARKS.md"), doc)?;
        println!("recorded in BENCHMARKS.md");
    }
    build::check_worker()
}

/// Median estimates (ns) of the criterion benchmarks found, by id.
fn read_criterion(dir: &Path) -> Vec<(String, f64)> {
    HOST_COSTS
        .iter()
        .filter_map(|(id, _)| {
            let text = fs::read_to_string(dir.join(id).join("new").join("estimates.json")).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            Some(((*id).to_owned(), v["median"]["point_estimate"].as_f64()?))
        })
        .collect()
}

fn tables(
    md: &mut String,
    proxy: &bench_proxy::Report,
    host: &[(String, f64)],
    client: &Value,
    raw: u64,
    gz: u64,
) -> Result<()> {
    md.push_str(&bench_proxy::markdown(proxy)?);
    writeln!(
        md,
        "\n### The Worker's CPU cost on the host (criterion, median, release build)\n"
    )?;
    writeln!(md, "| step | µs |\n|---|---:|")?;
    for (id, what) in HOST_COSTS {
        let value = host.iter().find(|(found, _)| found == id).map_or_else(
            || "not measured".to_owned(),
            |(_, ns)| format!("{:.1}", ns / 1000.0),
        );
        writeln!(md, "| {what} (`{id}`) | {value} |")?;
    }

    writeln!(md, "\n### Wasm size\n")?;
    writeln!(
        md,
        "| raw | gzipped | budget (gzipped) | | largest function | its budget |\n|---:|---:|---:|---|---:|---:|"
    )?;
    writeln!(
        md,
        "| {} KB | {} KB | {} KB | {} | {} | {} KB |",
        raw / 1000,
        gz / 1000,
        WASM_GZ_BUDGET / 1000,
        if gz <= WASM_GZ_BUDGET {
            format!(
                "within ({:.0}% of it)",
                gz as f64 * 100.0 / WASM_GZ_BUDGET as f64
            )
        } else {
            "OVER".to_owned()
        },
        build::largest_function().map_or_else(
            || "unknown".to_owned(),
            |(_, bytes)| format!("{:.1} KB", bytes as f64 / 1024.0)
        ),
        MAX_FUNCTION_BYTES / 1024,
    )?;

    let num = |k: &str| client[k].as_f64().unwrap_or(f64::NAN);
    let (ours, theirs) = (num("ours_chunks_per_s"), num("theirs_chunks_per_s"));
    let (ours_cpu, theirs_cpu) = (num("ours_cpu_ns_per_chunk"), num("theirs_cpu_ns_per_chunk"));
    writeln!(
        md,
        "\n### Client: parsing one stream of {} chunks from 127.0.0.1 (median of {} rounds, interleaved)\n",
        client["chunks"], client["rounds"]
    )?;
    writeln!(md, "| client | chunks/s | CPU ns/chunk |\n|---|---:|---:|")?;
    writeln!(md, "| storycad-client | {ours:.0} | {ours_cpu:.0} |")?;
    writeln!(md, "| async-openai 0.29 | {theirs:.0} | {theirs_cpu:.0} |")?;
    writeln!(
        md,
        "| *ours vs theirs* | x{:.2} | x{:.2} less |",
        ours / theirs,
        theirs_cpu / ours_cpu
    )?;
    Ok(())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let parts: Vec<&str> = l.split_whitespace().take(3).collect();
            (parts.len() == 3).then(|| parts.join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// BENCHMARKS.md: the machine, the command, then the tables.
fn document(tables: &str, load_before: String, took: std::time::Duration) -> Result<String> {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let wrangler =
        fs::read_to_string(workspace_root().join("worker/node_modules/wrangler/package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("cargo xtask {}", args.join(" "));
    let mut doc = String::new();
    writeln!(doc, "# Benchmarks\n")?;
    writeln!(
        doc,
        "The latest run of `{command}` (commit `{rev}`, {:.0} s). Every figure sits beside its \
         baseline measured in the same run; machines are noisy, so compare within a table, not \
         across runs. `CPU ms` is the CPU time the serving workerd processes used per request \
         (from /proc; the node process that started them left out), steadier than wall time on \
         a busy machine. The proxy's tables run each Worker under miniflare alone, reached on its \
         own socket: no dev proxy, no DevTools client (whose console capture `wrangler dev` adds \
         to every log line) and not miniflare's entry Worker, a JavaScript router in the same \
         process (records before `666c429` include it: about 0.1 ms a request, and 1 ms on an \
         isolate's first).\n",
        took.as_secs_f64()
    )?;
    writeln!(
        doc,
        "Machine: {cpu}, {cores} cores; load average {load_before} at the start (1, 5, 15 min); \
         wrangler {wrangler} with its miniflare and workerd; the fake provider on 127.0.0.1.\n"
    )?;
    doc.push_str(tables);
    Ok(doc)
}
