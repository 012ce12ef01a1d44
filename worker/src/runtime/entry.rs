//! The wasm glue: the `fetch` event, `Env`, the upstream `Fetch` and the response stream. Every
//! decision is made by the host-tested modules ([`crate::lifecycle`] for a chat request); this
//! file only moves bytes, clocks and signals between them and the runtime.
//!
//! A request runs as one `wait_until` task, from its first byte to its log line; the `fetch`
//! handler only waits for the answer that task hands it. On Cloudflare a caller who hangs up
//! ends the handler's invocation, while `wait_until` work goes on (up to 30 s), so the
//! request's settlement and log line never depend on the handler being polled to its end. The
//! hang-up itself reaches the task through the request's abort signal (the
//! `enable_request_signal` compatibility flag) or the runtime dropping the answer's body.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use futures_util::future::{select, Either};
use storycad_protocol::headers as names;
use worker::js_sys;
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{event, web_sys, Context, Env, Headers, Response, ResponseBody};

use super::auth::Authenticator;
use super::fetch::{fetch, read_capped, Answer, Body, FetchError, Outgoing, ReadError};
use super::kv;
use super::limiter::{Admission, Limiter};
use super::resume::{self as streams, Handoff};
use super::stream::{Driver, Piece, Pipe, PipeEvent, Timer};
use super::wake::{sleep, AbortWatch};
use super::{apart, binding, context_handle, now_ms};
use crate::cache::{self, Status as CacheStatus, StreamFold};
use crate::caller::body::{Hangup, Outbox};
use crate::caller::endpoints::{match_route, model_list, url_path, Endpoint, STREAMS_PATH};
use crate::caller::request::{check_declared_length, parse_chat, ChatCall, Correlation};
use crate::config::{Config, ConfigError};
use crate::error::{AppError, UpstreamError};
use crate::lifecycle::{AttemptEnd, Chat, Next};
use crate::log::{request_id, Event, Level, RequestLog};
use crate::providers::openai::{end_user_id, MAX_ANSWER_BYTES};
use crate::providers::prompt_cache::{CacheWeights, PromptCache};
use crate::providers::routing::{self, Route};
use crate::providers::Outcome;
use crate::providers::{
    complete, error_from_response, upstream_request, Relay, DEFAULT_MAX_OUTPUT_TOKENS,
};
use crate::resume::{belongs_to, last_event_id, stream_id, EventLog};

/// The secret keying the end-user id sent to providers (optional).
const USER_HASH_KEY: &str = "USER_HASH_KEY";

/// Longest upstream error body read (enough for any provider's JSON error).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What an isolate builds once from its configuration.
struct Isolate {
    config: Config,
    auth: Authenticator,
}

thread_local! {
    // Vars cannot change while an isolate lives, so they are parsed (and a bad one reported)
    // once; the JWKS cache lives here too.
    static ISOLATE: RefCell<Option<Result<Rc<Isolate>, ConfigError>>> = const { RefCell::new(None) };
}

// Not inlined: the configuration's parse, run once, is compiled apart from the request path.
#[inline(never)]
fn isolate(env: &Env) -> Result<Rc<Isolate>, AppError> {
    ISOLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let loaded = slot.get_or_insert_with(|| load(env));
        loaded.clone().map_err(AppError::Config)
    })
}

fn load(env: &Env) -> Result<Rc<Isolate>, ConfigError> {
    Config::from_lookup(|name| env_text(env, name)).map(|config| {
        let auth = Authenticator::new(
            config.jwt.verifier(),
            config.jwt.jwks_url.clone(),
            config.jwt.cache_entries,
        );
        Rc::new(Isolate { config, auth })
    })
}

#[wasm_bindgen(module = "cloudflare:workers")]
extern "C" {
    /// The Worker's bindings, importable at module scope since workerd's 2025-03 releases.
    #[wasm_bindgen(thread_local_v2, js_name = env)]
    static MODULE_ENV: JsValue;
}

/// Runs as the isolate loads its module, before any request: the configuration is parsed
/// there, so that an isolate's first request neither runs nor compiles that parse (Cloudflare
/// limits a Worker's start-up on its own, not as a request's CPU time). Only a good parse is
/// kept: a runtime without the importable `env` (or with it disallowed) reads as no variables,
/// and the first request then parses its own `env`, reporting what is wrong as before.
#[event(start)]
fn start() {
    let env = MODULE_ENV.with(JsValue::clone);
    if !env.is_object() {
        return;
    }
    if let Ok(loaded) = load(&env.unchecked_into()) {
        ISOLATE.with(|cell| *cell.borrow_mut() = Some(Ok(loaded)));
    }
}

/// A secret's text (`Env::secret`'s, read without `Display`'s code): `None` when it is not set or
/// not a string.
fn secret_text(env: &Env, name: &str) -> Option<String> {
    binding(env, name)?.as_string()
}

/// A variable's text: a string as is; a `[vars]` table (wrangler passes those as objects) as
/// its JSON.
pub(crate) fn env_text(env: &Env, name: &str) -> Option<String> {
    let value = binding(env, name)?;
    if value.is_undefined() || value.is_null() {
        return None;
    }
    if let Some(s) = value.as_string() {
        return Some(s);
    }
    js_sys::JSON::stringify(&value).ok()?.as_string()
}

fn random_u64() -> u64 {
    let hi = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let lo = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (hi << 32) | lo
}

/// The request's log line, written once: when the answer is complete, when a stream ends, or
/// when the request's task is dropped.
struct LogLine {
    line: RequestLog,
    /// The caller's limits, for the `x-ratelimit-*` headers (set once the plan is known).
    rate_limit: Option<storycad_protocol::ratelimit::RateLimitInfo>,
    started: u64,
    written: bool,
}

