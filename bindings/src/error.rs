//! [`CollaboratorError`]: the client's detailed [`storycad_client::Error`] folded into one
//! variant per thing a caller can do about it (application-services' "ApiError" habit).

use storycad_client::{protocol::codes, Error, HttpErrorDetails};

use crate::types::RateLimitInfo;

/// Everything a call can fail with; each variant becomes its own exception class in C# and
/// Python. All carry a `message` (plain words, never a secret) and the server's `request_id`
/// when there was one (quote it when reporting a problem).
///
/// Its text (C# `ToString()`, Python `str()`) is the variant's plain-words summary, e.g.
/// `rate limited: <message>`.
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
#[uniffi::export(Display)]
pub enum CollaboratorError {
    /// The server rejected the token twice (the client refreshed it once and retried), or the
    /// host's [`TokenProvider`](crate::TokenProvider) failed. Action: sign the user in again.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// What happened.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
    },
    /// Too many requests (or streams) right now; the client already retried as far as its
    /// retry settings allow. Action: wait `retry_after_ms` (when given) and try again.
    #[error("rate limited: {message}")]
    RateLimited {
        /// What happened.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
        /// How long the server asked to wait, in milliseconds.
        retry_after_ms: Option<u64>,
        /// The answer's `x-ratelimit-*` headers.
        rate_limit: RateLimitInfo,
    },
    /// The user's token budget or quota is spent. Action: tell the user; retrying before
    /// `retry_after_ms` (often hours) is useless.
    #[error("budget exhausted: {message}")]
    BudgetExhausted {
        /// What happened.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
        /// When the budget resets, in milliseconds from now, when the server said.
        retry_after_ms: Option<u64>,
        /// The answer's `x-ratelimit-*` headers.
        rate_limit: RateLimitInfo,
    },
    /// The request is wrong (HTTP 400, 404, 413, ... or a bad argument found before sending).
    /// Action: fix the request; sending it again unchanged fails again.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What happened.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
        /// The HTTP status; `None` when the request was refused before it was sent.
        status: Option<u16>,
        /// The error's `code` (e.g. `invalid_value`, `body_too_large`).
        code: Option<String>,
        /// The request field the error is about.
        param: Option<String>,
    },
    /// The model is not in the user's plan (403) or no such model alias exists. Action: pick
    /// one of `models()`.
    #[error("model not allowed: {message}")]
    ModelNotAllowed {
        /// What happened.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
        /// `model_not_allowed` or `model_not_found`.
        code: Option<String>,
    },
    /// The proxy or the provider behind it failed (5xx after retries, a failure event in a
    /// stream, an answer that is not what the API promises). Action: try again later.
    #[error("upstream unavailable: {message}")]
    UpstreamUnavailable {
        /// What happened.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
        /// The HTTP status, when the failure came as one.
        status: Option<u16>,
        /// The error's `code` (e.g. `upstream_error`).
        code: Option<String>,
        /// How long the server asked to wait, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// No connection could be made, or it broke before the answer began (after the client's
    /// retries). Action: check the network; try again.
    #[error("network error: {message}")]
    Network {
        /// What happened.
        message: String,
        /// The server's `x-request-id` (normally none: no answer arrived).
        request_id: Option<String>,
    },
    /// A deadline of the client's timeouts passed. Action: try again (perhaps with a larger
    /// timeout).
    #[error("timed out: {message}")]
    Timeout {
        /// What happened.
        message: String,
        /// The server's `x-request-id`, when the answer had begun.
        request_id: Option<String>,
        /// Which wait ran out.
        phase: TimeoutPhase,
        /// The limit that was exceeded, in milliseconds.
        after_ms: u64,
    },
    /// The stream ended (connection cut, body closed, or the server reported a cut upstream)
    /// before the answer was complete. Action: keep or discard the partial text; ask again.
    #[error("stream truncated: {message}")]
    StreamTruncated {
        /// What happened.
        message: String,
        /// The server's `x-request-id`.
        request_id: Option<String>,
    },
    /// The call or stream was cancelled by the caller (`ChatStream.cancel()`).
    #[error("cancelled: {message}")]
    Cancelled {
        /// What happened.
        message: String,
        /// The server's `x-request-id`, for a cancelled stream.
        request_id: Option<String>,
    },
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TimeoutPhase {
    /// Opening the connection.
    Connect,
    /// Waiting for the answer's status and headers.
    ResponseHeaders,
    /// Waiting for the next piece of a body or stream.
    StreamIdle,
}

impl CollaboratorError {
    pub(crate) fn cancelled(request_id: Option<String>) -> Self {
        CollaboratorError::Cancelled {
            message: "cancelled by the caller".to_owned(),
            request_id,
        }
    }

    pub(crate) fn invalid_argument(message: String) -> Self {
        CollaboratorError::InvalidRequest {
            message,
            request_id: None,
            status: None,
            code: None,
            param: None,
        }
    }
}

fn millis(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_http(e: &Error, d: &HttpErrorDetails) -> CollaboratorError {
    let message = d.message.clone();
    let request_id = d.request_id.clone();
    match e {
        Error::Unauthorized(_) => CollaboratorError::Unauthorized {
            message,
            request_id,
        },
        Error::RateLimited(_) => CollaboratorError::RateLimited {
            message,
            request_id,
            retry_after_ms: millis(d.retry_after),
            rate_limit: (&d.rate_limit).into(),
        },
        Error::BudgetExhausted(_) => CollaboratorError::BudgetExhausted {
            message,
            request_id,
            retry_after_ms: millis(d.retry_after),
            rate_limit: (&d.rate_limit).into(),
        },
        _ => {
            let code = d.code.clone();
            let model_code = matches!(
                code.as_deref(),
                Some(codes::MODEL_NOT_ALLOWED | codes::MODEL_NOT_FOUND)
            );
            if d.status == 403 || model_code {
                CollaboratorError::ModelNotAllowed {
                    message,
                    request_id,
                    code,
                }
            } else if d.status >= 500 || e.is_retryable() {
                CollaboratorError::UpstreamUnavailable {
                    message,
                    request_id,
                    status: Some(d.status),
                    code,
                    retry_after_ms: millis(d.retry_after),
                }
            } else {
                CollaboratorError::InvalidRequest {
                    message,
                    request_id,
                    status: Some(d.status),
                    code,
                    param: d.param.clone(),
                }
            }
        }
    }
}

impl From<Error> for CollaboratorError {
    fn from(e: Error) -> Self {
        if let Some(d) = e.http_details() {
            return from_http(&e, d);
        }
        let request_id = e.request_id().map(str::to_owned);
        let message = e.to_string();
        match e {
            Error::InvalidResponse { status, .. } => CollaboratorError::UpstreamUnavailable {
                message,
                request_id,
                status: Some(status),
                code: None,
                retry_after_ms: None,
            },
            Error::Connect { .. } | Error::Network { .. } => CollaboratorError::Network {
                message,
                request_id,
            },
            Error::Timeout { phase, after } => CollaboratorError::Timeout {
                message,
                request_id,
                phase: match phase {
                    storycad_client::TimeoutPhase::Connect => TimeoutPhase::Connect,
                    storycad_client::TimeoutPhase::StreamIdle => TimeoutPhase::StreamIdle,
                    _ => TimeoutPhase::ResponseHeaders,
                },
                after_ms: millis(Some(after)).unwrap_or_default(),
            },
            Error::StreamTruncated { .. } => CollaboratorError::StreamTruncated {
                message,
                request_id,
            },
            // An error event in the middle of a stream: classified by its code like an answer.
            Error::Stream {
                code,
                message: event_message,
                ..
            } => match code.as_deref() {
                Some(codes::BUDGET_EXHAUSTED | codes::INSUFFICIENT_QUOTA) => {
                    CollaboratorError::BudgetExhausted {
                        message: event_message,
                        request_id,
                        retry_after_ms: None,
                        rate_limit: RateLimitInfo::default(),
                    }
                }
                Some(codes::RATE_LIMIT_EXCEEDED | codes::TOO_MANY_STREAMS) => {
                    CollaboratorError::RateLimited {
                        message: event_message,
                        request_id,
                        retry_after_ms: None,
                        rate_limit: RateLimitInfo::default(),
                    }
                }
                Some(codes::STREAM_TRUNCATED) => CollaboratorError::StreamTruncated {
                    message: event_message,
                    request_id,
                },
                _ => CollaboratorError::UpstreamUnavailable {
                    message: event_message,
                    request_id,
                    status: None,
                    code,
                    retry_after_ms: None,
                },
            },
            Error::Token(t) => CollaboratorError::Unauthorized {
                message: format!("the token provider failed: {}", t.message()),
                request_id,
            },
            Error::Config(m) => CollaboratorError::invalid_argument(m),
            // A variant added to the client later: transient until classified here.
            other => CollaboratorError::UpstreamUnavailable {
                message: other.to_string(),
                request_id,
                status: other.status(),
                code: other.code().map(str::to_owned),
                retry_after_ms: millis(other.retry_after()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(code: Option<&str>) -> CollaboratorError {
        Error::Stream {
            code: code.map(str::to_owned),
            kind: None,
            message: "m".into(),
            request_id: Some("req_1".into()),
        }
        .into()
    }

    #[test]
    fn stream_error_events_are_classified_by_code() {
        assert!(matches!(
            event(Some("budget_exhausted")),
            CollaboratorError::BudgetExhausted { .. }
        ));
        assert!(matches!(
            event(Some("rate_limit_exceeded")),
            CollaboratorError::RateLimited { .. }
        ));
        assert!(matches!(
            event(Some("stream_truncated")),
            CollaboratorError::StreamTruncated { .. }
        ));
        match event(Some("upstream_error")) {
            CollaboratorError::UpstreamUnavailable {
                code, request_id, ..
            } => {
                assert_eq!(code.as_deref(), Some("upstream_error"));
                assert_eq!(request_id.as_deref(), Some("req_1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            event(None),
            CollaboratorError::UpstreamUnavailable { .. }
        ));
    }

    #[test]
    fn local_failures_keep_their_kind() {
        let t: CollaboratorError = Error::Timeout {
            phase: storycad_client::TimeoutPhase::StreamIdle,
            after: Duration::from_millis(1500),
        }
        .into();
        assert!(matches!(
            t,
            CollaboratorError::Timeout {
                phase: TimeoutPhase::StreamIdle,
                after_ms: 1500,
                ..
            }
        ));
        let token: CollaboratorError =
            Error::Token(storycad_client::TokenError::new("signed out")).into();
        match token {
            CollaboratorError::Unauthorized { message, .. } => {
                assert!(message.contains("signed out"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            CollaboratorError::from(Error::Config("bad".into())),
            CollaboratorError::InvalidRequest { status: None, .. }
        ));
        assert!(matches!(
            CollaboratorError::from(Error::StreamTruncated {
                request_id: None,
                source: None
            }),
            CollaboratorError::StreamTruncated { .. }
        ));
    }
}
