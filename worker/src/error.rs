//! Every way a request can fail, and what the caller sees for each: a status, OpenAI's error
//! body and a few headers. Nothing here ever carries a provider key, an upstream URL or a stack:
//! upstream failures are classified into fixed messages, and the few upstream messages passed on
//! (a 400 about the request itself) are scrubbed and cut short first.

use std::fmt;

use serde_json::Value;
use storycad_protocol::{codes, headers, ErrorBody};

use crate::auth::AuthError;
use crate::config::ConfigError;

/// Longest upstream message passed on to the caller.
const MAX_UPSTREAM_MESSAGE: usize = 300;

/// What went wrong with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    /// No token, a malformed one, or one that failed verification (401); or no keys to verify
    /// with because the issuer's JWKS could not be fetched (503).
    Auth(AuthError),
    /// No such route.
    NotFound,
    /// The stream to resume is not kept for this caller: never cut, its window passed, or
    /// someone else's.
    StreamExpired,
    /// The route exists but not with this method.
    MethodNotAllowed {
        /// The `allow` header's value.
        allow: &'static str,
    },
    /// The body is over `MAX_BODY_BYTES`.
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The prompt alone (estimated) is more than the plan's whole daily token budget: no
    /// retry can ever serve it.
    PromptTooLarge {
        /// The prompt's estimated tokens.
        estimate: u64,
        /// The plan's `tokens_per_day`.
        budget: u64,
    },
    /// The body is declared as something other than JSON (`content-type`).
    UnsupportedMediaType,
    /// The body is not JSON.
    InvalidJson {
        /// What is wrong (position, not content).
        message: String,
    },
    /// The body is JSON but not a valid request.
    InvalidRequest {
        /// The offending field, as a path (`messages[0].role`).
        param: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// No route for the alias.
    ModelNotFound {
        /// The alias the caller asked for (cut short when echoed).
        alias: String,
    },
    /// A variable is missing or malformed (the log names it; the caller learns nothing).
    Config(ConfigError),
    /// A provider's key secret is not set.
    MissingSecret {
        /// The secret's name (for the log).
        name: String,
    },
    /// The route points at a provider kind this Worker cannot talk to yet.
    ProviderUnsupported {
        /// The provider's name (for the log).
        provider: String,
    },
    /// The upstream failed.
    Upstream(UpstreamError),
    /// The upstream failed after the provider accepted the work (2xx headers, or no answer in
    /// time to a request it received): charged its reservation, so not worth an automatic retry
    /// (`x-should-retry: false`), and never moved to the next route.
    AfterWork(UpstreamError),
    /// The caller's plan refuses the request: unknown plan, model not included (403).
    Plan(crate::plans::PlanError),
    /// A per-user limit refuses the request (429).
    Limit(crate::limiter::Refusal),
    /// The user's limiter (its Durable Object) could not be reached: 503, worth retrying soon.
    LimiterUnavailable,
    /// The caller went away before its answer was ready (499, as nginx logs it: no one reads
    /// the answer; the log line says `client_closed`).
    CallerGone,
    /// Anything else; details go to the log.
    Internal,
}

/// How an upstream call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamError {
    /// 429 from the provider.
    RateLimited {
        /// `rate_limit_exceeded` or the provider's `insufficient_quota`.
        code: &'static str,
        /// The provider's `retry-after`, passed on.
        retry_after: Option<String>,
        /// The provider's `retry-after-ms`, passed on.
        retry_after_ms: Option<String>,
    },
    /// 401/403/404 from the provider: our key or our route is wrong, not the caller's request.
    Rejected {
        /// The provider's status (for the log).
        status: u16,
    },
    /// 400/413/422 from the provider: the caller's request was refused.
    InvalidRequest {
        /// The status to answer: 400, or 413.
        status: u16,
        /// The provider's message, scrubbed and cut short.
        message: String,
        /// The provider's `param`, if any.
        param: Option<String>,
    },
    /// 5xx from the provider (or a 4xx that is not the caller's fault).
    Failed {
        /// The provider's status (for the log).
        status: u16,
        /// The provider's `retry-after`, passed on for 503.
        retry_after: Option<String>,
    },
    /// The provider did not answer in time.
    Timeout,
    /// The connection failed.
    Network,
    /// A 2xx whose body is not what the API promises.
    BadResponse,
}

