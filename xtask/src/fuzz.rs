//! `cargo xtask fuzz --minutes N [--target NAME]`: runs the fuzz targets in `fuzz/` (cargo-fuzz,
//! libFuzzer) one after another, each for N minutes, and prints per target the minutes run, the
//! executions (libFuzzer's final stats) and the crashes found.
//!
//! Needs the nightly toolchain (checked, with a clear error); installs cargo-fuzz when missing.
//! Each target's corpus is `fuzz/corpus/<target>` (generated, not committed), seeded from the
//! committed `fuzz/seeds/<target>`; a crashing input lands in `fuzz/artifacts/<target>/` and
//! the full libFuzzer log in `fuzz/artifacts/<target>.log`. Built without a sanitizer: our code
//! forbids `unsafe`, so the bugs to find are panics, overflows (debug assertions are on), hangs
//! and memory blow-ups, which libFuzzer reports itself; `--sanitizer address` builds with ASan.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, output, root};

/// Every target in `fuzz/fuzz_targets/`.
pub const TARGETS: [&str; 4] = ["client_sse", "worker_relay", "anthropic_stream", "jwt"];
/// Largest input libFuzzer makes, in bytes.
const MAX_LEN: u32 = 65_536;
/// Memory a run may use before libFuzzer calls it an out-of-memory crash.
const RSS_LIMIT_MB: u32 = 2048;
/// Seconds one input may take before libFuzzer calls it a hang.
const TIMEOUT_SECS: u32 = 10;

#[derive(clap::Args)]
pub struct Options {
    /// Minutes each target runs.
    #[arg(long, value_parser = positive_minutes)]
    pub minutes: f64,
    /// One target instead of all of them.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// libFuzzer's sanitizer.
    #[arg(long, default_value = "none", value_parser = ["none", "address"])]
    pub sanitizer: String,
}

impl Options {
    /// The targets to run, in order.
    pub fn targets(&self) -> Vec<&'static str> {
        TARGETS
            .into_iter()
            .filter(|t| self.target.as_deref().is_none_or(|name| name == *t))
            .collect()
    }
}

/// Minutes, above 0 (fractions allowed).
pub fn positive_minutes(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(m) if m > 0.0 && m.is_finite() => Ok(m),
        _ => Err("a number of minutes above 0".into()),
    }
}

/// `cargo +nightly ...` in `fuzz/`, without the outer (stable) cargo's environment.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(root().join("fuzz"));
    for var in [
        "CARGO",
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
    ] {
        c.env_remove(var);
    }
    c
}

/// Fails with what to do when the nightly toolchain is missing (cargo-fuzz needs it).
fn check_nightly() -> Result<()> {
    let version = output(Command::new("rustc").args(["+nightly", "--version"]));
    match version {
        Some(v) if v.contains("nightly") => Ok(()),
        _ => bail!(
            "the nightly Rust toolchain is not installed (cargo-fuzz needs it): \
             run `rustup toolchain install nightly`"
        ),
    }
}

/// Installs cargo-fuzz unless it is there already.
fn ensure_cargo_fuzz() -> Result<()> {
    let installed = output(Command::new(cmd::cargo_tool("cargo-fuzz")).arg("--version"))
        .or_else(|| output(Command::new("cargo-fuzz").arg("--version")));
    if installed.is_some() {
        return Ok(());
    }
    let mut c = cmd::cargo();
    c.args(["install", "cargo-fuzz", "--locked"]);
    cmd::run(&mut c)
}

/// What one run found.
struct Report {
    target: &'static str,
    minutes: f64,
    executions: Option<u64>,
    crashes: Vec<String>,
    ok: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    check_nightly()?;
    ensure_cargo_fuzz()?;
    let fuzz = root().join("fuzz");
    let mut build = nightly_cargo();
    build.args(["fuzz", "build", "--sanitizer", &opts.sanitizer]);
    if let Some(only) = &opts.target {
        build.arg(only);
    }
    cmd::run(&mut build)?;
    let mut reports = Vec::new();
    for target in opts.targets() {
        reports.push(run_target(target, opts)?);
    }
    println!(
        "\n{:<18} {:>8} {:>14} {:>8}",
        "target", "minutes", "executions", "crashes"
    );
    for r in &reports {
        let execs = r.executions.map_or("?".to_owned(), |n| n.to_string());
        println!(
            "{:<18} {:>8.1} {:>14} {:>8}",
            r.target,
            r.minutes,
            execs,
            r.crashes.len()
        );
        for c in &r.crashes {
            println!("  {c}");
        }
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.ok).map(|r| r.target).collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found problems in {} (inputs under {})",
            failed.join(", "),
            fuzz.join("artifacts").display()
        );
    }
    Ok(())
}

fn run_target(target: &'static str, opts: &Options) -> Result<Report> {
    let fuzz = root().join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let seeds = fuzz.join("seeds").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = fuzz.join("artifacts").join(format!("{target}.log"));
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let seconds = (opts.minutes * 60.0).round().max(1.0) as u64;
    let mut c = nightly_cargo();
    c.args(["fuzz", "run", "--sanitizer", &opts.sanitizer, target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    eprintln!(
        "$ {}\nfuzz: {target} for {:.1} min (log: {})",
        cmd::describe(&c),
        opts.minutes,
        log_path.display()
    );
    let started = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", cmd::describe(&c)))?;
    let mut executions = None;
    let mut crashes = Vec::new();
    let mut fuzzed_minutes = None;
    // libFuzzer reports on stderr: all of it goes to the log; the status lines are echoed.
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            writeln!(log, "{line}")?;
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                executions = n.trim().parse().ok();
            }
            // "Done 123456 runs in 600 second(s)": the fuzzing time itself, without the build.
            if let Some(secs) = line
                .strip_prefix("Done ")
                .and_then(|l| l.split(" runs in ").nth(1))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
            {
                fuzzed_minutes = Some(secs / 60.0);
            }
            if let Some(path) = line.split("Test unit written to ").nth(1) {
                crashes.push(path.trim().to_owned());
            }
            let noisy = line.starts_with('#') && !line.contains("pulse") && !line.contains("DONE");
            if !noisy {
                eprintln!("{target}: {line}");
            }
        }
    }
    let status = child.wait()?;
    let minutes = fuzzed_minutes.unwrap_or_else(|| started.elapsed().as_secs_f64() / 60.0);
    // A crash, a hang and an out-of-memory stop the run with a failure status.
    let ok = status.success() && crashes.is_empty();
    if !ok && crashes.is_empty() {
        crashes.push(format!("exited with {status}; see {}", log_path.display()));
    }
    Ok(Report {
        target,
        minutes,
        executions,
        crashes,
        ok,
    })
}
