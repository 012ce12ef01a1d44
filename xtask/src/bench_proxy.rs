//! `cargo xtask bench proxy`: what the Worker costs and adds, measured side by side.
//!
//! The same requests go, in alternating batches so every path sees the same machine load, to:
//! - the fake provider directly (no proxy at all);
//! - a plain JavaScript passthrough Worker (`bench/passthrough`) on the same workerd: no JWT,
//!   no limits, no routing; the floor a Worker can reach locally (it cannot meter a stream);
//! - the same with an identity `TransformStream` whose `transform` sees every chunk
//!   (`bench/transform`): the thinnest standard Worker that looks at a stream;
//! - a JavaScript reader loop that sees every piece once and writes it to workerd's native
//!   `IdentityTransformStream` (`bench/reader`): the same looking, without a JS stream between
//!   the code and the caller;
//! - the JS metering Worker (`bench/metered`, answers not streamed only): the passthrough that
//!   reads the answer whole, takes its usage out (`JSON.parse`) and writes one log line, the
//!   least a proxy that meters does; the passthrough hands the body through unread;
//! - the same without its log line (`bench/metered-quiet`): their difference is what one
//!   `console.log` per request costs under the local runtime, whose command line formats each
//!   line through node:util's inspect (loaded on an isolate's first line) where Cloudflare's
//!   runtime does not ([`LOCAL_LOG_NOTE`]);
//! - the JS proxying Worker (`bench/proxying`, answers not streamed only): the metering Worker
//!   plus what a proxy with our Worker's job must do with a chat request: read the caller's
//!   body, check it, rewrite it for the provider and send that, answer with its own headers.
//!   No JWT, no plan, no limiter, no time limits: the floor, in JavaScript, of our Worker with
//!   its limiter off;
//! - the same metering Worker written as a plain workers-rs Worker (`bench/rust-metered`,
//!   built here with worker-build): what running as Rust compiled to wasm costs on this
//!   runtime before any work of ours, per request and on an isolate's first request;
//! - the same Rust Worker handing the answer back unread and logging nothing (`HAND_THROUGH`):
//!   the JS passthrough in workers-rs, the least any workers-rs Worker costs;
//! - the calibration Worker (`bench/calibrate`): the passthrough plus a known amount of CPU work
//!   per request (sized under node, then measured under the same workerd in requests that do it
//!   many times); it must read as that much more than the passthrough, or the measurement is
//!   off;
//! - our Worker (JWT check, plan, limiter, routing, relay), with its per-isolate cache of
//!   verified tokens (the default), with that cache off (`JWT_CACHE_ENTRIES=0`: every request
//!   checks an RS256 signature), with the limiter off (`LIMITS_ENABLED=false`: no Durable
//!   Object round trip), and, for streams only, with one write per piece read
//!   (`STREAM_COALESCE_MS=0`) and with resumable streams off (`RESUME_WINDOW_SECONDS=0`: no
//!   stream id, no event ids, no events kept: what a stream never cut costs for being
//!   resumable);
//! - with `--against`, another build of our Worker, limiter on and off (before/after in one
//!   run).
//!
//! Measured: JSON latency and requests/s at each concurrency; streams of two shapes, many
//! chunks back to back and fewer chunks spaced as a provider sends them (one per read), with
//! the CPU per chunk beside the TransformStream Worker's; streams/s at concurrency 16; and, before
//! anything else reaches them, each Worker's start-up CPU and its first two chat requests (the
//! first pays for V8 compiling what it runs). Each concurrent sender is its own user (its own
//! token and limiter), as callers are in real use.
//!
//! CPU is what the Worker's own workerd process used (utime + stime from /proc, all threads:
//! the isolate, the runtime's HTTP and stream work). Each Worker runs under miniflare alone
//! (`crate::miniflare`): one workerd, no dev proxy and no DevTools client, and requests reach
//! it on its own socket, not through miniflare's entry Worker. Under `wrangler dev`
//! the dev proxy is a second workerd in the path that buffers answers (TOOLCHAIN.md), and its
//! inspector makes every `console.log` a DevTools message with a captured stack trace, work a
//! deployed Worker does not do: it cost our Worker ~0.5 ms a request and the JS metering Worker
//! ~0.35.

use std::{
    path::{Path, PathBuf},
    process::Command,
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
    workerd::workspace_root,
};

use crate::build;
use crate::miniflare::{self, Code, Miniflare};

const ISSUER: &str = "storycad-bench";
const AUDIENCE: &str = "storycad-bench";
const PROVIDER_KEY: &str = "bench-provider-key";

/// The streams/s measurement: answers of this many content chunks, this many at once.
const RATE_CHUNKS: usize = 20;
const RATE_CONCURRENCY: usize = 16;
/// Spaced streams take a while each (chunks x spacing): this many run at once (each stream's
/// chunks stay spaced; the CPU per stream is the same).
const SPACED_CONCURRENCY: usize = 4;

/// Settings from the command line.
#[derive(clap::Args)]
pub struct Settings {
    /// JSON requests per path and concurrency.
    #[arg(long, default_value_t = 500, value_parser = at_least(1))]
    pub requests: usize,
    /// Concurrencies of the JSON requests, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64",
          value_parser = at_least(1))]
    pub concurrency: Vec<usize>,
    /// Streams per path and shape [default: a fifth of --requests, at least 20].
    #[arg(long, value_parser = at_least(1))]
    pub streams: Option<usize>,
    /// Content chunks of the stream sent back to back.
    #[arg(long, default_value_t = 1000, value_parser = at_least(3))]
    pub burst_chunks: usize,
    /// Content chunks of the spaced stream.
    #[arg(long, default_value_t = 200, value_parser = at_least(3))]
    pub spaced_chunks: usize,
    /// Milliseconds between the spaced stream's chunks.
    #[arg(long, default_value_t = 2, value_parser = at_least(1))]
    pub spacing_ms: usize,
    /// CPU milliseconds the calibration Worker spends per request.
    #[arg(long, default_value_t = 1.0, value_parser = positive_ms)]
    pub calibration_ms: f64,
    /// Another build of the Worker (a copy of worker/build made at another commit) to measure
    /// beside this one, same settings: before/after in one run.
    #[arg(long, value_name = "DIR")]
    pub against: Option<PathBuf>,
    /// Cold starts per Worker (each a fresh runtime; the table shows their medians). One start
    /// is one sample of a noisy quantity: several runs of one sample each differed by 2x.
    #[arg(long, default_value_t = 5, value_parser = at_least(1))]
    pub cold_starts: usize,
    /// Only the cold starts, of the passthrough, the metering baselines and our Worker (limiter
    /// on and off, and --against's): many starts in minutes, for a change to start-up or the
    /// first request.
    #[arg(long)]
    pub cold_only: bool,
    /// The cold starts' chat requests as streams (the answer's 3 content chunks relayed as
    /// events), not JSON answers: what an isolate's first request costs when it is a stream.
    #[arg(long)]
    pub cold_stream: bool,
    /// Only the requests not streamed (latency, requests/s and CPU per request, with the
    /// calibration) and the cold starts: a change to the request path, before and after
    /// (`--against`), in minutes rather than the whole run's ten.
    #[arg(long, conflicts_with = "cold_only")]
    pub json_only: bool,
}

