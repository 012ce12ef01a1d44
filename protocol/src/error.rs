//! OpenAI's error body: `{"error":{"message","type","code","param"}}`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::Extra;

/// The body of every error answer, and of an SSE error event (`data: {"error":{...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

/// An error as OpenAI shapes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApiError {
    /// Human-readable text; never holds a secret.
    pub message: String,
    /// Category, e.g. `invalid_request_error`, `rate_limit_error`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Machine-readable code, e.g. `rate_limit_exceeded`, `budget_exhausted`.
    #[serde(default, deserialize_with = "string_or_number")]
    pub code: Option<String>,
    /// The request field the error is about.
    #[serde(default)]
    pub param: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ErrorBody {
    /// An error body with the given parts.
    pub fn new(kind: &str, code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ApiError {
                kind: Some(kind.to_owned()),
                code: Some(code.to_owned()),
                ..ApiError::new(message)
            },
        }
    }

    /// The body carrying `error`.
    pub fn from_error(error: ApiError) -> Self {
        ErrorBody { error }
    }

    /// The same body naming the request field it is about.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }
}

impl ApiError {
    /// An error with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        ApiError {
            message: message.into(),
            kind: None,
            code: None,
            param: None,
            extra: Extra::new(),
        }
    }
}

// Providers have sent `code` as a string, a number and null.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Error `type` and `code` values the Worker sends.
pub mod codes {
    /// `type` of a request the caller must change.
    pub const INVALID_REQUEST: &str = "invalid_request_error";
    /// `type` of a bad or expired token.
    pub const AUTHENTICATION: &str = "authentication_error";
    /// `type` of a request the caller's plan does not allow.
    pub const PERMISSION: &str = "permission_error";
    /// `type` of a 404.
    pub const NOT_FOUND: &str = "not_found_error";
    /// `type` of a 429.
    pub const RATE_LIMIT: &str = "rate_limit_error";
    /// `type` of an upstream or internal failure.
    pub const SERVER: &str = "server_error";
    /// `type` of an overloaded upstream.
    pub const OVERLOADED: &str = "overloaded_error";

    /// The token is missing, malformed, expired or not signed by a trusted key.
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// The body is not valid JSON or not a valid request.
    pub const INVALID_JSON: &str = "invalid_json";
    /// A field has a bad value.
    pub const INVALID_VALUE: &str = "invalid_value";
    /// The body is larger than the limit.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// The prompt alone (estimated) is more than the caller's plan allows in a whole day (413).
    pub const PROMPT_TOO_LARGE: &str = "prompt_too_large";
    /// The body is declared as something other than JSON (415).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// No route for this model alias.
    pub const MODEL_NOT_FOUND: &str = "model_not_found";
    /// The alias exists but the caller's plan does not include it.
    pub const MODEL_NOT_ALLOWED: &str = "model_not_allowed";
    /// Too many requests in the window: retry after `retry-after`.
    pub const RATE_LIMIT_EXCEEDED: &str = "rate_limit_exceeded";
    /// The token budget is spent until it resets; retrying sooner is useless.
    pub const BUDGET_EXHAUSTED: &str = "budget_exhausted";
    /// OpenAI's name for a spent budget.
    pub const INSUFFICIENT_QUOTA: &str = "insufficient_quota";
    /// The token names a plan the Worker does not know (403).
    pub const UNKNOWN_PLAN: &str = "unknown_plan";
    /// The caller's usage limits could not be checked just now (503; retry soon).
    pub const LIMITER_UNAVAILABLE: &str = "limiter_unavailable";
    /// Too many streams open at once.
    pub const TOO_MANY_STREAMS: &str = "concurrent_streams_exceeded";
    /// The upstream failed or answered garbage.
    pub const UPSTREAM_ERROR: &str = "upstream_error";
    /// The upstream did not answer in time.
    pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";
    /// The upstream stream ended without finishing.
    pub const STREAM_TRUNCATED: &str = "stream_truncated";
    /// No such route.
    pub const NOT_FOUND_CODE: &str = "not_found";
    /// The stream to resume is not kept (any more) for this user: its window passed, it was
    /// never cut, or it is someone else's (404).
    pub const STREAM_EXPIRED: &str = "stream_expired";
    /// Method not allowed on this route.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The Worker's own configuration is invalid.
    pub const CONFIG_ERROR: &str = "configuration_error";
    /// Anything else that went wrong inside.
    pub const INTERNAL: &str = "internal_error";

    /// Whether a 429 with this code is worth retrying (a spent budget or quota is not).
    pub fn is_retryable_429(code: Option<&str>) -> bool {
        !matches!(code, Some(BUDGET_EXHAUSTED) | Some(INSUFFICIENT_QUOTA))
    }
}