impl LogLine {
    fn write(&mut self) {
        if self.written {
            return;
        }
        self.written = true;
        self.line.total_ms = now_ms().saturating_sub(self.started);
        match self.line.level() {
            Level::Error => super::error_line(&self.line.to_line()),
            Level::Log => super::log_line(&self.line.to_line()),
        }
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.written {
            self.line
                .error
                .get_or_insert_with(|| crate::lifecycle::CLIENT_CLOSED.to_owned());
            self.write();
        }
    }
}

type Log = Rc<RefCell<LogLine>>;

/// The answer the request's task hands to the `fetch` handler.
#[derive(Default)]
struct ReplySlot {
    response: Option<worker::Result<Response>>,
    sent: bool,
    waker: Option<Waker>,
}

struct Reply(Rc<RefCell<ReplySlot>>);

impl Reply {
    fn send(self, response: worker::Result<Response>) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.response = Some(response);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.sent = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct ReplyWait(Rc<RefCell<ReplySlot>>);

impl Future for ReplyWait {
    type Output = Option<worker::Result<Response>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut slot = self.0.borrow_mut();
        if let Some(response) = slot.response.take() {
            return Poll::Ready(Some(response));
        }
        if slot.sent {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

// The runtime's own request, not workers-rs' `Request`: making one copies its URL and method
// and deep-copies its `cf` object, which nothing here reads. And the runtime's own response,
// made in one call ([`for_runtime`]).
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    let slot = Rc::new(RefCell::new(ReplySlot::default()));
    let reply = Reply(Rc::clone(&slot));
    ctx.wait_until(serve(req, env, context_handle(&ctx), reply));
    let response = match ReplyWait(slot).await {
        Some(response) => response,
        None => error_response(&AppError::Internal),
    };
    response.and_then(|r| for_runtime(&r))
}

#[wasm_bindgen(inline_js = r#"
export function storycadRespond(status, headers, bytes, stream) {
  const body = bytes !== undefined ? bytes.slice() : stream !== undefined ? stream : null;
  return new Response(body, { status, headers });
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadRespond, catch)]
    fn js_respond(
        status: u16,
        headers: &web_sys::Headers,
        bytes: Option<&[u8]>,
        stream: Option<&web_sys::ReadableStream>,
    ) -> Result<web_sys::Response, JsValue>;
}

/// `response` as the runtime's `Response`, made in one call. (workers-rs' conversion made a
/// `ResponseInit` and set its status and headers, then a `Uint8Array` and copied the body into
/// it, then the response: six calls, and a panic if the runtime refused any.)
fn for_runtime(response: &Response) -> worker::Result<web_sys::Response> {
    let (bytes, stream) = match response.body() {
        ResponseBody::Body(bytes) => (Some(bytes.as_slice()), None),
        ResponseBody::Stream(stream) => (None, Some(stream)),
        ResponseBody::Empty => (None, None),
    };
    js_respond(response.status_code(), &response.headers().0, bytes, stream)
        .map_err(|e| worker::Error::JsError(e.as_string().unwrap_or_else(|| "bad response".into())))
}

/// The whole request: the answer goes to `reply` as soon as it is ready; a stream is then
/// relayed here to its end.
async fn serve(req: web_sys::Request, env: Env, ctx: Context, reply: Reply) {
    let started = now_ms();
    let hangup = Hangup::new();
    let _watch = AbortWatch::new(&req, &hangup);
    let url = req.url();
    // The method as sent: workers-rs maps a method it does not know (PROPFIND) to GET.
    let method = req.method();
    let incoming = Incoming {
        req: &req,
        headers: req.headers(),
        method: &method,
        path: url_path(&url),
    };
    let id = request_id(incoming.header("cf-ray").as_deref(), random_u64());
    let correlation = Correlation::from_headers(
        incoming.header("x-request-id").as_deref(),
        incoming.header("traceparent").as_deref(),
    );
    let mut line = RequestLog::new(&id, &method, incoming.path);
    line.client_request_id = correlation.client_request_id;
    line.trace_id = correlation.trace_id;
    let log: Log = Rc::new(RefCell::new(LogLine {
        line,
        rate_limit: None,
        started,
        written: false,
    }));

    let cx = Cx {
        env: &env,
        ctx: &ctx,
        log: &log,
        hangup: &hangup,
    };
    let (answer, pump) = match apart(handle(incoming, &cx, &id)).await {
        Ok((response, pump)) => (Ok(response), pump),
        Err(e) => {
            log.borrow_mut().line.set_error(&e);
            (error_response(&e), None)
        }
    };
    let response = answer.and_then(|r| finish_headers(r, &id, &log, started));
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            // Building the answer itself failed: the request's line says internal_error, this
            // one why.
            let event = Event::new("response_failed")
                .in_request(&id)
                .with_detail(&e.to_string());
            super::error_line(&event.to_line());
            log.borrow_mut().line.set_error(&AppError::Internal);
            reply.send(error_response(&AppError::Internal));
            return;
        }
    };
    reply.send(Ok(response));
    if let Some(pump) = pump {
        apart(pump.run()).await;
    }
}

/// Adds the request id, limits, route and cache status to an answer, and writes the log line
/// unless a stream is still to come.
fn finish_headers(
    response: Response,
    id: &str,
    log: &Log,
    started: u64,
) -> worker::Result<Response> {
    let headers = response.headers();
    headers.set(names::REQUEST_ID, id)?;
    let mut log = log.borrow_mut();
    for (name, value) in log.rate_limit.iter().flat_map(|info| info.to_headers()) {
        headers.set(name, &value)?;
    }
    if let Some(route) = &log.line.route {
        headers.set(names::ROUTE, route)?;
    }
    if let Some(cache) = log.line.cache {
        headers.set(names::CACHE, cache)?;
    }
    if log.line.status == 0 {
        log.line.status = response.status_code();
    }
    if !log.line.stream || log.line.error.is_some() {
        log.line
            .ttfb_ms
            .get_or_insert(now_ms().saturating_sub(started));
        log.write();
    }
    Ok(response)
}

