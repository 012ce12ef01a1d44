//! `cargo xtask bench cache`: what provider prompt caching saves a writer, side by side.
//!
//! The writer's ten-turn session (`storycad_e2e::writer_session`: a ~6,000-token story context
//! in the system prompt, then the growing conversation) runs against an OpenAI route and an
//! Anthropic route of two Workers under workerd, one with `PROMPT_CACHE=auto` (the default)
//! and one with `PROMPT_CACHE=off`, both in front of the fake provider (which caches as the
//! real APIs report it). Each session is its own user and its own story, so no session reads
//! what another one wrote.
//!
//! Printed per provider: the session's prompt tokens, the cached (read) and cache-write
//! tokens with caching on, what the user was charged (the `charged` field of the Worker's log
//! lines) with caching on and off, and the ratio of the input cost (the charge less the
//! completion) on / off.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use storycad_e2e::{
    fake_provider::FakeProvider,
    tokens::{self, Alg, TestKeys},
    workerd::{self, workspace_root, Worker, WorkerOptions},
    writer_session::{self, Session, TurnUsage, TURNS},
};

use crate::build;

const ISSUER: &str = "storycad-bench";
const AUDIENCE: &str = "storycad-bench";
const PROVIDER_KEY: &str = "bench-provider-key";
const PROVIDERS: [(&str, &str, &str); 2] = [
    ("OpenAI", "cache-openai", "openai:gpt-4o-mini"),
    (
        "Anthropic",
        "cache-anthropic",
        "anthropic:claude-sonnet-4-5",
    ),
];

/// One session's totals.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionTotals {
    pub usage: TurnUsage,
    pub charged: u64,
}

impl SessionTotals {
    /// The charge less the completion: what the input cost.
    pub fn input_cost(&self) -> u64 {
        self.charged.saturating_sub(self.usage.completion)
    }
}

/// One provider's sessions, caching on and off.
pub struct Row {
    pub provider: &'static str,
    pub on: SessionTotals,
    pub off: SessionTotals,
}

pub fn run() -> Result<()> {
    let rows = measure()?;
    println!("\n{}", markdown(&rows)?);
    Ok(())
}

/// Starts the provider and the two Workers, runs the four sessions, stops them.
pub fn measure() -> Result<Vec<Row>> {
    build::worker(false)?;
    let provider = FakeProvider::start()?;
    let keys = TestKeys::load()?;
    let key = keys.get(Alg::RS256);
    let plans = json!({"bench": {
        "models": PROVIDERS.iter().map(|p| p.1).collect::<Vec<_>>(),
        "requests_per_minute": 1_000_000, "tokens_per_day": 1_000_000_000u64,
        "max_output_tokens": 4096, "concurrent_streams": 1000
    }});
    let routes: serde_json::Map<String, Value> = PROVIDERS
        .iter()
        .map(|(_, alias, route)| ((*alias).to_owned(), json!([route])))
        .collect();
    let start = |name: &str, prompt_cache: &str| {
        Worker::start(
            WorkerOptions {
                name: name.into(),
                build: false,
                worker_dir: workspace_root().join("worker"),
                ..WorkerOptions::default()
            }
            .var("JWT_PUBLIC_JWK", key.public_jwk().to_string())
            .var("JWT_ISSUER", ISSUER)
            .var("JWT_AUDIENCE", AUDIENCE)
            .var("JWT_ALGORITHMS", "RS256")
            .var("ROUTES", Value::Object(routes.clone()).to_string())
            .var("PLANS", plans.to_string())
            .var("DEFAULT_PLAN", "bench")
            .var("CACHE_TTL_SECONDS", "0")
            .var("MAX_BODY_BYTES", "1048576")
            .var("PROMPT_CACHE", prompt_cache)
            .var("OPENAI_BASE_URL", provider.openai_base_url())
            .var("ANTHROPIC_BASE_URL", provider.anthropic_base_url())
            .secret("OPENAI_API_KEY", PROVIDER_KEY)
            .secret("ANTHROPIC_API_KEY", PROVIDER_KEY),
        )
    };
    let on = start("bench-cache-auto", "auto")?;
    let off = match start("bench-cache-off", "off") {
        Ok(w) => w,
        Err(e) => {
            let _ = on.stop();
            return Err(e);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut rows = Vec::new();
        for (name, alias, _) in PROVIDERS {
            let mut totals = Vec::new();
            for (worker, mode) in [(&on, "auto"), (&off, "off")] {
                let sub = format!("bench-writer-{alias}-{mode}");
                let token = tokens::mint(
                    key,
                    &tokens::claims(ISSUER, AUDIENCE, &sub, Duration::from_secs(3600)),
                );
                let story = format!("{name}{mode}{}", std::process::id());
                totals.push(session(&http, worker, &token, alias, &story).await?);
            }
            rows.push(Row {
                provider: name,
                on: totals[0],
                off: totals[1],
            });
        }
        anyhow::Ok(rows)
    });
    for w in [on, off] {
        if !w.stop().group_empty {
            eprintln!("bench: some wrangler processes were still running at the end");
        }
    }
    drop(provider);
    result
}

