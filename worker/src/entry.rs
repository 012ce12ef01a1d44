//! The wasm glue: the `fetch` event, `Env`, the upstream `Fetch` and the response stream.
//! Every decision is delegated to the host-tested modules; this file only moves bytes and
//! clocks between them and the runtime.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use storycad_protocol::headers as names;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::JsValue;
use worker::{
    console_log, event, AbortController, ByteStream, Context, Date, Delay, Env, Fetch, Headers,
    Method, Request, RequestInit, Response,
};

use crate::auth_glue::Authenticator;
use crate::cache::{self, Status as CacheStatus, StreamFold};
use crate::cache_kv;
use crate::config::{Config, ConfigError};
use crate::endpoints::{match_route, model_list, Endpoint};
use crate::error::{AppError, UpstreamError};
use crate::fallback::{self, Attempt};
use crate::limiter::client::{Admission, Limiter};
use crate::log::{request_id, RequestLog};
use crate::plans::Plans;
use crate::provider::{
    complete, error_from_response, upstream_request, Relay, DEFAULT_MAX_OUTPUT_TOKENS,
};
use crate::relay::Outcome;
use crate::request::{check_declared_length, parse_chat, BodyLimit, ChatCall};
use crate::routing::{self, Route};
use crate::upstream::{Completion, MAX_ANSWER_BYTES};

/// Longest upstream error body read (enough for any provider's JSON error).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What an isolate builds once from its configuration.
struct Isolate {
    config: Config,
    auth: Authenticator,
    plans: Plans,
}

thread_local! {
    // Vars cannot change while an isolate lives, so they are parsed (and a bad one reported)
    // once; the JWKS cache lives here too.
    static ISOLATE: RefCell<Option<Result<Rc<Isolate>, ConfigError>>> = const { RefCell::new(None) };
}

fn isolate(env: &Env) -> Result<Rc<Isolate>, AppError> {
    ISOLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let loaded = slot.get_or_insert_with(|| {
            Config::from_lookup(|name| env_text(env, name)).and_then(|config| {
                let auth = Authenticator::new(
                    config.jwt.verifier(),
                    config.jwt.jwks_url.clone(),
                    config.jwt.cache_entries,
                );
                let plans = Plans::from_config(&config, |name| env_text(env, name))?;
                Ok(Rc::new(Isolate {
                    config,
                    auth,
                    plans,
                }))
            })
        });
        loaded.clone().map_err(AppError::Config)
    })
}

/// A variable's text: a string as is; a `[vars]` table (wrangler passes those as objects) as
/// its JSON.
pub(crate) fn env_text(env: &Env, name: &str) -> Option<String> {
    let value = js_sys::Reflect::get(env.as_ref(), &JsValue::from_str(name)).ok()?;
    if value.is_undefined() || value.is_null() {
        return None;
    }
    if let Some(s) = value.as_string() {
        return Some(s);
    }
    js_sys::JSON::stringify(&value).ok()?.as_string()
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn random_u64() -> u64 {
    let hi = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let lo = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (hi << 32) | lo
}

/// The request's log line, written once: when the answer is complete, or when a stream ends
/// (or is dropped because the caller went away).
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
        console_log!("{}", self.line.to_line());
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.written {
            self.line
                .error
                .get_or_insert_with(|| "client_closed".to_owned());
            self.write();
        }
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let started = now_ms();
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let id = request_id(header("cf-ray").as_deref(), random_u64());
    let path = req.path();
    let log = Rc::new(RefCell::new(LogLine {
        // The method as sent: workers-rs maps a method it does not know (PROPFIND) to GET.
        line: RequestLog::new(&id, &req.inner().method(), &path),
        rate_limit: None,
        started,
        written: false,
    }));

    let answer = handle(req, &env, &ctx, &id, &log).await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            log.borrow_mut().line.set_error(&e);
            error_response(&e)
        }
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            // Building the answer itself failed: say so plainly, still as JSON.
            console_log!(
                "{{\"request_id\":\"{id}\",\"error\":\"internal_error\",\"detail\":\"response: {}\"}}",
                e.to_string().replace('"', "'")
            );
            let mut log = log.borrow_mut();
            log.line.set_error(&AppError::Internal);
            error_response(&AppError::Internal)?
        }
    };
    let headers = response.headers();
    headers.set(names::REQUEST_ID, &id)?;
    {
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
    }
    Ok(response)
}

