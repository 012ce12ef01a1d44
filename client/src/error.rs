//! The one error type of the crate, and what it keeps for the caller to act on.

use std::{fmt, time::Duration};

use storycad_protocol::{codes, ratelimit::RateLimitInfo};

use crate::token::TokenError;

/// A boxed error kept as the cause of a transport failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong talking to the proxy.
///
/// The HTTP variants box their [`HttpErrorDetails`] so the error stays small; reach the parts
/// through the helpers ([`Error::status`], [`Error::code`], [`Error::request_id`],
/// [`Error::retry_after`], [`Error::rate_limit`]) or by matching.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered 401 twice: once with the cached token, once more with a freshly
    /// fetched one. The token provider hands out tokens the server does not accept.
    #[error("unauthorized: {}", .0.message)]
    Unauthorized(Box<HttpErrorDetails>),

    /// 429 for too many requests. Worth retrying after [`Error::retry_after`]; the client
    /// already retried as far as its [`RetryPolicy`](crate::RetryPolicy) allowed, or the
    /// server asked for a wait longer than `max_server_delay`.
    #[error("rate limited: {}", .0.wait_hint())]
    RateLimited(Box<HttpErrorDetails>),

    /// 429 because the caller's token budget or quota is spent (`budget_exhausted`,
    /// `insufficient_quota`). Retrying before [`Error::retry_after`] (often hours) is useless.
    #[error("budget exhausted: {}", .0.wait_hint())]
    BudgetExhausted(Box<HttpErrorDetails>),

    /// Any other HTTP error status (400, 403, 404, 413, 5xx after retries, ...).
    #[error("HTTP {}: {}", .0.status, .0.message)]
    Api(Box<HttpErrorDetails>),

    /// A success status whose body is not what the API promises (bad JSON, wrong shape).
    #[error("invalid response (HTTP {status}): {reason}")]
    InvalidResponse {
        /// The HTTP status.
        status: u16,
        /// The body as received (lossy UTF-8).
        body: String,
        /// What was wrong with it.
        reason: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
    },

    /// No connection could be made (refused, DNS, TLS). Retried before being returned.
    #[error("cannot connect: {message}")]
    Connect {
        /// What failed, in words.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The connection failed after it was made, before the answer's headers arrived (reset,
    /// closed without answering). Retried before being returned.
    #[error("network error: {message}")]
    Network {
        /// What failed, in words.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A deadline of [`Timeouts`](crate::Timeouts) passed.
    #[error("timed out {phase} after {} s", fmt_secs(*after))]
    Timeout {
        /// Which wait ran out.
        phase: TimeoutPhase,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// The stream ended (body closed or connection cut) without `data: [DONE]` or an error
    /// event, and could not be resumed: the answer is incomplete. Also a resumed stream that
    /// misses events (the `source` says which).
    #[error("stream ended before [DONE]: the answer is incomplete")]
    StreamTruncated {
        /// The server's `x-request-id`.
        request_id: Option<String>,
        /// The transport error that ended it, when it was not a clean end of body.
        #[source]
        source: Option<BoxError>,
    },

    /// The server sent an error event (`data: {"error":{...}}`) in the middle of a stream.
    #[error("stream failed: {message}")]
    Stream {
        /// The error's `code` (e.g. `upstream_error`, `stream_truncated`).
        code: Option<String>,
        /// The error's `type` (e.g. `server_error`).
        kind: Option<String>,
        /// The error's message.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
    },

    /// The token provider failed.
    #[error("cannot get an access token: {0}")]
    Token(#[from] TokenError),

    /// The client is misconfigured (bad base URL, no token provider, bad request body).
    #[error("configuration error: {0}")]
    Config(String),
}

/// The parts of an HTTP error answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HttpErrorDetails {
    /// The HTTP status.
    pub status: u16,
    /// The error's `code` (e.g. `rate_limit_exceeded`, `model_not_allowed`).
    pub code: Option<String>,
    /// The error's `type` (e.g. `invalid_request_error`).
    pub kind: Option<String>,
    /// The error's message, or the start of the body when it was not an error JSON.
    pub message: String,
    /// The request field the error is about.
    pub param: Option<String>,
    /// The server's `x-request-id`.
    pub request_id: Option<String>,
    /// How long the server asked us to wait (`retry-after-ms` / `retry-after`).
    pub retry_after: Option<Duration>,
    /// The `x-ratelimit-*` headers of the answer.
    pub rate_limit: RateLimitInfo,
    /// The raw body, kept when it was not OpenAI's error JSON.
    pub body: Option<String>,
    /// The server's `x-should-retry` advice, when it gave one (the Worker says `false` for a
    /// request the provider already did work for: a retry is charged again).
    pub should_retry: Option<bool>,
}

impl HttpErrorDetails {
    fn wait_hint(&self) -> String {
        match self.retry_after {
            Some(d) => format!("try again in {} s", fmt_secs(d)),
            None => self.message.clone(),
        }
    }
}

/// Which wait of [`Timeouts`](crate::Timeouts) ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Opening the TCP (and TLS) connection.
    Connect,
    /// Waiting for the answer's status and headers.
    ResponseHeaders,
    /// Waiting for the next bytes of a body or stream.
    StreamIdle,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connecting",
            TimeoutPhase::ResponseHeaders => "waiting for the response headers",
            TimeoutPhase::StreamIdle => "waiting for the next stream event",
        })
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s:.1}")
    }
}

