//! One JSON log line per request ([`RequestLog`]), and the Worker's other log lines
//! ([`Event`]: what the operator should know that is not one request's answer), each one JSON
//! object. They hold ids, names, numbers and codes: never a token, a key, or any prompt or
//! completion text.

use crate::error::AppError;
use crate::json_write::Object;

/// The log line of one request, filled in as the request goes.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct RequestLog {
    /// `x-request-id`.
    pub request_id: String,
    /// `GET`, `POST`...
    pub method: String,
    /// The URL path (no query: a query could carry anything).
    pub path: String,
    /// The caller's own `x-request-id`, when it sent one that looks like an id.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub client_request_id: Option<String>,
    /// The trace id of the caller's `traceparent`.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub trace_id: Option<String>,
    /// The caller's `sub`, once the token is verified.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub sub: Option<String>,
    /// The alias asked for.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub alias: Option<String>,
    /// `provider:model` used.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub route: Option<String>,
    /// Whether the answer was a stream.
    pub stream: bool,
    /// A resumable stream's id (on its request and on its resumes).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub stream_id: Option<String>,
    /// The caller left before the stream's end and its events went to the user's Durable
    /// Object for a resume.
    #[cfg_attr(test, serde(skip_serializing_if = "std::ops::Not::not"))]
    pub handed_off: bool,
    /// Calls to the Durable Object that took the handed-over events.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub handoff_calls: Option<u32>,
    /// Bytes of events those calls carried.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub handoff_bytes: Option<u64>,
    /// The status sent to the caller.
    pub status: u16,
    /// The provider's status.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub upstream_status: Option<u16>,
    /// Milliseconds the limiter took to admit the request (one Durable Object round trip).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub limiter_ms: Option<u64>,
    /// Every route tried, in order, with its status or error (fallback).
    #[cfg_attr(test, serde(skip_serializing_if = "Vec::is_empty"))]
    pub attempts: Vec<crate::log::Attempt>,
    /// `HIT`, `MISS` or `BYPASS` (chat requests).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub cache: Option<&'static str>,
    /// Milliseconds from the request's arrival to the first byte of the answer body sent.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub ttfb_ms: Option<u64>,
    /// Milliseconds from arrival to the end of the answer.
    pub total_ms: u64,
    /// Prompt tokens the provider counted.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub prompt_tokens: Option<u64>,
    /// Completion tokens the provider counted.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub completion_tokens: Option<u64>,
    /// Tokens charged to the user's budget for this request.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub charged: Option<u64>,
    /// The error code sent (or the stream's closing error).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub error: Option<String>,
    /// For the operator: which variable is wrong, why a token was refused...
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
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

    /// The line: one JSON object, no newline inside; members in the fields' order, an absent
    /// one (`None`, no attempts, not handed off) left out.
    pub fn to_line(&self) -> String {
        let mut o = Object::with_capacity(320);
        o.string("request_id", &self.request_id);
        o.string("method", &self.method);
        o.string("path", &self.path);
        o.some_string("client_request_id", self.client_request_id.as_deref());
        o.some_string("trace_id", self.trace_id.as_deref());
        o.some_string("sub", self.sub.as_deref());
        o.some_string("alias", self.alias.as_deref());
        o.some_string("route", self.route.as_deref());
        o.boolean("stream", self.stream);
        o.some_string("stream_id", self.stream_id.as_deref());
        if self.handed_off {
            o.boolean("handed_off", true);
        }
        o.some_number("handoff_calls", self.handoff_calls.map(u64::from));
        o.some_number("handoff_bytes", self.handoff_bytes);
        o.number("status", u64::from(self.status));
        o.some_number("upstream_status", self.upstream_status.map(u64::from));
        o.some_number("limiter_ms", self.limiter_ms);
        if !self.attempts.is_empty() {
            o.objects("attempts", &self.attempts, |o, a| {
                o.string("route", &a.route);
                o.some_number("status", a.status.map(u64::from));
                o.some_string("error", a.error.as_deref());
            });
        }
        o.some_string("cache", self.cache);
        o.some_number("ttfb_ms", self.ttfb_ms);
        o.number("total_ms", self.total_ms);
        o.some_number("prompt_tokens", self.prompt_tokens);
        o.some_number("completion_tokens", self.completion_tokens);
        o.some_number("charged", self.charged);
        o.some_string("error", self.error.as_deref());
        o.some_string("detail", self.detail.as_deref());
        o.end()
    }

    /// The console level the line is written at. A 5xx answer (an internal error among them)
    /// ends the invocation `ok` all the same, so the level is what Workers Logs and
    /// `wrangler tail` can tell our failures by.
    pub fn level(&self) -> Level {
        if self.status >= 500 || self.error.as_deref() == Some(storycad_protocol::codes::INTERNAL) {
            Level::Error
        } else {
            Level::Log
        }
    }
}

