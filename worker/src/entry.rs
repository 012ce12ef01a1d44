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
use crate::config::{Config, ConfigError, ProviderKind};
use crate::endpoints::{match_route, model_list, Endpoint};
use crate::error::{AppError, UpstreamError};
use crate::limiter::client::{Admission, Limiter};
use crate::log::{request_id, RequestLog};
use crate::plans::Plans;
use crate::relay::{Outcome, StreamRelay};
use crate::request::{check_declared_length, parse_chat, BodyLimit};
use crate::routing::resolve;
use crate::upstream::{chat_request, completion, MAX_ANSWER_BYTES};

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
                let auth = Authenticator::new(config.jwt.verifier(), config.jwt.jwks_url.clone());
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
        line: RequestLog::new(&id, &req.method().to_string(), &path),
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
    let method = req.method().to_string();
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
            Ok(body) => chat(body, env, ctx, config, plan, &limiter, log).await,
            Err(e) => Err(e),
        },
        Endpoint::Health => Err(AppError::Internal),
    };
    // Every answer after auth shows the caller's limits (one more round trip only when the
    // request did not reach the limiter).
    if let Some(snapshot) = limiter.for_headers().await {
        log.borrow_mut().rate_limit = Some(crate::limiter::rate_limit_info(&snapshot));
    }
    answer
}

async fn read_body(req: &mut Request, limit: u64) -> Result<Vec<u8>, AppError> {
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
async fn chat(
    body: Vec<u8>,
    env: &Env,
    ctx: &Context,
    config: &Config,
    plan: &crate::plans::Plan,
    limiter: &Limiter,
    log: &Rc<RefCell<LogLine>>,
) -> Result<worker::Result<Response>, AppError> {
    let mut call = parse_chat(&body)?;
    let body_bytes = body.len();
    drop(body);
    log.borrow_mut().line.alias = Some(crate::error::shorten(&call.alias, 64));
    // The plan: the model must be in it (403), the output is capped to its maximum.
    plan.check_model(config, &call.alias)?;
    let output_cap = plan.cap_output(&mut call.body);
    let (prompt_estimate, estimate) =
        crate::plans::estimate_tokens(body_bytes, output_cap, &call.body);
    let route = resolve(config, &call.alias)?;
    {
        let mut log = log.borrow_mut();
        log.line.route = Some(route.label());
        log.line.stream = call.stream;
    }
    if route.provider.kind != ProviderKind::OpenAiCompatible {
        return Err(AppError::ProviderUnsupported {
            provider: route.provider.name.clone(),
        });
    }
    let key = env
        .secret(route.key_secret())
        .map(|s| s.to_string())
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| AppError::MissingSecret {
            name: route.key_secret().to_owned(),
        })?;
    // Admitted (or 429) by the caller's limiter; settles on every path from here.
    let admission = limiter.admit(ctx, estimate, call.stream).await?;
    let upstream = chat_request(&route, &call, &key);
    let timeout = Duration::from_millis(config.upstream_timeout_ms);
    let scrub = vec![key, route.provider.base_url.clone()];

    let mut response = send(&upstream, timeout).await?;
    let status = response.status_code();
    log.borrow_mut().line.upstream_status = Some(status);

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
        return Err(UpstreamError::from_response(
            status,
            |n| values.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()),
            &body,
            &scrub_refs,
        )
        .into());
    }

    if !call.stream {
        let body = read_limited(&mut response, MAX_ANSWER_BYTES, timeout).await?;
        let answer = completion(&body, &call.alias)?;
        log.borrow_mut().line.set_usage(answer.usage.as_ref());
        admission.settle(crate::limiter::charge(
            answer.usage.as_ref(),
            prompt_estimate,
            body.len() as u64 / 4,
        ));
        return Ok(json_response(200, answer.body));
    }

    let upstream_body = response.stream().map_err(|_| UpstreamError::BadResponse)?;
    let relay = StreamRelay::new(&call.alias, call.include_usage, scrub);
    let pump = Pump {
        upstream: upstream_body,
        relay,
        idle: timeout,
        log: Rc::clone(log),
        done: false,
        admission,
        prompt_estimate,
    };
    let stream = futures_util::stream::unfold(pump, Pump::next);
    Ok(Response::from_stream(stream).and_then(|r| {
        let h = Headers::new();
        h.set("content-type", "text/event-stream; charset=utf-8")?;
        h.set("cache-control", "no-cache")?;
        Ok(r.with_status(200).with_headers(h))
    }))
}

/// Moves one stream's bytes: upstream chunk -> relay -> caller, with an idle timeout.
struct Pump {
    upstream: ByteStream,
    relay: StreamRelay,
    idle: Duration,
    log: Rc<RefCell<LogLine>>,
    done: bool,
    /// Settles when the stream ends, is cut, or is dropped: charged what was relayed so far.
    admission: Admission,
    prompt_estimate: u64,
}

impl Pump {
    async fn next(mut self) -> Option<(worker::Result<Vec<u8>>, Pump)> {
        loop {
            if self.done {
                self.finish_log();
                return None;
            }
            let read = select(self.upstream.next(), Delay::from(self.idle)).await;
            let out = match read {
                Either::Left((Some(Ok(bytes)), _)) => self.relay.feed(&bytes),
                Either::Left((Some(Err(_)), _)) => self.relay.fail(&UpstreamError::Network),
                Either::Left((None, _)) => self.relay.finish(),
                Either::Right(_) => self.relay.fail(&UpstreamError::Timeout),
            };
            if self.relay.is_closed() {
                self.done = true;
            }
            self.admission.set_charge(crate::limiter::charge(
                self.relay.usage(),
                self.prompt_estimate,
                self.relay.chunks(),
            ));
            if !out.is_empty() {
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
        let mut log = self.log.borrow_mut();
        log.line.set_usage(self.relay.usage());
        match self.relay.outcome() {
            Outcome::Done | Outcome::Open => {}
            Outcome::Truncated => log.line.error = Some("stream_truncated".to_owned()),
            Outcome::Failed(code) => log.line.error = Some(code.clone()),
        }
        log.write();
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