/// What every step of a request needs from the runtime.
struct Cx<'a> {
    env: &'a Env,
    ctx: &'a Context,
    log: &'a Log,
    hangup: &'a Hangup,
}

/// The caller's request, with what was read of it first.
struct Incoming<'a> {
    req: &'a web_sys::Request,
    /// Its headers, taken from the runtime once (a request reads eight of them).
    headers: web_sys::Headers,
    method: &'a str,
    path: &'a str,
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten()
    }
}

async fn handle(
    req: Incoming<'_>,
    cx: &Cx<'_>,
    request_id: &str,
) -> Result<(Response, Option<Pump>), AppError> {
    let endpoint = match_route(req.method, req.path)?;
    if endpoint == Endpoint::Health {
        // Liveness only: answers even when the configuration is broken, and reveals nothing.
        return json_response(200, br#"{"status":"ok"}"#.to_vec())
            .map(|r| (r, None))
            .map_err(|_| AppError::Internal);
    }
    let isolate = isolate(cx.env)?;
    // Auth comes first: nothing of a rejected request is read, let alone sent upstream.
    let authorization = req.header("authorization");
    let claims = apart(
        isolate
            .auth
            .authenticate(authorization.as_deref(), request_id),
    )
    .await?;
    let plans = &isolate.config.plans;
    let plan = plans.for_claim(claims.plan.as_deref())?;
    let limiter = Limiter::new(cx.env, &claims.sub, plan, plans.limits_enabled)?;
    cx.log.borrow_mut().line.sub = Some(claims.sub);
    let config = &isolate.config;
    let answer = match endpoint {
        Endpoint::Models => models(config, plan).map(|r| (r, None)),
        Endpoint::Usage => apart(usage(config, plan, &limiter))
            .await
            .map(|r| (r, None)),
        Endpoint::ChatCompletions => match apart(read_body(&req, config.max_body_bytes)).await {
            Ok(body) => {
                let cache_header = req.header(names::CACHE);
                apart(chat(body, cx, config, plan, &limiter, cache_header)).await
            }
            Err(e) => Err(e),
        },
        Endpoint::ResumeStream => apart(resume(&req, cx, config)).await.map(|r| (r, None)),
        Endpoint::Health => Err(AppError::Internal),
    };
    // Every answer after auth shows the caller's limits (one more round trip only when the
    // request did not reach the limiter).
    // Not apart: where limits are off it returns at once, and the object's round trip inside it
    // runs apart already.
    if let Some(snapshot) = limiter.for_headers().await {
        cx.log.borrow_mut().rate_limit = Some(crate::limiter::rate_limit_info(&snapshot));
    }
    cx.log.borrow_mut().line.limiter_ms = limiter.admit_ms();
    answer
}

/// `GET /v1/models`: the plan's models.
#[inline(never)]
fn models(config: &Config, plan: &crate::plans::Plan) -> Result<Response, AppError> {
    json_ok(&model_list(config, plan))
}

/// `GET /v1/usage`: the caller's usage as its object holds it.
async fn usage(
    config: &Config,
    plan: &crate::plans::Plan,
    limiter: &Limiter,
) -> Result<Response, AppError> {
    let snapshot = limiter.peek().await?;
    json_ok(&crate::limiter::usage_report(
        plan,
        config,
        snapshot.as_ref(),
    ))
}

/// `value` as a 200 JSON answer.
fn json_ok(value: &impl serde::Serialize) -> Result<Response, AppError> {
    serde_json::to_vec(value)
        .map_err(|_| AppError::Internal)
        .and_then(|body| json_response(200, body).map_err(|_| AppError::Internal))
}

async fn read_body(req: &Incoming<'_>, limit: u64) -> Result<Vec<u8>, AppError> {
    crate::caller::request::check_content_type(req.header("content-type").as_deref())?;
    let declared = req.header("content-length");
    check_declared_length(declared.as_deref(), limit)?;
    let encoding = req.header("content-encoding");
    let body = Body::new(
        req.req.as_ref(),
        req.req.body(),
        limit,
        declared.as_deref(),
        encoding.as_deref(),
    );
    read_capped(body, None).await.map_err(|e| match e {
        ReadError::TooLarge => AppError::BodyTooLarge { limit },
        ReadError::Broken | ReadError::Timeout => AppError::InvalidJson {
            message: "the request body could not be read".to_owned(),
        },
    })
}

/// A chat request's lifecycle with its admission: every step goes through here, so the
/// admission always holds the charge as it stands. Dropped before its end (the caller left,
/// the task was dropped), it tells the lifecycle the caller is gone first.
struct Tracked {
    chat: Chat,
    admission: Admission,
    log: Log,
}

impl Tracked {
    fn step<T>(&mut self, f: impl FnOnce(&mut Chat, &mut RequestLog) -> T) -> T {
        let mut log = self.log.borrow_mut();
        let out = f(&mut self.chat, &mut log.line);
        self.admission.set_charge(self.chat.charge());
        if self.chat.is_over() {
            log.line.charged = Some(self.chat.charge());
        }
        out
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.chat.is_over() {
            self.step(Chat::caller_gone);
        }
        // The admission is dropped next, settling with the charge just set.
    }
}

async fn chat(
    body: Vec<u8>,
    cx: &Cx<'_>,
    config: &Config,
    plan: &crate::plans::Plan,
    limiter: &Limiter,
    cache_header: Option<String>,
) -> Result<(Response, Option<Pump>), AppError> {
    let mut call = parse_chat(&body)?;
    let body_bytes = body.len();
    drop(body);
    let log = cx.log;
    {
        let line = &mut log.borrow_mut().line;
        line.alias = Some(crate::error::shorten(&call.alias, 64));
        call.correlation = line.client_request_id.clone().or(line.trace_id.clone());
    }
    // The plan: the model must be in it (403), the output is capped to its maximum.
    plan.check_model(config, &call.alias)?;
    plan.check_request(&mut call.body)?;
    let output_cap = plan.cap_output(&mut call.body);
    let (prompt_estimate, reservation) =
        crate::plans::estimate_tokens(body_bytes, output_cap, &call.body);
    let chain = routing::chain(config, &call.alias)?;
    if limiter.enabled() {
        crate::caller::request::check_prompt_fits(prompt_estimate, plan.tokens_per_day)?;
    }
    log.borrow_mut().line.stream = call.stream;
    // Anthropic needs an output cap: the plan's, when the caller set none (cap_output sets one
    // anyway; this is the backstop). It is part of the cache key too.
    let default_max_tokens = if plan.max_output_tokens > 0 {
        plan.max_output_tokens
    } else {
        DEFAULT_MAX_OUTPUT_TOKENS
    };

    let store = cache_store(config, &call, &chain, default_max_tokens, cx, &cache_header);
    if let Some(store) = &store {
        if let Some(hit) = apart(store.lookup()).await {
            // A cached answer costs a request, no tokens.
            limiter.admit(cx.ctx, 0, false).await?.settle(0);
            return replay(hit, &call, log).map(|r| (r, None));
        }
    }
    // Admitted (or 429) by the caller's limiter; from here the lifecycle decides what it
    // settles for, on every path.
    let admission = limiter.admit(cx.ctx, reservation, call.stream).await?;
    let labels = chain.iter().map(Route::label).collect();
    let mut tracked = Tracked {
        chat: Chat::new(labels, prompt_estimate, reservation).with_cache_weights(
            chain
                .iter()
                .map(|r| {
                    CacheWeights::of(r.provider.kind)
                        .with_plan(plan.cached_input_weight, plan.cache_write_weight)
                })
                .collect(),
        ),
        admission,
        log: Rc::clone(log),
    };
    if cx.hangup.is_raised() {
        tracked.step(Chat::caller_gone);
        return Err(AppError::CallerGone);
    }
    let idle = Duration::from_millis(config.upstream_timeout_ms);
    let to_headers = if call.stream {
        idle
    } else {
        Duration::from_millis(config.answer_timeout_ms)
    };
    let prompt_cache = Some(&config.prompt_cache).filter(|c| c.enabled);
    let mut next = tracked.step(|c, l| c.start(l)).map(Next::Try);
    loop {
        match next {
            Some(Next::Try(i)) => {
                let route = chain.get(i).ok_or(AppError::Internal)?;
                let Some((end, response)) = apart(attempt(
                    route,
                    &call,
                    cx,
                    to_headers,
                    default_max_tokens,
                    prompt_cache,
                ))
                .await
                else {
                    tracked.step(Chat::caller_gone);
                    return Err(AppError::CallerGone);
                };
                next = Some(tracked.step(|c, l| c.attempt_ended(end, l)));
                if next == Some(Next::Read) {
                    let (response, key) = response.ok_or(AppError::Internal)?;
                    let upstream = Accepted {
                        response,
                        key,
                        route,
                        tracked,
                        store,
                    };
                    return if call.stream {
                        let stream = (config.stream_coalesce_ms, config.resume_window_seconds);
                        streamed(upstream, &call, cx, idle, stream)
                    } else {
                        apart(answer(upstream, &call, cx, idle)).await
                    };
                }
            }
            Some(Next::Fail(error)) => return Err(error),
            Some(Next::Read) | None => return Err(AppError::Internal),
        }
    }
}

/// One route tried: how it ended, and the provider's response (with the key it was sent with)
/// when it answered 2xx; `None` when the caller went away first.
async fn attempt(
    route: &Route<'_>,
    call: &ChatCall,
    cx: &Cx<'_>,
    to_headers: Duration,
    default_max_tokens: u32,
    prompt_cache: Option<&PromptCache>,
) -> Option<(AttemptEnd, Option<(Answer, String)>)> {
    let ended = |end| Some((end, None));
    let Some(key) = secret_text(cx.env, route.key_secret()).filter(|k| !k.trim().is_empty()) else {
        let name = route.key_secret().to_owned();
        return ended(AttemptEnd::NotSent(AppError::MissingSecret { name }));
    };
    // Keyed by USER_HASH_KEY when the operator set one, else by the provider key.
    let hash_key = secret_text(cx.env, USER_HASH_KEY);
    let sub = cx.log.borrow().line.sub.clone().unwrap_or_default();
    let end_user = end_user_id(hash_key.as_deref().unwrap_or(&key).as_bytes(), &sub);
    let built = upstream_request(
        route,
        call,
        &key,
        default_max_tokens,
        &end_user,
        prompt_cache,
    );
    let upstream = match built {
        Ok(u) => u,
        Err(e) => return ended(AttemptEnd::NotSent(e)),
    };
    let headers: Vec<(&str, &str)> = upstream
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let request = Outgoing {
        url: &upstream.url,
        method: "POST",
        headers: &headers,
        body: Some(&upstream.body),
    };
    let response = match apart(fetch(request, to_headers, Some(cx.hangup))).await {
        Ok(r) => r,
        Err(FetchError::NotSent) => return ended(AttemptEnd::NotSent(AppError::Internal)),
        Err(FetchError::CallerGone) => return None,
        Err(FetchError::NoConnection) => return ended(AttemptEnd::NoConnection),
        Err(FetchError::NoAnswer) => return ended(AttemptEnd::NoAnswer),
    };
    let status = response.status();
    if (200..300).contains(&status) {
        return Some((AttemptEnd::Accepted { status }, Some((response, key))));
    }
    ended(apart(refused(route, response, status, &key, to_headers)).await)
}

/// A provider's answer other than 2xx, as the provider's error (its key and address scrubbed
/// from what is kept of the body).
async fn refused(
    route: &Route<'_>,
    response: Answer,
    status: u16,
    key: &str,
    to_headers: Duration,
) -> AttemptEnd {
    let body = read_upstream(&response, MAX_ERROR_BODY, to_headers)
        .await
        .unwrap_or_default();
    let values: Vec<(String, String)> = [names::RETRY_AFTER, names::RETRY_AFTER_MS]
        .iter()
        .filter_map(|n| response.header(n).map(|v| ((*n).to_owned(), v)))
        .collect();
    let scrub = [key, route.provider.base_url.as_str()];
    let error = error_from_response(
        route.provider.kind,
        status,
        |n| values.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()),
        &body,
        &scrub,
    );
    AttemptEnd::Refused { status, error }
}

