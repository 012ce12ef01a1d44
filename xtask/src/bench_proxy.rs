//! `cargo xtask bench proxy`: the latency the Worker adds, measured side by side.
//!
//! The same requests go, in alternating batches so every path sees the same machine load, to:
//! - the fake provider directly (no proxy at all);
//! - a plain JavaScript passthrough Worker (`bench/passthrough`) on the same workerd: no JWT,
//!   no limits, no routing; the floor a Worker can reach locally;
//! - the same with an identity `TransformStream` whose `transform` sees every chunk
//!   (`bench/transform`): the thinnest Worker that looks at a stream, as metering one needs;
//! - our Worker (JWT check, plan, limiter, routing, relay), with its per-isolate cache of
//!   verified tokens (the default);
//! - our Worker with that cache off (`JWT_CACHE_ENTRIES=0`): every request checks an RS256
//!   signature;
//! - our Worker with the limiter off (`LIMITS_ENABLED=false`): no Durable Object round trip.
//!
//! Each concurrent sender is its own user (its own token and limiter), as callers are in real
//! use. Printed: p50/p90/p99 and requests/s per path at each concurrency, our Worker against
//! the passthrough, and for streams the time to first byte and the total time; for each
//! Worker, the CPU time its workerd used per request (from /proc: on a loaded machine wall
//! times stretch, CPU time per request much less).
//!
//! Each Worker runs under `wrangler dev`, but the requests go to its runtime's own port and only
//! that workerd's CPU is counted: wrangler's dev proxy (a second workerd, in the path of
//! `wrangler dev`'s public port) buffers answers and does work of its own that a deployed Worker
//! does not have (TOOLCHAIN.md).

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use storycad_e2e::{
    fake_provider::{FakeProvider, FakeProviderOptions},
    tokens::{self, Alg, TestKeys},
    workerd::{workerds, workspace_root, Worker, WorkerOptions},
};

use crate::build;

const ISSUER: &str = "storycad-bench";
const AUDIENCE: &str = "storycad-bench";
const PROVIDER_KEY: &str = "bench-provider-key";

/// Settings from the command line.
#[derive(clap::Args)]
pub struct Settings {
    /// Requests per path and concurrency.
    #[arg(long, default_value_t = 500, value_parser = at_least_one())]
    pub requests: usize,
    /// Words of the streamed answer (199: 200 content chunks).
    #[arg(long, default_value_t = 199)]
    pub stream_words: usize,
    /// Concurrencies measured, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64",
          value_parser = at_least_one())]
    pub concurrency: Vec<usize>,
    /// Another build of the Worker (a copy of worker/build made at another commit) to measure
    /// beside this one, same settings: before/after in one run.
    #[arg(long, value_name = "DIR")]
    pub against: Option<PathBuf>,
}

/// A whole number of 1 or more.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// One path's figures at one concurrency (milliseconds, requests/s).
pub struct LatencyRow {
    pub path: &'static str,
    pub concurrency: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub rate: f64,
    /// CPU time of the serving workerd processes per request, in ms; `None`
    /// for the provider itself.
    pub cpu_ms: Option<f64>,
}

/// One path's streamed figures (milliseconds).
pub struct StreamRow {
    pub path: &'static str,
    pub ttfb_p50: f64,
    pub ttfb_p99: f64,
    pub total_p50: f64,
    pub total_p99: f64,
    pub cpu_ms: Option<f64>,
}

/// What `bench proxy` measured.
pub struct Report {
    pub requests: usize,
    pub stream_requests: usize,
    pub stream_chunks: usize,
    pub latency: Vec<LatencyRow>,
    pub streams: Vec<StreamRow>,
}

pub const DIRECT: &str = "provider directly";
pub const PASSTHROUGH: &str = "JS passthrough Worker";
pub const TRANSFORM: &str = "JS + TransformStream Worker";
pub const OURS: &str = "our Worker";
pub const OURS_NO_CACHE: &str = "our Worker, no token cache";
pub const OURS_NO_LIMITS: &str = "our Worker, limiter off";
pub const OURS_AGAINST: &str = "our Worker, --against build";