async fn handle(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    request_id: &str,
    log: &Rc<RefCell<LogLine>>,
) -> Result<worker::Result<Response>, AppError> {
    let method = req.inner().method();
    let endpoint = match_route(&method, &req.path())?;
    if endpoint == Endpoint::Health {
        // Liveness only: answers even when the configuration is broken, and reveals nothing.
        return Ok(json_response(200, br#"{"status":"ok"}"#.to_vec()));
    }
    let isolate = isolate(env)?;
    // Auth comes first: nothing of a rejected request is read, let alone sent upstream.
    let claims = isolate.auth.authenticate(&req, request_id).await?;
    let plan = isolate.plans.for_claim(claims.plan.as_deref())?;
    let limiter = Limiter::new(env, &claims.sub, plan, isolate.plans.limits_enabled)?;
    log.borrow_mut().line.sub = Some(claims.sub);
    let config = &isolate.config;
    let answer = match endpoint {
        Endpoint::Models => serde_json::to_vec(&model_list(config, plan))
            .map(|body| json_response(200, body))
            .map_err(|_| AppError::Internal),
        Endpoint::Usage => {
            let snapshot = limiter.peek().await;
            if limiter.enabled() && snapshot.is_none() {
                Err(AppError::Internal)
            } else {
                let report = crate::limiter::usage_report(plan, config, snapshot.as_ref());
                serde_json::to_vec(&report)
                    .map(|body| json_response(200, body))
                    .map_err(|_| AppError::Internal)
            }
        }
        Endpoint::ChatCompletions => match read_body(&mut req, config.max_body_bytes).await {
            Ok(body) => {
                let cache_header = req.headers().get(names::CACHE).ok().flatten();
                chat(body, env, ctx, config, plan, &limiter, log, cache_header).await
            }
            Err(e) => Err(e),
        },
        Endpoint::Health => Err(AppError::Internal),
    };
    // Every answer after auth shows the caller's limits (one more round trip only when the
    // request did not reach the limiter).
    if let Some(snapshot) = limiter.for_headers().await {
        log.borrow_mut().rate_limit = Some(crate::limiter::rate_limit_info(&snapshot));
    }
    log.borrow_mut().line.limiter_ms = limiter.admit_ms();
    answer
}

async fn read_body(req: &mut Request, limit: u64) -> Result<Vec<u8>, AppError> {
    crate::request::check_content_type(
        req.headers().get("content-type").ok().flatten().as_deref(),
    )?;
    let declared = req.headers().get("content-length").ok().flatten();
    check_declared_length(declared.as_deref(), limit)?;
    let mut body = BodyLimit::new(limit);
    let Ok(mut stream) = req.stream() else {
        // No body at all.
        return Ok(Vec::new());
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| AppError::InvalidJson {
            message: "the request body could not be read".to_owned(),
        })?;
        body.push(&chunk)?;
    }
    Ok(body.into_bytes())
}

#[allow(clippy::too_many_arguments)]
/// The request's context for the chat pipeline.
struct ChatCtx<'a> {
    env: &'a Env,
    ctx: &'a Context,
    /// The caller's `x-storycad-cache` header.
    cache_header: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn chat(
    body: Vec<u8>,
    env: &Env,
    ctx: &Context,
    config: &Config,
    plan: &crate::plans::Plan,
    limiter: &Limiter,
    log: &Rc<RefCell<LogLine>>,
    cache_header: Option<String>,
) -> Result<worker::Result<Response>, AppError> {
    let cx = ChatCtx {
        env,
        ctx,
        cache_header,
    };
    let mut call = parse_chat(&body)?;
    let body_bytes = body.len();
    drop(body);
    log.borrow_mut().line.alias = Some(crate::error::shorten(&call.alias, 64));
    // The plan: the model must be in it (403), the output is capped to its maximum.
    plan.check_model(config, &call.alias)?;
    let output_cap = plan.cap_output(&mut call.body);
    let (prompt_estimate, estimate) =
        crate::plans::estimate_tokens(body_bytes, output_cap, &call.body);
    let chain = routing::chain(config, &call.alias)?;
    if limiter.enabled() {
        crate::request::check_prompt_fits(prompt_estimate, plan.tokens_per_day)?;
    }
    log.borrow_mut().line.stream = call.stream;
    // Anthropic needs an output cap: the plan's, when the caller set none (cap_output sets one
    // anyway; this is the backstop). It is part of the cache key too.
    let default_max_tokens = if plan.max_output_tokens > 0 {
        plan.max_output_tokens
    } else {
        DEFAULT_MAX_OUTPUT_TOKENS
    };

    let store = cache_store(config, &call, &chain, default_max_tokens, &cx, log);
    if let Some(store) = &store {
        if let Some(hit) = store.lookup().await {
            // A cached answer costs a request, no tokens.
            limiter.admit(ctx, 0, false).await?.settle(0);
            return replay(hit, &call, log);
        }
    }
    // Admitted (or 429) by the caller's limiter; settles on every path from here (an error
    // drops the admission, which settles at 0).
    let admission = limiter.admit(ctx, estimate, call.stream).await?;

    let timeout = Duration::from_millis(config.upstream_timeout_ms);
    let last = chain.len().saturating_sub(1);
    for (i, route) in chain.iter().enumerate() {
        let label = route.label();
        log.borrow_mut().line.route = Some(label.clone());
        let started = attempt(route, &call, cx.env, timeout, default_max_tokens).await;
        let (started, status) = match started {
            Ok(s) => s,
            Err((error, status)) => {
                let mut log = log.borrow_mut();
                log.line.upstream_status = status.or(log.line.upstream_status);
                log.line
                    .attempts
                    .push(Attempt::failed(label, status, &error));
                if i < last && fallback::moves_on(&error, status) {
                    continue;
                }
                return Err(error);
            }
        };
        if let Started::Stream(_, relay, _) = &started {
            // The stream ended badly before anything was sent to the caller (its first bytes
            // are held until now): the next route may answer in full.
            match fallback::failed_stream(&relay.outcome()) {
                Some(code) if i < last => {
                    let mut log = log.borrow_mut();
                    log.line.upstream_status = Some(status);
                    log.line.attempts.push(Attempt {
                        route: label,
                        status: Some(status),
                        error: Some(code),
                    });
                    continue;
                }
                _ => {}
            }
        }
        {
            let mut log = log.borrow_mut();
            log.line.upstream_status = Some(status);
            log.line
                .attempts
                .push(Attempt::answered(label.clone(), status));
        }
        return Ok(match started {
            Started::Complete(answer) => {
                log.borrow_mut().line.set_usage(answer.usage.as_ref());
                admission.settle(crate::limiter::charge(
                    answer.usage.as_ref(),
                    prompt_estimate,
                    answer.body.len() as u64 / 4,
                ));
                if let Some(store) = &store {
                    store.put(&label, &answer.body);
                }
                json_response(200, answer.body)
            }
            Started::Stream(upstream, relay, first) => {
                let pump = Pump {
                    upstream,
                    relay,
                    pending: Some(first),
                    idle: timeout,
                    log: Rc::clone(log),
                    done: false,
                    admission,
                    prompt_estimate,
                    cache: store.map(|s| (s, StreamFold::new(), call.alias.clone(), label)),
                };
                // The pump runs as a wait_until task, not inside the body: a caller who
                // leaves mid-stream stops the body's pulls for good, and the log line and
                // the admission's settle would never come (seen under workerd).
                let (outlet, stream) = crate::detached::channel();
                ctx.wait_until(pump.run(outlet));
                Response::from_stream(stream).and_then(sse_response)
            }
        });
    }
    // Config::from_lookup refuses empty chains.
    Err(AppError::Internal)
}

/// The cache entry's store when the request is cacheable (the log says `MISS`), else `None`
/// (`BYPASS`).
fn cache_store(
    config: &Config,
    call: &ChatCall,
    chain: &[Route<'_>],
    default_max_tokens: u32,
    cx: &ChatCtx<'_>,
    log: &Rc<RefCell<LogLine>>,
) -> Option<cache_kv::Store> {
    let store = cache::ttl(config.cache_ttl_seconds)
        .filter(|_| cache::wants_cache(cx.cache_header.as_deref(), &call.body))
        .and_then(|ttl| {
            let labels: Vec<String> = chain.iter().map(Route::label).collect();
            let sub = log.borrow().line.sub.clone().unwrap_or_default();
            let key = cache::key(
                config.cache_scope,
                &sub,
                &labels,
                default_max_tokens,
                &call.body,
            );
            cache_kv::Store::new(cx.env, cx.ctx, key, ttl)
        });
    let status = if store.is_some() {
        CacheStatus::Miss
    } else {
        CacheStatus::Bypass
    };
    log.borrow_mut().line.cache = Some(status.as_str());
    store
}

/// A cache hit, as JSON or replayed as SSE; no provider is called.
fn replay(
    hit: crate::cache::Cached,
    call: &ChatCall,
    log: &Rc<RefCell<LogLine>>,
) -> Result<worker::Result<Response>, AppError> {
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
    Ok(response)
}

fn sse_response(r: Response) -> worker::Result<Response> {
    let h = Headers::new();
    h.set("content-type", "text/event-stream; charset=utf-8")?;
    h.set("cache-control", "no-cache")?;
    Ok(r.with_status(200).with_headers(h))
}

/// A provider's 2xx answer, ready to send.
enum Started {
    /// A complete answer, already translated.
    Complete(Completion),
    /// A stream, with the relay for its provider and its first bytes for the caller (held, so
    /// a stream failing before them can still fall back).
    Stream(ByteStream, Relay, Vec<u8>),
}

/// One route tried: its 2xx answer (and status), or the error with the provider's status when
/// it answered at all.
async fn attempt(
    route: &Route<'_>,
    call: &ChatCall,
    env: &Env,
    timeout: Duration,
    default_max_tokens: u32,
) -> Result<(Started, u16), (AppError, Option<u16>)> {
    let kind = route.provider.kind;
    let key = env
        .secret(route.key_secret())
        .map(|s| s.to_string())
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            let name = route.key_secret().to_owned();
            (AppError::MissingSecret { name }, None)
        })?;
    let upstream =
        upstream_request(route, call, &key, default_max_tokens).map_err(|e| (e, None))?;
    let scrub = vec![key, route.provider.base_url.clone()];

    let mut response = send(&upstream, timeout).await.map_err(|e| (e, None))?;
    let status = response.status_code();

    if !(200..300).contains(&status) {
        let body = read_limited(&mut response, MAX_ERROR_BODY, timeout)
            .await
            .unwrap_or_default();
        let headers = response.headers();
        let values: Vec<(String, String)> = [names::RETRY_AFTER, names::RETRY_AFTER_MS]
            .iter()
            .filter_map(|n| headers.get(n).ok().flatten().map(|v| ((*n).to_owned(), v)))
            .collect();
        let scrub_refs: Vec<&str> = scrub.iter().map(String::as_str).collect();
        let error = error_from_response(
            kind,
            status,
            |n| values.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()),
            &body,
            &scrub_refs,
        );
        return Err((error.into(), Some(status)));
    }

    let created = now_ms() / 1000;
    if !call.stream {
        let body = read_limited(&mut response, MAX_ANSWER_BYTES, timeout)
            .await
            .map_err(|e| (e, Some(status)))?;
        let answer =
            complete(kind, &body, &call.alias, created).map_err(|e| (e.into(), Some(status)))?;
        return Ok((Started::Complete(answer), status));
    }
    let body = response
        .stream()
        .map_err(|_| (UpstreamError::BadResponse.into(), Some(status)))?;
    let mut body = body;
    let mut relay = Relay::new(kind, &call.alias, call.include_usage, scrub, created);
    let mut first = Vec::new();
    while first.is_empty() && !relay.is_closed() {
        first = pull(&mut body, &mut relay, timeout).await;
    }
    Ok((Started::Stream(body, relay, first), status))
}