/// A provider's 2xx response, with the key and route it came through, and what the request
/// goes on with: its lifecycle and the cache's store.
struct Accepted<'a> {
    response: Answer,
    key: String,
    route: &'a Route<'a>,
    tracked: Tracked,
    store: Option<kv::Store>,
}

/// The provider accepted the work: its complete answer, read within `idle`.
async fn answer(
    upstream: Accepted<'_>,
    call: &ChatCall,
    cx: &Cx<'_>,
    idle: Duration,
) -> Result<(Response, Option<Pump>), AppError> {
    let Accepted {
        response,
        route,
        mut tracked,
        store,
        ..
    } = upstream;
    let kind = route.provider.kind;
    let created = now_ms() / 1000;
    let read = select(
        apart(read_upstream(&response, MAX_ANSWER_BYTES, idle)),
        cx.hangup.wait(),
    )
    .await;
    let body = match read {
        Either::Left((Ok(body), _)) => body,
        Either::Left((Err(e), _)) => return Err(tracked.step(|c, _| c.answer_failed(e))),
        Either::Right(_) => {
            tracked.step(Chat::caller_gone);
            return Err(AppError::CallerGone);
        }
    };
    match complete(kind, &body, &call.alias, created) {
        Ok(answer) => {
            tracked.step(|c, l| c.answered(answer.usage.as_ref(), answer.body.len() as u64 / 4, l));
            if let Some(store) = &store {
                store.put(&route.label(), &answer.body);
            }
            json_response(200, answer.body)
                .map(|r| (r, None))
                .map_err(|_| AppError::Internal)
        }
        Err(e) => Err(tracked.step(|c, _| c.answer_failed(e))),
    }
}

