//! A fake LLM provider on 127.0.0.1: OpenAI's `POST /v1/chat/completions` and Anthropic's
//! `POST /v1/messages`, JSON and SSE, with faults chosen per request.
//!
//! # The answer
//!
//! The answer echoes the last user message: the content is `"echo:"` followed by `" <word>"`
//! for each whitespace-separated word of that message (`"hi  there"` -> `"echo: hi there"`).
//! Each piece is one streamed content event and counts as one token:
//!
//! - `completion_tokens` (OpenAI) / `output_tokens` (Anthropic) = `1 + words(last user message)`,
//!   cut to the request's `max_completion_tokens` / `max_tokens` when that is smaller (the
//!   answer then ends with `finish_reason: "length"` / `stop_reason: "max_tokens"`);
//! - `prompt_tokens` / `input_tokens` = whitespace-separated words in every message's text
//!   (string contents, and the `text` of text parts), plus Anthropic's top-level `system`.
//!
//! Streams have the recorded shapes: OpenAI a role event, content events, a finish event, a
//! usage event when `stream_options.include_usage` is true, `data: [DONE]`; Anthropic
//! `message_start`, `content_block_start`, `ping`, deltas, `content_block_stop`,
//! `message_delta` (with usage), `message_stop`, each `data:` padded like the real API's. Bodies
//! are sent chunked, one event per HTTP chunk.
//!
//! # Prompt caching
//!
//! Each instance caches prompts as the real providers do and reports it in the usage (the
//! rules are in `prompt_cache.rs`): Anthropic's `cache_control` breakpoints give
//! `cache_read_input_tokens` / `cache_creation_input_tokens` (`input_tokens` is then the rest
//! of the prompt), OpenAI's automatic caching of prompts of 1024 tokens or more gives
//! `prompt_tokens_details.cached_tokens`, per `prompt_cache_key`. Entries live
//! [`FakeProviderOptions::prompt_cache_ttl`]; [`FakeProvider::cache_usage`] tells what one
//! request read and wrote.
//!
//! # Faults
//!
//! The first word of the last user message picks a fault for that request alone:
//! `fault:<name>` or `fault:<name>=<arg>`, or `fault@<model>:<name>` for requests for that
//! provider model only (see [`Fault`] for the list). The Worker forwards the
//! messages but not the caller's headers, so a marker in the body is the one that reaches us.
//!
//! # Keys
//!
//! Like the real APIs, a request without a key is answered 401 (OpenAI `Authorization: Bearer`,
//! Anthropic `x-api-key`), and an Anthropic request without `anthropic-version` or `max_tokens`
//! gets 400. With [`FakeProviderOptions::openai_key`] / [`FakeProviderOptions::anthropic_key`]
//! set, any other key gets the provider's own 401.
//!
//! Every answer carries `set-cookie: __cf_bm=...` as the real APIs (behind Cloudflare) do, so a
//! test can check that the proxy does not relay upstream cookies.

mod answer;
mod anthropic;
mod fault;
mod openai;
mod prompt_cache;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant, SystemTime},
};

use crate::{
    http::{After, Conn, Request},
    server::Background,
};
pub use answer::echo_chunks;
pub use fault::Fault;
pub use prompt_cache::{CacheUsage, DEFAULT_TTL as DEFAULT_PROMPT_CACHE_TTL};
use serde_json::Value;

/// The cookie every fake answer sets, as Cloudflare does in front of the real APIs.
pub const PROVIDER_COOKIE: &str = "__cf_bm=fake-provider-cookie";

/// How the fake provider behaves.
#[derive(Debug, Clone)]
pub struct FakeProviderOptions {
    /// The port to listen on (0: any free port).
    pub port: u16,
    /// When set, the only OpenAI key accepted.
    pub openai_key: Option<String>,
    /// When set, the only Anthropic key accepted.
    pub anthropic_key: Option<String>,
    /// How long `fault:hang` and `fault:stall` hold a connection before closing it.
    pub hang_limit: Duration,
    /// Print one line per request on stderr (for manual runs).
    pub log: bool,
    /// When set, every chat request (either dialect) fails with this status, whatever its
    /// text, with the provider's own error body: 400, 401, 429 (`retry-after: 1`), 500, 503
    /// or 529; any other value answers 500. Lets one instance stand for a provider that is
    /// down, so a fallback chain's first route fails while the next one (another instance)
    /// answers the same prompt.
    pub fail_all: Option<u16>,
    /// How long a cached prompt prefix lives unless used again (both providers' default: 5
    /// minutes, [`DEFAULT_PROMPT_CACHE_TTL`]).
    pub prompt_cache_ttl: Duration,
}

