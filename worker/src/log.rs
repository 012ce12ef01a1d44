//! One JSON log line per request ([`RequestLog`]), and the Worker's other log lines
//! ([`Event`]: what the operator should know that is not one request's answer), each one JSON
//! object. They hold ids, names, numbers and codes: never a token, a key, or any prompt or
//! completion text.

use serde::Serialize;

use crate::error::AppError;

/// The log line of one request, filled in as the request goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestLog {
    /// `x-request-id`.
    pub request_id: String,
    /// `GET`, `POST`...
    pub method: String,
    /// The URL path (no query: a query could carry anything).
    pub path: String,
    /// The caller's own `x-request-id`, when it sent one that looks like an id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// The trace id of the caller's `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The caller's `sub`, once the token is verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The alias asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `provider:model` used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Whether the answer was a stream.
    pub stream: bool,
    /// The status sent to the caller.
    pub status: u16,
    /// The provider's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Milliseconds the limiter took to admit the request (one Durable Object round trip).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limiter_ms: Option<u64>,
    /// Every route tried, in order, with its status or error (fallback).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<crate::log::Attempt>,
    /// `HIT`, `MISS` or `BYPASS` (chat requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// Milliseconds from the request's arrival to the first byte of the answer body sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    /// Milliseconds from arrival to the end of the answer.
    pub total_ms: u64,
    /// Prompt tokens the provider counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Completion tokens the provider counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Tokens charged to the user's budget for this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charged: Option<u64>,
    /// The error code sent (or the stream's closing error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For the operator: which variable is wrong, why a token was refused...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RequestLog {
    /// A line for a request that just arrived.
    pub fn new(request_id: &str, method: &str, path: &str) -> Self {
        RequestLog {
            request_id: request_id.to_owned(),
            method: method.to_owned(),
            path: crate::error::shorten(path, 128),
            ..RequestLog::default()
        }
    }

    /// Records the provider's token counts.
    pub fn set_usage(&mut self, usage: Option<&storycad_protocol::Usage>) {
        if let Some(u) = usage {
            self.prompt_tokens = Some(u.prompt_tokens);
            self.completion_tokens = Some(u.completion_tokens);
        }
    }

    /// Records an error answer.
    pub fn set_error(&mut self, error: &crate::error::AppError) {
        self.status = error.status();
        self.error = Some(error.code().to_owned());
        self.detail = error.log_detail();
    }

    /// The line: one JSON object, no newline inside.
    pub fn to_line(&self) -> String {
        // Strings and numbers only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

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

/// A log line that is not a request's own: `{"event":"<name>", ...}` with the request it
/// happened in, the user, and a detail for the operator, where there are some.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Event {
    /// What happened (`jwks_fetch_failed`, `limiter_unavailable`, ...).
    pub event: &'static str,
    /// The request it happened in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The user it concerns (cut short).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// For the operator (cut short).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event named `event`.
    pub fn new(event: &'static str) -> Event {
        Event {
            event,
            ..Event::default()
        }
    }

    /// In request `id`.
    pub fn in_request(mut self, id: &str) -> Event {
        self.request_id = Some(crate::error::shorten(id, 64));
        self
    }

    /// About user `sub`.
    pub fn for_user(mut self, sub: &str) -> Event {
        self.sub = Some(crate::error::shorten(sub, 64));
        self
    }

    /// With `detail`.
    pub fn with_detail(mut self, detail: &str) -> Event {
        self.detail = Some(crate::error::shorten(detail, 300));
        self
    }

    /// The line: one JSON object, no newline inside.
    pub fn to_line(&self) -> String {
        // Strings only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A request id: `cf-ray` when Cloudflare set one (so our logs meet Cloudflare's), else 16 hex
/// digits from `random`.
pub fn request_id(cf_ray: Option<&str>, random: u64) -> String {
    match cf_ray.map(str::trim) {
        Some(ray)
            if !ray.is_empty()
                && ray.len() <= 64
                && ray.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            ray.to_owned()
        }
        _ => format!("{random:016x}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use storycad_protocol::Usage;

    use super::*;
    use crate::config::ConfigError;
    use crate::error::UpstreamError;

    fn from_status(status: u16) -> AppError {
        AppError::Upstream(UpstreamError::from_response(status, |_| None, b"{}", &[]))
    }

    #[test]
    fn one_json_line_with_the_fields() {
        let mut log = RequestLog::new("abc", "POST", "/v1/chat/completions");
        log.sub = Some("user-1".into());
        log.alias = Some("fast".into());
        log.route = Some("openai:gpt-4o-mini".into());
        log.stream = true;
        log.status = 200;
        log.upstream_status = Some(200);
        log.ttfb_ms = Some(12);
        log.total_ms = 340;
        log.set_usage(Some(&Usage::new(14, 30)));
        let line = log.to_line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["sub"], "user-1");
        assert_eq!(v["route"], "openai:gpt-4o-mini");
        assert_eq!(v["prompt_tokens"], 14);
        assert_eq!(v["completion_tokens"], 30);
        assert_eq!(v["ttfb_ms"], 12);
        assert!(v.get("error").is_none());
    }

    #[test]
    fn errors_carry_code_and_detail() {
        let mut log = RequestLog::new("abc", "GET", "/v1/models");
        log.set_error(&AppError::Config(ConfigError {
            var: "ROUTES".into(),
            reason: "is required".into(),
        }));
        let v: Value = serde_json::from_str(&log.to_line()).unwrap();
        assert_eq!(v["status"], 500);
        assert_eq!(v["error"], "configuration_error");
        assert!(v["detail"].as_str().unwrap().contains("ROUTES"));
    }

    #[test]
    fn request_ids() {
        assert_eq!(
            request_id(Some("8f1c2a3b4c5d6e7f-SJC"), 1),
            "8f1c2a3b4c5d6e7f-SJC"
        );
        assert_eq!(request_id(None, 0xabc), "0000000000000abc");
        assert_eq!(request_id(Some("x\ny"), 1), "0000000000000001");
        assert_eq!(request_id(Some(""), 2), "0000000000000002");
    }

    #[test]
    fn events_are_one_json_line_of_what_they_have() {
        let line = Event::new("limiter_unavailable")
            .for_user(&"u".repeat(500))
            .with_detail("call: status 500\nand more")
            .to_line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "limiter_unavailable");
        assert!(v["sub"].as_str().unwrap().len() < 100);
        assert!(v.get("request_id").is_none());
        let v: Value = serde_json::from_str(&Event::new("x").in_request("abc").to_line()).unwrap();
        assert_eq!(v, serde_json::json!({"event": "x", "request_id": "abc"}));
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
