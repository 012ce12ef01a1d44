//! The caller's `POST /v1/chat/completions` body: size limit, JSON, schema.

use serde_json::{Map, Value};
use storycad_protocol::ChatRequest;

use super::located;
use crate::error::{shorten, AppError};

/// Longest validation message echoed to the caller: enough for a path and an expectation, too
/// short to send a large input back.
const MAX_MESSAGE: usize = 200;

/// The most messages one request may hold: OpenAI's own limit, so nothing it would refuse is
/// sent, and a body of thousands of tiny messages is refused before any work is spent on it.
pub const MAX_MESSAGES: usize = 2048;

/// The Chat Completions request fields the Worker passes on (OpenAI's API reference, 2026).
/// Anything else is refused with 400, as OpenAI itself refuses an unrecognized argument: an
/// unknown field could carry a provider feature nobody has priced. The plan gates some of
/// these ([`crate::plans::GATED_FIELDS`]); `user` and `safety_identifier` are replaced by the
/// Worker's own end-user id.
pub const KNOWN_FIELDS: [&str; 34] = [
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

/// A validated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCall {
    /// The alias in `model`.
    pub alias: String,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// Whether the caller asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The body as sent, every field kept, for forwarding.
    pub body: Map<String, Value>,
    /// The caller's id for this request ([`Correlation::upstream_id`]), sent to the provider
    /// where it has a header for it.
    pub correlation: Option<String>,
}

/// The caller's own ids for a request, as it sent them: `x-request-id` and the trace id of a
/// W3C `traceparent`. The log line carries them beside the Worker's id. One that does not
/// look like an id (too long, spaces, control characters, a malformed `traceparent`) is
/// dropped, never an error: a correlation id must not fail a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correlation {
    /// `x-request-id`: at most 128 of `A-Z a-z 0-9 - _ . : / + = @`.
    pub client_request_id: Option<String>,
    /// The 32 hex digits of `traceparent`'s trace id.
    pub trace_id: Option<String>,
}

impl Correlation {
    /// From the request's `x-request-id` and `traceparent` headers.
    pub fn from_headers(x_request_id: Option<&str>, traceparent: Option<&str>) -> Self {
        // Most callers send neither: their requests never compile the reading below.
        if x_request_id.is_none() && traceparent.is_none() {
            return Correlation::default();
        }
        Correlation::read(x_request_id, traceparent)
    }

    #[inline(never)]
    fn read(x_request_id: Option<&str>, traceparent: Option<&str>) -> Self {
        let id_char = |c: char| c.is_ascii_alphanumeric() || "-_.:/+=@".contains(c);
        let client_request_id = x_request_id
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(id_char))
            .map(str::to_owned);
        Correlation {
            client_request_id,
            trace_id: traceparent.and_then(trace_id),
        }
    }

    /// The id the provider gets: the caller's request id, else its trace id.
    pub fn upstream_id(&self) -> Option<&str> {
        self.client_request_id
            .as_deref()
            .or(self.trace_id.as_deref())
    }
}

/// The trace id of a `traceparent` (`version-traceid-parentid-flags`, W3C Trace Context): 32
/// lower-case hex digits, not all zero, in version `00` or a later version's same layout.
fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2)
        && (parts.next().is_none() || version != "00");
    valid.then(|| trace.to_owned())
}

/// Checks the declared `content-type` before any byte is read: `application/json` (any case,
/// any parameters such as `charset`), or none at all (many simple clients send JSON without
/// saying so; the body must then parse as JSON all the same). Anything else, a form or plain
/// text, is refused with 415.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), AppError> {
    let Some(value) = content_type else {
        return Ok(());
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(AppError::UnsupportedMediaType)
    }
}