/// The provider accepted the work, streamed: the caller's answer, and the [`Pump`] that
/// relays the stream once the caller has the answer's head. A function of its own, so that a
/// JSON answer does not compile it.
#[inline(never)]
fn streamed(
    upstream: Accepted<'_>,
    call: &ChatCall,
    cx: &Cx<'_>,
    idle: Duration,
    (coalesce_ms, window_seconds): (u64, u64),
) -> Result<(Response, Option<Pump>), AppError> {
    let Accepted {
        response,
        key,
        route,
        mut tracked,
        store,
    } = upstream;
    let kind = route.provider.kind;
    let label = route.label();
    let created = now_ms() / 1000;
    let Some(upstream) = response.body() else {
        return Err(tracked.step(|c, _| c.answer_failed(UpstreamError::BadResponse)));
    };
    let Ok((pipe, body)) = Pipe::new(&upstream, cx.hangup) else {
        return Err(tracked.step(|c, _| c.answer_failed(UpstreamError::BadResponse)));
    };
    let scrub = vec![key, route.provider.base_url.clone()];
    let relay = Relay::new(kind, &call.alias, call.include_usage, scrub, created);
    let resume = resumable(cx, window_seconds);
    let id = resume.as_ref().map(|r| r.handoff.id().to_owned());
    let pump = Pump {
        pipe,
        relay,
        outbox: Outbox::new(coalesce_ms),
        idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
        read_started: 0,
        stalled_since: None,
        flush_armed: false,
        tracked,
        hangup: cx.hangup.clone(),
        cache: store.map(|s| (s, StreamFold::new(), call.alias.clone(), label)),
        resume,
        over: false,
        waker: None,
    };
    let response = Response::from_body(ResponseBody::Stream(body))
        .and_then(sse_response)
        .map_err(|_| AppError::Internal)?;
    if let Some(id) = id {
        cx.log.borrow_mut().line.stream_id = Some(id.clone());
        response
            .headers()
            .set(names::STREAM_ID, &id)
            .map_err(|_| AppError::Internal)?;
    }
    Ok((response, Some(pump)))
}