pub fn run(settings: &Settings) -> Result<()> {
    let report = measure(settings)?;
    print(&report);
    Ok(())
}

/// Starts the provider and the three Workers, measures, stops them.
pub fn measure(settings: &Settings) -> Result<Report> {
    build::worker(false)?;
    let provider = FakeProvider::start_with(FakeProviderOptions::default())?;
    // RS256: what most issuers sign with, and the dearest check (the test-only key pair).
    let keys = TestKeys::load()?;
    let key = keys.get(Alg::RS256);
    let plans = json!({"bench": {
        "models": ["bench"], "requests_per_minute": 1_000_000, "tokens_per_day": 1_000_000_000u64,
        "max_output_tokens": 4096, "concurrent_streams": 1000
    }});
    let ours = |name: &str, cache_entries: &str, limits: &str, dir: Option<PathBuf>| {
        Worker::start(
            WorkerOptions {
                name: name.into(),
                // Built once above: they run the same bundle (but the --against one).
                build: false,
                worker_dir: dir.unwrap_or_else(|| workspace_root().join("worker")),
                ..WorkerOptions::default()
            }
            .var("JWT_PUBLIC_JWK", key.public_jwk().to_string())
            .var("JWT_ISSUER", ISSUER)
            .var("JWT_AUDIENCE", AUDIENCE)
            .var("JWT_ALGORITHMS", "RS256")
            .var("JWT_CACHE_ENTRIES", cache_entries)
            .var("LIMITS_ENABLED", limits)
            .var("ROUTES", r#"{"bench":["openai:gpt-4o-mini"]}"#)
            .var("PLANS", plans.to_string())
            .var("DEFAULT_PLAN", "bench")
            .var("CACHE_TTL_SECONDS", "0")
            .var("OPENAI_BASE_URL", provider.openai_base_url())
            .secret("OPENAI_API_KEY", PROVIDER_KEY),
        )
    };
    let worker = ours("bench-worker", "4096", "true", None)?;
    let uncached = ours("bench-worker-nocache", "0", "true", None)?;
    let unlimited = ours("bench-worker-nolimits", "4096", "false", None)?;
    let against = match &settings.against {
        Some(build) => Some(ours(
            "bench-worker-against",
            "4096",
            "true",
            Some(against_dir(build)?),
        )?),
        None => None,
    };
    let passthrough = Worker::start(
        WorkerOptions {
            name: "bench-passthrough".into(),
            config: Some(workspace_root().join("bench/passthrough/wrangler.toml")),
            ..WorkerOptions::default()
        }
        .var("OPENAI_BASE_URL", provider.openai_base_url())
        .secret("OPENAI_API_KEY", PROVIDER_KEY),
    )?;

    let transform = Worker::start(
        WorkerOptions {
            name: "bench-transform".into(),
            config: Some(workspace_root().join("bench/transform/wrangler.toml")),
            ..WorkerOptions::default()
        }
        .var("OPENAI_BASE_URL", provider.openai_base_url())
        .secret("OPENAI_API_KEY", PROVIDER_KEY),
    )?;

    let users = settings.concurrency.iter().copied().max().unwrap_or(1);
    let tokens: Vec<String> = (0..users)
        .map(|i| {
            let mut claims = tokens::claims(
                ISSUER,
                AUDIENCE,
                &format!("bench-user-{i}"),
                Duration::from_secs(3600),
            );
            claims["plan"] = json!("bench");
            tokens::mint(key, &claims)
        })
        .collect();
    let upstream_model = "gpt-4o-mini";
    let mut targets = vec![
        Target::new(
            DIRECT,
            &provider.openai_base_url(),
            vec![PROVIDER_KEY.into()],
            upstream_model,
        ),
        Target::new(
            PASSTHROUGH,
            &passthrough.api_base(),
            vec!["unused".into()],
            upstream_model,
        )
        .served_by(&passthrough)?,
        Target::new(
            TRANSFORM,
            &transform.api_base(),
            vec!["unused".into()],
            upstream_model,
        )
        .served_by(&transform)?,
        Target::new(OURS, &worker.api_base(), tokens.clone(), "bench").served_by(&worker)?,
        Target::new(OURS_NO_CACHE, &uncached.api_base(), tokens.clone(), "bench")
            .served_by(&uncached)?,
        Target::new(
            OURS_NO_LIMITS,
            &unlimited.api_base(),
            tokens.clone(),
            "bench",
        )
        .served_by(&unlimited)?,
    ];
    if let Some(w) = &against {
        targets.push(Target::new(OURS_AGAINST, &w.api_base(), tokens, "bench").served_by(w)?);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(measure_targets(settings, &targets));
    for w in [worker, uncached, unlimited, passthrough, transform]
        .into_iter()
        .chain(against)
    {
        if !w.stop().group_empty {
            eprintln!("bench: some wrangler processes were still running at the end");
        }
    }
    drop(provider);
    result
}

/// A Worker directory for the `--against` build: this checkout's wrangler.toml and
/// node_modules, and a copy of that build.
fn against_dir(build: &Path) -> Result<PathBuf> {
    if !build.join("worker").join("shim.mjs").exists() {
        bail!(
            "--against {}: not a Worker build (a copy of worker/build, with worker/shim.mjs)",
            build.display()
        );
    }
    let worker = workspace_root().join("worker");
    let dir = storycad_e2e::workerd::target_dir()
        .join("bench")
        .join("against");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(worker.join("wrangler.toml"), dir.join("wrangler.toml"))?;
    std::os::unix::fs::symlink(worker.join("node_modules"), dir.join("node_modules"))?;
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(build)
        .arg(dir.join("build"))
        .status()?;
    if !status.success() {
        bail!("copying {} failed", build.display());
    }
    Ok(dir)
}

/// One way to the same answer.
#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    /// Bearer tokens; sender `i` uses token `i % len` (each sender is its own user).
    tokens: Arc<Vec<String>>,
    model: &'static str,
    /// The runtime processes serving it (their CPU time is measured), if any.
    runtime: Vec<u32>,
}

impl Target {
    fn new(name: &'static str, api_base: &str, tokens: Vec<String>, model: &'static str) -> Self {
        Target {
            name,
            url: format!("{api_base}/chat/completions"),
            tokens: Arc::new(tokens),
            model,
            runtime: Vec::new(),
        }
    }

    /// Sends to `worker`'s runtime directly (past wrangler's dev proxy) and measures that
    /// runtime's CPU.
    fn served_by(mut self, worker: &Worker) -> Result<Self> {
        let port = worker.runtime_port()?;
        self.url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        self.runtime = workerds(worker.pgid(), worker.port())
            .into_iter()
            .filter(|w| !w.proxy)
            .map(|w| w.pid)
            .collect();
        Ok(self)
    }

    fn body(&self, prompt: &str, stream: bool) -> String {
        json!({"model": self.model, "stream": stream,
            "messages": [{"role": "user", "content": prompt}]})
        .to_string()
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        body: &str,
        stream: bool,
        sender: usize,
    ) -> Result<Timing> {
        let token = &self.tokens[sender % self.tokens.len()];
        let started = Instant::now();
        let mut resp = http
            .post(&self.url)
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(body.to_owned())
            .send()
            .await
            .with_context(|| format!("{}: sending", self.name))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("{}: HTTP {status}: {text}", self.name);
        }
        let mut first = None;
        let mut bytes = 0usize;
        let mut tail = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("{}: reading the answer", self.name))?
        {
            if first.is_none() && !chunk.is_empty() {
                first = Some(started.elapsed());
            }
            bytes += chunk.len();
            tail.extend_from_slice(&chunk[chunk.len().saturating_sub(32)..]);
            tail.drain(..tail.len().saturating_sub(32));
        }
        let total = started.elapsed();
        if stream && !String::from_utf8_lossy(&tail).contains("[DONE]") {
            bail!(
                "{}: the stream ended without [DONE] ({bytes} bytes)",
                self.name
            );
        }
        Ok(Timing {
            first_byte: first.unwrap_or(total),
            total,
        })
    }
}