impl AppError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            AppError::Auth(e) => e.status(),
            AppError::NotFound | AppError::StreamExpired | AppError::ModelNotFound { .. } => 404,
            AppError::MethodNotAllowed { .. } => 405,
            AppError::BodyTooLarge { .. } | AppError::PromptTooLarge { .. } => 413,
            AppError::UnsupportedMediaType => 415,
            AppError::InvalidJson { .. } | AppError::InvalidRequest { .. } => 400,
            AppError::Config(_) | AppError::MissingSecret { .. } | AppError::Internal => 500,
            AppError::CallerGone => 499,
            AppError::ProviderUnsupported { .. } => 502,
            AppError::LimiterUnavailable => 503,
            AppError::Upstream(u) | AppError::AfterWork(u) => u.status(),
            AppError::Plan(p) => p.status(),
            AppError::Limit(l) => l.status(),
        }
    }

    /// The machine-readable `code` of the error body (also the log's `error`).
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Auth(AuthError::KeysUnavailable) => codes::UPSTREAM_ERROR,
            AppError::Auth(_) => codes::INVALID_TOKEN,
            AppError::NotFound => codes::NOT_FOUND_CODE,
            AppError::StreamExpired => codes::STREAM_EXPIRED,
            AppError::MethodNotAllowed { .. } => codes::METHOD_NOT_ALLOWED,
            AppError::BodyTooLarge { .. } => codes::BODY_TOO_LARGE,
            AppError::PromptTooLarge { .. } => codes::PROMPT_TOO_LARGE,
            AppError::UnsupportedMediaType => codes::UNSUPPORTED_MEDIA_TYPE,
            AppError::InvalidJson { .. } => codes::INVALID_JSON,
            AppError::InvalidRequest { .. } => codes::INVALID_VALUE,
            AppError::ModelNotFound { .. } => codes::MODEL_NOT_FOUND,
            AppError::Config(_) | AppError::MissingSecret { .. } => codes::CONFIG_ERROR,
            AppError::ProviderUnsupported { .. } => codes::UPSTREAM_ERROR,
            AppError::Internal => codes::INTERNAL,
            AppError::CallerGone => crate::lifecycle::CLIENT_CLOSED,
            AppError::LimiterUnavailable => codes::LIMITER_UNAVAILABLE,
            AppError::Upstream(u) | AppError::AfterWork(u) => u.code(),
            AppError::Plan(p) => p.code(),
            AppError::Limit(l) => l.code(),
        }
    }

    /// The body to answer with.
    pub fn body(&self) -> ErrorBody {
        use codes::*;
        match self {
            AppError::Auth(e) => ErrorBody::new(
                if e.status() == 401 {
                    AUTHENTICATION
                } else {
                    SERVER
                },
                self.code(),
                e.public_message(),
            ),
            AppError::NotFound => ErrorBody::new(NOT_FOUND, NOT_FOUND_CODE, "No such route."),
            AppError::StreamExpired => ErrorBody::new(
                NOT_FOUND,
                STREAM_EXPIRED,
                "This stream cannot be resumed: it is not kept (any more) for you.",
            ),
            AppError::MethodNotAllowed { allow } => ErrorBody::new(
                INVALID_REQUEST,
                METHOD_NOT_ALLOWED,
                format!("Method not allowed on this route; use {allow}."),
            ),
            AppError::BodyTooLarge { limit } => ErrorBody::new(
                INVALID_REQUEST,
                BODY_TOO_LARGE,
                format!("The request body is larger than {limit} bytes."),
            ),
            AppError::PromptTooLarge { estimate, budget } => ErrorBody::new(
                INVALID_REQUEST,
                PROMPT_TOO_LARGE,
                format!(
                    "The prompt (about {estimate} tokens) is larger than your plan's daily \
                     budget of {budget} tokens; shorten it."
                ),
            )
            .with_param("messages"),
            AppError::UnsupportedMediaType => ErrorBody::new(
                INVALID_REQUEST,
                UNSUPPORTED_MEDIA_TYPE,
                "The body must be JSON, sent with `content-type: application/json`.",
            ),
            AppError::InvalidJson { message } => ErrorBody::new(
                INVALID_REQUEST,
                INVALID_JSON,
                format!("The body is not valid JSON: {message}"),
            ),
            AppError::InvalidRequest { param, message } => {
                let body = ErrorBody::new(INVALID_REQUEST, INVALID_VALUE, message.clone());
                match param {
                    Some(p) => body.with_param(p.clone()),
                    None => body,
                }
            }
            AppError::ModelNotFound { alias } => ErrorBody::new(
                NOT_FOUND,
                MODEL_NOT_FOUND,
                format!(
                    "The model `{}` does not exist; GET /v1/models lists the models you can use.",
                    printable(&shorten(alias, 64))
                ),
            )
            .with_param("model"),
            AppError::Config(_) | AppError::MissingSecret { .. } => ErrorBody::new(
                SERVER,
                CONFIG_ERROR,
                "The service is misconfigured; the operator has been told.",
            ),
            AppError::ProviderUnsupported { .. } => ErrorBody::new(
                SERVER,
                UPSTREAM_ERROR,
                "This model's provider is not available yet.",
            ),
            AppError::Internal => ErrorBody::new(SERVER, INTERNAL, "Internal error."),
            AppError::CallerGone => ErrorBody::new(
                SERVER,
                crate::lifecycle::CLIENT_CLOSED,
                "The request was closed before its answer was ready.",
            ),
            AppError::LimiterUnavailable => ErrorBody::new(
                SERVER,
                codes::LIMITER_UNAVAILABLE,
                "Usage limits could not be checked just now; retry in a moment.",
            ),
            AppError::Upstream(u) | AppError::AfterWork(u) => u.body(),
            AppError::Plan(p) => p.body(),
            AppError::Limit(l) => l.body(),
        }
    }

    /// Headers this error adds to the answer.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            AppError::Auth(e) if e.status() == 401 => vec![(
                "www-authenticate",
                r#"Bearer error="invalid_token""#.to_owned(),
            )],
            AppError::MethodNotAllowed { allow } => vec![("allow", (*allow).to_owned())],
            AppError::Upstream(UpstreamError::RateLimited {
                retry_after,
                retry_after_ms,
                ..
            }) => {
                let mut h = Vec::new();
                if let Some(v) = retry_after {
                    h.push((headers::RETRY_AFTER, v.clone()));
                }
                if let Some(v) = retry_after_ms {
                    h.push((headers::RETRY_AFTER_MS, v.clone()));
                }
                h
            }
            AppError::Upstream(UpstreamError::Failed {
                retry_after: Some(v),
                ..
            }) => vec![(headers::RETRY_AFTER, v.clone())],
            AppError::Limit(l) => l.headers(),
            AppError::AfterWork(_) => vec![(headers::SHOULD_RETRY, "false".to_owned())],
            AppError::LimiterUnavailable => vec![(headers::RETRY_AFTER, "1".to_owned())],
            _ => Vec::new(),
        }
    }

    /// What the log should say beyond the code: which variable is wrong, which secret is
    /// missing, why a token was refused. Never sent to the caller.
    pub fn log_detail(&self) -> Option<String> {
        match self {
            AppError::Auth(e) => Some(e.reason().to_owned()),
            AppError::Config(e) => Some(e.to_string()),
            AppError::MissingSecret { name } => Some(format!("secret {name} is not set")),
            AppError::ProviderUnsupported { provider } => Some(format!(
                "provider {provider} needs an adapter this build lacks"
            )),
            _ => None,
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.code())
    }
}

