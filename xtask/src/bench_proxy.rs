//! `cargo xtask bench proxy`: the latency the Worker adds, measured side by side.
//!
//! The same requests go to the fake provider directly and through the Worker under workerd
//! (JWT check, plan, limiter, routing, relay), in alternating batches so both see the same
//! machine load. Printed: p50/p90/p99 and requests/s per path at concurrency 1 and 16, the
//! difference and ratio, and for streams the time to first byte and the total time.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use storycad_e2e::{
    fake_provider::{FakeProvider, FakeProviderOptions},
    tokens::{self, DevKey},
    workerd::{Worker, WorkerOptions},
};

use crate::build;

const ISSUER: &str = "storycad-bench";
const AUDIENCE: &str = "storycad-bench";

/// Settings from the command line: `--requests N` per path and concurrency (default 500),
/// `--stream-words N` for the streamed answer's length (default 199: 200 content chunks).
struct Settings {
    requests: usize,
    stream_words: usize,
}

fn settings(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        requests: 500,
        stream_words: 199,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = |it: &mut std::slice::Iter<String>| -> Result<usize> {
            it.next()
                .with_context(|| format!("{a} needs a value"))?
                .parse()
                .with_context(|| format!("{a} needs a number"))
        };
        match a.as_str() {
            "--requests" => s.requests = value(&mut it)?,
            "--stream-words" => s.stream_words = value(&mut it)?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(s)
}

pub fn run(args: &[String]) -> Result<()> {
    let settings = settings(args)?;
    build::worker(false)?;
    let provider = FakeProvider::start_with(FakeProviderOptions::default())?;
    let key = DevKey::generate()?;
    let plans = json!({"bench": {
        "models": ["bench"], "requests_per_minute": 1_000_000, "tokens_per_day": 1_000_000_000u64,
        "max_output_tokens": 4096, "concurrent_streams": 1000
    }});
    let worker = Worker::start(
        WorkerOptions {
            name: "bench-proxy".into(),
            ..WorkerOptions::default()
        }
        .var("JWT_PUBLIC_JWK", key.public_jwk().to_string())
        .var("JWT_ISSUER", ISSUER)
        .var("JWT_AUDIENCE", AUDIENCE)
        .var("ROUTES", r#"{"bench":["openai:gpt-4o-mini"]}"#)
        .var("PLANS", plans.to_string())
        .var("DEFAULT_PLAN", "bench")
        .var("CACHE_TTL_SECONDS", "0")
        .var("OPENAI_BASE_URL", provider.openai_base_url())
        .secret("OPENAI_API_KEY", "bench-provider-key"),
    )?;
    let mut claims = tokens::claims(ISSUER, AUDIENCE, "bench-user", Duration::from_secs(3600));
    claims["plan"] = json!("bench");
    let token = key.mint(&claims);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(measure(
        &settings,
        Target::direct(&provider.openai_base_url()),
        Target::worker(&worker.api_base(), &token),
    ));
    let report = worker.stop();
    drop(provider);
    if !report.group_empty {
        eprintln!("bench: some wrangler processes were still running at the end");
    }
    result
}

/// One way to the same answer.
#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    token: Option<String>,
}

impl Target {
    fn direct(openai_base: &str) -> Target {
        Target {
            name: "provider directly",
            url: format!("{openai_base}/chat/completions"),
            token: None,
        }
    }

    fn worker(api_base: &str, token: &str) -> Target {
        Target {
            name: "through the Worker",
            url: format!("{api_base}/chat/completions"),
            token: Some(token.to_owned()),
        }
    }

    async fn send(&self, http: &reqwest::Client, body: &str, stream: bool) -> Result<Timing> {
        let started = Instant::now();
        let mut req = http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req.bearer_auth("bench-provider-key"),
        };
        let mut resp = req.send().await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!("{}: HTTP {status}: {text}", self.name);
        }
        let mut first = None;
        let mut bytes = 0usize;
        while let Some(chunk) = resp.chunk().await? {
            if first.is_none() && !chunk.is_empty() {
                first = Some(started.elapsed());
            }
            bytes += chunk.len();
        }
        let total = started.elapsed();
        if stream && bytes == 0 {
            bail!("{}: empty stream", self.name);
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

async fn measure(settings: &Settings, direct: Target, worker: Target) -> Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let short = json!({"model": "bench", "messages": [{"role": "user", "content": "hello there"}]})
        .to_string();
    let long_prompt = vec!["word"; settings.stream_words].join(" ");
    let streamed = json!({"model": "bench", "stream": true,
        "messages": [{"role": "user", "content": long_prompt}]})
    .to_string();
    let direct_streamed = streamed.replace("\"bench\"", "\"gpt-4o-mini\"");
    let direct_short = short.replace("\"bench\"", "\"gpt-4o-mini\"");

    // Warm both paths (connections, the isolate, the JWT key parse).
    for _ in 0..20 {
        direct.send(&http, &direct_short, false).await?;
        worker.send(&http, &short, false).await?;
    }

    println!(
        "\nproxy overhead: {} requests per path and concurrency, interleaved in batches\n",
        settings.requests
    );
    println!(
        "{:<28} {:>11} {:>9} {:>9} {:>9} {:>10}",
        "", "concurrency", "p50 ms", "p90 ms", "p99 ms", "req/s"
    );
    for concurrency in [1usize, 16] {
        let [d, w] = interleaved(
            &http,
            [(&direct, &direct_short), (&worker, &short)],
            settings.requests,
            concurrency,
            false,
        )
        .await?;
        for (t, s) in [(&direct, &d), (&worker, &w)] {
            let total = s.stats(|t| t.total);
            println!(
                "{:<28} {:>11} {:>9.2} {:>9.2} {:>9.2} {:>10.0}",
                t.name, concurrency, total.p50, total.p90, total.p99, s.rate
            );
        }
        let (dt, wt) = (d.stats(|t| t.total), w.stats(|t| t.total));
        println!(
            "{:<28} {:>11} {:>+9.2} {:>+9.2} {:>+9.2} {:>10}",
            "  added by the Worker",
            concurrency,
            wt.p50 - dt.p50,
            wt.p90 - dt.p90,
            wt.p99 - dt.p99,
            format!("x{:.2}", d.rate / w.rate.max(f64::MIN_POSITIVE))
        );
    }

    let stream_requests = (settings.requests / 5).max(20);
    let [d, w] = interleaved(
        &http,
        [(&direct, &direct_streamed), (&worker, &streamed)],
        stream_requests,
        1,
        true,
    )
    .await?;
    println!(
        "\nstreams of {} content chunks, {stream_requests} per path, concurrency 1\n",
        settings.stream_words + 1
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "", "ttfb p50 ms", "ttfb p99 ms", "total p50", "total p99"
    );
    for (t, s) in [(&direct, &d), (&worker, &w)] {
        let (f, a) = (s.stats(|t| t.first_byte), s.stats(|t| t.total));
        println!(
            "{:<28} {:>12.2} {:>12.2} {:>12.2} {:>12.2}",
            t.name, f.p50, f.p99, a.p50, a.p99
        );
    }
    let (df, wf) = (d.stats(|t| t.first_byte), w.stats(|t| t.first_byte));
    let (da, wa) = (d.stats(|t| t.total), w.stats(|t| t.total));
    println!(
        "{:<28} {:>+12.2} {:>+12.2} {:>+12.2} {:>+12.2}",
        "  added by the Worker",
        wf.p50 - df.p50,
        wf.p99 - df.p99,
        wa.p50 - da.p50,
        wa.p99 - da.p99
    );
    Ok(())
}

/// What one path measured.
#[derive(Default)]
struct Samples {
    timings: Vec<Timing>,
    busy: Duration,
    rate: f64,
}

struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Samples {
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

/// Sends `total` requests to each target, in batches that alternate which goes first.
async fn interleaved(
    http: &reqwest::Client,
    targets: [(&Target, &String); 2],
    total: usize,
    concurrency: usize,
    stream: bool,
) -> Result<[Samples; 2]> {
    let batch = (concurrency * 4).max(25);
    let mut samples = [Samples::default(), Samples::default()];
    let mut sent = 0;
    let mut round = 0;
    while sent < total {
        let n = batch.min(total - sent);
        for k in 0..2 {
            let i = (k + round) % 2;
            let (target, body) = targets[i];
            let started = Instant::now();
            let timings = run_batch(http, target, body, n, concurrency, stream).await?;
            samples[i].busy += started.elapsed();
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
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(n) {
        let (http, target, body, next) =
            (http.clone(), target.clone(), body.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = tokio::time::timeout(
                    Duration::from_secs(30),
                    target.send(&http, &body, stream),
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