#[derive(Clone, Copy)]
struct Timing {
    first_byte: Duration,
    total: Duration,
}

async fn measure_targets(settings: &Settings, targets: &[Target]) -> Result<Report> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let short: Vec<String> = targets
        .iter()
        .map(|t| t.body("hello there", false))
        .collect();
    let long_prompt = vec!["word"; settings.stream_words].join(" ");
    let streamed: Vec<String> = targets.iter().map(|t| t.body(&long_prompt, true)).collect();

    // Warm every path: connections, isolates, key parses, each user's limiter and (where it
    // is on) each token's cache entry.
    let users = settings.concurrency.iter().copied().max().unwrap_or(1);
    for (t, body) in targets.iter().zip(&short) {
        for sender in 0..users.max(20) {
            t.send(&http, body, false, sender).await?;
        }
    }

    let mut report = Report {
        requests: settings.requests,
        stream_requests: (settings.requests / 5).max(20),
        stream_chunks: settings.stream_words + 1,
        latency: Vec::new(),
        streams: Vec::new(),
    };
    for &concurrency in &settings.concurrency {
        let samples = interleaved(
            &http,
            targets,
            &short,
            settings.requests,
            concurrency,
            false,
        )
        .await?;
        for (t, s) in targets.iter().zip(&samples) {
            let p = s.stats(|t| t.total);
            report.latency.push(LatencyRow {
                path: t.name,
                concurrency,
                p50: p.p50,
                p90: p.p90,
                p99: p.p99,
                rate: s.rate,
                cpu_ms: s.cpu_per_request(),
            });
        }
    }
    let samples = interleaved(&http, targets, &streamed, report.stream_requests, 1, true).await?;
    for (t, s) in targets.iter().zip(&samples) {
        let (f, a) = (s.stats(|t| t.first_byte), s.stats(|t| t.total));
        report.streams.push(StreamRow {
            path: t.name,
            ttfb_p50: f.p50,
            ttfb_p99: f.p99,
            total_p50: a.p50,
            total_p99: a.p99,
            cpu_ms: s.cpu_per_request(),
        });
    }
    Ok(report)
}