impl From<ConfigError> for AppError {
    fn from(e: ConfigError) -> Self {
        AppError::Config(e)
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        AppError::Auth(e)
    }
}

impl From<UpstreamError> for AppError {
    fn from(e: UpstreamError) -> Self {
        AppError::Upstream(e)
    }
}

impl UpstreamError {
    /// The status the caller gets.
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::RateLimited { .. } => 429,
            UpstreamError::InvalidRequest { status, .. } => *status,
            UpstreamError::Failed { status: 503, .. }
            | UpstreamError::Failed { status: 529, .. } => 503,
            UpstreamError::Failed { status: 504, .. } | UpstreamError::Timeout => 504,
            UpstreamError::Rejected { .. }
            | UpstreamError::Failed { .. }
            | UpstreamError::Network
            | UpstreamError::BadResponse => 502,
        }
    }

    /// The error code the caller gets.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::RateLimited { code, .. } => code,
            UpstreamError::InvalidRequest { status: 413, .. } => codes::BODY_TOO_LARGE,
            UpstreamError::InvalidRequest { .. } => codes::INVALID_VALUE,
            UpstreamError::Timeout | UpstreamError::Failed { status: 504, .. } => {
                codes::UPSTREAM_TIMEOUT
            }
            _ => codes::UPSTREAM_ERROR,
        }
    }

    /// The body the caller gets (also the payload of an SSE error event).
    pub fn body(&self) -> ErrorBody {
        use codes::*;
        match self {
            UpstreamError::RateLimited { code, .. } if *code == INSUFFICIENT_QUOTA => {
                ErrorBody::new(
                    RATE_LIMIT,
                    INSUFFICIENT_QUOTA,
                    "The upstream provider's quota for this service is spent.",
                )
            }
            UpstreamError::RateLimited { code, .. } => ErrorBody::new(
                RATE_LIMIT,
                code,
                "The upstream provider is rate limiting this service; retry later.",
            ),
            UpstreamError::InvalidRequest { message, param, .. } => {
                let body = ErrorBody::new(INVALID_REQUEST, self.code(), message.clone());
                match param {
                    Some(p) => body.with_param(p.clone()),
                    None => body,
                }
            }
            UpstreamError::Rejected { .. } => ErrorBody::new(
                SERVER,
                UPSTREAM_ERROR,
                "The upstream provider refused this service's credentials or route.",
            ),
            UpstreamError::Failed { .. } if self.status() == 503 => ErrorBody::new(
                OVERLOADED,
                UPSTREAM_ERROR,
                "The upstream provider is overloaded; retry later.",
            ),
            UpstreamError::Failed { .. } if self.status() == 504 => ErrorBody::new(
                SERVER,
                UPSTREAM_TIMEOUT,
                "The upstream provider did not answer in time.",
            ),
            UpstreamError::Failed { .. } => {
                ErrorBody::new(SERVER, UPSTREAM_ERROR, "The upstream provider failed.")
            }
            UpstreamError::Timeout => ErrorBody::new(
                SERVER,
                UPSTREAM_TIMEOUT,
                "The upstream provider did not answer in time.",
            ),
            UpstreamError::Network => ErrorBody::new(
                SERVER,
                UPSTREAM_ERROR,
                "The upstream provider could not be reached.",
            ),
            UpstreamError::BadResponse => ErrorBody::new(
                SERVER,
                UPSTREAM_ERROR,
                "The upstream provider sent a malformed answer.",
            ),
        }
    }

    /// Classifies a non-2xx upstream answer. `header` returns a response header by lower-case
    /// name; `scrub` lists strings that must never reach the caller (the key, the base URL).
    pub fn from_response<'h>(
        status: u16,
        header: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
        scrub: &[&str],
    ) -> UpstreamError {
        let keep = |name: &str| {
            header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 40 && v.is_ascii())
                .map(str::to_owned)
        };
        // Read as text, as every JSON in the Worker is: one copy of the parser's code.
        let error = std::str::from_utf8(body)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|v| v.get("error").cloned());
        let field = |name: &str| {
            error
                .as_ref()
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match status {
            429 => UpstreamError::RateLimited {
                code: if field("code").as_deref() == Some(codes::INSUFFICIENT_QUOTA)
                    || field("type").as_deref() == Some(codes::INSUFFICIENT_QUOTA)
                {
                    codes::INSUFFICIENT_QUOTA
                } else {
                    codes::RATE_LIMIT_EXCEEDED
                },
                retry_after: keep(headers::RETRY_AFTER),
                retry_after_ms: keep(headers::RETRY_AFTER_MS),
            },
            400 | 413 | 422 => UpstreamError::InvalidRequest {
                status: if status == 413 { 413 } else { 400 },
                message: field("message")
                    .map(|m| scrub_message(&m, scrub))
                    .unwrap_or_else(|| "The upstream provider refused the request.".to_owned()),
                param: field("param").map(|p| shorten(&scrub_message(&p, scrub), 64)),
            },
            401 | 403 | 404 => UpstreamError::Rejected { status },
            408 => UpstreamError::Timeout,
            _ => UpstreamError::Failed {
                status,
                retry_after: keep(headers::RETRY_AFTER),
            },
        }
    }
}