/// The console method a line goes out with (`console.log` or `console.error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `console.log`.
    Log,
    /// `console.error`.
    Error,
}

/// One provider tried for a request, as the log line lists it:
/// `{"route":"openai:gpt-4o-mini","status":500}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Attempt {
    /// `provider:model`.
    pub route: String,
    /// The provider's HTTP status, when it answered.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub status: Option<u16>,
    /// Why the attempt failed (an error code), when it did.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Event {
    /// What happened (`jwks_fetch_failed`, `limiter_unavailable`, ...).
    pub event: &'static str,
    /// The request it happened in.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub request_id: Option<String>,
    /// The user it concerns (cut short).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub sub: Option<String>,
    /// For the operator (cut short).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
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
        let mut o = Object::with_capacity(128);
        o.string("event", self.event);
        o.some_string("request_id", self.request_id.as_deref());
        o.some_string("sub", self.sub.as_deref());
        o.some_string("detail", self.detail.as_deref());
        o.end()
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
        _ => {
            // 16 hex digits, as `{:016x}` writes them, without the formatter's code.
            let mut id = String::with_capacity(16);
            crate::push_hex(&mut id, &random.to_be_bytes());
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

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
    fn a_5xx_or_internal_error_is_an_error_line() {
        let mut log = RequestLog::new("abc", "POST", "/v1/chat/completions");
        log.status = 200;
        assert_eq!(log.level(), Level::Log);
        for status in [400, 401, 429, 499] {
            log.status = status;
            assert_eq!(log.level(), Level::Log, "{status}");
        }
        log.set_error(&from_status(500));
        assert_eq!((log.status, log.level()), (502, Level::Error));
        log.set_error(&AppError::Internal);
        assert_eq!((log.status, log.level()), (500, Level::Error));
        // A stream that failed after its 200 head: the answer was not a 5xx.
        let mut log = RequestLog::new("abc", "POST", "/v1/chat/completions");
        log.status = 200;
        log.error = Some("upstream_error".into());
        assert_eq!(log.level(), Level::Log);
    }

    /// Every field the Worker can write, from a request line and an event line with every
    /// field set. The struct literals list every field (no `..Default::default()`), so a new
    /// field does not compile here until it is set, and then shows up in the set.
    fn written_fields() -> BTreeSet<String> {
        let request = RequestLog {
            request_id: "r".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            client_request_id: Some("c".into()),
            trace_id: Some("t".into()),
            sub: Some("s".into()),
            alias: Some("a".into()),
            route: Some("openai:m".into()),
            stream: true,
            stream_id: Some("1-2-3".into()),
            handed_off: true,
            handoff_calls: Some(2),
            handoff_bytes: Some(300),
            status: 502,
            upstream_status: Some(500),
            limiter_ms: Some(1),
            attempts: vec![Attempt {
                route: "openai:m".into(),
                status: Some(500),
                error: Some("upstream_error".into()),
            }],
            cache: Some("MISS"),
            ttfb_ms: Some(1),
            total_ms: 2,
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            charged: Some(7),
            error: Some("upstream_error".into()),
            detail: Some("d".into()),
        };
        let event = Event {
            event: "limiter_unavailable",
            request_id: Some("r".into()),
            sub: Some("s".into()),
            detail: Some("d".into()),
        };
        let mut fields = BTreeSet::new();
        for line in [request.to_line(), event.to_line()] {
            let Value::Object(map) = serde_json::from_str(&line).unwrap() else {
                panic!("not an object: {line}");
            };
            for (key, value) in map {
                // A list of objects (`attempts`) documents its entries' fields as
                // `attempts[].route`.
                for item in value.as_array().into_iter().flatten() {
                    for inner in item.as_object().into_iter().flat_map(|o| o.keys()) {
                        fields.insert(format!("{key}[].{inner}"));
                    }
                }
                fields.insert(key);
            }
        }
        fields
    }

    const RUNBOOK: &str = include_str!("../../docs/operations.md");

    /// The runbook's field table: the backticked names in the first cell of each row of the
    /// table that follows the `<!-- log-fields -->` marker.
    fn documented_fields(doc: &str) -> BTreeSet<String> {
        let (_, after) = doc
            .split_once("<!-- log-fields -->")
            .expect("docs/operations.md has a `<!-- log-fields -->` table");
        let rows = after
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2); // header and separator
        rows.flat_map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default().to_owned();
            code_spans(&first)
        })
        .collect()
    }

    /// The text of every `code span` on one line.
    fn code_spans(line: &str) -> Vec<String> {
        line.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    /// The field names the runbook uses in queries, each with where it was seen: `name op
    /// value` in a code span (anywhere) or in a code block of the "Logs" and "Alerts" sections,
    /// and `"name":` in those code blocks (a `--search` text) and in code spans that start with
    /// `"` (a piece of a line). A name with a `$` (Cloudflare's own fields) or a `.`
    /// (`wrangler.toml` keys such as `observability.enabled`) is not a field of ours.
    fn queried_fields(doc: &str) -> BTreeMap<String, String> {
        let mut pieces = Vec::new();
        let mut section = "";
        let mut in_block = false;
        // A code span may run on to the next line of its paragraph.
        let mut span: Option<String> = None;
        for line in doc.lines() {
            if let Some(title) = line.strip_prefix("## ") {
                section = title;
            }
            let log_section = section.starts_with("Logs") || section.starts_with("Alerts");
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                if log_section {
                    // A command's arguments, quoted or piped.
                    pieces.extend(
                        line.split(['\'', '(', ')', '|'])
                            .map(|p| (p.to_owned(), true)),
                    );
                }
                continue;
            }
            for (i, part) in line.split('`').enumerate() {
                if i > 0 {
                    match span.take() {
                        Some(text) => pieces.push((text, false)),
                        None => span = Some(String::new()),
                    }
                }
                if let Some(text) = &mut span {
                    if i == 0 {
                        text.push(' ');
                    }
                    text.push_str(part);
                }
            }
        }
        let mut found = BTreeMap::new();
        for (piece, in_block) in pieces {
            let words: Vec<&str> = piece.split_whitespace().collect();
            for w in words.windows(3) {
                let name = w[0];
                if ["=", "!=", ">", ">=", "<", "<="].contains(&w[1])
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    found.insert(name.to_owned(), piece.clone());
                }
            }
            if in_block || piece.starts_with('"') {
                for (i, _) in piece.match_indices("\":") {
                    let start = piece[..i].rfind('"').map_or(0, |q| q + 1);
                    found.insert(piece[start..i].to_owned(), piece.clone());
                }
            }
        }
        found
    }

    #[test]
    fn the_runbook_documents_every_field_written_and_no_other() {
        let written = written_fields();
        let documented = documented_fields(RUNBOOK);
        let undocumented: Vec<_> = written.difference(&documented).collect();
        let unwritten: Vec<_> = documented.difference(&written).collect();
        assert!(
            undocumented.is_empty() && unwritten.is_empty(),
            "docs/operations.md's field table: missing {undocumented:?}; not written by the \
             Worker {unwritten:?}"
        );
    }

    #[test]
    fn the_runbooks_queries_name_fields_the_worker_writes() {
        let written = written_fields();
        // A name as it appears in a line, at any depth (`route` in `attempts` too).
        let names: BTreeSet<&str> = written
            .iter()
            .map(|f| f.rsplit(['.', '[']).next().unwrap_or(f))
            .chain(written.iter().map(|f| f.split('[').next().unwrap_or(f)))
            .collect();
        let queried = queried_fields(RUNBOOK);
        assert!(
            queried.iter().any(|(name, _)| name == "status"),
            "the convention found no query at all: {queried:?}"
        );
        let unknown: Vec<_> = queried
            .iter()
            .filter(|(name, _)| !names.contains(name.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "docs/operations.md queries fields the Worker does not write: {unknown:?}"
        );
    }

    #[test]
    fn the_query_convention_catches_a_wrong_name() {
        let doc = "## Logs\n`user = \"u1\"` and\n```sh\nwrangler tail --search '\"error_code\":\"x\"'\n```\n";
        let names: Vec<String> = queried_fields(doc).into_keys().collect();
        assert_eq!(names, ["error_code", "user"]);
        let table = "<!-- log-fields -->\n| field | what |\n|---|---|\n| `sub` | x |\n| `attempts[].route`, `cache` | y |\n\nafter\n";
        let fields: Vec<String> = documented_fields(table).into_iter().collect();
        assert_eq!(fields, ["attempts[].route", "cache", "sub"]);
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
        let mut log = RequestLog::new("abc", "POST", "/v1/chat/completions");
        log.attempts = a.to_vec();
        let line = log.to_line();
        assert!(
            line.contains(r#","attempts":[{"route":"openai:gpt-4o-mini","status":500,"error":"upstream_error"},{"route":"local:llama3","error":"upstream_error"},{"route":"anthropic:claude-haiku-4-5","status":200}],"#),
            "{line}"
        );
    }

    /// The lines are written by hand ([`crate::json_write`]); serde's derived writer of the same
    /// types (compiled for the tests only) is the oracle, byte for byte.
    #[test]
    fn lines_are_what_serde_writes() {
        let mut pick = crate::picker(0xD1B5_4A32_D192_ED03);
        let texts = [
            "",
            "a",
            "x\"y\\z",
            "line\nbreak",
            "\u{1}\u{1f}\t",
            "日本🙂",
            "é\u{7f}",
        ];
        let numbers = [0, 1, 42, u64::from(u16::MAX), u64::from(u32::MAX), u64::MAX];
        for _ in 0..3_000 {
            let mut text = || texts[pick(texts.len())].to_owned();
            let (t1, t2, t3) = (text(), text(), text());
            let mut some_text = || (pick(2) == 1).then(|| texts[pick(texts.len())].to_owned());
            let (o1, o2, o3, o4, o5, o6, o7, o8) = (
                some_text(),
                some_text(),
                some_text(),
                some_text(),
                some_text(),
                some_text(),
                some_text(),
                some_text(),
            );
            let mut number = || numbers[pick(numbers.len())];
            let (n1, n2, n3, n4, n5, n6, n7) = (
                number(),
                number(),
                number(),
                number(),
                number(),
                number(),
                number(),
            );
            let mut flag = || pick(2) == 1;
            let flags: Vec<bool> = (0..12).map(|_| flag()).collect();
            let attempts = (0..pick(3))
                .map(|i| Attempt {
                    route: texts[pick(texts.len())].to_owned(),
                    status: flags[i].then_some(502),
                    error: flags[i + 3].then(|| "upstream_error".to_owned()),
                })
                .collect();
            let log = RequestLog {
                request_id: t1,
                method: t2,
                path: t3,
                client_request_id: o1,
                trace_id: o2,
                sub: o3,
                alias: o4,
                route: o5,
                stream: flags[6],
                stream_id: o6,
                handed_off: flags[7],
                handoff_calls: flags[8].then_some(n1 as u32),
                handoff_bytes: flags[9].then_some(n2),
                status: n3 as u16,
                upstream_status: flags[10].then_some(n4 as u16),
                limiter_ms: flags[11].then_some(n5),
                attempts,
                cache: flags[0].then_some("HIT"),
                ttfb_ms: flags[1].then_some(n6),
                total_ms: n7,
                prompt_tokens: flags[2].then_some(n1),
                completion_tokens: flags[3].then_some(n2),
                charged: flags[4].then_some(n3),
                error: o7,
                detail: o8,
            };
            assert_eq!(log.to_line(), serde_json::to_string(&log).unwrap());
            let event = Event {
                event: "limiter_unavailable",
                request_id: log.client_request_id.clone(),
                sub: log.sub.clone(),
                detail: log.detail.clone(),
            };
            assert_eq!(event.to_line(), serde_json::to_string(&event).unwrap());
        }
    }
}