impl Settings {
    fn streams(&self) -> usize {
        self.streams.unwrap_or((self.requests / 5).max(20))
    }
}

/// A whole number of `min` or more.
fn at_least(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min..)
}

fn positive_ms(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ms) if ms > 0.0 && ms <= 100.0 => Ok(ms),
        _ => Err(format!("`{text}` is not a number of ms in (0, 100]")),
    }
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
    pub total_p50: f64,
    pub total_p99: f64,
    pub cpu_ms: Option<f64>,
}

/// Streams of one shape, every path.
pub struct StreamTable {
    /// How the chunks came, e.g. "back to back".
    pub shape: String,
    pub chunks: usize,
    pub streams: usize,
    pub concurrency: usize,
    pub rows: Vec<StreamRow>,
}

/// One path's streams per second at [`RATE_CONCURRENCY`].
pub struct RateRow {
    pub path: &'static str,
    pub rate: f64,
    pub cpu_ms: Option<f64>,
}

/// One Worker's start: what loading it cost, and its first request against its second.
pub struct ColdRow {
    pub path: &'static str,
    /// CPU ms its runtime used from its spawn to the first request: workerd's own start (the
    /// same for every Worker) and the Worker's loading (compiling, evaluating its module). No
    /// request reaches a Worker before its first chat request.
    pub startup_cpu_ms: f64,
    /// The first chat request; the request after it (another user, so our Worker verifies a
    /// token again); and one more (a third user) once another isolate has started in the same
    /// runtime, which makes V8 drop the baseline code of every wasm module in the process (see
    /// `miniflare.mjs`): what a request pays in production after another Worker starts on its
    /// machine.
    pub requests: [Timed; 3],
}

/// One request of a cold start: ms, and the CPU ms of the runtime's main thread (where the
/// isolate runs) and of its other threads (V8's compilers and GC helpers, among others).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timed {
    pub ms: f64,
    pub cpu_ms: f64,
    pub other_cpu_ms: f64,
}

impl Timed {
    /// Field by field, the median of `samples` (at least one).
    fn median(samples: &[Timed]) -> Timed {
        Timed {
            ms: median(samples.iter().map(|t| t.ms)),
            cpu_ms: median(samples.iter().map(|t| t.cpu_ms)),
            other_cpu_ms: median(samples.iter().map(|t| t.other_cpu_ms)),
        }
    }

    fn minus(self, base: Timed) -> Timed {
        Timed {
            ms: self.ms - base.ms,
            cpu_ms: self.cpu_ms - base.cpu_ms,
            other_cpu_ms: self.other_cpu_ms - base.other_cpu_ms,
        }
    }
}

/// The calibration Worker's known cost.
pub struct Calibration {
    /// CPU ms per request its work costs under node (the rounds are chosen there).
    pub ms: f64,
    /// The same work under the bench's workerd (its V8 may tier code differently), measured in
    /// requests that do it [`SPIN_TIMES`] times; `None` before it is measured.
    pub workerd_ms: Option<f64>,
    /// Rounds of that work per request.
    pub rounds: u64,
}

/// How many times a `/spin` request of the calibration Worker does its per-request work.
const SPIN_TIMES: usize = 40;

/// What `bench proxy` measured.
pub struct Report {
    pub requests: usize,
    /// Medians of [`Report::cold_starts`] starts each.
    pub cold: Vec<ColdRow>,
    pub cold_starts: usize,
    /// Whether the cold starts' requests were streams (`--cold-stream`).
    pub cold_stream: bool,
    pub latency: Vec<LatencyRow>,
    pub calibration: Calibration,
    pub streams: Vec<StreamTable>,
    pub rate_streams: usize,
    pub rates: Vec<RateRow>,
    /// Each warm Worker's request after another isolate starts in its runtime, beside the
    /// request after that one.
    pub flushed: Vec<FlushRow>,
}

/// How many times each warm Worker is measured after a new isolate (medians are shown).
const FLUSH_ROUNDS: usize = 5;

/// A warm Worker (it has served the latency runs) after another isolate starts in its runtime:
/// V8 has dropped the baseline code of every wasm module there, so the request compiles again
/// whatever it runs that V8 had not yet optimized. Medians of [`FLUSH_ROUNDS`] rounds.
pub struct FlushRow {
    pub path: &'static str,
    /// The request right after the new isolate.
    pub after: Timed,
    /// The request after that one (nothing dropped in between).
    pub next: Timed,
}

pub const DIRECT: &str = "provider directly";
pub const PASSTHROUGH: &str = "JS passthrough Worker";
pub const TRANSFORM: &str = "JS + TransformStream Worker";
pub const READER: &str = "JS reader + native stream Worker";
pub const METERED: &str = "JS metering Worker (reads the answer, one log line)";
pub const METERED_QUIET: &str = "JS metering Worker without its log line";
pub const RUST_METERED: &str = "Rust metering Worker (the same, in workers-rs)";
pub const RUST_PASSTHROUGH: &str = "Rust passthrough Worker (the JS passthrough, in workers-rs)";
pub const PROXYING: &str = "JS proxying Worker (metering + the caller's body read and rewritten)";
pub const CALIBRATION: &str = "calibration Worker (passthrough + known CPU)";
pub const OURS: &str = "our Worker";
pub const OURS_NO_CACHE: &str = "our Worker, no token cache";
pub const OURS_NO_LIMITS: &str = "our Worker, limiter off";
pub const OURS_NO_COALESCE: &str = "our Worker, STREAM_COALESCE_MS=0";
pub const OURS_NO_RESUME: &str = "our Worker, RESUME_WINDOW_SECONDS=0";
pub const OURS_AGAINST: &str = "our Worker, --against build";
pub const OURS_AGAINST_NO_LIMITS: &str = "our Worker, --against build, limiter off";

pub fn run(settings: &Settings) -> Result<()> {
    let report = measure(settings)?;
    print(&report);
    Ok(())
}

