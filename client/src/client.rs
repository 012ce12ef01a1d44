//! [`Client`]: the API calls and the attempt loop (token, send, classify, retry).

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE},
    Method, Response,
};
use serde::de::DeserializeOwned;
use storycad_protocol::{
    codes, headers, ratelimit::RateLimitInfo, ChatRequest, ErrorBody, ModelList, UsageReport,
};
use tracing::{debug, field, Instrument as _};

use crate::{
    config::{ClientBuilder, Timeouts},
    error::{is_retryable_status, Error, HttpErrorDetails, Result, TimeoutPhase},
    options::RequestOptions,
    response::{request_id, Completion, ResponseMeta},
    resume::Resume,
    retry::{server_delay, should_retry_header, RetryBudget, RetryPolicy},
    stream::ChatStream,
    token::TokenCache,
};

/// Error bodies are read up to this size; the rest is dropped.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A client of the proxy. Cheap to clone: clones share the connection pool, the token cache
/// and the retry budget.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) chat_url: String,
    pub(crate) models_url: String,
    pub(crate) usage_url: String,
    pub(crate) tokens: TokenCache,
    pub(crate) budget: RetryBudget,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeouts: Timeouts,
    pub(crate) resume_streams: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("chat_url", &self.inner.chat_url)
            .field("retry", &self.inner.retry)
            .field("timeouts", &self.inner.timeouts)
            .field("resume_streams", &self.inner.resume_streams)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// `POST /chat/completions` without streaming (`stream` is forced off) and the whole answer.
    ///
    /// Retries cover everything up to the answer's headers; a connection lost while the body is
    /// read is returned as [`Error::Network`] (retryable by the caller with the same request).
    pub async fn chat(&self, req: &ChatRequest) -> Result<Completion> {
        self.chat_with(req, &RequestOptions::default()).await
    }

    /// [`chat`](Self::chat) with extra headers and the caller's ids ([`RequestOptions`]).
    pub async fn chat_with(
        &self,
        req: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<Completion> {
        let extra = options.header_map()?;
        let body = request_body(req, false)?;
        let span = request_span("POST", "/chat/completions", &req.model, false);
        async {
            let (resp, attempts) = self
                .send(
                    Method::POST,
                    &self.inner.chat_url,
                    Some(body),
                    false,
                    &extra,
                )
                .await?;
            let (response, meta) = self.read_json(resp, attempts).await?;
            Ok(Completion { response, meta })
        }
        .instrument(span)
        .await
    }

    /// `POST /chat/completions` with `stream: true`. Returns once the answer's headers arrived:
    /// HTTP errors (after retries) come back here, never as the stream's first item. A stream
    /// the server made resumable resumes by itself after a break (see [`ChatStream`]).
    pub async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream> {
        self.chat_stream_with(req, &RequestOptions::default()).await
    }

    /// [`chat_stream`](Self::chat_stream) with extra headers and the caller's ids
    /// ([`RequestOptions`]).
    pub async fn chat_stream_with(
        &self,
        req: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<ChatStream> {
        let extra = options.header_map()?;
        let body = request_body(req, true)?;
        let span = request_span("POST", "/chat/completions", &req.model, true);
        let (resp, attempts) = self
            .send(Method::POST, &self.inner.chat_url, Some(body), true, &extra)
            .instrument(span.clone())
            .await?;
        let meta = ResponseMeta::from_headers(resp.status().as_u16(), resp.headers(), attempts);
        let resume = match &meta.stream_id {
            Some(id) if self.inner.resume_streams => Some(Resume::new(
                self.clone(),
                format!("{}/streams/{id}", self.inner.chat_url),
                extra,
            )),
            _ => None,
        };
        Ok(ChatStream::new(
            resp,
            meta,
            self.inner.timeouts.stream_idle,
            span,
            resume,
        ))
    }

    /// The request that picks a broken stream up after event `last_id`
    /// (`GET {url}` with `Last-Event-ID`). It is one more retry of the policy after `retries`
    /// (the maximum, then the budget, decide; the policy's backoff comes first), and retries
    /// itself like any request. Its future yields the answer (body unread) and the retries
    /// counted; the error says why the policy allows no resume.
    pub(crate) fn resume_stream(
        &self,
        url: &str,
        extra: &HeaderMap,
        last_id: u64,
        retries: u32,
    ) -> std::result::Result<
        impl Future<Output = Result<(Response, u32)>> + Send + 'static,
        &'static str,
    > {
        let mut state = Attempts::new();
        state.retries = retries;
        self.take_retry(&mut state.retries)?;
        let wait = self.inner.retry.backoff(state.retries);
        debug!(
            last_event_id = last_id,
            retry = state.retries,
            wait_ms = wait.as_millis() as u64,
            budget_left = self.inner.budget.available(),
            "resuming the stream"
        );
        let mut extra = extra.clone();
        extra.insert(
            HeaderName::from_static(headers::LAST_EVENT_ID),
            HeaderValue::from(last_id),
        );
        let (client, url) = (self.clone(), url.to_owned());
        Ok(async move {
            tokio::time::sleep(wait).await;
            let resp = client
                .send_with(&mut state, Method::GET, &url, None, true, &extra)
                .await?;
            Ok((resp, state.retries))
        })
    }

    /// `GET /models`: the model aliases the caller's plan allows.
    pub async fn models(&self) -> Result<ModelList> {
        self.get_json(&self.inner.models_url, "/models").await
    }

    /// `GET /usage`: the caller's plan, limits and what is left.
    pub async fn usage(&self) -> Result<UsageReport> {
        self.get_json(&self.inner.usage_url, "/usage").await
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str, path: &str) -> Result<T> {
        let span = request_span("GET", path, "", false);
        async {
            let (resp, attempts) = self
                .send(Method::GET, url, None, false, &HeaderMap::new())
                .await?;
            Ok(self.read_json(resp, attempts).await?.0)
        }
        .instrument(span)
        .await
    }

    async fn read_json<T: DeserializeOwned>(
        &self,
        resp: Response,
        attempts: u32,
    ) -> Result<(T, ResponseMeta)> {
        let meta = ResponseMeta::from_headers(resp.status().as_u16(), resp.headers(), attempts);
        let body = read_body(resp, self.inner.timeouts.stream_idle, usize::MAX).await?;
        match serde_json::from_slice(&body) {
            Ok(v) => Ok((v, meta)),
            Err(e) => Err(Error::InvalidResponse {
                status: meta.status,
                body: String::from_utf8_lossy(&body).into_owned(),
                reason: format!("the body is not the expected JSON: {e}"),
                request_id: meta.request_id,
            }),
        }
    }

    /// Sends until a success, a final error, or the policy says stop. Returns the successful
    /// response (body unread) and the number of attempts. Each attempt runs in its own
    /// `attempt` span inside the caller's request span.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        streaming: bool,
        extra: &HeaderMap,
    ) -> Result<(Response, u32)> {
        let mut state = Attempts::new();
        let resp = self
            .send_with(&mut state, method, url, body, streaming, extra)
            .await?;
        Ok((resp, state.attempt))
    }

    /// [`send`](Self::send) continuing the bookkeeping in `state`.
    async fn send_with(
        &self,
        state: &mut Attempts,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        streaming: bool,
        extra: &HeaderMap,
    ) -> Result<Response> {
        loop {
            state.attempt += 1;
            let span = tracing::info_span!("attempt", n = state.attempt);
            let next = self
                .attempt(&method, url, body.as_ref(), streaming, extra, state)
                .instrument(span)
                .await;
            match next {
                Next::Done(result) => {
                    // On the request's span (the current one here), not the attempt's.
                    let id = result
                        .as_ref()
                        .ok()
                        .and_then(|r| r.headers().get(headers::REQUEST_ID));
                    if let Some(id) = id.and_then(|v| v.to_str().ok()) {
                        tracing::Span::current().record("request_id", id);
                    }
                    return result;
                }
                Next::Again => {}
                Next::RetryAfter(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// One attempt and the decision on what follows it.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Bytes>,
        streaming: bool,
        extra: &HeaderMap,
        state: &mut Attempts,
    ) -> Next {
        let inner = &*self.inner;
        let policy = &inner.retry;
        let attempt = state.attempt;
        let token = match inner.tokens.get().await {
            Ok(t) => t,
            Err(e) => return Next::Done(Err(e.into())),
        };
        let mut rb = inner
            .http
            .request(method.clone(), url)
            .headers(extra.clone())
            .bearer_auth(&*token.value)
            .header(headers::IDEMPOTENCY_KEY, &state.idempotency_key);
        if streaming {
            rb = rb.header(ACCEPT, "text/event-stream");
        }
        if let Some(b) = body {
            rb = rb.header(CONTENT_TYPE, "application/json").body(b.clone());
        }
        let sent = tokio::time::timeout(inner.timeouts.response_headers, rb.send()).await;
        let (err, answer_headers) = match sent {
            Err(_) => {
                debug!(attempt, "no response headers in time; not retrying");
                return Next::Done(Err(Error::Timeout {
                    phase: TimeoutPhase::ResponseHeaders,
                    after: inner.timeouts.response_headers,
                }));
            }
            Ok(Err(e)) => (transport_error(e, &inner.timeouts), None),
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    inner.budget.on_success();
                    debug!(attempt, status, "answered");
                    return Next::Done(Ok(resp));
                }
                if status == 401 && !state.refreshed {
                    state.refreshed = true;
                    debug!(
                        attempt,
                        "401: refreshing the access token and trying once more"
                    );
                    inner.tokens.invalidate(token.generation).await;
                    return Next::Again;
                }
                let h = resp.headers().clone();
                (error_from_response(resp, &inner.timeouts).await, Some(h))
            }
        };

        let status = err.status();
        let advice = answer_headers.as_ref().and_then(should_retry_header);
        let retryable = match (&err, advice) {
            (Error::Unauthorized(_), _) => false,
            (_, Some(advice)) => advice,
            (e, None) => classify(e),
        };
        if !retryable {
            debug!(attempt, ?status, ?advice, error = %err, "not retrying: not retryable");
            return Next::Done(Err(err));
        }
        let server_wait = answer_headers.as_ref().and_then(server_delay);
        if let Some(wait) = server_wait.filter(|w| *w > policy.max_server_delay) {
            debug!(
                attempt,
                ?status,
                wait_s = wait.as_secs_f64(),
                "not retrying: the server asks for a longer wait than max_server_delay"
            );
            return Next::Done(Err(err));
        }
        if let Err(why) = self.take_retry(&mut state.retries) {
            debug!(attempt, ?status, error = %err, "not retrying: {why}");
            return Next::Done(Err(err));
        }
        let wait = server_wait.unwrap_or_else(|| policy.backoff(state.retries));
        debug!(
            attempt,
            ?status,
            wait_ms = wait.as_millis() as u64,
            from_server = server_wait.is_some(),
            budget_left = inner.budget.available(),
            error = %err,
            "retrying"
        );
        Next::RetryAfter(wait)
    }

    /// Counts one more retry in `retries` if the policy allows it: its maximum, then its
    /// budget (which this takes from). Else why not.
    fn take_retry(&self, retries: &mut u32) -> std::result::Result<(), &'static str> {
        if *retries >= self.inner.retry.max_retries {
            return Err("no retries left");
        }
        if !self.inner.budget.try_acquire() {
            return Err("retry budget spent");
        }
        *retries += 1;
        Ok(())
    }
}