/// Refuses a prompt that is, by itself, more than the plan's whole daily token budget: no
/// retry could ever serve it, so it is a 413 now rather than an admission that overdraws the
/// day (or a 429 that tells the caller to come back tomorrow to fail again).
pub fn check_prompt_fits(prompt_estimate: u64, tokens_per_day: u64) -> Result<(), AppError> {
    if prompt_estimate > tokens_per_day {
        Err(AppError::PromptTooLarge {
            estimate: prompt_estimate,
            budget: tokens_per_day,
        })
    } else {
        Ok(())
    }
}

/// A `content-length` header's value, when it is one number.
fn declared_length(content_length: Option<&str>) -> Option<u64> {
    content_length.and_then(|v| v.trim().parse::<u64>().ok())
}

/// Checks a declared `content-length` against the limit before any byte is read.
pub fn check_declared_length(content_length: Option<&str>, limit: u64) -> Result<(), AppError> {
    match declared_length(content_length) {
        Some(n) if n > limit => Err(AppError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

/// The headers of a request to send (a provider's, the JWKS GET) as one string, `name\nvalue\n…`,
/// for the runtime's `fetch` in one call. Each value loses the leading and trailing whitespace
/// (tab, space, CR, LF) that `Headers` strips anyway, so a provider key stored with a trailing
/// newline works as it always did. `None` when a line break is left inside a name or value: no
/// header can hold one (`Headers` would refuse it), and it would split the string.
pub fn header_lines(headers: &[(&str, &str)]) -> Option<String> {
    let mut lines = String::new();
    for (name, value) in headers {
        let value = value.trim_matches([' ', '\t', '\r', '\n']);
        if name.contains(['\n', '\r']) || value.contains(['\n', '\r']) {
            return None;
        }
        if !lines.is_empty() {
            lines.push('\n');
        }
        lines.push_str(name);
        lines.push('\n');
        lines.push_str(value);
    }
    Some(lines)
}

/// Whether a body can be read whole by the runtime in one call rather than piece by piece:
/// its `content-length` is declared and within `limit`, and it is not compressed (the runtime
/// inflates a compressed answer, past its declared length). Any other body is read piece by
/// piece and cut at the limit ([`BodyLimit`]).
pub fn reads_whole(
    content_length: Option<&str>,
    content_encoding: Option<&str>,
    limit: u64,
) -> bool {
    let declared = declared_length(content_length);
    let plain = content_encoding
        .map(str::trim)
        .is_none_or(|e| e.is_empty() || e.eq_ignore_ascii_case("identity"));
    plain && declared.is_some_and(|n| n <= limit)
}

/// Collects body chunks, refusing as soon as the total passes the limit (a body sent without
/// `content-length`, or with a false one, is still bounded).
#[derive(Debug)]
pub struct BodyLimit {
    limit: u64,
    bytes: Vec<u8>,
}

impl BodyLimit {
    /// An empty collector for at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        BodyLimit {
            limit,
            bytes: Vec::new(),
        }
    }

    /// Adds a chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), AppError> {
        if self.bytes.len() as u64 + chunk.len() as u64 > self.limit {
            return Err(AppError::BodyTooLarge { limit: self.limit });
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// The whole body.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Parses and validates a chat body.
pub fn parse_chat(body: &[u8]) -> Result<ChatCall, AppError> {
    // Checked as UTF-8 first and parsed as text, as every JSON in the Worker is: the parser's
    // code for text is the one copy the wasm holds (from bytes would be a second).
    let text = std::str::from_utf8(body).map_err(|e| AppError::InvalidJson {
        message: format!("it is not UTF-8 ({e})"),
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| AppError::InvalidJson {
        message: shorten(&e.to_string(), MAX_MESSAGE),
    })?;
    let not_an_object = || AppError::InvalidRequest {
        param: None,
        message: "The body must be a JSON object.".to_owned(),
    };
    let Some(fields) = value.as_object() else {
        return Err(not_an_object());
    };
    if let Some(field) = fields.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(AppError::InvalidRequest {
            param: Some(shorten(field, 64)),
            message: format!(
                "Unrecognized request argument supplied: {}",
                shorten(field, 64)
            ),
        });
    }
    let read = match plain(fields) {
        Some(read) => read,
        None => typed(fields)?,
    };
    if read.model.trim().is_empty() {
        return Err(invalid("model", "`model` must name a model."));
    }
    if read.messages == 0 {
        return Err(invalid("messages", "`messages` must not be empty."));
    }
    if read.messages > MAX_MESSAGES {
        return Err(invalid(
            "messages",
            &format!(
                "`messages` holds {} messages; at most {MAX_MESSAGES} are allowed.",
                read.messages
            ),
        ));
    }
    let (alias, stream, include_usage) = (read.model.to_owned(), read.stream, read.include_usage);
    let Value::Object(map) = value else {
        return Err(not_an_object());
    };
    Ok(ChatCall {
        correlation: None,
        stream,
        include_usage,
        alias,
        body: map,
    })
}

/// What the Worker reads of a valid body.
#[derive(Debug, PartialEq)]
struct Read<'a> {
    model: &'a str,
    messages: usize,
    stream: bool,
    include_usage: bool,
}

/// Validates the body against the typed request (read from the parsed value, not a copy of
/// it); the error's path names the bad field.
fn typed(fields: &Map<String, Value>) -> Result<Read<'_>, AppError> {
    let typed: ChatRequest =
        located::from_object(fields).map_err(|e| AppError::InvalidRequest {
            message: shorten(&e.message, MAX_MESSAGE),
            param: e.path.map(|path| shorten(&path, 64)),
        })?;
    let model = fields.get("model").and_then(Value::as_str).unwrap_or("");
    Ok(Read {
        model,
        messages: typed.messages.len(),
        stream: typed.is_stream(),
        include_usage: typed
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// The same reading as [`typed`], for a body plain enough to see valid at a glance: each field
/// the typed request models is absent, `null` or of its simplest shape (messages of a known role
/// with text content, numbers where numbers go), so the typed check would pass. `None` for
/// anything else, which the typed check then reads (and names what is wrong). The typed check's
/// code is most of a request's serde code: a plain request leaves it uncompiled, on an
/// isolate's first request and again each time the runtime drops the wasm's baseline code.
fn plain(fields: &Map<String, Value>) -> Option<Read<'_>> {
    let mut read = Read {
        model: fields.get("model")?.as_str()?,
        messages: fields.get("messages")?.as_array()?.len(),
        stream: false,
        include_usage: false,
    };
    for (key, value) in fields {
        // A null is an absent field to the typed check (`model` and `messages` are not null).
        if value.is_null() {
            continue;
        }
        let fits = match key.as_str() {
            "model" | "response_format" => true,
            "messages" => value.as_array()?.iter().all(plain_message),
            "temperature" | "top_p" | "presence_penalty" | "frequency_penalty" => value.is_number(),
            "max_tokens" | "max_completion_tokens" | "n" => {
                value.as_u64().is_some_and(|n| u32::try_from(n).is_ok())
            }
            "seed" => value.as_i64().is_some(),
            "stream" => {
                read.stream = value.as_bool()?;
                true
            }
            "parallel_tool_calls" => value.is_boolean(),
            "user" => value.is_string(),
            "stream_options" => {
                let options = value.as_object()?;
                match options.get("include_usage") {
                    None | Some(Value::Null) => true,
                    Some(include) => {
                        read.include_usage = include.as_bool()?;
                        true
                    }
                }
            }
            // Modelled, with shapes of their own: the typed check reads them.
            "stop" | "tools" | "tool_choice" => false,
            // Not modelled: any value.
            _ => true,
        };
        if !fits {
            return None;
        }
    }
    Some(read)
}

/// A message the typed check takes: an object with a known role and text content (or none);
/// `name` and `tool_call_id` text; no tool calls; any other member.
fn plain_message(message: &Value) -> bool {
    let Some(message) = message.as_object() else {
        return false;
    };
    let role = message.get("role").and_then(Value::as_str);
    matches!(
        role,
        Some("system" | "developer" | "user" | "assistant" | "tool")
    ) && message.iter().all(|(key, value)| match key.as_str() {
        "role" => true,
        "content" | "name" | "tool_call_id" => value.is_null() || value.is_string(),
        "tool_calls" => value.is_null(),
        _ => true,
    })
}

fn invalid(param: &str, message: &str) -> AppError {
    AppError::InvalidRequest {
        param: Some(param.to_owned()),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChatCall, AppError> {
        parse_chat(text.as_bytes())
    }

    /// What the runtime helper makes of the string: names and values, pair by pair.
    fn pairs(lines: &str) -> Vec<(&str, &str)> {
        let parts: Vec<&str> = lines.split('\n').collect();
        parts.chunks(2).map(|p| (p[0], p[1])).collect()
    }

    #[test]
    fn header_lines_keep_every_pair_and_trim_values_as_headers_do() {
        let sent = [
            ("authorization", "Bearer sk-key\n"),
            ("x-empty", ""),
            ("anthropic-version", " 2023-06-01\t"),
            ("content-type", "application/json"),
        ];
        let lines = header_lines(&sent).unwrap();
        assert_eq!(
            pairs(&lines),
            [
                ("authorization", "Bearer sk-key"),
                ("x-empty", ""),
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
            ]
        );
        assert_eq!(header_lines(&[]).as_deref(), Some(""));
        assert_eq!(pairs(&header_lines(&[("a", "")]).unwrap()), [("a", "")]);
    }

    #[test]
    fn header_lines_refuse_a_line_break_inside() {
        assert_eq!(
            header_lines(&[("authorization", "Bearer sk\nx-evil: 1")]),
            None
        );
        assert_eq!(header_lines(&[("authorization", "Bearer sk\r\nx")]), None);
        assert_eq!(header_lines(&[("x-a\nb", "v")]), None);
    }

    #[test]
    fn good_request() {
        let c = parse(
            r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"metadata":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!(c.alias, "fast");
        assert!(c.stream);
        assert!(c.include_usage);
        // Unmodelled fields are kept for the provider.
        assert_eq!(c.body["metadata"]["k"], "v");
        let c = parse(r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(!c.stream);
        assert!(!c.include_usage);
    }

    /// A small deterministic generator (xorshift), so the test below is the same on each run.
    struct Rng(u64);

    impl Rng {
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            &items[(self.0 % items.len() as u64) as usize]
        }
    }

    fn json(texts: &[&str]) -> Vec<Value> {
        texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect()
    }

    #[test]
    fn a_plain_body_is_one_the_typed_check_takes_and_reads_the_same() {
        // Values of every kind, the edges of each number type among them.
        let values = json(&[
            "null",
            "true",
            "false",
            "0",
            "1",
            "-1",
            "2.5",
            "5.0",
            "-0.0",
            "4294967295",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "-9223372036854775808",
            "1e3",
            r#""""#,
            r#""x""#,
            r#""user""#,
            "[]",
            r#"["a"]"#,
            "[1]",
            "{}",
            r#"{"include_usage":true}"#,
            r#"{"include_usage":null}"#,
            r#"{"include_usage":"yes"}"#,
            r#"{"include_usage":false,"other":1}"#,
            r#"{"type":"function","function":{"name":"f"}}"#,
        ]);
        let messages = json(&[
            r#"{"role":"user","content":"hi"}"#,
            r#"{"role":"system","content":""}"#,
            r#"{"role":"developer","content":"be brief","name":"ops"}"#,
            r#"{"role":"assistant","content":null,"refusal":null}"#,
            r#"{"role":"assistant"}"#,
            r#"{"role":"tool","content":"42","tool_call_id":"call_1"}"#,
            r#"{"role":"assistant","content":"x","tool_calls":null}"#,
            r#"{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}"#,
            r#"{"role":"assistant","tool_calls":[]}"#,
            r#"{"role":"assistant","tool_calls":[1]}"#,
            r#"{"role":"assistant","tool_calls":"call"}"#,
            r#"{"role":"user","content":[{"type":"text","text":"hi"}]}"#,
            r#"{"role":"user","content":[{"type":"text"}]}"#,
            r#"{"role":"user","content":7}"#,
            r#"{"role":"robot","content":"hi"}"#,
            r#"{"role":"User","content":"hi"}"#,
            r#"{"role":null,"content":"hi"}"#,
            r#"{"content":"hi"}"#,
            r#"{"role":"user","name":5}"#,
            r#"{"role":"user","tool_call_id":[]}"#,
            r#"{"role":"user","content":"hi","extra":{"any":[1]}}"#,
            r#"["user","hi"]"#,
            "null",
            r#""hi""#,
        ]);
        let fields = [
            "temperature",
            "top_p",
            "presence_penalty",
            "frequency_penalty",
            "max_tokens",
            "max_completion_tokens",
            "n",
            "seed",
            "stream",
            "parallel_tool_calls",
            "user",
            "stream_options",
            "response_format",
            "stop",
            "tools",
            "tool_choice",
            "metadata",
            "logprobs",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut plain_bodies, mut typed_only) = (0, 0);
        for round in 0..20_000 {
            let mut body = Map::new();
            // Now and then a model or a message list that is missing or of another kind.
            match round % 17 {
                0 => {}
                1 => {
                    body.insert("model".into(), rng.pick(&values).clone());
                }
                _ => {
                    body.insert("model".into(), Value::from(*rng.pick(&["m", " ", ""])));
                }
            }
            match round % 13 {
                0 => {}
                1 => {
                    body.insert("messages".into(), rng.pick(&values).clone());
                }
                _ => {
                    let n = *rng.pick(&[0usize, 1, 1, 2, 3]);
                    let list = (0..n).map(|_| rng.pick(&messages).clone()).collect();
                    body.insert("messages".into(), Value::Array(list));
                }
            }
            for _ in 0..*rng.pick(&[0usize, 1, 2, 3]) {
                body.insert((*rng.pick(&fields)).into(), rng.pick(&values).clone());
            }
            let typed_read = typed(&body);
            match plain(&body) {
                Some(read) => {
                    plain_bodies += 1;
                    let typed_read = typed_read.unwrap_or_else(|e| {
                        panic!("plain but refused ({e:?}): {}", Value::Object(body.clone()))
                    });
                    assert_eq!(read, typed_read, "{}", Value::Object(body.clone()));
                }
                None => typed_only += 1,
            }
        }
        // Both ways are taken, often: the test is not vacuous.
        assert!(
            plain_bodies > 2_000 && typed_only > 2_000,
            "{plain_bodies} / {typed_only}"
        );
    }

    #[test]
    fn common_bodies_are_plain() {
        for text in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},
                {"role":"assistant","content":"yes"}],"stream":true,
                "stream_options":{"include_usage":true},"max_tokens":100,"temperature":0.7,
                "top_p":1,"n":1,"presence_penalty":0,"frequency_penalty":0,"user":"u","seed":-3,
                "response_format":{"type":"json_object"},"metadata":{"k":"v"},"store":false}"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let fields = value.as_object().unwrap();
            assert!(plain(fields).is_some(), "{text}");
            assert_eq!(plain(fields), typed(fields).ok(), "{text}");
        }
    }

    #[test]
    fn bad_json_is_invalid_json() {
        for text in ["", "{", "{\"model\":}", "nul"] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_json"), "{text}");
        }
        // Not UTF-8, inside a string or outside one.
        for bytes in [
            &b"{\"model\":\"\xff\"}"[..],
            b"\xef\xbb{}",
            b"{\"m\":1}\x80",
        ] {
            let e = parse_chat(bytes).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_json"));
            let message = e.body().error.message;
            assert!(
                message.starts_with("The body is not valid JSON: it is not UTF-8 ("),
                "{message}"
            );
        }
    }

    #[test]
    fn schema_errors_name_the_field() {
        let cases = [
            (r#"[1,2]"#, None),
            (r#"{"messages":[{"role":"user","content":"hi"}]}"#, None),
            (
                r#"{"model":"m","messages":[{"role":"robot","content":"hi"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#,
                Some("temperature"),
            ),
            (r#"{"model":7,"messages":[]}"#, Some("model")),
            (
                r#"{"model":" ","messages":[{"role":"user","content":"hi"}]}"#,
                Some("model"),
            ),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            // Inside a stop list, a content array, a tool choice: the element itself.
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["a",5]}"#,
                Some("stop[1]"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":5}"#,
                Some("stop"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
                Some("messages[0].content"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                    "tool_choice":{"type":"function","function":{"name":9}}}"#,
                Some("tool_choice.function.name"),
            ),
        ];
        for (text, param) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_value"), "{text}");
            assert_eq!(e.body().error.param.as_deref(), param, "{text}");
        }
    }

    #[test]
    fn only_known_fields_pass() {
        let ok = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.1,
            "logprobs":true,"top_logprobs":2,"seed":1,"metadata":{"k":"v"},"store":false}"#;
        assert!(parse(ok).is_ok());
        for field in [
            "extra_body",
            "provider",
            "functions_v2",
            "x".repeat(500).as_str(),
        ] {
            let text = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"{field}":1}}"#
            );
            let e = parse(&text).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_value"), "{field}");
            let param = e.body().error.param.unwrap();
            assert!(field.starts_with(param.trim_end_matches('…')), "{param}");
            assert!(e.body().error.message.len() < 200);
        }
    }

    #[test]
    fn errors_never_echo_large_input() {
        let big = "x".repeat(50_000);
        let text = format!(r#"{{"model":"m","messages":[{{"role":"{big}","content":"hi"}}]}}"#);
        let e = parse(&text).unwrap_err();
        assert!(serde_json::to_string(&e.body()).unwrap().len() < 1000);
        let text = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{big}"#);
        let e = parse(&text).unwrap_err();
        assert!(serde_json::to_string(&e.body()).unwrap().len() < 1000);
    }

    #[test]
    fn at_most_max_messages() {
        let body = |n: usize| {
            let messages = vec![r#"{"role":"user","content":"x"}"#; n].join(",");
            format!(r#"{{"model":"m","messages":[{messages}]}}"#)
        };
        assert_eq!(parse(&body(MAX_MESSAGES)).unwrap().alias, "m");
        for n in [MAX_MESSAGES + 1, 10_000] {
            let e = parse(&body(n)).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_value"), "{n}");
            assert_eq!(e.body().error.param.as_deref(), Some("messages"));
            assert!(e.body().error.message.contains(&n.to_string()));
        }
    }

    #[test]
    fn deep_nesting_is_invalid_json_not_a_crash() {
        // serde_json refuses a 128th level (127 are fine); the request object is the first.
        let nested = |depth: usize| {
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"metadata":{}1{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(parse(&nested(126)).is_ok());
        for depth in [127, 128, 100_000] {
            let e = parse(&nested(depth)).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_json"), "{depth}");
            assert!(e.body().error.message.contains("recursion limit"));
        }
        let e = parse(&"[".repeat(100_000)).unwrap_err();
        assert_eq!(e.code(), "invalid_json");
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_invalid_json() {
        let prefix = br#"{"model":"m","messages":[{"role":"user","content":"a"#;
        for bad in [
            &b"\xff"[..],
            b"\xc3\x28",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\\ud800",
            b"\\udc00x",
        ] {
            let mut body = prefix.to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(br#""}]}"#);
            let e = parse_chat(&body).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_json"), "{bad:?}");
        }
        let e = parse_chat(b"\xff\xfe{}").unwrap_err();
        assert_eq!(e.code(), "invalid_json");
    }

    #[test]
    fn not_an_object_is_invalid_value() {
        for text in [
            "null",
            " null\n",
            "[]",
            "42",
            "true",
            r#""text""#,
            r#"[{"model":"m"}]"#,
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "invalid_value"), "{text}");
            assert!(e.body().error.message.contains("object"));
        }
    }

    #[test]
    fn content_types() {
        for ok in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some(" application/json ;charset=UTF-8"),
        ] {
            assert!(check_content_type(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "text/plain",
            "text/plain; charset=utf-8",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "application/json-seq",
            "text/json",
            "",
        ] {
            let e = check_content_type(Some(bad)).unwrap_err();
            assert_eq!(
                (e.status(), e.code()),
                (415, "unsupported_media_type"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_prompt_over_the_whole_day_is_refused() {
        assert!(check_prompt_fits(100, 100).is_ok());
        assert!(check_prompt_fits(0, 0).is_ok());
        let e = check_prompt_fits(101, 100).unwrap_err();
        assert_eq!((e.status(), e.code()), (413, "prompt_too_large"));
    }

    #[test]
    fn declared_length_is_checked_first() {
        assert!(check_declared_length(Some("10"), 10).is_ok());
        assert!(check_declared_length(None, 10).is_ok());
        assert!(check_declared_length(Some("junk"), 10).is_ok());
        let e = check_declared_length(Some("11"), 10).unwrap_err();
        assert_eq!((e.status(), e.code()), (413, "body_too_large"));
    }

    #[test]
    fn actual_bytes_are_bounded_too() {
        let mut b = BodyLimit::new(10);
        b.push(b"12345").unwrap();
        b.push(b"67890").unwrap();
        assert_eq!(b.push(b"1").unwrap_err().status(), 413);
        let mut b = BodyLimit::new(10);
        assert_eq!(b.push(&[0; 11]).unwrap_err().status(), 413);
        let mut b = BodyLimit::new(10);
        b.push(b"abc").unwrap();
        assert_eq!(b.into_bytes(), b"abc");
    }

    #[test]
    fn correlation_ids_are_kept_when_they_look_like_ids() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = Correlation::from_headers(Some(" req-42:a/b "), Some(tp));
        assert_eq!(c.client_request_id.as_deref(), Some("req-42:a/b"));
        assert_eq!(
            c.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(c.upstream_id(), Some("req-42:a/b"));
        let only_trace = Correlation::from_headers(None, Some(tp));
        assert_eq!(
            only_trace.upstream_id(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // A later version may add fields after the flags.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(Correlation::from_headers(None, Some(v1)).trace_id.is_some());
        assert_eq!(
            Correlation::from_headers(None, None),
            Correlation::default()
        );
    }

    #[test]
    fn odd_correlation_ids_are_dropped_not_refused() {
        let long = "a".repeat(129);
        for bad in [
            "",
            "two words",
            "tab\there",
            "quote\"",
            "é",
            long.as_str(),
            "a\r\nb",
        ] {
            let c = Correlation::from_headers(Some(bad), None);
            assert_eq!(c.client_request_id, None, "{bad:?}");
        }
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(
                Correlation::from_headers(None, Some(bad)).trace_id,
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn only_a_declared_plain_body_within_the_limit_is_read_whole() {
        assert!(reads_whole(Some("512"), None, 1024));
        assert!(reads_whole(Some(" 1024 "), Some("identity"), 1024));
        assert!(reads_whole(Some("0"), Some(""), 1024));
        // Over the limit, undeclared or unreadable: piece by piece, cut at the limit.
        assert!(!reads_whole(Some("1025"), None, 1024));
        assert!(!reads_whole(None, None, 1024));
        assert!(!reads_whole(Some("12, 12"), None, 1024));
        assert!(!reads_whole(Some("-1"), None, 1024));
        // Compressed: the runtime inflates it past what was declared.
        assert!(!reads_whole(Some("100"), Some("gzip"), 1024));
        assert!(!reads_whole(Some("100"), Some("br"), 1024));
    }
}
