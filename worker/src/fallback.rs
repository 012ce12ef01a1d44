//! Routing with fallback: the record of every route tried, for the log line.
//!
//! `ROUTES` maps an alias to an ordered chain of `provider:model`. The Worker tries them in
//! order and moves on only where the provider did no billable work ([`crate::lifecycle`]
//! decides, and its table says what is charged):
//!
//! | failure | next route? |
//! |---|---|
//! | no connection, or a reset before headers | yes |
//! | 429 (the provider's rate limit or quota) | yes |
//! | 5xx, and Anthropic's 529 | yes |
//! | the provider's key secret is not set | yes (that provider is unusable; the log says why) |
//! | any other 4xx (401/403/404 included: the route or key is wrong, logged) | no |
//! | the request cannot be translated for the provider (400) | no: the caller's request |
//! | no headers in time after the request went out | no: the provider may be working on it |
//! | anything after 2xx headers (a cut or bad body, a stream that fails) | no: the provider has the work |
//!
//! 4xx answers other than 429 are final: they describe the caller's request (or a broken
//! route the operator must fix), and the next provider would most likely say the same.
//! When every route fails, the caller gets the last failure, mapped as usual (OpenAI error
//! shape, no upstream URL), and `x-storycad-route` names the last route tried.

use serde::Serialize;

use crate::error::AppError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;

    fn from_status(status: u16) -> AppError {
        AppError::Upstream(UpstreamError::from_response(status, |_| None, b"{}", &[]))
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