/// The bookkeeping of one logical request across its attempts.
struct Attempts {
    idempotency_key: String,
    attempt: u32,
    retries: u32,
    refreshed: bool,
}

impl Attempts {
    fn new() -> Self {
        Attempts {
            // One key per logical request, so the server can drop a duplicate of a retried POST.
            idempotency_key: format!("{:032x}", fastrand::u128(..)),
            attempt: 0,
            retries: 0,
            refreshed: false,
        }
    }
}

/// What follows an attempt.
enum Next {
    Done(Result<Response>),
    /// At once (after a 401, with a fresh token).
    Again,
    RetryAfter(Duration),
}

/// Whether a failure is transient by nature (absent any `x-should-retry`).
fn classify(e: &Error) -> bool {
    match e {
        Error::RateLimited(_) | Error::Connect { .. } | Error::Network { .. } => true,
        Error::Timeout { phase, .. } => *phase == TimeoutPhase::Connect,
        Error::Api(d) => is_retryable_status(d.status),
        _ => false,
    }
}

fn request_span(method: &str, path: &str, model: &str, stream: bool) -> tracing::Span {
    tracing::info_span!(
        "storycad_request",
        method,
        path,
        model,
        stream,
        request_id = field::Empty,
    )
}

fn request_body(req: &ChatRequest, stream: bool) -> Result<Bytes> {
    let want = stream.then_some(true);
    let encoded = if req.stream == want {
        serde_json::to_vec(req)
    } else {
        let mut req = req.clone();
        req.stream = want;
        serde_json::to_vec(&req)
    };
    encoded
        .map(Bytes::from)
        .map_err(|e| Error::Config(format!("cannot encode the request: {e}")))
}

