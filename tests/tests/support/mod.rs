//! Shared by the end-to-end binaries: one fake provider and one Worker (under workerd) per
//! binary, a raw HTTP helper that keeps every answer, and the runner.
//!
//! Each binary has `harness = false` and calls [`run`]: the cases run as named trials
//! (libtest-mimic: filters, `--list`, parallel threads, like ordinary tests); the provider and
//! the Worker start at the first case that runs; after the cases, the suite checks run (no
//! panic in the Worker's log, no secret in any answer or in the log) and the Worker is stopped
//! and checked gone. A binary whose cases are all filtered out starts nothing.
#![allow(dead_code)] // Each binary uses a different part of this module.

use std::{
    future::Future,
    path::Path,
    pin::Pin,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

pub mod prompt_session;
pub mod resume;

use libtest_mimic::{Arguments, Failed, Trial};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use storycad_e2e::{
    fake_provider::{FakeProvider, FakeProviderOptions},
    jwks_server::JwksServer,
    tokens::{self, Alg, TestKeys},
    workerd::{self, LogEntry, Worker, WorkerOptions},
};

pub const ISSUER: &str = "https://auth.e2e.storycad.test";
pub const AUDIENCE: &str = "storycad-e2e";
/// The provider keys the Worker holds; they must never reach a caller or the log. Fake, but
/// shaped like real ones (the scrubbing knows the `sk-` prefix); assembled from two pieces so
/// secret scanners do not flag a test placeholder.
pub const OPENAI_KEY: &str = concat!("sk-", "e2e-openai-PROVIDERKEY-7f3a9c0d21");
pub const ANTHROPIC_KEY: &str = concat!("sk-", "ant-e2e-PROVIDERKEY-51d2e8b4aa");
/// Model aliases of the test `ROUTES`.
pub const OPENAI_ALIAS: &str = "e2e-openai";
pub const OPENAI_MODEL: &str = "gpt-4o-mini";
pub const ANTHROPIC_ALIAS: &str = "e2e-anthropic";
pub const ANTHROPIC_MODEL: &str = "claude-haiku-4-5";
/// An alias whose chain is the OpenAI route, then the Anthropic one.
pub const FALLBACK_ALIAS: &str = "e2e-fallback";
/// `MAX_BODY_BYTES` of the test Worker.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// `UPSTREAM_TIMEOUT_MS` of the test Worker.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(2500);
/// `UPSTREAM_ANSWER_TIMEOUT_MS` of the test Worker (a complete answer's wait for headers).
pub const ANSWER_TIMEOUT: Duration = Duration::from_millis(3000);

/// How a binary's Worker is configured.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// The binary's name (run directory, messages).
    pub name: &'static str,
    /// Serve the keys from a JWKS endpoint (`JWT_JWKS_URL`) instead of `JWT_PUBLIC_JWK`. It
    /// starts with the RS256 and ES256 keys only; a case rotates the EdDSA key in.
    pub jwks_url: bool,
    /// More variables (they come after the standard ones, so they win).
    pub extra_vars: Vec<(String, String)>,
    /// More secrets (values the suite's secret checks already cover, such as a provider key
    /// stored differently).
    pub extra_secrets: Vec<(String, String)>,
    /// An edit of the Worker's JavaScript glue before it runs ([`WorkerOptions::edit_glue`]).
    pub edit_glue: Option<fn(&str) -> Option<String>>,
}

/// An answer as received, whole.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Set when reading the body failed (a cut stream).
    pub body_error: Option<String>,
    pub took: Duration,
}

impl Seen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `data:` payloads of an event stream.
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .flat_map(|block| {
                block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.trim_start().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Asserts OpenAI's error shape with `code`, and returns the error object.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("no error object: {v}"))
            .clone();
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert_eq!(e["code"], code, "{v}");
        assert!(
            e.get("param").is_some(),
            "param must be present (null or a field): {v}"
        );
        assert!(
            self.header("x-request-id").is_some(),
            "x-request-id missing"
        );
        e
    }

    /// The error event that ended an event stream: a 200 whose stream has no `[DONE]` and
    /// ends with `{"error": {..., "code": "..."}}`. Returns the error object.
    pub fn stream_error(&self) -> Value {
        assert_eq!(self.status, 200, "body: {}", self.text());
        let data = self.sse_data();
        assert!(!data.iter().any(|d| d == "[DONE]"), "{}", self.text());
        let last: Value = data
            .last()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_else(|| panic!("the stream does not end with an event: {}", self.text()));
        let e = last
            .get("error")
            .unwrap_or_else(|| panic!("the last event is not an error: {last}"))
            .clone();
        assert!(e["code"].is_string(), "{last}");
        e
    }
}