impl Error {
    /// The HTTP details, for the HTTP error variants.
    pub fn http_details(&self) -> Option<&HttpErrorDetails> {
        match self {
            Error::Unauthorized(d)
            | Error::RateLimited(d)
            | Error::BudgetExhausted(d)
            | Error::Api(d) => Some(d),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::InvalidResponse { status, .. } => Some(*status),
            other => other.http_details().map(|d| d.status),
        }
    }

    /// The error's `code`, from an error answer or an error event.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Stream { code, .. } => code.as_deref(),
            other => other.http_details().and_then(|d| d.code.as_deref()),
        }
    }

    /// The server's `x-request-id`, to quote when reporting a problem.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::InvalidResponse { request_id, .. }
            | Error::StreamTruncated { request_id, .. }
            | Error::Stream { request_id, .. } => request_id.as_deref(),
            other => other.http_details().and_then(|d| d.request_id.as_deref()),
        }
    }

    /// How long the server asked the caller to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.http_details().and_then(|d| d.retry_after)
    }

    /// The `x-ratelimit-*` headers of the error answer.
    pub fn rate_limit(&self) -> Option<&RateLimitInfo> {
        self.http_details().map(|d| &d.rate_limit)
    }

    /// Whether trying the same request again later may succeed (a transient failure), as
    /// opposed to one the caller must fix (bad request, spent budget, bad token).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited(_)
            | Error::Connect { .. }
            | Error::Network { .. }
            | Error::Timeout { .. }
            | Error::StreamTruncated { .. } => true,
            Error::Api(d) => d
                .should_retry
                .unwrap_or_else(|| is_retryable_status(d.status)),
            Error::Stream { code, .. } => !matches!(
                code.as_deref(),
                Some(codes::BUDGET_EXHAUSTED) | Some(codes::INSUFFICIENT_QUOTA)
            ),
            _ => false,
        }
    }
}

/// The statuses worth retrying: 408, 409, 429, 500, 502, 503, 504, 529. Not 501 or 505, which
/// a retry cannot fix.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 112,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn display_in_plain_words() {
        let e = Error::RateLimited(Box::new(HttpErrorDetails {
            status: 429,
            code: Some("rate_limit_exceeded".into()),
            kind: None,
            message: "slow down".into(),
            param: None,
            request_id: None,
            retry_after: Some(Duration::from_secs(12)),
            rate_limit: RateLimitInfo::default(),
            body: None,
            should_retry: None,
        }));
        assert_eq!(e.to_string(), "rate limited: try again in 12 s");
        assert!(e.is_retryable());
        assert_eq!(e.status(), Some(429));
        let t = Error::Timeout {
            phase: TimeoutPhase::StreamIdle,
            after: Duration::from_millis(1500),
        };
        assert_eq!(
            t.to_string(),
            "timed out waiting for the next stream event after 1.5 s"
        );
    }
}