/// Moves one stream's bytes: upstream chunk -> relay -> caller, with an idle timeout. With a
/// cache store, folds what the caller gets into a full answer and stores it if it completed.
struct Pump {
    upstream: ByteStream,
    relay: Relay,
    /// Bytes read before the answer started (the stream's first), sent first.
    pending: Option<Vec<u8>>,
    idle: Duration,
    log: Rc<RefCell<LogLine>>,
    done: bool,
    /// Settles when the stream ends, is cut, or is dropped: charged what was relayed so far.
    admission: Admission,
    prompt_estimate: u64,
    /// The store, the fold, the alias and the route.
    cache: Option<(cache_kv::Store, StreamFold, String, String)>,
}

impl Pump {
    /// Relays the whole stream into `outlet`; stops reading the upstream as soon as the
    /// caller's body is gone.
    async fn run(mut self, outlet: crate::detached::Outlet) {
        while let Some((Ok(bytes), pump)) = self.next().await {
            self = pump;
            if !outlet.send(bytes) {
                self.log
                    .borrow_mut()
                    .line
                    .error
                    .get_or_insert_with(|| "client_closed".to_owned());
                self.done = true;
            }
        }
    }

    async fn next(mut self) -> Option<(worker::Result<Vec<u8>>, Pump)> {
        loop {
            let out = match self.pending.take() {
                Some(first) => first,
                None => {
                    if self.done {
                        self.finish_log();
                        return None;
                    }
                    pull(&mut self.upstream, &mut self.relay, self.idle).await
                }
            };
            if self.relay.is_closed() {
                self.done = true;
            }
            self.admission.set_charge(crate::limiter::charge(
                self.relay.usage().as_ref(),
                self.prompt_estimate,
                self.relay.chunks(),
            ));
            if !out.is_empty() {
                if let Some((_, fold, _, _)) = &mut self.cache {
                    fold.feed(&out);
                }
                let mut log = self.log.borrow_mut();
                if log.line.ttfb_ms.is_none() {
                    log.line.ttfb_ms = Some(now_ms().saturating_sub(log.started));
                }
                drop(log);
                return Some((Ok(out), self));
            }
        }
    }

