//! `cargo xtask soak --minutes N [--users 32]`: the Worker under steady streaming load,
//! watching workerd's memory.
//!
//! The Worker runs under workerd (`wrangler dev`) in front of the fake provider, with a plan no
//! user reaches the limits of (the limiter still runs: one Durable Object per user). `--users`
//! tasks, each with its own token (a distinct `sub`), loop streaming requests for N minutes,
//! alternating an alias routed to OpenAI and one routed to Anthropic (translated). Each answer
//! is read to the end: status 200, the echo of the request's own nonce and every word asked
//! for, ending with `data: [DONE]`.
//!
//! # Two workerd processes
//!
//! `wrangler dev` runs two workerd processes in its process group: the Worker's runtime, and a
//! dev proxy on the public port (wrangler's ProxyWorker, one Durable Object that every request
//! goes through, plus its InspectorProxyWorker, which relays every DevTools event of the
//! runtime, `Network.dataReceived` for each upstream chunk included, to wrangler's Node
//! process). Neither exists in a deployment, and under this load the proxy grows past 1 GB and
//! resets connections. So by default the requests go straight to the runtime's own socket
//! (found through `/proc`: the runtime's listening port that answers `/healthz`), and the
//! verdict is on the runtime's memory; both processes' RSS are printed.
//!
//! Other ways to run it, to tell the Worker's costs from the tooling's:
//!
//! - `--via-wrangler`: through wrangler's dev proxy, as other tests do.
//! - `--miniflare`: the same bundle under miniflare alone (`xtask/src/miniflare.mjs`): one workerd,
//!   no DevTools inspector (which `wrangler dev` always attaches, with its Network domain on),
//!   no dev proxy.
//! - `--no-limits` (`LIMITS_ENABLED=false`: no Durable Object), `--no-stream` (complete
//!   answers).
//!
//! RSS is VmRSS from `/proc/<pid>/status`, sampled every few seconds. Printed: requests,
//! errors, requests/s, p50/p99 latency, the runtime's RSS after the warm-up, at the middle and
//! at the end, its growth, and the peak.
//!
//! # Garbage or kept memory
//!
//! Under steady load a local workerd's RSS climbs although nothing is kept: V8 runs only minor
//! GCs, never the major one that frees the native side of per-request and per-subrequest
//! objects (workerd issues 6824 and 6894; in production, isolate limits and eviction hide it).
//! So twice, after the warm-up and 15 s before the end (both under load; in a run too short
//! for that, halfway from the first to the end), the soak asks the Worker's isolate for a full
//! GC through the runtime's DevTools inspector (`soak/gc.mjs`, `HeapProfiler.collectGarbage`)
//! and reads RSS 2 s later. The verdict compares those two
//! readings: what survives a full GC is what the Worker keeps. When no inspector answers, it
//! compares the plain readings instead, and says so.
//!
//! Also printed: whether the runtime's RSS levelled off (its growth from the middle to the end
//! against the growth from the start to the middle). `--warm-up SECS` (default 180, at most half
//! the run) is the load before the start reading: the runtime's heap takes a few minutes to
//! reach its working size (from 20 s, a 10-minute run grew 172 -> 237 MB after full GCs and
//! then stayed flat; from 180 s, +0.0%).
//!
//! Fails (exit code 1) on any error, a panic in the Worker's log, or a growth of 10% or more.

mod backend;
mod load;
mod memory;
mod report;

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;
use storycad_e2e::{
    fake_provider::{FakeProvider, FakeProviderOptions},
    tokens::{self, DevKey},
};

use crate::build;
use backend::Backend;

const ISSUER: &str = "storycad-soak";
const AUDIENCE: &str = "storycad-soak";
/// The aliases the users alternate between.
const ALIASES: [&str; 2] = ["soak-openai", "soak-anthropic"];
/// Words of each prompt (the answer echoes them, one content chunk each).
const PROMPT_WORDS: usize = 40;
/// Growth of workerd's RSS (end vs after warm-up) at which the soak fails, in percent.
const MAX_GROWTH_PERCENT: f64 = 10.0;