/// The cache entry's store when the request is cacheable (the log says `MISS`), else `None`
/// (`BYPASS`).
fn cache_store(
    config: &Config,
    call: &ChatCall,
    chain: &[Route<'_>],
    default_max_tokens: u32,
    cx: &Cx<'_>,
    cache_header: &Option<String>,
) -> Option<kv::Store> {
    let store = cache::ttl(config.cache_ttl_seconds)
        .filter(|_| cache::wants_cache(cache_header.as_deref(), &call.body))
        .and_then(|ttl| {
            let labels: Vec<String> = chain.iter().map(Route::label).collect();
            let sub = cx.log.borrow().line.sub.clone().unwrap_or_default();
            let key = cache::key(
                config.cache_scope,
                &sub,
                &labels,
                default_max_tokens,
                &call.body,
            );
            kv::Store::new(cx.env, cx.ctx, key, ttl)
        });
    let status = if store.is_some() {
        CacheStatus::Miss
    } else {
        CacheStatus::Bypass
    };
    cx.log.borrow_mut().line.cache = Some(status.as_str());
    store
}

/// A cache hit, as JSON or replayed as SSE; no provider is called.
fn replay(hit: crate::cache::Cached, call: &ChatCall, log: &Log) -> Result<Response, AppError> {
    let response = if call.stream {
        let body = hit.sse_body(call.include_usage).ok_or(AppError::Internal)?;
        Response::from_bytes(body).and_then(sse_response)
    } else {
        json_response(200, hit.json_body())
    };
    let mut log = log.borrow_mut();
    log.line.cache = Some(CacheStatus::Hit.as_str());
    log.line.route = Some(hit.route);
    // The whole answer is in hand: the line is complete now, streamed or not.
    log.line.status = 200;
    log.line.ttfb_ms = Some(now_ms().saturating_sub(log.started));
    log.write();
    response.map_err(|_| AppError::Internal)
}

fn sse_response(r: Response) -> worker::Result<Response> {
    let h = Headers::new();
    h.set("content-type", "text/event-stream; charset=utf-8")?;
    h.set("cache-control", "no-cache")?;
    Ok(r.with_status(200).with_headers(h))
}

/// Relays one stream: upstream piece -> relay -> the caller's body, reading the provider only
/// while the caller takes what was written, with the idle limit on both sides. Writes are
/// coalesced by the [`Outbox`]. With a cache store, folds what the caller gets into a full
/// answer and stores it if it completed.
///
/// Driven by its pipe's events ([`Driver`]): a piece is relayed, written and the next read
/// started in the callback that brought it. [`Pump::run`] only waits for the end, or for the
/// caller's departure.
struct Pump {
    pipe: Pipe,
    relay: Relay,
    outbox: Outbox,
    idle_ms: u64,
    /// When the read under way started: the provider's idle limit counts from there (time spent
    /// waiting for the caller is not the provider's silence).
    read_started: u64,
    /// Since the caller last took a write, while the outbox is full (the caller's stall limit
    /// counts from there); `None` while there is room.
    stalled_since: Option<u64>,
    /// The coalescing window's timer is armed.
    flush_armed: bool,
    tracked: Tracked,
    hangup: Hangup,
    /// The store, the fold, the alias and the route.
    cache: Option<(kv::Store, StreamFold, String, String)>,
    /// A resumable stream's events (`RESUME_WINDOW_SECONDS` > 0).
    resume: Option<Resumable>,
    /// The stream ended (relayed to its end, or the caller left).
    over: bool,
    /// [`Pump::run`]'s task, woken at the end.
    waker: Option<Waker>,
}

impl Driver for RefCell<Pump> {
    fn event(&self, event: PipeEvent) {
        // Events come from the runtime's callbacks, never while the pump is borrowed.
        let Ok(mut pump) = self.try_borrow_mut() else {
            return;
        };
        if pump.over {
            return;
        }
        match event {
            PipeEvent::Read(piece) => {
                let now = now_ms();
                let out = match piece {
                    Piece::Bytes(bytes) => pump.relay.feed(&bytes),
                    Piece::End => pump.relay.finish(),
                    Piece::Broken => pump.relay.fail(&UpstreamError::Network),
                };
                pump.emit(out, now);
                pump.next(now);
            }
            PipeEvent::Written => {
                // Counted when needed (in `Pump::next`), unless the pump waits for this.
                if pump.stalled_since.is_some() {
                    let taken = pump.pipe.taken();
                    if taken > 0 {
                        let now = now_ms();
                        // Progress: the stall limit starts again.
                        pump.outbox.written(taken);
                        pump.stalled_since = Some(now);
                        pump.next(now);
                    }
                }
            }
            // Nobody to write to once the caller left.
            PipeEvent::Timer(Timer::Flush | Timer::Stall) if pump.detached() => {}
            PipeEvent::Timer(Timer::Flush) => {
                let now = now_ms();
                pump.flush_armed = false;
                match pump.outbox.due_in(now) {
                    Some(0) => {
                        if let Some(bytes) = pump.outbox.take(now) {
                            pump.pipe.write(&bytes);
                        }
                    }
                    Some(wait) => pump.arm_flush(wait),
                    None => {}
                }
            }
            // One idle timer for the whole stream, not one per read: when it fires early (a
            // later read started since it was armed) it is armed again for what is left.
            PipeEvent::Timer(Timer::Idle) => {
                let idle = pump.idle_ms;
                if !pump.pipe.is_reading() {
                    pump.pipe.arm(Timer::Idle, idle);
                    return;
                }
                let now = now_ms();
                let quiet = now.saturating_sub(pump.read_started);
                if quiet >= idle {
                    let out = pump.relay.fail(&UpstreamError::Timeout);
                    pump.emit(out, now);
                } else {
                    pump.pipe.arm(Timer::Idle, idle - quiet);
                }
            }
            PipeEvent::Timer(Timer::Stall) => {
                let Some(since) = pump.stalled_since else {
                    return;
                };
                let quiet = now_ms().saturating_sub(since);
                if quiet >= pump.idle_ms {
                    pump.caller_left(Some("client_stalled"));
                } else {
                    let left = pump.idle_ms - quiet;
                    pump.pipe.arm(Timer::Stall, left);
                }
            }
        }
    }
}

impl Pump {
    async fn run(self) {
        let idle = self.idle_ms;
        let pump = Rc::new(RefCell::new(self));
        {
            let mut p = pump.borrow_mut();
            let driver: Weak<RefCell<Pump>> = Rc::downgrade(&pump);
            p.pipe.drive(driver);
            p.pipe.arm(Timer::Idle, idle);
            p.next(now_ms());
        }
        std::future::poll_fn(|cx| {
            let mut p = pump.borrow_mut();
            if !p.over && !p.detached() && p.hangup.is_raised() {
                p.caller_left(None);
            }
            if p.over || p.detached() {
                return Poll::Ready(());
            }
            p.waker = Some(cx.waker().clone());
            // The hangup wakes this task too.
            let _ = Pin::new(&mut p.hangup.wait()).poll(cx);
            Poll::Pending
        })
        .await;
        if pump.borrow().detached() {
            Pump::hand_off(&pump).await;
        }
        // Dropping the pump closes the caller's body where it is and cancels the provider's,
        // unless both ended.
    }

    /// The caller left before the end: the provider is read on (by the pipe's events, as
    /// before) while this sends the events to the user's object in batches, one call at a time,
    /// from the first event kept (the caller may have lost any of them on the way), to the end.
    async fn hand_off(pump: &Rc<RefCell<Pump>>) {
        let Some(handoff) = pump.borrow().resume.as_ref().map(|r| r.handoff.clone()) else {
            return;
        };
        // False once a batch could not be handed over: the provider is still read to its end,
        // for what it charges, but nothing more goes to the object.
        let mut holding = true;
        loop {
            let batch = std::future::poll_fn(|cx| {
                let mut p = pump.borrow_mut();
                let over = p.over;
                let (bytes, last) = match p.resume.as_ref() {
                    Some(r) if holding => (r.unsent().to_vec(), r.log.last()),
                    _ => (Vec::new(), 0),
                };
                if !bytes.is_empty() || over {
                    return Poll::Ready((bytes, last, over));
                }
                p.waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            let (bytes, last, over) = batch;
            if holding && (!bytes.is_empty() || over) {
                holding = handoff.send(&bytes, over).await;
                let mut p = pump.borrow_mut();
                if holding {
                    if let Some(r) = p.resume.as_mut() {
                        r.sent = last;
                    }
                    let mut log = p.tracked.log.borrow_mut();
                    *log.line.handoff_calls.get_or_insert(0) += 1;
                    *log.line.handoff_bytes.get_or_insert(0) += bytes.len() as u64;
                } else {
                    p.tracked.log.borrow_mut().line.detail =
                        Some("the stream could not be handed over".to_owned());
                }
            }
            if over {
                // The line waited for the handoff's last call.
                let log = Rc::clone(&pump.borrow().tracked.log);
                log.borrow_mut().write();
                return;
            }
            if holding {
                // What comes meanwhile goes in the next call: a provider's tokens, tens of ms
                // apart, cost a call per pause rather than one each.
                sleep(HANDOFF_PAUSE).await;
            }
        }
    }

    /// The caller left and the stream goes on for a resume.
    fn detached(&self) -> bool {
        self.resume.as_ref().is_some_and(|r| r.detached)
    }

    /// Takes what the relay made of a piece: written now or held for the window; the stream's
    /// end when the relay closed.
    fn emit(&mut self, out: Vec<u8>, now: u64) {
        if !out.is_empty() {
            if let Some((_, fold, _, _)) = &mut self.cache {
                fold.feed(&out);
            }
            let mut log = self.tracked.log.borrow_mut();
            if log.line.ttfb_ms.is_none() {
                log.line.ttfb_ms = Some(now.saturating_sub(log.started));
            }
            drop(log);
            let out = match &mut self.resume {
                Some(r) => {
                    let numbered = r.log.number(&out);
                    if r.detached {
                        // For the handoff's task.
                        if let Some(w) = self.waker.take() {
                            w.wake();
                        }
                        if self.relay.is_closed() {
                            self.finish();
                        }
                        return;
                    }
                    numbered
                }
                None => out,
            };
            // The stream's end counts as the provider sent it, even if the caller is gone.
            if self.hangup.is_raised() && !self.relay.is_closed() {
                return self.caller_left(None);
            }
            if let Some(bytes) = self.outbox.push(&out, now) {
                self.pipe.write(&bytes);
            } else if !self.flush_armed && !self.relay.is_closed() {
                let wait = self.outbox.due_in(now).unwrap_or(0);
                self.arm_flush(wait);
            }
        }
        if self.relay.is_closed() {
            self.finish();
        }
    }

    fn arm_flush(&mut self, wait: u64) {
        self.flush_armed = true;
        self.pipe.arm(Timer::Flush, wait);
    }

    /// Reads the provider on if the caller has taken enough of what was written; else waits
    /// for the caller (the stall limit runs).
    fn next(&mut self, now: u64) {
        if self.over {
            return;
        }
        if self.detached() {
            if !self.pipe.is_reading() {
                self.read_started = now;
                self.pipe.read();
            }
            return;
        }
        if self.hangup.is_raised() {
            return self.caller_left(None);
        }
        self.outbox.written(self.pipe.taken());
        if self.outbox.has_room() {
            self.stalled_since = None;
            if !self.pipe.is_reading() {
                self.read_started = now;
                self.pipe.read();
            }
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
            let idle = self.idle_ms;
            self.pipe.arm(Timer::Stall, idle);
        }
    }

    /// The stream is over: [`Pump::run`] returns.
    fn end(&mut self) {
        self.over = true;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The caller went away (or stopped reading): the upstream is dropped (the runtime cancels
    /// it) and the request charged as its lifecycle says.
    fn caller_left(&mut self, why: Option<&str>) {
        if let Some(r) = self.resume.as_mut().filter(|_| !self.relay.is_closed()) {
            if !r.detached {
                // Read on for a resume: the lifecycle goes on, the charge is what the
                // provider reports at the end.
                r.detached = true;
                let mut log = self.tracked.log.borrow_mut();
                log.line.handed_off = true;
                if let Some(why) = why {
                    log.line.detail = Some(format!("{why}; the stream was handed over"));
                }
                drop(log);
                self.pipe.close();
                if let Some(w) = self.waker.take() {
                    w.wake();
                }
                self.next(now_ms());
            }
            return;
        }
        if let Some(why) = why {
            self.tracked.log.borrow_mut().line.error = Some(why.to_owned());
        }
        self.tracked.step(Chat::caller_gone);
        self.tracked.log.borrow_mut().write();
        self.end();
    }

    fn finish(&mut self) {
        if let Some(bytes) = self.outbox.take(now_ms()) {
            if !self.detached() {
                self.pipe.write(&bytes);
            }
        }
        self.pipe.close();
        let outcome = self.relay.outcome();
        let usage = self.relay.usage();
        let last = self.relay.usage_is_final();
        let produced = self.relay.chunks();
        if let (Some((store, fold, alias, route)), Outcome::Done) = (self.cache.take(), &outcome) {
            if let Some(answer) = fold.finish(&alias, usage.clone()) {
                store.put(&route, &answer);
            }
        }
        self.tracked
            .step(|c, l| c.stream_ended(&outcome, usage.as_ref(), last, produced, l));
        if !self.detached() {
            // A handed-over stream's line is written after the handoff's last call.
            self.tracked.log.borrow_mut().write();
        }
        self.end();
    }
}

/// The least time between two calls of a stream's handoff (a resume sees the events that late).
const HANDOFF_PAUSE: Duration = Duration::from_millis(250);

/// A resumable stream's numbered events, and the way to its user's object.
struct Resumable {
    log: EventLog,
    handoff: Handoff,
    /// The caller left before the end: the events go to the object, not the caller.
    detached: bool,
    /// The last event the object holds.
    sent: u64,
}

impl Resumable {
    /// The events the object does not hold yet: after the last sent, or from the first kept
    /// when older ones were dropped.
    fn unsent(&self) -> &[u8] {
        self.log
            .after(self.sent)
            .or_else(|_| self.log.after(self.log.first() - 1))
            .unwrap_or_default()
    }
}

/// A new stream's resumability: with a window, an id for the caller's user.
fn resumable(cx: &Cx<'_>, window_seconds: u64) -> Option<Resumable> {
    if window_seconds == 0 {
        return None;
    }
    let sub = cx.log.borrow().line.sub.clone()?;
    let id = stream_id(&sub, now_ms(), random_u64());
    Some(Resumable {
        log: EventLog::default(),
        handoff: Handoff::new(cx.env, &sub, &id, window_seconds.saturating_mul(1000)),
        detached: false,
        sent: 0,
    })
}

/// `GET /v1/chat/completions/streams/{id}`: the stream's events after `Last-Event-ID`, and the
/// rest as it comes, from the caller's own object. Nothing goes upstream and nothing is
/// charged: the stream's request was.
async fn resume(req: &Incoming<'_>, cx: &Cx<'_>, config: &Config) -> Result<Response, AppError> {
    let path = req.path;
    let id = path.strip_prefix(STREAMS_PATH).unwrap_or_default();
    let sub = cx.log.borrow().line.sub.clone().unwrap_or_default();
    cx.log.borrow_mut().line.stream_id = Some(crate::error::shorten(id, 64));
    let header = req.header(names::LAST_EVENT_ID);
    let after = last_event_id(header.as_deref()).ok_or_else(|| AppError::InvalidRequest {
        param: Some(names::LAST_EVENT_ID.to_owned()),
        message: "Last-Event-ID must be a whole number: the id of the last event received."
            .to_owned(),
    })?;
    if config.resume_window_seconds == 0 || !belongs_to(id, &sub) {
        return Err(AppError::StreamExpired);
    }
    let window_ms = config.resume_window_seconds.saturating_mul(1000);
    // A caller that vanished without a word is noticed when it stops reading: its request
    // hands the stream over within the stall limit, which a resume may have to wait out.
    let wait_ms = config
        .upstream_timeout_ms
        .saturating_add(2_000)
        .min(window_ms);
    let response = streams::open(
        cx.env,
        &sub,
        id,
        after,
        wait_ms,
        config.upstream_timeout_ms,
        window_ms,
    )
    .await?;
    // The object's body, as it comes (a new response: the object's headers are immutable).
    let response = match response.body() {
        ResponseBody::Stream(body) => Response::from_body(ResponseBody::Stream(body.clone())),
        _ => Response::from_bytes(Vec::new()),
    }
    .and_then(sse_response)
    .map_err(|_| AppError::Internal)?;
    response
        .headers()
        .set(names::STREAM_ID, id)
        .map_err(|_| AppError::Internal)?;
    Ok(response)
}

/// An upstream body, at most `limit` bytes within `timeout`, as the provider's failure.
async fn read_upstream(
    response: &Answer,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, UpstreamError> {
    read_capped(Body::of(response, limit as u64), Some(timeout))
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => UpstreamError::BadResponse,
            ReadError::Broken => UpstreamError::Network,
            ReadError::Timeout => UpstreamError::Timeout,
        })
}

fn json_response(status: u16, body: Vec<u8>) -> worker::Result<Response> {
    // `from_body`, not `from_bytes`: that one sets an octet-stream content type, in headers of
    // its own that `with_headers` would then replace.
    let response = Response::from_body(ResponseBody::Body(body))?.with_status(status);
    response.headers().set("content-type", "application/json")?;
    Ok(response)
}

fn error_response(error: &AppError) -> worker::Result<Response> {
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    let response = json_response(error.status(), body)?;
    for (name, value) in error.headers() {
        response.headers().set(name, &value)?;
    }
    Ok(response)
}