impl Default for FakeProviderOptions {
    fn default() -> Self {
        FakeProviderOptions {
            port: 0,
            openai_key: None,
            anthropic_key: None,
            hang_limit: Duration::from_secs(120),
            log: false,
            fail_all: None,
            prompt_cache_ttl: prompt_cache::DEFAULT_TTL,
        }
    }
}

/// One request as the fake provider received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Its number (1 for the first this provider received).
    pub number: u64,
    /// `POST`, ...
    pub method: String,
    /// The request target, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as received.
    pub body: Vec<u8>,
    /// When it was received (fully read).
    pub received_at: Instant,
    /// The same, as wall-clock time.
    pub received_wall: SystemTime,
}

impl RecordedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The text of the last user message in the body.
    pub fn last_user_text(&self) -> String {
        self.json()
            .and_then(|v| v.get("messages").and_then(Value::as_array).cloned())
            .map(|m| answer::last_user_text(&m))
            .unwrap_or_default()
    }

    /// Whether `needle` occurs in the path, any header or the body.
    pub fn contains(&self, needle: &str) -> bool {
        self.path.contains(needle)
            || self
                .headers
                .iter()
                .any(|(n, v)| n.contains(needle) || v.contains(needle))
            || self.body_text().contains(needle)
    }
}

struct Shared {
    opts: FakeProviderOptions,
    requests: Mutex<Vec<RecordedRequest>>,
    counter: AtomicU64,
    /// Body bytes written so far, per request number (`fault:big` streams only).
    sent: Mutex<std::collections::HashMap<u64, Arc<AtomicU64>>>,
    prompt_cache: Mutex<prompt_cache::PromptCache>,
    /// What each answered request read from and wrote to the prompt cache, per number.
    cache_usage: Mutex<std::collections::HashMap<u64, CacheUsage>>,
    /// `fault:gate` gates, by number: closed (the semaphore's) when opened.
    gates: Mutex<std::collections::HashMap<u64, Arc<tokio::sync::Semaphore>>>,
}

impl Shared {
    fn requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        // A test that panicked while holding the lock leaves the data intact.
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gate `n`, made (shut) if new.
    fn gate(&self, n: u64) -> Arc<tokio::sync::Semaphore> {
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(n)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(0)))
            .clone()
    }

    /// Applies request `n`'s prompt to the cache: what it reads and writes.
    fn cache(&self, n: u64, query: &prompt_cache::CacheQuery) -> CacheUsage {
        let usage = self
            .prompt_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply(query, Instant::now());
        self.cache_usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(n, usage);
        usage
    }
}

/// A running fake provider; stops when dropped.
///
/// It runs on its own thread and tokio runtime, so it outlives any one test's runtime and can
/// be shared by every test of a binary.
pub struct FakeProvider {
    server: Background,
    shared: Arc<Shared>,
}

impl FakeProvider {
    /// Starts one on a free port of 127.0.0.1 with the default options.
    pub fn start() -> std::io::Result<FakeProvider> {
        FakeProvider::start_with(FakeProviderOptions::default())
    }