/// `cargo xtask soak`'s options.
#[derive(clap::Args)]
pub struct Settings {
    /// Minutes of load (fractions allowed; at most a day).
    #[arg(long, default_value_t = 10.0, value_parser = minutes_in_a_day)]
    pub minutes: f64,
    /// Users, each with its own token (its own Durable Object).
    #[arg(long, default_value_t = 32,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub users: usize,
    /// Through wrangler's dev proxy instead of the runtime's own socket.
    #[arg(long, conflicts_with = "miniflare")]
    pub via_wrangler: bool,
    /// The same bundle under miniflare alone (no dev proxy, no DevTools client).
    #[arg(long)]
    pub miniflare: bool,
    /// LIMITS_ENABLED=false: no Durable Object.
    #[arg(long)]
    pub no_limits: bool,
    /// Complete answers instead of streams.
    #[arg(long)]
    pub no_stream: bool,
    /// Seconds of load before the first memory figure that counts (at most half the run).
    #[arg(long = "warm-up", value_name = "SECS", default_value = "180",
          value_parser = |s: &str| s.parse().map(Duration::from_secs))]
    pub warm_up: Duration,
}

/// Minutes above 0 and at most a day.
fn minutes_in_a_day(text: &str) -> Result<f64, String> {
    match crate::fuzz::positive_minutes(text)? {
        m if m <= 24.0 * 60.0 => Ok(m),
        _ => Err("at most a day (1440 minutes)".into()),
    }
}

pub fn run(settings: &Settings) -> Result<()> {
    build::worker(false)?;
    let provider = FakeProvider::start_with(FakeProviderOptions::default())?;
    let key = DevKey::generate()?;
    let plans = json!({"soak": {
        "models": ["*"], "requests_per_minute": 1_000_000, "tokens_per_day": 1_000_000_000_000u64,
        "max_output_tokens": 4096, "concurrent_streams": 1000
    }});
    let routes = json!({
        ALIASES[0]: ["openai:gpt-4o-mini"],
        ALIASES[1]: ["anthropic:claude-haiku-4-5"],
    });
    let vars: Vec<(&str, String)> = vec![
        ("JWT_PUBLIC_JWK", key.public_jwk().to_string()),
        ("JWT_ISSUER", ISSUER.into()),
        ("JWT_AUDIENCE", AUDIENCE.into()),
        ("ROUTES", routes.to_string()),
        ("PLANS", plans.to_string()),
        ("DEFAULT_PLAN", "soak".into()),
        ("CACHE_TTL_SECONDS", "0".into()),
        ("LIMITS_ENABLED", (!settings.no_limits).to_string()),
        ("OPENAI_BASE_URL", provider.openai_base_url()),
        ("ANTHROPIC_BASE_URL", provider.anthropic_base_url()),
    ];
    let secrets = [
        ("OPENAI_API_KEY", "soak-openai-key"),
        ("ANTHROPIC_API_KEY", "soak-anthropic-key"),
    ];
    let backend = Backend::start(settings, &vars, &secrets)?;
    eprintln!(
        "soak: Worker up; requests to {} ({}); log {}",
        backend.target,
        backend.what,
        backend.log.display()
    );
    let ttl = Duration::from_secs_f64(settings.minutes * 60.0) + Duration::from_secs(3600);
    let tokens: Vec<String> = (0..settings.users)
        .map(|i| {
            let mut claims = tokens::claims(ISSUER, AUDIENCE, &format!("soak-user-{i:03}"), ttl);
            claims["plan"] = json!("soak");
            key.mint(&claims)
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(load::drive(
        settings,
        &backend.target,
        backend.group,
        backend.gc.clone(),
        tokens,
    ));
    drop(rt);
    let panics = backend.panics();
    let log = backend.log.clone();
    backend.stop();
    drop(provider);
    let summary = report::report(settings, &result?)?;
    let mut failures = Vec::new();
    if summary.errors > 0 {
        failures.push(format!("{} requests failed", summary.errors));
    }
    if !panics.is_empty() {
        failures.push(format!(
            "the Worker's log ({}) shows {} panics or traps, first: {}",
            log.display(),
            panics.len(),
            panics[0]
        ));
    }
    if summary.growth_percent >= MAX_GROWTH_PERCENT {
        failures.push(format!(
            "the Worker runtime's RSS grew {:.1}% ({}; limit {MAX_GROWTH_PERCENT}%)",
            summary.growth_percent, summary.growth_basis
        ));
    }
    if failures.is_empty() {
        println!("\nsoak: PASS");
        Ok(())
    } else {
        bail!("soak failed: {}", failures.join("; "))
    }
}