/// The ten turns through `worker`: the usage the answers reported and what the log charged.
async fn session(
    http: &reqwest::Client,
    worker: &Worker,
    token: &str,
    alias: &str,
    story: &str,
) -> Result<SessionTotals> {
    let url = format!("{}/chat/completions", worker.api_base());
    let mut session = Session::new(alias, story);
    let mut totals = SessionTotals::default();
    for turn in 1..=TURNS {
        let resp = http
            .post(&url)
            .bearer_auth(token)
            .json(&session.request(false))
            .send()
            .await
            .with_context(|| format!("{alias} turn {turn}: sending"))?;
        let status = resp.status();
        let rid = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{alias} turn {turn}: reading"))?;
        if !status.is_success() {
            bail!("{alias} turn {turn}: HTTP {status}: {body}");
        }
        let (text, usage) = writer_session::read_json(&body);
        let usage = usage.with_context(|| format!("{alias} turn {turn}: no usage: {body}"))?;
        totals.usage.add(&usage);
        totals.charged += charged(worker, &rid).await?;
        session.answered(&text);
    }
    Ok(totals)
}

/// The `charged` field of the Worker's log line for `request_id` (waits up to 5 s for it).
async fn charged(worker: &Worker, request_id: &str) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = worker
            .log_text()
            .lines()
            .filter_map(workerd::parse_log_line)
            .find(|e| e.value["request_id"] == request_id);
        if let Some(e) = line {
            return e.value["charged"]
                .as_u64()
                .with_context(|| format!("no charged field: {}", e.value));
        }
        if Instant::now() > deadline {
            bail!("no log line for request {request_id}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The table, as Markdown.
pub fn markdown(rows: &[Row]) -> Result<String> {
    let mut md = String::new();
    writeln!(
        md,
        "### Prompt caching: a writer's {TURNS}-turn session (~{}-token story context), \
         `PROMPT_CACHE` auto vs off\n",
        writer_session::CONTEXT_WORDS
    )?;
    writeln!(
        md,
        "| provider | prompt tokens | cached (on) | cache writes (on) | charged, on | \
         charged, off | input cost on / off |\n|---|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in rows {
        let ratio = r.on.input_cost() as f64 / r.off.input_cost().max(1) as f64;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {ratio:.3} |",
            r.provider,
            r.on.usage.prompt,
            r.on.usage.cached,
            r.on.usage.cache_write,
            r.on.charged,
            r.off.charged,
        )?;
    }
    writeln!(
        md,
        "\nWith caching off, the off column's own cached tokens (OpenAI caches long prompts by \
         itself): {}.",
        rows.iter()
            .map(|r| format!("{} {}", r.provider, r.off.usage.cached))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    Ok(md)
}