    /// Starts one with `opts`.
    pub fn start_with(opts: FakeProviderOptions) -> std::io::Result<FakeProvider> {
        let port = opts.port;
        let ttl = opts.prompt_cache_ttl;
        let shared = Arc::new(Shared {
            opts,
            prompt_cache: Mutex::new(prompt_cache::PromptCache::new(ttl)),
            cache_usage: Mutex::new(std::collections::HashMap::new()),
            requests: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            sent: Mutex::new(std::collections::HashMap::new()),
            gates: Mutex::new(std::collections::HashMap::new()),
        });
        let server = Background::start(port, "fake-provider", shared.clone(), handle)?;
        Ok(FakeProvider { server, shared })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT/v1`: the value for `OPENAI_BASE_URL` (or a `PROVIDERS` entry).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// `http://127.0.0.1:PORT`: the value for `ANTHROPIC_BASE_URL`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Lets the requests held at `fault:gate=<gate>` go on, now and after.
    pub fn open_gate(&self, gate: u64) {
        // A closed semaphore fails every wait at once: the waiters' and any later one's.
        self.shared.gate(gate).close();
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests().clone()
    }

    /// The requests whose path, headers or body contain `needle` (tests sharing one provider
    /// put a unique word in their prompt and look for it here).
    pub fn requests_containing(&self, needle: &str) -> Vec<RecordedRequest> {
        self.shared
            .requests()
            .iter()
            .filter(|r| r.contains(needle))
            .cloned()
            .collect()
    }

    /// The body bytes (chunked, as on the wire) written so far (to the socket: taken by the
    /// kernel) for request `number`, for a `fault:big` stream's content; 0 for any other.
    pub fn bytes_sent(&self, number: u64) -> u64 {
        self.shared
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&number)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// What request `number` read from the prompt cache and wrote to it; `None` for a request
    /// that was not answered (refused, or a fault without an answer).
    pub fn cache_usage(&self, number: u64) -> Option<CacheUsage> {
        self.shared
            .cache_usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&number)
            .copied()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        self.shared.requests().len()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.shared.requests().clear();
    }

    /// Stops it and waits for its thread (dropping it does the same).
    pub fn shutdown(mut self) {
        self.server.stop();
    }
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

/// What the request asked for, read by the dialect.
pub(crate) struct Parsed {
    pub model: String,
    pub last_user: String,
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    /// The name of the request's first tool, if it defines any.
    pub first_tool: Option<String>,
    /// What of the prompt can be cached.
    pub cache: prompt_cache::CacheQuery,
}

/// A complete (non-streamed) answer.
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body,
        }
    }

    pub fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// A stream's events: before the content, one per content piece, after it.
