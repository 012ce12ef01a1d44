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
//! - `--miniflare`: the same bundle under miniflare alone (`soak_miniflare.mjs`): one workerd,
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
//! So twice, after the warm-up and 15 s before the end (both under load), the soak asks the
//! Worker's isolate for a full GC through the runtime's DevTools inspector (`soak_gc.mjs`,
//! `HeapProfiler.collectGarbage`) and reads RSS 2 s later. The verdict compares those two
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

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use storycad_e2e::{
    fake_provider::{FakeProvider, FakeProviderOptions},
    tokens::{self, DevKey},
    workerd::{
        free_port, health, panic_lines, runtime_ports, target_dir, workerds, Worker, WorkerOptions,
    },
};

use crate::{build, cmd};

const ISSUER: &str = "storycad-soak";
const AUDIENCE: &str = "storycad-soak";
/// The aliases the users alternate between.
const ALIASES: [&str; 2] = ["soak-openai", "soak-anthropic"];
/// Words of each prompt (the answer echoes them, one content chunk each).
const PROMPT_WORDS: usize = 40;
/// How often workerd's memory is read.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Load before the first memory figure that counts (`--warm-up`).
const WARM_UP: Duration = Duration::from_secs(180);
/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long before the end the second full-GC reading is taken (still under load, as the first).
const GC_BEFORE_END: Duration = Duration::from_secs(15);
/// Growth of workerd's RSS (end vs after warm-up) at which the soak fails, in percent.
const MAX_GROWTH_PERCENT: f64 = 10.0;

struct Settings {
    minutes: f64,
    users: usize,
    via_wrangler: bool,
    limits: bool,
    stream: bool,
    miniflare: bool,
    warm_up: Duration,
}

fn settings(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        minutes: 10.0,
        users: 32,
        via_wrangler: false,
        limits: true,
        stream: true,
        miniflare: false,
        warm_up: WARM_UP,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value =
            || -> Result<&String> { it.next().with_context(|| format!("{a} needs a value")) };
        match a.as_str() {
            "--minutes" => {
                s.minutes = value()?
                    .parse()
                    .with_context(|| format!("{a} needs a number"))?
            }
            "--users" => {
                s.users = value()?
                    .parse()
                    .with_context(|| format!("{a} needs a whole number"))?
            }
            "--via-wrangler" => s.via_wrangler = true,
            "--no-limits" => s.limits = false,
            "--no-stream" => s.stream = false,
            "--miniflare" => s.miniflare = true,
            "--warm-up" => {
                let secs: u64 = value()?
                    .parse()
                    .with_context(|| format!("{a} needs whole seconds"))?;
                s.warm_up = Duration::from_secs(secs);
            }
            other => {
                bail!("unknown argument {other}\nusage: cargo xtask soak --minutes N [--users 32] [--via-wrangler | --miniflare] [--no-limits] [--no-stream] [--warm-up SECS (180)]")
            }
        }
    }
    if !(s.minutes > 0.0 && s.minutes <= 24.0 * 60.0) {
        bail!("--minutes must be above 0 and at most a day");
    }
    if s.via_wrangler && s.miniflare {
        bail!("--via-wrangler and --miniflare exclude each other");
    }
    if s.users == 0 || s.users > 1000 {
        bail!("--users must be between 1 and 1000");
    }
    Ok(s)
}