/// An upstream message made safe to show: every scrubbed string replaced, URLs removed, and the
/// whole cut to a few hundred characters.
pub fn scrub_message(message: &str, scrub: &[&str]) -> String {
    let mut out = message.to_owned();
    for s in scrub.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "[redacted]");
    }
    let words: Vec<&str> = out
        .split(' ')
        .map(|w| {
            if w.contains("://") || w.starts_with("sk-") {
                "[redacted]"
            } else {
                w
            }
        })
        .collect();
    shorten(&words.join(" "), MAX_UPSTREAM_MESSAGE)
}

/// `s` with every control character and line or paragraph separator (CR, LF, NEL, U+2028,
/// U+2029...) replaced by U+FFFD, so an echoed value cannot break a line of whatever shows it.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = concat!("sk-", "test-THE-PROVIDER-KEY-0123456789");
    const BASE: &str = "http://10.1.2.3:4010/v1";

    fn fixture(name: &str) -> Vec<u8> {
        crate::fixture(&format!("openai/{name}"))
    }

    fn classify(status: u16, headers: &[(&str, &str)], body: &[u8]) -> UpstreamError {
        UpstreamError::from_response(
            status,
            |n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
            body,
            &[KEY, BASE],
        )
    }

    /// Everything the caller would see, as one string.
    fn seen(e: &AppError) -> String {
        let mut s = serde_json::to_string(&e.body()).unwrap();
        for (k, v) in e.headers() {
            s.push_str(&format!("\n{k}: {v}"));
        }
        s
    }

    #[test]
    fn statuses_and_codes() {
        let cases: Vec<(AppError, u16, &str)> = vec![
            (AuthError::Expired.into(), 401, "invalid_token"),
            (AuthError::KeysUnavailable.into(), 503, "upstream_error"),
            (AppError::NotFound, 404, "not_found"),
            (AppError::StreamExpired, 404, "stream_expired"),
            (
                AppError::MethodNotAllowed { allow: "POST" },
                405,
                "method_not_allowed",
            ),
            (AppError::BodyTooLarge { limit: 10 }, 413, "body_too_large"),
            (
                AppError::PromptTooLarge {
                    estimate: 11,
                    budget: 10,
                },
                413,
                "prompt_too_large",
            ),
            (
                AppError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (
                AppError::InvalidJson {
                    message: "x".into(),
                },
                400,
                "invalid_json",
            ),
            (
                AppError::InvalidRequest {
                    param: Some("messages".into()),
                    message: "x".into(),
                },
                400,
                "invalid_value",
            ),
            (
                AppError::ModelNotFound { alias: "x".into() },
                404,
                "model_not_found",
            ),
            (
                AppError::Config(ConfigError {
                    var: "ROUTES".into(),
                    reason: "bad".into(),
                }),
                500,
                "configuration_error",
            ),
            (
                AppError::MissingSecret {
                    name: "OPENAI_API_KEY".into(),
                },
                500,
                "configuration_error",
            ),
            (AppError::Internal, 500, "internal_error"),
            (AppError::LimiterUnavailable, 503, "limiter_unavailable"),
            (UpstreamError::Timeout.into(), 504, "upstream_timeout"),
            (UpstreamError::Network.into(), 502, "upstream_error"),
            (UpstreamError::BadResponse.into(), 502, "upstream_error"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.code(), code, "{e:?}");
            let body = e.body();
            assert_eq!(body.error.code.as_deref(), Some(code), "{e:?}");
            assert!(body.error.kind.is_some());
        }
    }

    #[test]
    fn unauthorized_has_www_authenticate_and_a_public_message() {
        let e = AppError::from(AuthError::BadSignature);
        assert_eq!(
            e.headers(),
            [(
                "www-authenticate",
                r#"Bearer error="invalid_token""#.to_owned()
            )]
        );
        assert_eq!(
            e.body().error.message,
            AuthError::BadSignature.public_message()
        );
        assert_eq!(e.body().error.kind.as_deref(), Some("authentication_error"));
        assert_eq!(e.log_detail().as_deref(), Some("bad_signature"));
        // Keys we cannot fetch are our problem: 503, no challenge.
        let e = AppError::from(AuthError::KeysUnavailable);
        assert!(e.headers().is_empty());
        assert_eq!(e.body().error.kind.as_deref(), Some("server_error"));
    }

    #[test]
    fn method_not_allowed_sends_allow() {
        let e = AppError::MethodNotAllowed { allow: "GET" };
        assert_eq!(e.headers(), [("allow", "GET".to_owned())]);
    }

    #[test]
    fn config_errors_are_logged_not_shown() {
        let e = AppError::Config(ConfigError {
            var: "ROUTES".into(),
            reason: "alias \"x\": unknown provider \"y\"".into(),
        });
        assert!(!seen(&e).contains("ROUTES"));
        assert!(e.log_detail().unwrap().contains("ROUTES"));
        let e = AppError::MissingSecret {
            name: "OPENAI_API_KEY".into(),
        };
        assert!(!seen(&e).contains("OPENAI_API_KEY"));
        assert!(e.log_detail().unwrap().contains("OPENAI_API_KEY"));
    }

    #[test]
    fn model_not_found_names_param_and_cuts_long_aliases() {
        let e = AppError::ModelNotFound {
            alias: "m".repeat(5000),
        };
        let body = e.body();
        assert_eq!(body.error.param.as_deref(), Some("model"));
        assert!(body.error.message.len() < 300);
    }

    #[test]
    fn upstream_429_keeps_retry_after_and_hides_the_org() {
        let meta = [
            ("retry-after", "1"),
            ("retry-after-ms", "174"),
            ("x-ratelimit-limit-tokens", "30000"),
        ];
        let u = classify(429, &meta, &fixture("error_429_rate_limit_exceeded.json"));
        let e = AppError::from(u);
        assert_eq!(e.status(), 429);
        assert_eq!(e.code(), "rate_limit_exceeded");
        let headers = e.headers();
        assert!(headers.contains(&("retry-after", "1".to_owned())));
        assert!(headers.contains(&("retry-after-ms", "174".to_owned())));
        // The provider's message names our organisation: it must not pass.
        assert!(!seen(&e).contains("org-"));
        assert!(!seen(&e).contains("x-ratelimit"));
    }

    #[test]
    fn upstream_quota_is_a_non_retryable_429() {
        let e = AppError::from(classify(
            429,
            &[],
            &fixture("error_429_insufficient_quota.json"),
        ));
        assert_eq!(e.status(), 429);
        assert_eq!(e.code(), "insufficient_quota");
        assert!(!codes::is_retryable_429(Some(e.code())));
        assert!(e.headers().is_empty());
    }

    #[test]
    fn upstream_401_is_a_generic_502() {
        let body = fixture("error_401_invalid_api_key.json");
        for status in [401, 403, 404] {
            let e = AppError::from(classify(status, &[], &body));
            assert_eq!(e.status(), 502, "{status}");
            assert_eq!(e.code(), "upstream_error");
            let s = seen(&e);
            assert!(!s.contains("sk-"), "{s}");
            assert!(!s.contains("API key"), "{s}");
        }
    }

    #[test]
    fn upstream_5xx_and_timeouts() {
        let body = fixture("error_500_server_error.json");
        let e = AppError::from(classify(500, &[], &body));
        assert_eq!((e.status(), e.code()), (502, "upstream_error"));
        assert!(!seen(&e).contains("req_"));
        let e = AppError::from(classify(502, &[], b"<html>bad gateway</html>"));
        assert_eq!(e.status(), 502);
        for status in [503, 529] {
            let e = AppError::from(classify(status, &[("retry-after", "7")], b""));
            assert_eq!(e.status(), 503, "{status}");
            assert_eq!(e.headers(), [("retry-after", "7".to_owned())]);
        }
        let e = AppError::from(classify(504, &[], b""));
        assert_eq!((e.status(), e.code()), (504, "upstream_timeout"));
        let e = AppError::from(classify(408, &[], b""));
        assert_eq!((e.status(), e.code()), (504, "upstream_timeout"));
        // An odd 4xx is not the caller's fault.
        let e = AppError::from(classify(409, &[], b""));
        assert_eq!(e.status(), 502);
    }

    #[test]
    fn upstream_400_passes_a_scrubbed_message() {
        let body = format!(
            r#"{{"error":{{"message":"Invalid 'messages[0].role' (key {KEY}, see {BASE}/chat/completions or https://platform.openai.com/docs)","type":"invalid_request_error","param":"messages[0].role","code":"invalid_value"}}}}"#
        );
        let e = AppError::from(classify(400, &[], body.as_bytes()));
        assert_eq!(e.status(), 400);
        let b = e.body();
        assert_eq!(b.error.param.as_deref(), Some("messages[0].role"));
        assert!(b.error.message.starts_with("Invalid 'messages[0].role'"));
        let s = seen(&e);
        assert!(!s.contains(KEY), "{s}");
        assert!(!s.contains("10.1.2.3"), "{s}");
        assert!(!s.contains("://"), "{s}");

        let huge = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(100_000));
        let e = AppError::from(classify(422, &[], huge.as_bytes()));
        assert_eq!(e.status(), 400);
        assert!(e.body().error.message.len() <= MAX_UPSTREAM_MESSAGE + 4);

        let e = AppError::from(classify(413, &[], b"not json"));
        assert_eq!((e.status(), e.code()), (413, "body_too_large"));
    }

    #[test]
    fn odd_retry_after_values_are_dropped() {
        let long = "9".repeat(100);
        let u = classify(429, &[("retry-after", &long)], b"{}");
        assert_eq!(AppError::from(u).headers(), []);
    }

    #[test]
    fn echoed_model_names_cannot_break_a_line() {
        for alias in [
            "fast\r\nX-Injected: 1",
            "fast\u{2028}X-Injected: 1",
            "fast\u{2029}x",
            "fast\u{0085}x",
            "fast\u{0}x\tx",
        ] {
            let message = AppError::ModelNotFound {
                alias: alias.to_owned(),
            }
            .body()
            .error
            .message;
            assert!(message.contains("fast\u{FFFD}"), "{message:?}");
            assert!(
                !message.contains(['\r', '\n', '\u{2028}', '\u{2029}', '\u{0085}', '\0', '\t']),
                "{message:?}"
            );
        }
        assert_eq!(printable("storycad-fast"), "storycad-fast");
        assert_eq!(printable("héllo ünïcode"), "héllo ünïcode");
    }

    #[test]
    fn prompt_too_large_names_messages_and_both_numbers() {
        let e = AppError::PromptTooLarge {
            estimate: 500_001,
            budget: 250_000,
        };
        let body = e.body();
        assert_eq!(body.error.param.as_deref(), Some("messages"));
        assert!(
            body.error.message.contains("500001"),
            "{}",
            body.error.message
        );
        assert!(
            body.error.message.contains("250000"),
            "{}",
            body.error.message
        );
        assert!(e.headers().is_empty(), "not worth a retry-after");
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("héllo", 2), "h…");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