pub(crate) struct Events {
    pub content_type: &'static str,
    pub head: Vec<Vec<u8>>,
    pub content: Vec<Vec<u8>>,
    pub tail: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    fn parse(self, body: &[u8]) -> Result<Parsed, Reply> {
        match self {
            Dialect::OpenAi => openai::parse(body),
            Dialect::Anthropic => anthropic::parse(body),
        }
    }
    fn fault_reply(self, f: &Fault) -> Reply {
        match self {
            Dialect::OpenAi => openai::fault_reply(f),
            Dialect::Anthropic => anthropic::fault_reply(f),
        }
    }
    fn json_body(self, a: &answer::Answer) -> Vec<u8> {
        match self {
            Dialect::OpenAi => openai::json_body(a),
            Dialect::Anthropic => anthropic::json_body(a),
        }
    }
    fn events(self, a: &answer::Answer, include_usage: bool) -> Events {
        match self {
            Dialect::OpenAi => openai::events(a, include_usage),
            Dialect::Anthropic => anthropic::events(a),
        }
    }
    fn stream_error_event(self) -> Vec<u8> {
        match self {
            Dialect::OpenAi => openai::stream_error_event(),
            Dialect::Anthropic => anthropic::stream_error_event(),
        }
    }
    fn bad_sse(self, a: &answer::Answer) -> Vec<Vec<u8>> {
        match self {
            Dialect::OpenAi => openai::bad_sse(a),
            Dialect::Anthropic => anthropic::bad_sse(a),
        }
    }
    fn bad_json(self) -> Vec<u8> {
        match self {
            Dialect::OpenAi => openai::bad_json(),
            Dialect::Anthropic => anthropic::bad_json(),
        }
    }
    fn json_content_type(self) -> &'static str {
        match self {
            Dialect::OpenAi => openai::json_content_type(),
            Dialect::Anthropic => anthropic::json_content_type(),
        }
    }
    fn id(self, n: u64) -> String {
        match self {
            Dialect::OpenAi => format!("chatcmpl-fake{n:08}"),
            Dialect::Anthropic => format!("msg_fake{n:08}"),
        }
    }
    fn request_id_header(self) -> &'static str {
        match self {
            Dialect::OpenAi => "x-request-id",
            Dialect::Anthropic => "request-id",
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request, mut conn: Conn) -> (Conn, After) {
    let n = shared.counter.fetch_add(1, Ordering::Relaxed) + 1;
    shared.requests().push(RecordedRequest {
        number: n,
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
        received_at: Instant::now(),
        received_wall: SystemTime::now(),
    });
    let path = req.path.split('?').next().unwrap_or("");
    let dialect = match (req.method.as_str(), path) {
        ("POST", "/v1/chat/completions") => Dialect::OpenAi,
        ("POST", "/v1/messages") => Dialect::Anthropic,
        (_, "/v1/chat/completions" | "/v1/messages") => {
            let r = Reply::json(405, error_json("method not allowed"));
            return send(conn, &r, n, "x-request-id").await;
        }
        _ => {
            let r = Reply::json(404, error_json(&format!("no route {}", req.path)));
            return send(conn, &r, n, "x-request-id").await;
        }
    };
    if let Some(status) = shared.opts.fail_all {
        let fault = match status {
            400 => Fault::BadRequest,
            401 => Fault::Unauthorized,
            429 => Fault::RateLimited {
                retry_after_secs: 1,
            },
            503 => Fault::Unavailable,
            529 => Fault::Overloaded,
            _ => Fault::ServerError,
        };
        let reply = dialect.fault_reply(&fault);
        return send(conn, &reply, n, dialect.request_id_header()).await;
    }
    let auth = match dialect {
        Dialect::OpenAi => openai::check_auth(
            req.header("authorization"),
            shared.opts.openai_key.as_deref(),
        ),
        Dialect::Anthropic => anthropic::check_auth(
            req.header("x-api-key"),
            req.header("anthropic-version"),
            shared.opts.anthropic_key.as_deref(),
        ),
    };
    let parsed = auth.and_then(|()| dialect.parse(&req.body));
    let parsed = match parsed {
        Ok(p) => p,
        Err(reply) => return send(conn, &reply, n, dialect.request_id_header()).await,
    };
    let fault = Fault::parse_for(&parsed.last_user, &parsed.model);
    if shared.opts.log {
        eprintln!(
            "fake-provider: #{n} {} {} model={} stream={} fault={}",
            req.method,
            req.path,
            parsed.model,
            parsed.stream,
            fault
                .as_ref()
                .map_or("none".to_owned(), |f| format!("{f:?}"))
        );
    }
    let mut answer = answer::build(
        dialect.id(n),
        parsed.model.clone(),
        &parsed.last_user,
        parsed.prompt_tokens,
        parsed.max_tokens,
    );
    // Only a request the provider works on reads or writes its cache.
    let works = matches!(
        fault,
        None | Some(
            Fault::Delay { .. }
                | Fault::Gate { .. }
                | Fault::Big { .. }
                | Fault::Cut
                | Fault::CutClean
                | Fault::Slow { .. }
                | Fault::Stall
                | Fault::ToolCall
                | Fault::StreamError
        )
    );
    if works {
        answer.cache = shared.cache(n, &parsed.cache);
    }
    let rid = dialect.request_id_header();
    let hang = shared.opts.hang_limit;
    match fault {
        None => normal(conn, dialect, &answer, &parsed, n).await,
        Some(Fault::Delay { before }) => {
            tokio::time::sleep(before).await;
            normal(conn, dialect, &answer, &parsed, n).await
        }
        Some(Fault::Gate { gate }) => {
            let gate = shared.gate(gate);
            // Never granted: it returns when the gate is closed (opened, for the test).
            let _ = tokio::time::timeout(hang, gate.acquire()).await;
            normal(conn, dialect, &answer, &parsed, n).await
        }
        Some(Fault::Big { bytes }) => {
            let answer = answer::big(answer, bytes);
            if parsed.stream {
                let ev = dialect.events(&answer, parsed.include_usage);
                let counter = Arc::new(AtomicU64::new(0));
                shared
                    .sent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(n, counter.clone());
                stream_counted(conn, ev, n, rid, None, false, Some(&counter)).await
            } else {
                normal(conn, dialect, &answer, &parsed, n).await
            }
        }
        Some(
            f @ (Fault::RateLimited { .. }
            | Fault::RateLimitedNoRetryAfter
            | Fault::BadRequest
            | Fault::Unauthorized
            | Fault::ServerError
            | Fault::Unavailable
            | Fault::Overloaded
            | Fault::Unknown(_)),
        ) => send(conn, &dialect.fault_reply(&f), n, rid).await,
        Some(Fault::BadRequestLeaky) => {
            let key = req
                .header("authorization")
                .map(|v| v.trim_start_matches("Bearer ").to_owned())
                .or_else(|| req.header("x-api-key").map(str::to_owned))
                .unwrap_or_default();
            let host = req.header("host").unwrap_or("");
            let message = format!(
                "Incorrect API key provided: {key}. The request to http://{host}{} was refused.",
                req.path
            );
            let reply = match dialect {
                Dialect::OpenAi => openai::invalid(&message, Some("temperature")),
                Dialect::Anthropic => anthropic::invalid(&message),
            };
            send(conn, &reply, n, rid).await
        }
        Some(Fault::Redirect) => {
            // As a redirecting front end answers: no error of either API in the body.
            let reply = Reply {
                status: 307,
                headers: vec![
                    ("content-type", "text/plain".into()),
                    ("location", req.path.clone()),
                ],
                body: b"Temporary Redirect".to_vec(),
            };
            send(conn, &reply, n, rid).await
        }
        Some(Fault::Reset) => (conn, After::Close),
        Some(Fault::Hang) => {
            tokio::time::sleep(hang).await;
            (conn, After::Close)
        }
        Some(Fault::Cut) => {
            if parsed.stream {
                let mut ev = dialect.events(&answer, parsed.include_usage);
                ev.content.truncate(2);
                ev.tail.clear();
                stream(conn, ev, n, rid, None, true).await
            } else {
                let body = dialect.json_body(&answer);
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {}\r\n{rid}: req_fake{n:08}\r\ncontent-length: {}\r\n\r\n",
                    dialect.json_content_type(),
                    body.len()
                )
                .into_bytes();
                head.extend_from_slice(&body[..body.len() / 2]);
                let _ = conn.raw(&head).await;
                (conn, After::Close)
            }
        }
        Some(Fault::CutClean) => {
            let mut ev = dialect.events(&answer, parsed.include_usage);
            ev.content.truncate(2);
            ev.tail.clear();
            stream(conn, ev, n, rid, None, false).await
        }
        Some(Fault::Slow { interval }) => {
            if parsed.stream {
                let ev = dialect.events(&answer, parsed.include_usage);
                stream(conn, ev, n, rid, Some(interval), false).await
            } else {
                let pieces = u32::try_from(answer.chunks.len()).unwrap_or(u32::MAX);
                tokio::time::sleep(interval.saturating_mul(pieces)).await;
                let r = Reply::json(200, dialect.json_body(&answer));
                send(conn, &r, n, rid).await
            }
        }
        Some(Fault::Stall) => {
            let headers = response_headers(
                if parsed.stream {
                    "text/event-stream; charset=utf-8"
                } else {
                    dialect.json_content_type()
                },
                n,
                rid,
            );
            if conn.start_chunked(200, &headers).await.is_ok() && parsed.stream {
                let ev = dialect.events(&answer, parsed.include_usage);
                for e in &ev.head {
                    let _ = conn.chunk(e).await;
                }
            }
            tokio::time::sleep(hang).await;
            (conn, After::Close)
        }
        Some(Fault::BadSse) => {
            let ev = Events {
                content_type: "text/event-stream; charset=utf-8",
                head: dialect.bad_sse(&answer),
                content: Vec::new(),
                tail: Vec::new(),
            };
            stream(conn, ev, n, rid, None, false).await
        }
        Some(Fault::BadJson) => {
            let r = Reply::json(200, dialect.bad_json());
            send(conn, &r, n, rid).await
        }
        Some(Fault::ToolCall) => {
            let name = parsed
                .first_tool
                .clone()
                .unwrap_or_else(|| "echo".to_owned());
            let id = match dialect {
                Dialect::OpenAi => format!("call_fake{n:08}"),
                Dialect::Anthropic => format!("toolu_fake{n:08}"),
            };
            let a = answer::tool_call(answer, id, name, &parsed.last_user);
            if parsed.stream {
                let ev = dialect.events(&a, parsed.include_usage);
                stream(conn, ev, n, rid, None, false).await
            } else {
                let r = Reply::json(200, dialect.json_body(&a));
                send(conn, &r, n, rid).await
            }
        }
        Some(Fault::StreamError) => {
            let mut ev = dialect.events(&answer, parsed.include_usage);
            ev.content.truncate(2);
            ev.tail = vec![dialect.stream_error_event()];
            stream(conn, ev, n, rid, None, false).await
        }
    }
}