    fn finish_log(&mut self) {
        let outcome = self.relay.outcome();
        let usage = self.relay.usage();
        if let (Some((store, fold, alias, route)), Outcome::Done) = (self.cache.take(), &outcome) {
            if let Some(answer) = fold.finish(&alias, usage.clone()) {
                store.put(&route, &answer);
            }
        }
        let mut log = self.log.borrow_mut();
        log.line.set_usage(usage.as_ref());
        match outcome {
            Outcome::Done | Outcome::Open => {}
            Outcome::Truncated => log.line.error = Some("stream_truncated".to_owned()),
            Outcome::Failed(code) => log.line.error = Some(code),
        }
        log.write();
    }
}

/// One upstream read through the relay (with the idle timeout): the bytes for the caller, maybe
/// none yet.
async fn pull(upstream: &mut ByteStream, relay: &mut Relay, idle: Duration) -> Vec<u8> {
    match select(upstream.next(), Delay::from(idle)).await {
        Either::Left((Some(Ok(bytes)), _)) => relay.feed(&bytes),
        Either::Left((Some(Err(_)), _)) => relay.fail(&UpstreamError::Network),
        Either::Left((None, _)) => relay.finish(),
        Either::Right(_) => relay.fail(&UpstreamError::Timeout),
    }
}