/// Reads a client stream to its end: the text received and the error that ended it (`None`:
/// it ended with `[DONE]`).
pub async fn drain(
    mut stream: storycad_client::ChatStream,
) -> (String, Option<storycad_client::Error>) {
    use futures_util::StreamExt;
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(c) => text.push_str(c.text().unwrap_or("")),
            Err(e) => return (text, Some(e)),
        }
    }
    (text, None)
}

pub struct Suite {
    pub config: SuiteConfig,
    pub provider: FakeProvider,
    pub keys: TestKeys,
    pub jwks: Option<JwksServer>,
    worker: Mutex<Option<Worker>>,
    /// How the Worker was started (for a restart).
    options: WorkerOptions,
    pub url: String,
    pub http: reqwest::Client,
    pub rt: tokio::runtime::Runtime,
    seen: Mutex<Vec<Seen>>,
    nonce: AtomicU64,
    pub started_in: Duration,
}

impl Suite {
    fn start(config: SuiteConfig) -> anyhow::Result<Suite> {
        let started = Instant::now();
        let keys = TestKeys::load()?;
        let provider = FakeProvider::start_with(FakeProviderOptions {
            openai_key: Some(OPENAI_KEY.into()),
            anthropic_key: Some(ANTHROPIC_KEY.into()),
            hang_limit: Duration::from_secs(60),
            ..Default::default()
        })?;
        let jwks = if config.jwks_url {
            Some(JwksServer::start(tokens::jwks(&[
                &keys.rs256,
                &keys.es256,
            ]))?)
        } else {
            None
        };
        let routes = json!({
            OPENAI_ALIAS: [format!("openai:{OPENAI_MODEL}")],
            ANTHROPIC_ALIAS: [format!("anthropic:{ANTHROPIC_MODEL}")],
            FALLBACK_ALIAS: [format!("openai:{OPENAI_MODEL}"), format!("anthropic:{ANTHROPIC_MODEL}")],
        });
        let mut opts = WorkerOptions {
            name: config.name.to_owned(),
            edit_glue: config.edit_glue,
            ..Default::default()
        }
        .var("JWT_ISSUER", ISSUER)
        .var("JWT_AUDIENCE", AUDIENCE)
        .var("OPENAI_BASE_URL", provider.openai_base_url())
        .var("ANTHROPIC_BASE_URL", provider.anthropic_base_url())
        .var("ROUTES", routes.to_string())
        .var("MAX_BODY_BYTES", MAX_BODY_BYTES.to_string())
        .var(
            "UPSTREAM_TIMEOUT_MS",
            UPSTREAM_TIMEOUT.as_millis().to_string(),
        )
        .var(
            "UPSTREAM_ANSWER_TIMEOUT_MS",
            ANSWER_TIMEOUT.as_millis().to_string(),
        )
        .var("CACHE_TTL_SECONDS", "0")
        .var("PLANS", plans().to_string())
        .secret("OPENAI_API_KEY", OPENAI_KEY)
        .secret("ANTHROPIC_API_KEY", ANTHROPIC_KEY);
        opts = match &jwks {
            Some(server) => opts.var("JWT_JWKS_URL", server.url()),
            None => opts.var("JWT_PUBLIC_JWK", keys.jwks().to_string()),
        };
        for (k, v) in &config.extra_vars {
            opts = opts.var(k, v);
        }
        for (k, v) in &config.extra_secrets {
            opts = opts.secret(k, v);
        }
        let worker = Worker::start(opts.clone())?;
        eprintln!(
            "[{}] worker on {} ready in {:.1} s (wrangler start {:.1} s); log {}",
            config.name,
            worker.url(),
            started.elapsed().as_secs_f64(),
            worker.started_in().as_secs_f64(),
            worker.log_path().display()
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(Suite {
            url: worker.url(),
            config,
            provider,
            keys,
            jwks,
            worker: Mutex::new(Some(worker)),
            options: opts,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            rt,
            seen: Mutex::new(Vec::new()),
            nonce: AtomicU64::new(0),
            started_in: started.elapsed(),
        })
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A word no other case uses, to find this case's requests at the shared provider.
    pub fn nonce(&self) -> String {
        format!(
            // The closing `z` keeps `...x1z` from matching inside `...x10z`.
            "nonce{}x{}z",
            std::process::id(),
            self.nonce.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Claims valid for an hour for user `sub`.
    pub fn claims(&self, sub: &str) -> Value {
        tokens::claims(ISSUER, AUDIENCE, sub, Duration::from_secs(3600))
    }

    /// A valid token signed with the fixture key for `alg`.
    pub fn token(&self, alg: Alg) -> String {
        tokens::mint(self.keys.get(alg), &self.claims("e2e-user"))
    }

    /// The address of the Worker's runtime itself, past wrangler's dev proxy (which reads an
    /// answer as fast as it comes, whatever its own caller does).
    pub fn runtime_addr(&self) -> std::net::SocketAddr {
        let port = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .expect("the Worker runs")
            .runtime_port()
            .expect("the Worker's runtime port");
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Stops the Worker, runs `between` on its run directory (the state it left is on disk
    /// there, and nothing has it open), and starts it again on the same port with that state
    /// (its Durable Objects start again from their storage, as after an eviction). Only for
    /// serial cases: the others' requests would fail meanwhile. The old Worker's log must show
    /// no panic (the new one's is the suite's to check); it is kept beside the new one.
    pub fn restart_worker(&self, between: impl FnOnce(&Path)) -> anyhow::Result<Duration> {
        let mut slot = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = slot
            .take()
            .ok_or_else(|| anyhow::anyhow!("the Worker is not running"))?;
        let panics = old.panics();
        anyhow::ensure!(panics.is_empty(), "panics before the restart: {panics:?}");
        let run_dir = old.run_dir().to_owned();
        let options = WorkerOptions {
            port: Some(old.port()),
            run_dir: Some(run_dir.clone()),
            keep_state: true,
            build: false,
            ..self.options.clone()
        };
        let _ = std::fs::copy(old.log_path(), run_dir.join("wrangler.before-restart.log"));
        old.stop_keeping_state();
        between(&run_dir);
        let started = Instant::now();
        *slot = Some(Worker::start(options)?);
        Ok(started.elapsed())
    }

    /// The Worker's log so far.
    pub fn worker_log(&self) -> String {
        self.worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(Worker::log_text)
            .unwrap_or_default()
    }

    /// The Worker's JSON log line for `request_id` (waits up to 5 s for it to be written).
    pub async fn log_line(&self, request_id: &str) -> Value {
        self.log_entry(request_id).await.value
    }

    /// The Worker's log line for `request_id` with its console level (waits up to 5 s): the
    /// line the request ends with, not an event line written on its behalf.
    pub async fn log_entry(&self, request_id: &str) -> LogEntry {
        self.line_where(request_id, |v| v.get("event").is_none())
            .await
    }

    /// The `{"event": name}` line written on behalf of request `request_id` (waits up to 5 s).
    pub async fn event_line(&self, request_id: &str, name: &str) -> Value {
        self.line_where(request_id, |v| v["event"] == name)
            .await
            .value
    }

    /// The first of `request_id`'s lines that `wanted` picks (waits up to 5 s for it).
    async fn line_where(&self, request_id: &str, wanted: impl Fn(&Value) -> bool) -> LogEntry {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .worker_log()
                .lines()
                .filter_map(workerd::parse_log_line)
                .find(|e| e.value["request_id"] == request_id && wanted(&e.value));
            if let Some(entry) = found {
                return entry;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line for request {request_id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// User `sub`'s chat log lines, once there are `expected` of them (waits up to 5 s), checked
    /// to be exactly that many.
    pub async fn chat_lines(&self, sub: &str, expected: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<Value> = self
                .worker_log()
                .lines()
                .filter_map(|l| workerd::parse_log_line(l).map(|e| e.value))
                .filter(|v| v["sub"] == sub && v["path"] == "/v1/chat/completions")
                .collect();
            if lines.len() >= expected || Instant::now() >= deadline {
                assert_eq!(lines.len(), expected, "log lines of {sub}: {lines:?}");
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a request and reads the whole answer (a stream to its end), keeping it for the
    /// suite's secret check.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Seen {
        use futures_util::StreamExt;
        let started = Instant::now();
        let response = request.send().await.expect("the Worker answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut body_error = None;
        let mut stream = response.bytes_stream();
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => body.extend_from_slice(&b),
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            }
        }
        let seen = Seen {
            status,
            headers,
            body,
            body_error,
            took: started.elapsed(),
        };
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(seen.clone());
        seen
    }

    /// `POST /v1/chat/completions` with `body`, and `Authorization: Bearer <token>` if given.
    pub async fn chat(&self, token: Option<&str>, body: &Value) -> Seen {
        let mut rb = self.http.post(self.at("/v1/chat/completions")).json(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        self.send(rb).await
    }

    /// `POST /v1/chat/completions` of [`chat_body`] (`alias`, `text`, `stream`) with a valid
    /// EdDSA token: the common request of a case.
    pub async fn ask(&self, alias: &str, text: &str, stream: bool) -> Seen {
        self.chat(
            Some(&self.token(Alg::EdDSA)),
            &chat_body(alias, text, stream),
        )
        .await
    }

    /// A client of the Worker with a valid EdDSA token and no retries.
    pub fn client(&self) -> storycad_client::Client {
        self.client_with(storycad_client::RetryPolicy::none())
    }

    pub fn client_with(&self, retry: storycad_client::RetryPolicy) -> storycad_client::Client {
        storycad_client::Client::builder()
            .base_url(format!("{}/v1", self.url))
            .token(self.token(Alg::EdDSA))
            .retry_policy(retry)
            .build()
            .expect("client")
    }

    /// Strings that must never appear in an answer or in the Worker's log.
    pub fn secrets(&self) -> Vec<String> {
        vec![OPENAI_KEY.to_owned(), ANTHROPIC_KEY.to_owned()]
    }

    /// Asserts that no secret appears in `text` (e.g. a client error's text).
    pub fn assert_no_secret(&self, what: &str, text: &str) {
        for s in self.secrets() {
            assert!(!text.contains(&s), "{what} contains a provider key: {text}");
        }
    }
}

/// Plans generous enough that no case meets a limit by accident (wrangler.toml's own `PLANS`
/// would apply otherwise), under both plan names wrangler.toml uses.
pub fn plans() -> Value {
    let plan = json!({
        "models": [OPENAI_ALIAS, ANTHROPIC_ALIAS, FALLBACK_ALIAS],
        "requests_per_minute": 100_000,
        "tokens_per_day": 1_000_000_000u64,
        "max_output_tokens": 4096,
        "concurrent_streams": 64
    });
    json!({"free": plan, "pro": plan})
}

/// What the Worker stopped in `run_dir` left in its local storage: the lines `script` (Python,
/// with `sqlite3`) prints when given `run_dir`. The state's SQLite files are read while the
/// Worker is down ([`Suite::restart_worker`]): nothing has them open.
pub fn stored_state(run_dir: &Path, script: &str) -> Vec<String> {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(run_dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("the script prints text")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A chat request body for `alias` whose last user message is `text`.
pub fn chat_body(alias: &str, text: &str, stream: bool) -> Value {
    json!({
        "model": alias,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text}
        ],
        "stream": stream
    })
}

pub type CaseFuture = Pin<Box<dyn Future<Output = ()>>>;

/// One named case: an async function of the suite.
pub struct Case {
    pub name: String,
    pub run: Box<dyn FnOnce(Arc<Suite>) -> CaseFuture + Send>,
    /// Runs alone, after the parallel cases (it disturbs the Worker for others).
    pub serial: bool,
}

impl Case {
    pub fn new<F, Fut>(name: impl Into<String>, f: F) -> Case
    where
        F: FnOnce(Arc<Suite>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Case {
            name: name.into(),
            run: Box::new(move |s| Box::pin(f(s))),
            serial: false,
        }
    }

    /// This case runs alone, after the others.
    pub fn serial(mut self) -> Case {
        self.serial = true;
        self
    }
}

/// `cases![a, b, c]`: the async fns `a`, `b`, `c` (each `async fn(Arc<Suite>)`) as named cases.
#[macro_export]
macro_rules! cases {
    ($($f:ident),* $(,)?) => {
        vec![$(support::Case::new(stringify!($f), $f)),*]
    };
}

static SUITE: OnceLock<Result<Arc<Suite>, String>> = OnceLock::new();

fn suite(config: &SuiteConfig) -> Result<Arc<Suite>, Failed> {
    SUITE
        .get_or_init(|| {
            Suite::start(config.clone())
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| Failed::from(format!("suite setup failed: {e}")))
}

/// Runs `cases` against one Worker configured by `config`, then the suite checks.
pub fn run(config: SuiteConfig, cases: Vec<Case>) -> ExitCode {
    let mut args = Arguments::from_args();
    // The cases wait on the network, not the CPU.
    if args.test_threads.is_none() {
        args.test_threads = Some(8);
    }
    let (serial, parallel): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(|c| c.serial);
    let trials = |cases: Vec<Case>| -> Vec<Trial> {
        cases
            .into_iter()
            .map(|case| {
                let config = config.clone();
                Trial::test(case.name, move || {
                    let suite = suite(&config)?;
                    suite.rt.block_on((case.run)(suite.clone()));
                    Ok(())
                })
            })
            .collect()
    };
    let started = Instant::now();
    let mut conclusion = libtest_mimic::run(&args, trials(parallel));
    if !serial.is_empty() {
        let serial_args = Arguments {
            test_threads: Some(1),
            ..args.clone()
        };
        let second = libtest_mimic::run(&serial_args, trials(serial));
        conclusion.num_failed += second.num_failed;
    }
    let Some(Ok(suite)) = SUITE.get().cloned() else {
        // Nothing ran (listing, or every case filtered out), or the setup failed (every case
        // said so).
        return conclusion.exit_code();
    };
    eprintln!(
        "[{}] cases done in {:.1} s (including the {:.1} s start)",
        suite.config.name,
        started.elapsed().as_secs_f64(),
        suite.started_in.as_secs_f64()
    );
    let checks = suite_checks(suite);
    let final_args = Arguments {
        filter: None,
        skip: Vec::new(),
        exact: false,
        test_threads: Some(1),
        list: false,
        ..args
    };
    let checked = libtest_mimic::run(&final_args, checks);
    if conclusion.has_failed() || checked.has_failed() {
        ExitCode::from(101)
    } else {
        ExitCode::SUCCESS
    }
}

/// The whole-run checks, in order; the last stops the Worker.
fn suite_checks(suite: Arc<Suite>) -> Vec<Trial> {
    let s1 = suite.clone();
    let s2 = suite.clone();
    let s3 = suite.clone();
    vec![
        Trial::test("suite::worker_never_panicked", move || {
            let panics = s1
                .worker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(Worker::panics)
                .unwrap_or_default();
            if panics.is_empty() {
                Ok(())
            } else {
                Err(format!("the Worker's log shows panics:\n{}", panics.join("\n")).into())
            }
        }),
        Trial::test("suite::no_secret_in_any_answer", move || {
            let seen = s2
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.is_empty() {
                // Only client-path cases ran (a filtered run): they check their own errors.
                eprintln!("[{}] no raw answers to check", s2.config.name);
                return Ok(());
            }
            let mut problems = Vec::new();
            for (i, answer) in seen.iter().enumerate() {
                let mut text = answer.text();
                for (name, value) in &answer.headers {
                    text.push_str(&format!(
                        "\n{name}: {}",
                        String::from_utf8_lossy(value.as_bytes())
                    ));
                }
                for secret in s2.secrets() {
                    if text.contains(&secret) {
                        problems.push(format!(
                            "answer #{i} (status {}) holds a provider key",
                            answer.status
                        ));
                    }
                }
                let provider_addr = s2.provider.addr().to_string();
                if text.contains(&provider_addr) {
                    problems.push(format!(
                        "answer #{i} (status {}) names the provider's address {provider_addr}",
                        answer.status
                    ));
                }
            }
            eprintln!(
                "[{}] {} answers checked for secrets",
                s2.config.name,
                seen.len()
            );
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("\n").into())
            }
        }),
        Trial::test("suite::no_secret_or_token_in_worker_log", move || {
            let log = s3.worker_log();
            let mut problems = Vec::new();
            for secret in s3.secrets() {
                if log.contains(&secret) {
                    problems.push("the Worker's log holds a provider key".to_owned());
                }
            }
            // Every JWT starts with the base64 of `{"`: `eyJ`.
            if let Some(line) = log.lines().find(|l| l.contains("eyJ")) {
                problems.push(format!("the Worker's log holds a token: {line}"));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("\n").into())
            }
        }),
        Trial::test("suite::wrangler_stops_and_leaves_no_process", move || {
            let worker = suite
                .worker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .ok_or("the Worker was already stopped")?;
            let pgid = worker.pgid();
            let report = worker.stop();
            eprintln!(
                "[{}] wrangler stopped in {:.2} s{}",
                suite.config.name,
                report.took.as_secs_f64(),
                if report.killed {
                    " (needed SIGKILL)"
                } else {
                    ""
                }
            );
            if !report.group_empty {
                return Err(format!("processes of group {pgid} are still running").into());
            }
            let ps = std::process::Command::new("ps")
                .args(["-eo", "pgid=,pid=,comm="])
                .output()
                .map_err(|e| format!("ps: {e}"))?;
            let left: Vec<String> = String::from_utf8_lossy(&ps.stdout)
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(pgid.to_string().as_str()))
                .map(str::to_owned)
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("ps still lists: {left:?}").into())
            }
        }),
    ]
}