fn error_json(message: &str) -> Vec<u8> {
    serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
        .to_string()
        .into_bytes()
}

fn response_headers(content_type: &str, n: u64, rid: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", content_type.to_owned()),
        (rid, format!("req_fake{n:08}")),
        (
            "set-cookie",
            format!("{PROVIDER_COOKIE}; path=/; HttpOnly; Secure; SameSite=None"),
        ),
    ]
}

async fn send(mut conn: Conn, reply: &Reply, n: u64, rid: &'static str) -> (Conn, After) {
    let mut headers = response_headers("application/json", n, rid);
    for (name, value) in &reply.headers {
        match headers.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.clone(),
            None => headers.push((name, value.clone())),
        }
    }
    match conn.respond(reply.status, &headers, &reply.body).await {
        Ok(()) => (conn, After::KeepAlive),
        Err(_) => (conn, After::Close),
    }
}

/// The answer as the request asked for it: a stream, or JSON.
async fn normal(
    conn: Conn,
    dialect: Dialect,
    answer: &answer::Answer,
    parsed: &Parsed,
    n: u64,
) -> (Conn, After) {
    let rid = dialect.request_id_header();
    if parsed.stream {
        let ev = dialect.events(answer, parsed.include_usage);
        stream(conn, ev, n, rid, None, false).await
    } else {
        let r = Reply::json(200, dialect.json_body(answer));
        send(conn, &r, n, rid).await
    }
}

