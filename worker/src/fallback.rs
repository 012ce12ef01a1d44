//! Routing with fallback: which failures move a request to the next entry of its alias's chain,
//! and the record of every attempt for the log line.
//!
//! `ROUTES` maps an alias to an ordered chain of `provider:model`. The Worker tries them in
//! order and moves on only when the provider failed in a way the next one may not, and only
//! before the first byte of the answer reached the caller:
//!
//! | failure | next route? |
//! |---|---|
//! | connection error, timeout before the answer's headers | yes |
//! | 429 (the provider's rate limit or quota) | yes |
//! | 5xx, and Anthropic's 529 | yes |
//! | a 2xx complete answer that is not what the API promises | yes (nothing was sent yet) |
//! | the provider's key secret is not set | yes (that provider is unusable; the log says why) |
//! | any other 4xx (401/403/404 included: the route or key is wrong, logged) | no |
//! | the request cannot be translated for the provider (400) | no: the caller's request |
//! | a stream that fails before its first byte is sent (its first bytes are held until the relay has some) | yes |
//! | anything after a stream's first byte | no: the caller already has part of an answer |
//!
//! 4xx answers other than 429 are final: they describe the caller's request (or a broken
//! route the operator must fix), and the next provider would most likely say the same.
//! When every route fails, the caller gets the last failure, mapped as usual (OpenAI error
//! shape, no upstream URL), and `x-storycad-route` names the last route tried.

use serde::Serialize;

use storycad_protocol::codes;

use crate::error::{AppError, UpstreamError};
use crate::relay::Outcome;

/// One provider tried for a request, as the log line lists it:
/// `{"route":"openai:gpt-4o-mini","status":500}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// `provider:model`.
    pub route: String,
    /// The provider's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the attempt failed (an error code), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attempt {
    /// An attempt the provider answered with a usable `status`.
    pub fn answered(route: String, status: u16) -> Self {
        Attempt {
            route,
            status: Some(status),
            error: None,
        }
    }

    /// A failed attempt: the provider's status if it answered at all, and the error.
    pub fn failed(route: String, status: Option<u16>, error: &AppError) -> Self {
        Attempt {
            route,
            status,
            error: Some(error.code().to_owned()),
        }
    }
}

/// Whether `error`, met before anything was sent to the caller, moves the request to the next
/// route. `upstream_status` is the provider's HTTP status when it answered (None: it did not).
pub fn moves_on(error: &AppError, upstream_status: Option<u16>) -> bool {
    match error {
        AppError::MissingSecret { .. } => true,
        AppError::Upstream(e) => match upstream_status {
            // The provider answered with an error status.
            Some(status) if !(200..300).contains(&status) => status == 429 || status >= 500,
            // It answered 2xx but the answer was unusable, or it never answered.
            _ => {
                matches!(
                    e,
                    UpstreamError::Network | UpstreamError::Timeout | UpstreamError::BadResponse
                ) || matches!(e, UpstreamError::Failed { status, .. } if *status >= 500)
            }
        },
        _ => false,
    }
}

/// The error code of a stream that ended badly (cut, an error event, a stall) while its first
/// bytes were still held back: the caller has nothing yet, so the request may move on like
/// any failure before the first byte. `None` for a stream that is open or ended with `[DONE]`.
pub fn failed_stream(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Open | Outcome::Done => None,
        Outcome::Truncated => Some(codes::STREAM_TRUNCATED.to_owned()),
        Outcome::Failed(code) => Some(code.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_status(status: u16) -> AppError {
        AppError::Upstream(UpstreamError::from_response(status, |_| None, b"{}", &[]))
    }

    #[test]
    fn connection_failures_move_on() {
        for e in [
            UpstreamError::Network,
            UpstreamError::Timeout,
            UpstreamError::BadResponse,
        ] {
            assert!(moves_on(&AppError::Upstream(e.clone()), None), "{e:?}");
        }
        // A 2xx whose complete body was unusable: nothing reached the caller yet.
        assert!(moves_on(
            &AppError::Upstream(UpstreamError::BadResponse),
            Some(200)
        ));
    }

    #[test]
    fn rate_limits_and_server_errors_move_on() {
        for status in [429, 500, 502, 503, 504, 529, 599] {
            assert!(moves_on(&from_status(status), Some(status)), "{status}");
        }
    }

    #[test]
    fn caller_errors_do_not() {
        for status in [400, 401, 403, 404, 408, 409, 413, 422] {
            assert!(!moves_on(&from_status(status), Some(status)), "{status}");
        }
        let translate = AppError::InvalidRequest {
            param: Some("n".into()),
            message: "n > 1 is not supported by Anthropic models".into(),
        };
        assert!(!moves_on(&translate, None));
        for e in [
            AppError::Internal,
            AppError::NotFound,
            AppError::ModelNotFound { alias: "x".into() },
            AppError::BodyTooLarge { limit: 1 },
        ] {
            assert!(!moves_on(&e, None), "{e:?}");
        }
    }

    #[test]
    fn streams_failing_before_their_first_byte_move_on() {
        assert_eq!(failed_stream(&Outcome::Open), None);
        assert_eq!(failed_stream(&Outcome::Done), None);
        assert_eq!(
            failed_stream(&Outcome::Truncated).as_deref(),
            Some("stream_truncated")
        );
        assert_eq!(
            failed_stream(&Outcome::Failed("overloaded".into())).as_deref(),
            Some("overloaded")
        );
    }

    #[test]
    fn an_unusable_provider_moves_on() {
        let e = AppError::MissingSecret {
            name: "LOCAL_API_KEY".into(),
        };
        assert!(moves_on(&e, None));
    }

    #[test]
    fn attempts_serialise_as_the_log_lists_them() {
        let a = [
            Attempt::failed("openai:gpt-4o-mini".into(), Some(500), &from_status(500)),
            Attempt::failed(
                "local:llama3".into(),
                None,
                &AppError::Upstream(UpstreamError::Network),
            ),
            Attempt::answered("anthropic:claude-haiku-4-5".into(), 200),
        ];
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"[{"route":"openai:gpt-4o-mini","status":500,"error":"upstream_error"},{"route":"local:llama3","error":"upstream_error"},{"route":"anthropic:claude-haiku-4-5","status":200}]"#
        );
    }
}