/// Prints the report (the tables of [`markdown`]).
pub fn print(report: &Report) {
    match markdown(report) {
        Ok(md) => println!("\n{md}"),
        Err(e) => eprintln!("bench: {e}"),
    }
}

/// The report as Markdown tables, with our Worker against the passthrough.
pub fn markdown(report: &Report) -> Result<String> {
    use std::fmt::Write as _;
    let mut md = String::new();
    writeln!(
        md,
        "### Latency through the proxy, not streamed ({} requests per path and concurrency)\n",
        report.requests
    )?;
    writeln!(
        md,
        "| path | concurrency | p50 ms | p90 ms | p99 ms | req/s | CPU ms/req |\n|---|---:|---:|---:|---:|---:|---:|"
    )?;
    let mut concurrencies: Vec<usize> = report.latency.iter().map(|r| r.concurrency).collect();
    concurrencies.dedup();
    for c in concurrencies {
        let rows: Vec<_> = report
            .latency
            .iter()
            .filter(|r| r.concurrency == c)
            .collect();
        for r in &rows {
            writeln!(
                md,
                "| {} | {c} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
                r.path,
                r.p50,
                r.p90,
                r.p99,
                r.rate,
                cpu(r.cpu_ms)
            )?;
        }
        let find = |name: &str| rows.iter().find(|r| r.path == name);
        if let (Some(b), Some(o)) = (find(PASSTHROUGH), find(OURS)) {
            writeln!(
                md,
                "| *ours vs passthrough* | {c} | {:+.2} | {:+.2} | {:+.2} | x{:.2} | {} |",
                o.p50 - b.p50,
                o.p90 - b.p90,
                o.p99 - b.p99,
                o.rate / b.rate.max(f64::MIN_POSITIVE),
                match (o.cpu_ms, b.cpu_ms) {
                    (Some(x), Some(y)) => format!("{:+.2}", x - y),
                    _ => "-".into(),
                }
            )?;
        }
    }
    writeln!(
        md,
        "\n### Streams of {} content chunks ({} per path, concurrency 1)\n",
        report.stream_chunks, report.stream_requests
    )?;
    writeln!(
        md,
        "| path | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms | CPU ms/stream |\n|---|---:|---:|---:|---:|---:|"
    )?;
    for r in &report.streams {
        writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.path,
            r.ttfb_p50,
            r.ttfb_p99,
            r.total_p50,
            r.total_p99,
            cpu(r.cpu_ms)
        )?;
    }

    Ok(md)
}