pub fn run(args: &[String]) -> Result<()> {
    let settings = settings(args)?;
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
        ("LIMITS_ENABLED", settings.limits.to_string()),
        ("OPENAI_BASE_URL", provider.openai_base_url()),
        ("ANTHROPIC_BASE_URL", provider.anthropic_base_url()),
    ];
    let secrets = [
        ("OPENAI_API_KEY", "soak-openai-key"),
        ("ANTHROPIC_API_KEY", "soak-anthropic-key"),
    ];
    let backend = Backend::start(&settings, &vars, &secrets)?;
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
    let result = rt.block_on(soak(
        &settings,
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
    let summary = result?;
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

/// The running Worker, however it was started.
struct Backend {
    /// The base URL requests go to (`.../v1`).
    target: String,
    /// How the requests reach the Worker, for the messages.
    what: &'static str,
    group: Group,
    log: PathBuf,
    /// Where a full GC of the Worker's isolate can be asked for.
    gc: Option<GcProbe>,
    kind: BackendKind,
}

enum BackendKind {
    Wrangler(Worker),
    Miniflare(Child),
}

impl Backend {
    fn start(
        settings: &Settings,
        vars: &[(&str, String)],
        secrets: &[(&str, &str)],
    ) -> Result<Self> {
        if settings.miniflare {
            return Backend::miniflare(vars, secrets);
        }
        let mut opts = WorkerOptions {
            name: "soak".into(),
            ..WorkerOptions::default()
        };
        for (name, value) in vars {
            opts = opts.var(*name, value.clone());
        }
        for (name, value) in secrets {
            opts = opts.secret(*name, *value);
        }
        let worker = Worker::start(opts)?;
        let group = Group {
            pgid: worker.pgid(),
            public_port: worker.port(),
        };
        let runtime = match runtime_base(group) {
            Ok(r) => r,
            Err(e) => {
                worker.stop();
                return Err(e);
            }
        };
        let (target, what) = if settings.via_wrangler {
            (worker.api_base(), "through wrangler's dev proxy")
        } else {
            (
                format!("http://127.0.0.1:{}/v1", runtime.port),
                "the Worker's runtime under wrangler dev, directly",
            )
        };
        // The runtime's other listening ports: its inspector is one of them.
        let name = worker_name()?;
        let urls = runtime
            .other_ports
            .iter()
            .map(|p| format!("ws://127.0.0.1:{p}/core:user:{name}"))
            .collect();
        Ok(Backend {
            target,
            what,
            group,
            log: worker.log_path().to_path_buf(),
            gc: Some(GcProbe::new(urls)),
            kind: BackendKind::Wrangler(worker),
        })
    }

    /// The bundle (a snapshot of worker/build) under miniflare alone, in a process group of
    /// its own.
    fn miniflare(vars: &[(&str, String)], secrets: &[(&str, &str)]) -> Result<Self> {
        let root = cmd::root();
        let run_dir = target_dir()
            .join("e2e")
            .join(format!("soak-miniflare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        let build = run_dir.join("build");
        copy_dir(&build::bundle_dir(), &build)?;
        let port = free_port()?;
        let inspector_port = free_port()?;
        let name = worker_name()?;
        let mut bindings = serde_json::Map::new();
        for (name, value) in vars {
            bindings.insert((*name).to_owned(), json!(value));
        }
        for (name, value) in secrets {
            bindings.insert((*name).to_owned(), json!(value));
        }
        let toml = std::fs::read_to_string(root.join("worker").join("wrangler.toml"))?;
        let compatibility_date = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("compatibility_date"))
            .and_then(|v| v.split('"').nth(1))
            .context("wrangler.toml has no compatibility_date")?
            .to_owned();
        // `compatibility_flags = ["a", "b"]` on one line.
        let compatibility_flags: Vec<String> = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("compatibility_flags"))
            .map(|v| v.split('"').skip(1).step_by(2).map(str::to_owned).collect())
            .unwrap_or_default();
        let config = json!({
            "node_modules": root.join("worker").join("node_modules"),
            "build": build,
            "port": port,
            "inspector_port": inspector_port,
            "name": name,
            "persist": run_dir.join("state"),
            "compatibility_date": compatibility_date,
            "compatibility_flags": compatibility_flags,
            "bindings": bindings,
        });
        let config_path = run_dir.join("miniflare.json");
        write_private(&config_path, config.to_string().as_bytes())?;
        let log = run_dir.join("miniflare.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("node")
            .arg(root.join("xtask").join("src").join("soak_miniflare.mjs"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting node (miniflare)")?;
        let pgid = i32::try_from(child.id()).context("pid out of range")?;
        let backend = Backend {
            target: format!("http://127.0.0.1:{port}/v1"),
            what: "miniflare alone (no DevTools client, no dev proxy)",
            group: Group {
                pgid,
                public_port: 0,
            },
            log,
            gc: Some(GcProbe::new(vec![format!(
                "ws://127.0.0.1:{inspector_port}/core:user:{name}"
            )])),
            kind: BackendKind::Miniflare(child),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !health(port) {
            if Instant::now() > deadline {
                let text = std::fs::read_to_string(&backend.log).unwrap_or_default();
                backend.stop();
                bail!("miniflare did not answer /healthz within 90 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(backend)
    }

    /// Log lines that show a Rust panic or a wasm trap in the Worker.
    fn panics(&self) -> Vec<String> {
        match &self.kind {
            BackendKind::Wrangler(w) => w.panics(),
            BackendKind::Miniflare(_) => {
                panic_lines(&std::fs::read_to_string(&self.log).unwrap_or_default())
            }
        }
    }

    fn stop(self) {
        match self.kind {
            BackendKind::Wrangler(w) => {
                let report = w.stop();
                if !report.group_empty {
                    eprintln!("soak: some wrangler processes were still running at the end");
                }
            }
            BackendKind::Miniflare(mut child) => {
                // The node process and its workerd, by the group id of the node we started.
                let group = format!("-{}", self.group.pgid);
                let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && !workerds(self.group.pgid, self.group.public_port).is_empty()
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !workerds(self.group.pgid, self.group.public_port).is_empty() {
                    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == ".tmp" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path`, readable by the owner only (it holds the fake secrets).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// What the run found, for the verdict.
struct Summary {
    errors: u64,
    growth_percent: f64,
    /// Which readings the growth compares.
    growth_basis: &'static str,
}

/// One request's outcome, kept for the figures.
struct Done {
    at: Duration,
    latency: Duration,
}

/// The Worker's process group, and the public port that tells its dev proxy apart.
#[derive(Clone, Copy)]
struct Group {
    pgid: i32,
    public_port: u16,
}

/// One memory reading: the runtime's and the dev proxy's RSS.
#[derive(Clone, Copy, Default)]
struct Sample {
    at: Duration,
    runtime: Rss,
    proxy: Rss,
}

/// The summed RSS of some processes.
#[derive(Clone, Copy, Default)]
struct Rss {
    kb: u64,
    processes: usize,
}

impl Rss {
    fn mb(self) -> f64 {
        self.kb as f64 / 1024.0
    }
}

async fn soak(
    settings: &Settings,
    api_base: &str,
    group: Group,
    gc: Option<GcProbe>,
    tokens: Vec<String>,
) -> Result<Summary> {
    let run_for = Duration::from_secs_f64(settings.minutes * 60.0);
    let warm_up = settings.warm_up.min(run_for / 2);
    let first = memory(group);
    if first.runtime.processes == 0 {
        bail!(
            "no workerd runtime found in the Worker's process group {}",
            group.pgid
        );
    }
    println!(
        "\nsoak: {} users streaming for {:.1} min (warm-up {} s), {} content chunks per answer; \
         at rest: Worker runtime {:.1} MB RSS, dev proxy {:.1} MB",
        settings.users,
        settings.minutes,
        warm_up.as_secs(),
        PROMPT_WORDS + 1,
        first.runtime.mb(),
        first.proxy.mb(),
    );

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.users * 2)
        // workerd closes a keep-alive connection idle for 5 s (kj's pipelineTimeout); a client
        // that picks it up just then gets a reset. Real clients meet an edge, not workerd.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let url = format!("{api_base}/chat/completions");
    let started = Instant::now();
    let deadline = started + run_for;
    let done = Arc::new(Mutex::new(Vec::<Done>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let first_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_sampling = Arc::new(AtomicBool::new(false));

    let samples = Arc::new(Mutex::new(vec![first]));
    // Full-GC readings: after the warm-up, and shortly before the end, both under load.
    let gc_readings = gc.map(|probe| {
        let first_at = started + warm_up;
        let second_at = deadline
            .checked_sub(GC_BEFORE_END)
            .filter(|t| *t > first_at);
        tokio::spawn(async move {
            tokio::time::sleep_until(first_at.into()).await;
            let a = probe.collect_and_read(group, started).await;
            let Some(second_at) = second_at else {
                return (a, None);
            };
            tokio::time::sleep_until(second_at.into()).await;
            let b = probe.collect_and_read(group, started).await;
            (a, b)
        })
    });
    let sampler = {
        let (samples, stop, done, errors) = (
            samples.clone(),
            stop_sampling.clone(),
            done.clone(),
            errors.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_print = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let at = started.elapsed();
                let s = Sample {
                    at,
                    ..memory(group)
                };
                lock(&samples).push(s);
                if at >= last_print + Duration::from_secs(60) {
                    last_print = at;
                    println!(
                        "soak: {:>5.0} s  {:>7} requests  {} errors  runtime RSS {:.1} MB  \
                         dev proxy RSS {:.1} MB",
                        at.as_secs_f64(),
                        lock(&done).len(),
                        errors.load(Ordering::Relaxed),
                        s.runtime.mb(),
                        s.proxy.mb()
                    );
                }
            }
        })
    };

    let mut users = Vec::with_capacity(tokens.len());
    let stream = settings.stream;
    for (user, token) in tokens.into_iter().enumerate() {
        let (http, url, done, errors, first_errors) = (
            http.clone(),
            url.clone(),
            done.clone(),
            errors.clone(),
            first_errors.clone(),
        );
        users.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                let alias = ALIASES[(user + n) % ALIASES.len()];
                let nonce = format!("u{user}n{n}z");
                let t0 = Instant::now();
                let streamed = stream.then_some(n % 2 == 0);
                match request_once(&http, &url, &token, alias, &nonce, streamed).await {
                    Ok(()) => lock(&done).push(Done {
                        at: started.elapsed(),
                        latency: t0.elapsed(),
                    }),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = lock(&first_errors);
                        if first.len() < 5 {
                            first.push(format!(
                                "at {:.0} s, user {user} request {n} ({alias}): {e:#}",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    // Every request is bounded by REQUEST_TIMEOUT, so the tasks end soon after the deadline.
    for u in users {
        tokio::time::timeout(run_for + REQUEST_TIMEOUT * 2, u)
            .await
            .context("a user task did not end in time")?
            .context("a user task panicked")?;
    }
    let elapsed = started.elapsed();
    // The last reading, as the load ends.
    lock(&samples).push(Sample {
        at: elapsed,
        ..memory(group)
    });
    stop_sampling.store(true, Ordering::Relaxed);
    sampler.abort();
    let (gc_start, gc_end) = match gc_readings {
        Some(task) => task.await.unwrap_or((None, None)),
        None => (None, None),
    };

    let done = std::mem::take(&mut *lock(&done));
    let errors = errors.load(Ordering::Relaxed);
    let samples = lock(&samples).clone();
    for e in lock(&first_errors).iter() {
        eprintln!("soak: error: {e}");
    }

    let measured: Vec<&Done> = done.iter().filter(|d| d.at >= warm_up).collect();
    let window = elapsed
        .saturating_sub(warm_up)
        .as_secs_f64()
        .max(f64::MIN_POSITIVE);
    let mut latencies: Vec<Duration> = measured.iter().map(|d| d.latency).collect();
    latencies.sort_unstable();
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };

    // Readings where the runtime was found (a restarted runtime shows as a gap).
    let live: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.runtime.processes > 0)
        .collect();
    let at_or_after = |t: Duration| live.iter().find(|s| s.at >= t).or(live.last()).copied();
    let start = at_or_after(warm_up).context("no memory reading after the warm-up")?;
    let middle = at_or_after(warm_up + elapsed.saturating_sub(warm_up) / 2)
        .context("no memory reading at the middle")?;
    let end = *live.last().context("no memory reading at the end")?;
    let peak = |pick: fn(&Sample) -> Rss| -> (f64, f64) {
        live.iter()
            .max_by_key(|s| pick(s).kb)
            .map(|s| (pick(s).mb(), s.at.as_secs_f64()))
            .unwrap_or_default()
    };
    let growth = |pick: fn(&Sample) -> Rss| -> f64 {
        (pick(&end).kb as f64 - pick(&start).kb as f64) / (pick(&start).kb as f64).max(1.0) * 100.0
    };
    let raw_growth = growth(|s| s.runtime);

    println!(
        "\nsoak results ({:.1} s of load, {} users)\n",
        elapsed.as_secs_f64(),
        settings.users
    );
    println!("  requests served        {}", done.len());
    println!("  errors                 {errors}");
    println!(
        "  after warm-up          {} requests in {:.1} s: {:.1} requests/s",
        measured.len(),
        window,
        measured.len() as f64 / window
    );
    println!(
        "  latency (whole stream) p50 {:.1} ms, p99 {:.1} ms",
        pct(0.50),
        pct(0.99)
    );
    for (name, pick) in [
        (
            "Worker runtime RSS",
            (|s: &Sample| s.runtime) as fn(&Sample) -> Rss,
        ),
        ("dev proxy RSS", |s: &Sample| s.proxy),
    ] {
        let (peak_mb, peak_at) = peak(pick);
        println!(
            "  {name:<22} start {:.1} MB ({:.0} s), middle {:.1} MB ({:.0} s), end {:.1} MB \
             ({:.0} s); growth {:+.1}%; peak {peak_mb:.1} MB ({peak_at:.0} s)",
            pick(&start).mb(),
            start.at.as_secs_f64(),
            pick(&middle).mb(),
            middle.at.as_secs_f64(),
            pick(&end).mb(),
            end.at.as_secs_f64(),
            growth(pick)
        );
    }
    let half = (middle.runtime.kb as f64 - start.runtime.kb as f64).max(0.0);
    let second_half = end.runtime.kb as f64 - middle.runtime.kb as f64;
    println!(
        "  second half            Worker runtime {:+.1} MB from the middle to the end \
         (first half {:+.1} MB): {}",
        second_half / 1024.0,
        half / 1024.0,
        if second_half <= half * 0.25 {
            "levelled off"
        } else {
            "still climbing"
        }
    );
    let (growth_percent, growth_basis) = match (gc_start, gc_end) {
        (Some(a), Some(b)) => {
            let g = (b.runtime.kb as f64 - a.runtime.kb as f64) / (a.runtime.kb as f64).max(1.0)
                * 100.0;
            println!(
                "  after a full GC        start {:.1} MB ({:.0} s), end {:.1} MB ({:.0} s); \
                 growth {g:+.1}% (Worker runtime; dev proxy {:.1} -> {:.1} MB)",
                a.runtime.mb(),
                a.at.as_secs_f64(),
                b.runtime.mb(),
                b.at.as_secs_f64(),
                a.proxy.mb(),
                b.proxy.mb(),
            );
            (g, "after a full GC, end vs start")
        }
        _ => {
            println!(
                "  after a full GC        (not measured: the isolate's inspector did not answer)"
            );
            (raw_growth, "end vs start, under load")
        }
    };
    println!(
        "  ({} readings every {} s; the verdict is on the Worker runtime: {growth_basis})",
        live.len(),
        SAMPLE_EVERY.as_secs()
    );
    Ok(Summary {
        errors,
        growth_percent,
        growth_basis,
    })
}

/// One request read to its end: streamed (`Some(include_usage)`) or not (`None`). An error
/// unless it is a 200 that echoes the nonce and every word and, streamed, ends with
/// `data: [DONE]`.
async fn request_once(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    alias: &str,
    nonce: &str,
    stream: Option<bool>,
) -> Result<()> {
    let mut words = vec![nonce.to_owned()];
    words.extend((1..PROMPT_WORDS).map(|i| format!("word{i}")));
    let mut body = json!({
        "model": alias,
        "stream": stream.is_some(),
        "messages": [
            {"role": "system", "content": "You are a patient writing collaborator."},
            {"role": "user", "content": words.join(" ")}
        ]
    });
    if stream == Some(true) {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(bytes).context("the answer is not UTF-8")?;
    if stream.is_none() {
        let answer: serde_json::Value =
            serde_json::from_str(&text).context("the answer is not JSON")?;
        let content = answer
            .pointer("/choices/0/message/content")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let want = format!("echo: {}", words.join(" "));
        if content != want {
            bail!(
                "the answer is not the echo: {}",
                content.chars().take(200).collect::<String>()
            );
        }
        return Ok(());
    }
    if !text.ends_with("data: [DONE]\n\n") {
        bail!(
            "the stream does not end with data: [DONE]: ...{}",
            tail_chars(&text, 300)
        );
    }
    if !text.contains(&format!("\"content\":\" {nonce}\"")) {
        bail!("the stream does not echo the request's nonce");
    }
    let content_events = text.matches("\"content\":\" word").count();
    if content_events != PROMPT_WORDS - 1 {
        bail!(
            "{content_events} content chunks of the {} words asked for",
            PROMPT_WORDS - 1
        );
    }
    Ok(())
}

fn tail_chars(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The RSS of the group's workerd processes, the runtime's and the dev proxy's apart.
fn memory(group: Group) -> Sample {
    let mut s = Sample::default();
    for w in workerds(group.pgid, group.public_port) {
        let rss = if w.proxy {
            &mut s.proxy
        } else {
            &mut s.runtime
        };
        rss.kb += w.rss_kb;
        rss.processes += 1;
    }
    s
}

/// `http://127.0.0.1:PORT/v1` of the Worker's runtime itself: the port, among those the
/// group's non-proxy workerd listens on, that answers `GET /healthz` with the Worker's 200.
fn runtime_base(group: Group) -> Result<RuntimePorts> {
    let (port, other_ports) = runtime_ports(group.pgid, group.public_port)
        .context("`--via-wrangler` goes through wrangler's dev proxy instead of the runtime")?;
    Ok(RuntimePorts { port, other_ports })
}

/// The Worker's runtime under wrangler dev: the port that serves it, and the runtime's others.
struct RuntimePorts {
    port: u16,
    other_ports: Vec<u16>,
}

/// The Worker's name, from wrangler.toml (its inspector path is `/core:user:<name>`).
fn worker_name() -> Result<String> {
    let toml = std::fs::read_to_string(cmd::root().join("worker").join("wrangler.toml"))?;
    toml.lines()
        .find_map(|l| l.trim().strip_prefix("name"))
        .and_then(|v| v.split('"').nth(1))
        .map(str::to_owned)
        .context("wrangler.toml has no name")
}

/// Asks the Worker's isolate for a full garbage collection (`soak_gc.mjs`, through the
/// runtime's DevTools inspector).
#[derive(Clone)]
struct GcProbe {
    urls: Vec<String>,
}

impl GcProbe {
    fn new(urls: Vec<String>) -> Self {
        GcProbe { urls }
    }

    /// A full GC, then (2 s later) a memory reading; `None` when no inspector answered.
    async fn collect_and_read(&self, group: Group, started: Instant) -> Option<Sample> {
        let urls = self.urls.clone();
        let ok = tokio::task::spawn_blocking(move || collect_garbage(&urls))
            .await
            .unwrap_or(false);
        if !ok {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(Sample {
            at: started.elapsed(),
            ..memory(group)
        })
    }
}

/// Runs `soak_gc.mjs` over `urls`, bounded to 45 s; whether one collected.
fn collect_garbage(urls: &[String]) -> bool {
    let root = cmd::root();
    let child = Command::new("node")
        .arg(root.join("xtask").join("src").join("soak_gc.mjs"))
        .arg(root.join("worker").join("node_modules"))
        .args(urls)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}