/// Starts the provider and the Workers, measures, stops them.
pub fn measure(settings: &Settings) -> Result<Report> {
    build::worker(false)?;
    build::rust_metered()?;
    let calibration = calibrate(settings.calibration_ms)?;
    let provider = FakeProvider::start_with(FakeProviderOptions::default())?;
    // RS256: what most issuers sign with, and the dearest check (the test-only key pair).
    let keys = TestKeys::load()?;
    let key = keys.get(Alg::RS256);
    let plans = json!({"bench": {
        "models": ["bench"], "requests_per_minute": 1_000_000, "tokens_per_day": 1_000_000_000u64,
        "max_output_tokens": 4096, "concurrent_streams": 1000
    }});
    // `vars`: settings beyond the Worker's defaults.
    let ours =
        |name: &str, cache: &str, limits: &str, vars: &[(&str, &str)], bundle: Option<PathBuf>| {
            let bindings = [
                ("JWT_PUBLIC_JWK", key.public_jwk().to_string()),
                ("JWT_ISSUER", ISSUER.to_owned()),
                ("JWT_AUDIENCE", AUDIENCE.to_owned()),
                ("JWT_ALGORITHMS", "RS256".to_owned()),
                ("JWT_CACHE_ENTRIES", cache.to_owned()),
                ("LIMITS_ENABLED", limits.to_owned()),
                ("ROUTES", r#"{"bench":["openai:gpt-4o-mini"]}"#.to_owned()),
                ("PLANS", plans.to_string()),
                ("DEFAULT_PLAN", "bench".to_owned()),
                ("CACHE_TTL_SECONDS", "0".to_owned()),
                ("OPENAI_BASE_URL", provider.openai_base_url()),
                ("OPENAI_API_KEY", PROVIDER_KEY.to_owned()),
            ]
            .into_iter()
            .chain(vars.iter().map(|(n, v)| (*n, (*v).to_owned())))
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
            Miniflare::start(miniflare::Options {
                name: name.into(),
                // Built once above: they run the same bundle (but the --against one).
                code: Code::Bundle(bundle.unwrap_or_else(build::bundle_dir)),
                bindings,
            })
        };
    // `slug` names a Worker's runtime (its logs), `dir` its code; `suffix` tells apart the
    // fresh starts of the same Worker (the cold-start samples); `var` is a setting of its own.
    let baseline = |slug: &str, dir: &str, suffix: &str, var: &Option<(&str, String)>| {
        let mut bindings = vec![
            ("OPENAI_BASE_URL".to_owned(), provider.openai_base_url()),
            ("OPENAI_API_KEY".to_owned(), PROVIDER_KEY.to_owned()),
        ];
        if let Some((name, value)) = var {
            bindings.push(((*name).to_owned(), value.clone()));
        }
        Miniflare::start(miniflare::Options {
            name: format!("bench-{slug}{suffix}"),
            code: Code::Script(
                workspace_root()
                    .join("bench")
                    .join(dir)
                    .join("wrangler.toml"),
            ),
            bindings,
        })
    };
    let mut workers = Vec::new();
    let mut targets = vec![Target::new(
        DIRECT,
        &provider.openai_base_url(),
        vec![PROVIDER_KEY.into()],
        "gpt-4o-mini",
    )];
    let baselines = [
        (PASSTHROUGH, "passthrough", "passthrough", None),
        (TRANSFORM, "transform", "transform", None),
        (READER, "reader", "reader", None),
        (METERED, "metered", "metered", None),
        (METERED_QUIET, "metered-quiet", "metered-quiet", None),
        (PROXYING, "proxying", "proxying", None),
        (RUST_METERED, "rust-metered", "rust-metered", None),
        (
            RUST_PASSTHROUGH,
            "rust-passthrough",
            "rust-metered",
            Some(("HAND_THROUGH", "true".to_owned())),
        ),
        (
            CALIBRATION,
            "calibrate",
            "calibrate",
            Some(("SPIN_ROUNDS", calibration.rounds.to_string())),
        ),
    ];
    let baseline_target = |name, w: &Miniflare| {
        Target::new(name, &w.api_base(), vec!["unused".into()], "gpt-4o-mini").served_by(w)
    };
    // A cold-only run starts only the Workers its table compares.
    let compared = [
        PASSTHROUGH,
        METERED,
        METERED_QUIET,
        PROXYING,
        RUST_METERED,
        RUST_PASSTHROUGH,
    ];
    let baselines: Vec<_> = baselines
        .into_iter()
        .filter(|(name, ..)| !settings.cold_only || compared.contains(name))
        .collect();
    for (name, slug, dir, var) in &baselines {
        let w = baseline(slug, dir, "", var)?;
        let mut t = baseline_target(name, &w);
        // Their streams are the passthrough's.
        t.streams = ![
            METERED,
            METERED_QUIET,
            PROXYING,
            RUST_METERED,
            RUST_PASSTHROUGH,
        ]
        .contains(name);
        targets.push(t);
        workers.push(w);
    }

    let users = settings
        .concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(RATE_CONCURRENCY);
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
    let against = match &settings.against {
        Some(build) => Some(against_build(build)?),
        None => None,
    };
    let no_coalesce: &[(&str, &str)] = &[("STREAM_COALESCE_MS", "0")];
    let no_resume: &[(&str, &str)] = &[("RESUME_WINDOW_SECONDS", "0")];
    let our_workers: Vec<_> = [
        (OURS, "4096", "true", &[][..], None),
        (OURS_NO_CACHE, "0", "true", &[], None),
        (OURS_NO_LIMITS, "4096", "false", &[], None),
        (OURS_NO_COALESCE, "4096", "true", no_coalesce, None),
        (OURS_NO_RESUME, "4096", "true", no_resume, None),
    ]
    .into_iter()
    .chain(against.into_iter().flat_map(|dir| {
        // Both ways: the limiter's round trip is the noisier part of a request.
        [
            (OURS_AGAINST, "4096", "true", &[][..], Some(dir.clone())),
            (OURS_AGAINST_NO_LIMITS, "4096", "false", &[][..], Some(dir)),
        ]
    }))
    .filter(|(name, ..)| {
        !settings.cold_only
            || [OURS, OURS_NO_LIMITS, OURS_AGAINST, OURS_AGAINST_NO_LIMITS].contains(name)
    })
    .collect();
    let our_target = |name, w: &Miniflare| {
        Target::new(name, &w.api_base(), tokens.clone(), "bench").served_by(w)
    };
    for (i, (name, cache, limits, vars, dir)) in our_workers.iter().cloned().enumerate() {
        let w = ours(&format!("bench-{i}"), cache, limits, vars, dir)?;
        let mut t = our_target(name, &w);
        // The token cache's cost is a per-request one: the JSON table shows it. Coalescing and
        // resumable streams are a stream's only, but those Workers are measured on JSON too
        // (the same path as ours: their rows show the run's noise), so that every Worker in
        // the stream tables comes to them with the same history (requests served, code V8 has
        // compiled and optimized). Warmed but without it, an A/A run (the streams-only Worker
        // set as ours) still read it 13% dearer per chunk back to back; with it, within noise.
        t.streams = name != OURS_NO_CACHE;
        targets.push(t);
        workers.push(w);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(measure_targets(settings, &targets, calibration));
    workers.into_iter().for_each(stop);
    let mut report = result?;
    // The other cold-start samples: each Worker started afresh, measured alone, stopped.
    let mut samples = vec![std::mem::take(&mut report.cold)];
    for round in 1..settings.cold_starts {
        let suffix = format!("-cold-{round}");
        let mut rows = Vec::new();
        for (name, slug, dir, var) in &baselines {
            let w = baseline(slug, dir, &suffix, var)?;
            rows.extend(rt.block_on(cold_alone(baseline_target(name, &w), settings.cold_stream))?);
            stop(w);
        }
        for (i, (name, cache, limits, vars, dir)) in our_workers.iter().cloned().enumerate() {
            let w = ours(&format!("bench-{i}{suffix}"), cache, limits, vars, dir)?;
            rows.extend(rt.block_on(cold_alone(our_target(name, &w), settings.cold_stream))?);
            stop(w);
        }
        samples.push(rows);
    }
    report.cold = median_cold(&samples);
    report.cold_starts = samples.len();
    drop(provider);
    Ok(report)
}

/// Stops a Worker, saying so when it left processes behind.
fn stop(w: Miniflare) {
    if !w.stop() {
        eprintln!("bench: a Worker's workerd was still running at the end");
    }
}

/// One fresh Worker's cold start.
async fn cold_alone(t: Target, stream: bool) -> Result<Vec<ColdRow>> {
    let http = reqwest::Client::builder().build()?;
    cold_starts(&http, std::slice::from_ref(&t), stream).await
}

/// The median of `values` (the upper one of an even count; at least one value).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each Worker's cold start as the median of its samples, field by field.
fn median_cold(samples: &[Vec<ColdRow>]) -> Vec<ColdRow> {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|row| {
            let of: Vec<&ColdRow> = samples
                .iter()
                .filter_map(|rows| rows.iter().find(|r| r.path == row.path))
                .collect();
            ColdRow {
                path: row.path,
                startup_cpu_ms: median(of.iter().map(|r| r.startup_cpu_ms)),
                requests: std::array::from_fn(|i| {
                    let samples: Vec<Timed> = of.iter().map(|r| r.requests[i]).collect();
                    Timed::median(&samples)
                }),
            }
        })
        .collect()
}

/// Finds how many rounds of `bench/calibrate/spin.mjs` cost `ms` of CPU under node (the same
/// V8 as workerd's), and what they cost measured again.
fn calibrate(ms: f64) -> Result<Calibration> {
    let spin = workspace_root().join("bench/calibrate/spin.mjs");
    let script = format!(
        r#"const {{ spin }} = await import({url});
const cost = (rounds, times) => {{
  const t = process.cpuUsage();
  let s = 0;
  for (let i = 0; i < times; i++) s ^= spin(rounds);
  const d = process.cpuUsage(t);
  if (s === 1) console.error("spin");
  return (d.user + d.system) / 1000 / times;
}};
cost(100000, 100);
const guess = Math.max(1, Math.round(1000000 * {ms} / cost(1000000, 20)));
console.log(guess, cost(guess, Math.ceil(400 / {ms})));"#,
        url = json!(format!("file://{}", spin.display())),
    );
    let out = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .output()
        .context("running node to calibrate")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    match (
        parts.next().and_then(|r| r.parse().ok()),
        parts.next().and_then(|m| m.parse().ok()),
    ) {
        (Some(rounds), Some(ms)) if out.status.success() => Ok(Calibration {
            ms,
            workerd_ms: None,
            rounds,
        }),
        _ => bail!(
            "calibrating under node failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The `--against` build, checked to be one.
fn against_build(build: &Path) -> Result<PathBuf> {
    if !build.join("worker").join("shim.mjs").exists() || !build.join("index_bg.wasm").exists() {
        bail!(
            "--against {}: not a Worker build (a copy of worker/build, with worker/shim.mjs)",
            build.display()
        );
    }
    Ok(build.to_path_buf())
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
    /// Where its runtime is asked to start another isolate, if it has one.
    new_isolate: Option<String>,
    /// Whether it is measured with JSON requests, and with streams.
    json: bool,
    streams: bool,
}

impl Target {
    fn new(name: &'static str, api_base: &str, tokens: Vec<String>, model: &'static str) -> Self {
        Target {
            name,
            url: format!("{api_base}/chat/completions"),
            tokens: Arc::new(tokens),
            model,
            runtime: Vec::new(),
            new_isolate: None,
            json: true,
            streams: true,
        }
    }

    /// Measures the CPU of the workerd serving it.
    fn served_by(mut self, worker: &Miniflare) -> Self {
        self.runtime = worker.runtime();
        self.new_isolate = Some(worker.new_isolate_url());
        self
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
        let post = || {
            http.post(&self.url)
                .header("content-type", "application/json")
                .bearer_auth(token)
                .body(body.to_owned())
                .send()
        };
        let mut started = Instant::now();
        // A pooled connection the runtime closed as it was reused fails before anything was
        // sent: that one request goes again, on a new connection, timed from there.
        let mut resp = match post().await {
            Ok(resp) => resp,
            Err(e) if e.is_request() || e.is_connect() => {
                started = Instant::now();
                post()
                    .await
                    .with_context(|| format!("{}: sending (twice)", self.name))?
            }
            Err(e) => return Err(e).with_context(|| format!("{}: sending", self.name)),
        };
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

/// A prompt the fake provider answers with `chunks` content chunks, each `spacing_ms` after the
/// last (0: back to back): it echoes `echo:` and then each word, the fault marker included.
fn stream_prompt(chunks: usize, spacing_ms: usize) -> String {
    if spacing_ms == 0 {
        vec!["word"; chunks - 1].join(" ")
    } else {
        format!(
            "fault:slow={spacing_ms} {}",
            vec!["word"; chunks - 2].join(" ")
        )
    }
}

/// What the calibration Worker's per-request work costs under its workerd: the CPU of requests
/// that do it [`SPIN_TIMES`] times, less that of requests that do nothing (`/healthz`), per
/// time. Each such request spends tens of ms on the work alone, so its own cost and the clock
/// ticks of /proc hardly count.
async fn spin_cost(http: &reqwest::Client, target: &Target) -> Result<f64> {
    let base = target
        .url
        .strip_suffix("/v1/chat/completions")
        .context("the calibration Worker's address")?;
    let get = |path: String| async move {
        let resp = http.get(path).send().await?;
        anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
        resp.bytes().await?;
        anyhow::Ok(())
    };
    for _ in 0..5 {
        get(format!("{base}/spin?times=5")).await?;
    }
    let (mut spun, mut idle) = (Duration::ZERO, Duration::ZERO);
    let rounds = 20;
    for _ in 0..rounds {
        let before = processes_cpu(&target.runtime);
        get(format!("{base}/spin?times={SPIN_TIMES}")).await?;
        let middle = processes_cpu(&target.runtime);
        get(format!("{base}/healthz")).await?;
        idle += processes_cpu(&target.runtime).saturating_sub(middle);
        spun += middle.saturating_sub(before);
    }
    Ok(spun.saturating_sub(idle).as_secs_f64() * 1000.0 / (rounds * SPIN_TIMES) as f64)
}

/// Each Worker's start-up CPU and its first two requests, before anything else reached it
/// (streams when `stream`).
async fn cold_starts(
    http: &reqwest::Client,
    targets: &[Target],
    stream: bool,
) -> Result<Vec<ColdRow>> {
    let mut rows = Vec::new();
    for t in targets.iter().filter(|t| t.json && !t.runtime.is_empty()) {
        let startup = processes_cpu(&t.runtime);
        let body = t.body("hello there", stream);
        let mut requests = [Timed::default(); 3];
        for (sender, slot) in requests.iter_mut().enumerate() {
            if sender == 2 {
                let url = t
                    .new_isolate
                    .as_deref()
                    .context("a Worker without its runtime")?;
                new_isolate(http, url).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            *slot = timed_request(http, t, &body, stream, sender).await?;
        }
        rows.push(ColdRow {
            path: t.name,
            startup_cpu_ms: startup.as_secs_f64() * 1000.0,
            requests,
        });
    }
    Ok(rows)
}

/// Each warm Worker's request after a new isolate in its runtime, and the request after that.
async fn flushed(http: &reqwest::Client, targets: &[&Target]) -> Result<Vec<FlushRow>> {
    let mut rows = Vec::new();
    for t in targets {
        let Some(url) = t.new_isolate.as_deref() else {
            continue;
        };
        let body = t.body("hello there", false);
        let mut rounds = Vec::new();
        for _ in 0..FLUSH_ROUNDS {
            new_isolate(http, url).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let after = timed_request(http, t, &body, false, 0).await?;
            let next = timed_request(http, t, &body, false, 0).await?;
            rounds.push((after, next));
        }
        let (after, next): (Vec<Timed>, Vec<Timed>) = rounds.into_iter().unzip();
        rows.push(FlushRow {
            path: t.name,
            after: Timed::median(&after),
            next: Timed::median(&next),
        });
    }
    Ok(rows)
}

/// One request from `sender` (a stream's when `stream`, read to its end), timed, with the CPU
/// its runtime's threads spent meanwhile.
async fn timed_request(
    http: &reqwest::Client,
    t: &Target,
    body: &str,
    stream: bool,
    sender: usize,
) -> Result<Timed> {
    let (main, others) = threads_cpu(&t.runtime);
    let timing = t.send(http, body, stream, sender).await?;
    // The runtime's threads settle their accounting as they sleep again.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (main_after, others_after) = threads_cpu(&t.runtime);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Timed {
        ms: ms(timing.total),
        cpu_ms: ms(main_after.saturating_sub(main)),
        other_cpu_ms: ms(others_after.saturating_sub(others)),
    })
}

/// Has the Worker's runtime start another isolate (`miniflare.mjs`'s spawner), and waits until
/// it has served a request.
async fn new_isolate(http: &reqwest::Client, url: &str) -> Result<()> {
    let answer = http
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .context("asking the runtime for a new isolate")?;
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the runtime started no new isolate ({status}): {text}");
    }
    Ok(())
}

async fn measure_targets(
    settings: &Settings,
    targets: &[Target],
    calibration: Calibration,
) -> Result<Report> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut report = Report {
        requests: settings.requests,
        // Before anything else reaches the Workers.
        cold: cold_starts(&http, targets, settings.cold_stream).await?,
        cold_starts: 1,
        cold_stream: settings.cold_stream,
        latency: Vec::new(),
        calibration,
        streams: Vec::new(),
        rate_streams: settings.requests.max(50),
        rates: Vec::new(),
        flushed: Vec::new(),
    };
    if settings.cold_only {
        return Ok(report);
    }
    if let Some(t) = targets.iter().find(|t| t.name == CALIBRATION) {
        report.calibration.workerd_ms = Some(spin_cost(&http, t).await.context("calibrating")?);
    }
    let all: Vec<&Target> = targets.iter().filter(|t| t.json).collect();
    let streaming: Vec<&Target> = targets.iter().filter(|t| t.streams).collect();
    let bodies = |on: &[&Target], prompt: &str, stream: bool| -> Vec<String> {
        on.iter().map(|t| t.body(prompt, stream)).collect()
    };
    let short = bodies(&all, "hello there", false);

    // Warm every Worker measured, streams-only ones too: connections, isolates, key parses,
    // each user's limiter and (where it is on) each token's cache entry, and the stream path's
    // code. (The streams-only Workers went unwarmed before: in A/A runs, the streams-only
    // Worker set as ours read 22-47% more CPU per chunk back to back than ours, with a p99 of
    // over 4 s against 1 s: what was taken for the cost of turning resumable streams off.)
    let users = settings
        .concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(RATE_CONCURRENCY);
    let warm_stream = stream_prompt(RATE_CHUNKS, 0);
    for t in targets {
        for (prompt, stream) in [("hello there", false), (warm_stream.as_str(), true)] {
            if (stream && (!t.streams || settings.json_only)) || (!stream && !t.json) {
                continue;
            }
            let body = t.body(prompt, stream);
            for sender in 0..users.max(20) {
                t.send(&http, &body, stream, sender).await?;
            }
        }
    }

    for &concurrency in &settings.concurrency {
        let samples =
            interleaved(&http, &all, &short, settings.requests, concurrency, false).await?;
        for (t, s) in all.iter().zip(&samples) {
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
    report.flushed = flushed(&http, &all).await?;
    if settings.json_only {
        return Ok(report);
    }
    for (shape, chunks, spacing, concurrency) in [
        ("back to back".to_owned(), settings.burst_chunks, 0, 1),
        (
            format!("{} ms apart", settings.spacing_ms),
            settings.spaced_chunks,
            settings.spacing_ms,
            SPACED_CONCURRENCY,
        ),
    ] {
        let bodies = bodies(&streaming, &stream_prompt(chunks, spacing), true);
        let n = settings.streams();
        let samples = interleaved(&http, &streaming, &bodies, n, concurrency, true).await?;
        let rows = streaming
            .iter()
            .zip(&samples)
            .map(|(t, s)| {
                let (f, a) = (s.stats(|t| t.first_byte), s.stats(|t| t.total));
                StreamRow {
                    path: t.name,
                    ttfb_p50: f.p50,
                    total_p50: a.p50,
                    total_p99: a.p99,
                    cpu_ms: s.cpu_per_request(),
                }
            })
            .collect();
        report.streams.push(StreamTable {
            shape,
            chunks,
            streams: n,
            concurrency,
            rows,
        });
    }
    let bodies = bodies(&streaming, &stream_prompt(RATE_CHUNKS, 0), true);
    let samples = interleaved(
        &http,
        &streaming,
        &bodies,
        report.rate_streams,
        RATE_CONCURRENCY,
        true,
    )
    .await?;
    report.rates = streaming
        .iter()
        .zip(&samples)
        .map(|(t, s)| RateRow {
            path: t.name,
            rate: s.rate,
            cpu_ms: s.cpu_per_request(),
        })
        .collect();
    Ok(report)
}

/// Prints the report (the tables of [`markdown`]).
pub fn print(report: &Report) {
    match markdown(report) {
        Ok(md) => println!("\n{md}"),
        Err(e) => eprintln!("bench: {e}"),
    }
}

/// `ours / base` as `x0.00`, or `-` when either is missing.
fn ratio(ours: Option<f64>, base: Option<f64>) -> String {
    match (ours, base) {
        (Some(o), Some(b)) if b > 0.0 => format!("x{:.2}", o / b),
        _ => "-".into(),
    }
}

/// The report as Markdown tables, with our Worker against its baselines.
pub fn markdown(report: &Report) -> Result<String> {
    use std::fmt::Write as _;
    let mut md = String::new();
    if report.latency.is_empty() && report.streams.is_empty() && report.rates.is_empty() {
        // A cold-only run.
        cold_table(&mut md, report)?;
        return Ok(md);
    }
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
    let mut calibration = Vec::new();
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
        for (label, name, base_label, base) in [
            ("ours", OURS, "passthrough", PASSTHROUGH),
            (
                "ours, limiter off,",
                OURS_NO_LIMITS,
                "passthrough",
                PASSTHROUGH,
            ),
            ("metering JS", METERED, "passthrough", PASSTHROUGH),
            LOG_LINE_PAIR,
            ("ours, limiter off,", OURS_NO_LIMITS, "metering JS", METERED),
            ("proxying JS", PROXYING, "passthrough", PASSTHROUGH),
            (
                "ours, limiter off,",
                OURS_NO_LIMITS,
                "proxying JS",
                PROXYING,
            ),
            (
                "passthrough Rust",
                RUST_PASSTHROUGH,
                "passthrough",
                PASSTHROUGH,
            ),
            ("metering Rust", RUST_METERED, "metering JS", METERED),
            (
                "ours, limiter off,",
                OURS_NO_LIMITS,
                "metering Rust",
                RUST_METERED,
            ),
            ("calibration", CALIBRATION, "passthrough", PASSTHROUGH),
        ] {
            let (Some(o), Some(base)) = (find(name), find(base)) else {
                continue;
            };
            writeln!(
                md,
                "| *{label} vs {base_label}* | {c} | {:+.2} | {:+.2} | {:+.2} | {} | {} |",
                o.p50 - base.p50,
                o.p90 - base.p90,
                o.p99 - base.p99,
                ratio(Some(o.rate), Some(base.rate)),
                match (o.cpu_ms, base.cpu_ms) {
                    (Some(x), Some(y)) => format!("{:+.2}", x - y),
                    _ => "-".into(),
                }
            )?;
            if name == CALIBRATION {
                if let (Some(x), Some(y)) = (o.cpu_ms, base.cpu_ms) {
                    calibration.push(format!("{:+.2} ms at concurrency {c}", x - y));
                }
            }
        }
    }
    let c = &report.calibration;
    writeln!(
        md,
        "\nCalibration: the calibration Worker does {} rounds of `bench/calibrate/spin.mjs` per \
         request beyond the passthrough: {} ms of CPU under this workerd (requests doing it {SPIN_TIMES} \
         times), {:.2} ms under node; read here per request: {}.",
        c.rounds,
        c.workerd_ms.map_or("-".to_owned(), |ms| format!("{ms:.2}")),
        c.ms,
        if calibration.is_empty() {
            "-".to_owned()
        } else {
            calibration.join(", ")
        }
    )?;
    if report.latency.iter().any(|r| r.path == METERED_QUIET) {
        writeln!(md, "\n{LOCAL_LOG_NOTE}")?;
    }

    for table in &report.streams {
        writeln!(
            md,
            "\n### Streams of {} content chunks, {} ({} per path, concurrency {})\n",
            table.chunks, table.shape, table.streams, table.concurrency
        )?;
        writeln!(
            md,
            "| path | TTFB p50 ms | total p50 ms | total p99 ms | CPU ms/stream | CPU µs/chunk | vs TransformStream |\n|---|---:|---:|---:|---:|---:|---:|"
        )?;
        let transform = table
            .rows
            .iter()
            .find(|r| r.path == TRANSFORM)
            .and_then(|r| r.cpu_ms);
        for r in &table.rows {
            writeln!(
                md,
                "| {} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
                r.path,
                r.ttfb_p50,
                r.total_p50,
                r.total_p99,
                cpu(r.cpu_ms),
                r.cpu_ms.map_or("-".into(), |ms| format!(
                    "{:.0}",
                    ms * 1000.0 / table.chunks as f64
                )),
                ratio(r.cpu_ms, transform)
            )?;
        }
    }

    // A JSON-only run has no stream sections.
    if !report.rates.is_empty() {
        writeln!(
            md,
            "\n### Streams per second ({} streams of {RATE_CHUNKS} content chunks per path, concurrency {RATE_CONCURRENCY})\n",
            report.rate_streams
        )?;
        writeln!(
            md,
            "| path | streams/s | CPU ms/stream | streams/s vs TransformStream |\n|---|---:|---:|---:|"
        )?;
        let transform = report
            .rates
            .iter()
            .find(|r| r.path == TRANSFORM)
            .map(|r| r.rate);
        for r in &report.rates {
            writeln!(
                md,
                "| {} | {:.0} | {} | {} |",
                r.path,
                r.rate,
                cpu(r.cpu_ms),
                ratio(Some(r.rate), transform)
            )?;
        }
    }
    flush_table(&mut md, &report.flushed, report.requests)?;
    cold_table(&mut md, report)?;
    Ok(md)
}

/// The warm Workers' requests after a new isolate in their runtime.
fn flush_table(md: &mut String, rows: &[FlushRow], requests: usize) -> Result<()> {
    use std::fmt::Write as _;
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "\n### A warm Worker after another isolate starts in its runtime (medians of \
         {FLUSH_ROUNDS} rounds)\n\n\
         After the latency runs ({requests} requests per path and concurrency), each round has \
         the runtime start a new isolate (V8 then drops the baseline code of every wasm module \
         in the process, as in production whenever another Worker starts on the machine), then \
         sends two requests: ms, and the CPU ms of the runtime's main thread + its other \
         threads'.\n"
    )?;
    writeln!(
        md,
        "| path | after the new isolate, ms | its CPU ms, main + other | the next request, ms | its CPU ms, main + other |\n|---|---:|---:|---:|---:|"
    )?;
    for r in rows {
        writeln!(
            md,
            "| {} | {:.2} | {:.2} + {:.2} | {:.2} | {:.2} + {:.2} |",
            r.path,
            r.after.ms,
            r.after.cpu_ms,
            r.after.other_cpu_ms,
            r.next.ms,
            r.next.cpu_ms,
            r.next.other_cpu_ms
        )?;
    }
    Ok(())
}

/// The cold-start table: each Worker's medians over the report's fresh starts, beside the
/// passthrough's.
fn cold_table(md: &mut String, report: &Report) -> Result<()> {
    use std::fmt::Write as _;
    let (rows, starts, stream) = (&report.cold, report.cold_starts, report.cold_stream);
    if rows.is_empty() {
        return Ok(());
    }
    let (title, kind) = if stream {
        (
            ", each request a stream",
            "streamed (its 3 content chunks relayed as events, read to the end; the metering \
             and proxying baselines hand a stream's answer through unread, as the passthrough \
             does)",
        )
    } else {
        ("", "answered in JSON")
    };
    writeln!(
        md,
        "\n### Cold start (each Worker's runtime as started; medians of {starts} starts \
         each{title})\n\n\
         Start-up CPU: the runtime process's CPU from its spawn to the first request (workerd's \
         own start, the same for all, and loading the Worker). Requests, {kind}: the first chat \
         request, the first the Worker sees; the next (another user); and a third (another user) after \
         another isolate started in the same runtime, which makes V8 drop the baseline code of \
         every wasm module in the process, as it does in production whenever another Worker \
         starts on the machine: ms, and the CPU ms of the runtime's main thread, where the \
         isolate runs, + its other threads' (V8's compilers, GC helpers), from each thread's \
         schedstat.\n"
    )?;
    writeln!(
        md,
        "| path | start-up CPU ms | first request ms | its CPU ms, main + other | second request ms | its CPU ms, main + other | after a new isolate, ms | its CPU ms, main + other |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let cells = |requests: &[Timed; 3], sign: bool| -> String {
        requests
            .iter()
            .map(|t| {
                if sign {
                    format!(
                        " {:+.2} | {:+.2} + {:+.2} |",
                        t.ms, t.cpu_ms, t.other_cpu_ms
                    )
                } else {
                    format!(" {:.2} | {:.2} + {:.2} |", t.ms, t.cpu_ms, t.other_cpu_ms)
                }
            })
            .collect()
    };
    for r in rows {
        writeln!(
            md,
            "| {} | {:.0} |{}",
            r.path,
            r.startup_cpu_ms,
            cells(&r.requests, false)
        )?;
    }
    let find = |name: &str| rows.iter().find(|r| r.path == name);
    for (label, name, base_label, base) in [
        (
            "passthrough Rust",
            RUST_PASSTHROUGH,
            "passthrough",
            PASSTHROUGH,
        ),
        ("metering Rust", RUST_METERED, "passthrough", PASSTHROUGH),
        ("ours", OURS, "passthrough", PASSTHROUGH),
        (
            "ours, limiter off,",
            OURS_NO_LIMITS,
            "passthrough",
            PASSTHROUGH,
        ),
        LOG_LINE_PAIR,
    ] {
        let (Some(o), Some(base)) = (find(name), find(base)) else {
            continue;
        };
        let diff = std::array::from_fn(|i| o.requests[i].minus(base.requests[i]));
        writeln!(
            md,
            "| *{label} vs {base_label}* | {:+.0} |{}",
            o.startup_cpu_ms - base.startup_cpu_ms,
            cells(&diff, true)
        )?;
    }
    if let (Some(_), Some(_)) = (find(METERED), find(METERED_QUIET)) {
        writeln!(md, "\n{LOCAL_LOG_NOTE}")?;
    }
    Ok(())
}

/// The comparison row of the JS metering Worker and its copy without the log line: label, row,
/// base label, base row.
const LOG_LINE_PAIR: (&str, &str, &str, &str) = (
    "metering JS",
    METERED,
    "the same without its log line",
    METERED_QUIET,
);

/// What the two JS metering rows' difference is (under the cold table and the latency table).
const LOCAL_LOG_NOTE: &str = "The JS metering Worker and its copy without the log line differ by \
    one `console.log` per request. workerd's command line writes each log line to stdout through \
    node:util's inspect, a module it loads on an isolate's first log line; Cloudflare's runtime \
    hands log lines to Workers Logs without that formatting (workerd's `Worker::handleLog`). \
    Every Worker here that logs pays it, ours and both metering baselines, once per request, and \
    more on an isolate's first: locally only.";

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

/// Sends `total` requests to each target, in rounds of one batch per target (in the order of
/// [`position`]; the batches of [`batches`]).
async fn interleaved(
    http: &reqwest::Client,
    targets: &[&Target],
    bodies: &[String],
    total: usize,
    concurrency: usize,
    stream: bool,
) -> Result<Vec<Samples>> {
    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    for (round, n) in batches(total, (concurrency * 4).max(25))
        .into_iter()
        .enumerate()
    {
        for k in 0..targets.len() {
            let i = position(k, round, targets.len());
            let runtime = &targets[i].runtime;
            let cpu_before = (!runtime.is_empty()).then(|| processes_cpu(runtime));
            let started = Instant::now();
            let timings = run_batch(http, targets[i], &bodies[i], n, concurrency, stream).await?;
            samples[i].busy += started.elapsed();
            if let Some(before) = cpu_before {
                let used = processes_cpu(&targets[i].runtime).saturating_sub(before);
                *samples[i].cpu.get_or_insert(Duration::ZERO) += used;
            }
            samples[i].timings.extend(timings);
        }
    }
    for s in &mut samples {
        s.rate = s.timings.len() as f64 / s.busy.as_secs_f64().max(f64::MIN_POSITIVE);
    }
    Ok(samples)
}

/// How many requests each round sends to each target, `total` in all: an even number of rounds,
/// at least four (when `total` allows), of at most `most` each, as equal as can be. With
/// [`position`], every target then gets the same mean place, within a request (rounds of
/// `most` and a short last one, as before, did not: 30 streams went in rounds of 25 and 5).
fn batches(total: usize, most: usize) -> Vec<usize> {
    let mut rounds = total.div_ceil(most.max(1)).max(4).min(total);
    if rounds % 2 == 1 && rounds < total {
        rounds += 1;
    }
    let (each, extra) = (total / rounds.max(1), total % rounds.max(1));
    (0..rounds).map(|r| each + usize::from(r < extra)).collect()
}

/// The target measured `k`-th in round `round` of `len`: front to back in even rounds, back
/// to front in odd ones, so that any two rounds in a row give every target the same mean
/// place. (A rotation by one per round, as before, balances only over `len` rounds; the stream
/// phases have two or three, and the targets listed last read higher in runs where they did
/// less work.)
fn position(k: usize, round: usize, len: usize) -> usize {
    if round.is_multiple_of(2) {
        k
    } else {
        len - 1 - k
    }
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

/// CPU time the live threads of processes `pids` ran so far, from
/// `/proc/<pid>/task/<tid>/schedstat` (ns: finer than [`processes_cpu`]'s clock ticks, for a
/// single request, but blind to threads that ended): the main threads' (where workerd runs its
/// isolates) and the other threads' (V8's compilers and GC helpers, among others).
fn threads_cpu(pids: &[u32]) -> (Duration, Duration) {
    let (mut main, mut others) = (0u64, 0u64);
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            if task.file_name().to_str() == Some(pid.to_string().as_str()) {
                main += ns;
            } else {
                others += ns;
            }
        }
    }
    (Duration::from_nanos(main), Duration::from_nanos(others))
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

#[cfg(test)]
mod tests {
    use super::{
        batches, markdown, median_cold, position, Calibration, ColdRow, FlushRow, LatencyRow,
        Report, Timed, CALIBRATION, LOCAL_LOG_NOTE, METERED, METERED_QUIET, OURS, OURS_NO_LIMITS,
        PASSTHROUGH, RUST_METERED, RUST_PASSTHROUGH,
    };

    fn cold(path: &'static str, ms: f64) -> ColdRow {
        ColdRow {
            path,
            startup_cpu_ms: ms,
            requests: [
                Timed {
                    ms,
                    cpu_ms: ms,
                    other_cpu_ms: -ms,
                },
                Timed {
                    ms,
                    cpu_ms: ms,
                    other_cpu_ms: ms,
                },
                Timed {
                    ms: 2.0 * ms,
                    cpu_ms: 3.0 * ms,
                    other_cpu_ms: ms,
                },
            ],
        }
    }

    #[test]
    fn cold_starts_are_medians_per_worker_and_field() {
        let samples = vec![
            vec![cold("a", 1.0), cold("b", 10.0)],
            vec![cold("b", 30.0), cold("a", 9.0)],
            vec![cold("a", 5.0), cold("b", 20.0)],
        ];
        let rows = median_cold(&samples);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].path, rows[0].requests[0].cpu_ms), ("a", 5.0));
        assert_eq!(rows[0].requests[0].other_cpu_ms, -5.0);
        assert_eq!((rows[1].path, rows[1].requests[1].ms), ("b", 20.0));
        assert_eq!(rows[1].requests[2].cpu_ms, 60.0);
        assert!(median_cold(&[]).is_empty());
    }

    /// A cold-only run's report: `cold` rows of `starts` starts each, nothing else.
    fn cold_only(cold: Vec<ColdRow>, starts: usize) -> Report {
        Report {
            requests: 20,
            cold,
            cold_starts: starts,
            cold_stream: false,
            latency: Vec::new(),
            calibration: Calibration {
                ms: 1.0,
                workerd_ms: None,
                rounds: 1,
            },
            streams: Vec::new(),
            rate_streams: 0,
            rates: Vec::new(),
            flushed: Vec::new(),
        }
    }

    #[test]
    fn a_cold_only_report_is_its_cold_table_alone() {
        let report = cold_only(
            vec![
                cold(PASSTHROUGH, 2.0),
                cold(OURS, 9.0),
                cold(OURS_NO_LIMITS, 5.0),
            ],
            12,
        );
        let md = markdown(&report).unwrap();
        assert!(md.starts_with("\n### Cold start"), "{md}");
        assert!(md.contains("medians of 12 starts each"), "{md}");
        assert!(md.contains("| *ours vs passthrough* | +7 |"), "{md}");
        // The request after a new isolate: 2 and 3 times the others.
        assert!(md.contains("| +14.00 | +21.00 + +7.00 |\n"), "{md}");
        for other in ["Latency", "Calibration", "Streams", "without its log line"] {
            assert!(!md.contains(other), "{other} in {md}");
        }
        assert!(md.contains("Requests, answered in JSON:"), "{md}");
    }

    #[test]
    fn a_streamed_cold_start_says_so() {
        let mut report = cold_only(vec![cold(PASSTHROUGH, 2.0), cold(OURS, 9.0)], 5);
        report.cold_stream = true;
        let md = markdown(&report).unwrap();
        assert!(
            md.contains("medians of 5 starts each, each request a stream)"),
            "{md}"
        );
        assert!(md.contains("Requests, streamed ("), "{md}");
    }

    #[test]
    fn the_metering_pair_shows_what_a_log_line_costs_locally() {
        let report = cold_only(
            vec![
                cold(PASSTHROUGH, 2.0),
                cold(METERED, 4.0),
                cold(METERED_QUIET, 2.5),
            ],
            3,
        );
        let md = markdown(&report).unwrap();
        // Start-up 4 - 2.5 CPU ms; the first request 4 - 2.5 ms and CPU ms (other: the negative).
        let row = "| *metering JS vs the same without its log line* | +2 | +1.50 | +1.50 + -1.50 |";
        assert!(md.contains(row), "{md}");
        assert!(md.contains(LOCAL_LOG_NOTE), "{md}");
    }

    #[test]
    fn a_json_only_report_has_no_stream_sections() {
        let row = |path, p50, cpu_ms| LatencyRow {
            path,
            concurrency: 1,
            p50,
            p90: p50,
            p99: p50,
            rate: 1000.0 / p50,
            cpu_ms: Some(cpu_ms),
        };
        let report = Report {
            requests: 20,
            cold: vec![
                cold(PASSTHROUGH, 2.0),
                cold(RUST_METERED, 4.0),
                cold(RUST_PASSTHROUGH, 3.0),
                cold(OURS, 9.0),
            ],
            cold_starts: 1,
            cold_stream: false,
            latency: vec![
                row(PASSTHROUGH, 2.0, 1.0),
                row(METERED, 3.0, 1.25),
                row(RUST_METERED, 4.0, 1.5),
                row(RUST_PASSTHROUGH, 2.5, 1.2),
                row(CALIBRATION, 4.0, 2.0),
                row(OURS, 6.0, 3.0),
                row(OURS_NO_LIMITS, 5.0, 2.0),
            ],
            calibration: Calibration {
                ms: 1.0,
                workerd_ms: Some(1.0),
                rounds: 1,
            },
            streams: Vec::new(),
            rate_streams: 50,
            rates: Vec::new(),
            flushed: vec![FlushRow {
                path: OURS,
                after: cold(OURS, 9.0).requests[2],
                next: cold(OURS, 1.5).requests[1],
            }],
        };
        let md = markdown(&report).unwrap();
        for part in [
            "### Latency",
            "### A warm Worker after another isolate starts in its runtime (medians of 5 rounds)",
            "| our Worker | 18.00 | 27.00 + 9.00 | 1.50 | 1.50 + 1.50 |\n",
            "| *ours vs passthrough* | 1 | +4.00 |",
            // The Rust baseline beside the JS one, and ours beside it.
            "| *metering Rust vs metering JS* | 1 | +1.00 | +1.00 | +1.00 | x0.75 | +0.25 |",
            "| *ours, limiter off, vs metering Rust* | 1 | +1.00 | +1.00 | +1.00 | x0.80 | +0.50 |",
            "| *metering Rust vs passthrough* | +2 |",
            // The least a workers-rs Worker costs, beside the least a JS one does.
            "| *passthrough Rust vs passthrough* | 1 | +0.50 | +0.50 | +0.50 | x0.80 | +0.20 |",
            "| *passthrough Rust vs passthrough* | +1 |",
            "Calibration:",
            "### Cold start",
        ] {
            assert!(md.contains(part), "{part} missing from {md}");
        }
        assert!(!md.contains("Streams"), "{md}");
    }

    #[test]
    fn rounds_are_even_in_number_and_size() {
        for (total, most) in [
            (30, 25),
            (200, 64),
            (500, 25),
            (50, 64),
            (7, 25),
            (3, 25),
            (1, 4),
        ] {
            let b = batches(total, most);
            assert_eq!(b.iter().sum::<usize>(), total, "{total}, {most}: {b:?}");
            assert!(b.iter().all(|&n| (1..=most).contains(&n)), "{b:?}");
            let (lo, hi) = (b.iter().min().unwrap(), b.iter().max().unwrap());
            assert!(hi - lo <= 1, "{b:?}");
            assert!(b.len() >= 4.min(total), "{b:?}");
            assert!(b.len().is_multiple_of(2) || b.len() == total, "{b:?}");
        }
        assert_eq!(batches(30, 25), [8, 8, 7, 7]);
    }

    #[test]
    fn two_rounds_in_a_row_give_every_target_the_same_mean_place() {
        for len in 1..9 {
            for first in 0..3 {
                let mut places = vec![0; len];
                for round in first..first + 2 {
                    let mut seen = vec![false; len];
                    for k in 0..len {
                        let i = position(k, round, len);
                        assert!(!seen[i], "round {round} measures {i} twice");
                        seen[i] = true;
                        places[i] += k;
                    }
                }
                assert!(places.iter().all(|p| *p == len - 1), "{len}: {places:?}");
            }
        }
    }
}