fn cpu(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}"))
}

/// What one path measured.
#[derive(Default)]
struct Samples {
    timings: Vec<Timing>,
    busy: Duration,
    rate: f64,
    /// CPU time its serving processes used during its batches.
    cpu: Option<Duration>,
}

struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Samples {
    fn cpu_per_request(&self) -> Option<f64> {
        let n = self.timings.len().max(1) as f64;
        self.cpu.map(|c| c.as_secs_f64() * 1000.0 / n)
    }

    fn stats(&self, pick: impl Fn(&Timing) -> Duration) -> Percentiles {
        let mut ms: Vec<f64> = self
            .timings
            .iter()
            .map(|t| pick(t).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
            ms[i.min(ms.len() - 1)]
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
        }
    }
}

/// Sends `total` requests to each target, in batches; each round starts with the next target.
async fn interleaved(
    http: &reqwest::Client,
    targets: &[Target],
    bodies: &[String],
    total: usize,
    concurrency: usize,
    stream: bool,
) -> Result<Vec<Samples>> {
    let batch = (concurrency * 4).max(25);
    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    let mut sent = 0;
    let mut round = 0;
    while sent < total {
        let n = batch.min(total - sent);
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let runtime = &targets[i].runtime;
            let cpu_before = (!runtime.is_empty()).then(|| processes_cpu(runtime));
            let started = Instant::now();
            let timings = run_batch(http, &targets[i], &bodies[i], n, concurrency, stream).await?;
            samples[i].busy += started.elapsed();
            if let Some(before) = cpu_before {
                let used = processes_cpu(&targets[i].runtime).saturating_sub(before);
                *samples[i].cpu.get_or_insert(Duration::ZERO) += used;
            }
            samples[i].timings.extend(timings);
        }
        sent += n;
        round += 1;
    }
    for s in &mut samples {
        s.rate = s.timings.len() as f64 / s.busy.as_secs_f64().max(f64::MIN_POSITIVE);
    }
    Ok(samples)
}

async fn run_batch(
    http: &reqwest::Client,
    target: &Target,
    body: &str,
    n: usize,
    concurrency: usize,
    stream: bool,
) -> Result<Vec<Timing>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for sender in 0..concurrency.min(n) {
        let (http, target, body, next) =
            (http.clone(), target.clone(), body.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = tokio::time::timeout(
                    Duration::from_secs(30),
                    target.send(&http, &body, stream, sender),
                )
                .await
                .context("a request took over 30 s")??;
                out.push(t);
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// CPU time (user + system, all threads) used so far by processes `pids`, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms).
fn processes_cpu(pids: &[u32]) -> Duration {
    let mut ticks = 0u64;
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the `(comm)` field: state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 10)
}