/// Sends the upstream request; `Timeout` if no answer (headers) comes in time.
async fn send(
    upstream: &crate::upstream::UpstreamRequest,
    timeout: Duration,
) -> Result<Response, AppError> {
    let headers = Headers::new();
    for (name, value) in &upstream.headers {
        headers.set(name, value).map_err(|_| AppError::Internal)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(Uint8Array::from(upstream.body.as_slice()).into()));
    let request = Request::new_with_init(&upstream.url, &init).map_err(|_| AppError::Internal)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sent = Box::pin(fetch.send_with_signal(&signal));
    // Bound to a name so the borrowed futures are dropped before `fetch` and `signal`.
    #[allow(clippy::let_and_return)]
    let result = match select(sent, Delay::from(timeout)).await {
        Either::Left((Ok(response), _)) => Ok(response),
        Either::Left((Err(_), _)) => Err(UpstreamError::Network.into()),
        Either::Right(_) => {
            controller.abort();
            Err(UpstreamError::Timeout.into())
        }
    };
    result
}

/// Reads a whole upstream body, at most `limit` bytes, within `timeout`.
async fn read_limited(
    response: &mut Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, AppError> {
    let mut stream = response.stream().map_err(|_| UpstreamError::BadResponse)?;
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| UpstreamError::Network)?;
            if body.len() + chunk.len() > limit {
                return Err(UpstreamError::BadResponse);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    #[allow(clippy::let_and_return)]
    let result = match select(Box::pin(read), Delay::from(timeout)).await {
        Either::Left((result, _)) => result.map_err(AppError::from),
        Either::Right(_) => Err(UpstreamError::Timeout.into()),
    };
    result
}

fn json_response(status: u16, body: Vec<u8>) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(Response::from_bytes(body)?
        .with_status(status)
        .with_headers(headers))
}

fn error_response(error: &AppError) -> worker::Result<Response> {
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    let response = json_response(error.status(), body)?;
    for (name, value) in error.headers() {
        response.headers().set(name, &value)?;
    }
    Ok(response)
}