fn transport_error(e: reqwest::Error, timeouts: &Timeouts) -> Error {
    if e.is_connect() && e.is_timeout() {
        return Error::Timeout {
            phase: TimeoutPhase::Connect,
            after: timeouts.connect,
        };
    }
    let message = error_chain(&e);
    if e.is_connect() {
        Error::Connect {
            message,
            source: Some(Box::new(e)),
        }
    } else {
        Error::Network {
            message,
            source: Some(Box::new(e)),
        }
    }
}

/// The error and its causes on one line (reqwest's own message names only the first).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

/// Reads a body up to `limit` bytes, failing after `idle` without progress.
async fn read_body(mut resp: Response, idle: Duration, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    phase: TimeoutPhase::StreamIdle,
                    after: idle,
                })
            }
            Ok(Err(e)) => {
                return Err(Error::Network {
                    message: format!("reading the body: {}", error_chain(&e)),
                    source: Some(Box::new(e)),
                })
            }
            Ok(Ok(None)) => return Ok(out),
            Ok(Ok(Some(chunk))) => {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
}

/// The typed error for a non-success answer; its body is read (a failed read leaves it empty).
async fn error_from_response(resp: Response, timeouts: &Timeouts) -> Error {
    let status = resp.status();
    let h: &HeaderMap = resp.headers();
    let rate_limit = RateLimitInfo::from_headers(|n| h.get(n).and_then(|v| v.to_str().ok()));
    let request_id = request_id(h);
    let retry_after = server_delay(h);
    let should_retry = should_retry_header(h);
    let body = read_body(resp, timeouts.stream_idle, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let mut details = HttpErrorDetails {
        status: status.as_u16(),
        code: None,
        kind: None,
        message: String::new(),
        param: None,
        request_id,
        retry_after,
        rate_limit,
        body: None,
        should_retry,
    };
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) => {
            details.code = b.error.code;
            details.kind = b.error.kind;
            details.message = b.error.message;
            details.param = b.error.param;
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body).into_owned();
            let trimmed = text.trim();
            details.message = if trimmed.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no error message")
                    .to_owned()
            } else {
                trimmed.chars().take(200).collect()
            };
            details.body = Some(text);
        }
    }
    let details = Box::new(details);
    match details.status {
        401 => Error::Unauthorized(details),
        429 if !codes::is_retryable_429(details.code.as_deref()) => Error::BudgetExhausted(details),
        429 => Error::RateLimited(details),
        _ => Error::Api(details),
    }
}