/// Sends a stream, one event per HTTP chunk; with `interval`, pauses before each content
/// event. Ends the chunked body properly, or with `cut` closes the connection without its
/// terminating chunk.
async fn stream(
    conn: Conn,
    ev: Events,
    n: u64,
    rid: &'static str,
    interval: Option<Duration>,
    cut: bool,
) -> (Conn, After) {
    stream_counted(conn, ev, n, rid, interval, cut, None).await
}

/// [`stream`], adding each event's bytes to `sent` once written.
async fn stream_counted(
    mut conn: Conn,
    ev: Events,
    n: u64,
    rid: &'static str,
    interval: Option<Duration>,
    cut: bool,
    sent: Option<&AtomicU64>,
) -> (Conn, After) {
    // Bytes on the wire: the chunk, its size line and its CRLF.
    let count = |e: &[u8]| {
        if let Some(c) = sent {
            let framing = format!("{:x}\r\n\r\n", e.len()).len();
            c.fetch_add((e.len() + framing) as u64, Ordering::Relaxed);
        }
    };
    let mut headers = response_headers(ev.content_type, n, rid);
    headers.push(("cache-control", "no-cache".into()));
    if conn.start_chunked(200, &headers).await.is_err() {
        return (conn, After::Close);
    }
    for e in &ev.head {
        if conn.chunk(e).await.is_err() {
            return (conn, After::Close);
        }
    }
    for e in &ev.content {
        if let Some(d) = interval {
            tokio::time::sleep(d).await;
        }
        if conn.chunk(e).await.is_err() {
            return (conn, After::Close);
        }
        count(e);
    }
    for e in &ev.tail {
        if conn.chunk(e).await.is_err() {
            return (conn, After::Close);
        }
    }
    if cut {
        // No terminating chunk: the body ends mid-stream.
        return (conn, After::Close);
    }
    match conn.finish_chunked().await {
        Ok(()) => (conn, After::KeepAlive),
        Err(_) => (conn, After::Close),
    }
}
