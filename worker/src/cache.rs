//! The response cache for repeated prompts: which requests are cached, their key, the stored
//! entry, its replay (JSON or SSE), and the fold of a relayed stream into a full answer. Host
//! code; the KV reads and writes are in `cache_kv` (wasm only).
//!
//! # What is cached
//!
//! A request is cacheable when the cache is on (`CACHE_TTL_SECONDS` > 0) and either the caller
//! sends `x-storycad-cache: on`, or its `temperature` is 0 (a deterministic request).
//! `x-storycad-cache: off` bypasses the cache (no read, no write) whatever the temperature.
//! Every chat answer says `x-storycad-cache: HIT`, `MISS` (looked up, not found; stored if it
//! succeeds) or `BYPASS` (not cacheable).
//!
//! # The key
//!
//! `chat:v1:` + hex SHA-256 of the canonical JSON (keys sorted at every level, numbers written
//! one way: `0`, `0.0` and `0e0` are the same number) of:
//!
//! - the scope: `user:<sub>` (default: one user's entries are never served to another) or
//!   `shared` (`CACHE_SCOPE=shared`: every user of the same alias shares the entries);
//! - the alias's route chain (`provider:model`, in order): changing `ROUTES` starts afresh;
//! - the default output cap sent to providers that need one (the plan's);
//! - the request body: `model` (the alias), `messages`, `tools`, `tool_choice`,
//!   `response_format`, `temperature`, `top_p`, `max_tokens`, `max_completion_tokens`, `stop`,
//!   `seed`, `n`, the penalties, and any other field (an unknown field may change the answer),
//!   except `stream`, `stream_options` and `user`, which do not change the answer.
//!
//! # The entry
//!
//! `{"v":1,"route":"provider:model","answer":<the complete OpenAI answer, model = alias>}`,
//! written with `expiration_ttl` = `CACHE_TTL_SECONDS`, clamped up to KV's minimum of 60 s.
//! Only a successful answer is stored: a complete answer that passed, or a stream that ended
//! with `[DONE]` with every choice finished (no error event, not cut). A hit replays the answer
//! as JSON, or as SSE when the caller streams: per choice a role chunk, the content in a few
//! pieces, the refusal, the tool calls, the finish chunk; then the usage chunk if asked for,
//! then `[DONE]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use storycad_protocol::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, Extra, FinishReason, FunctionCall,
    FunctionCallDelta, ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};

/// KV's minimum `expiration_ttl`: shorter TTLs are clamped up to it.
pub const MIN_TTL_SECONDS: u64 = 60;

/// Every key starts with this (a format change bumps the version, orphaning old entries).
pub const KEY_PREFIX: &str = "chat:v1:";

/// Largest entry written (KV's value limit is 25 MiB).
pub const MAX_ENTRY_BYTES: usize = 20 * 1024 * 1024;

/// Largest stream folded into an entry; a longer one is relayed but not cached.
pub const MAX_FOLD_BYTES: usize = 8 * 1024 * 1024;

/// Request fields that do not change the answer, left out of the key.
const NOT_IN_KEY: [&str; 3] = ["stream", "stream_options", "user"];

/// Content pieces a replayed stream sends per choice (at most).
const REPLAY_PIECES: usize = 4;

/// Whose entries a request may see (`CACHE_SCOPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// `user` (the default): entries are per user (`sub`).
    #[default]
    User,
    /// `shared`: every user of an alias shares its entries.
    Shared,
}

impl Scope {
    /// Reads `CACHE_SCOPE` (`user` or `shared`, any case; unset: `user`).
    pub fn parse(text: Option<&str>) -> Result<Scope, String> {
        match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("user") => Ok(Scope::User),
            Some("shared") => Ok(Scope::Shared),
            Some(_) => Err("must be `user` or `shared`".to_owned()),
        }
    }
}

/// The `x-storycad-cache` answer header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Served from the cache.
    Hit,
    /// Looked up and not found; the answer is stored if it succeeds.
    Miss,
    /// Not cacheable (cache off, `x-storycad-cache: off`, or not deterministic).
    Bypass,
}

impl Status {
    /// `HIT`, `MISS` or `BYPASS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Bypass => "BYPASS",
        }
    }
}

/// The TTL written to KV for `CACHE_TTL_SECONDS`: `None` when 0 (the cache is off), else at
/// least KV's minimum of 60 s.
pub fn ttl(configured: u64) -> Option<u64> {
    (configured > 0).then(|| configured.max(MIN_TTL_SECONDS))
}

/// Whether a request is cacheable: `header` is the caller's `x-storycad-cache` (`on`/`off`,
/// any case; other values are ignored), `body` the request.
pub fn wants_cache(header: Option<&str>, body: &Map<String, Value>) -> bool {
    match header.map(|h| h.trim().to_ascii_lowercase()).as_deref() {
        Some("off") => false,
        Some("on") => true,
        _ => body.get("temperature").and_then(Value::as_f64) == Some(0.0),
    }
}

/// The KV key of a request (see the module docs). `sub`: the caller (used with
/// [`Scope::User`] only); `chain`: the alias's routes as `provider:model`.
pub fn key(
    scope: Scope,
    sub: &str,
    chain: &[String],
    default_max_tokens: u32,
    body: &Map<String, Value>,
) -> String {
    let request: Map<String, Value> = body
        .iter()
        .filter(|(k, _)| !NOT_IN_KEY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let scope = match scope {
        Scope::User => format!("user:{sub}"),
        Scope::Shared => "shared".to_owned(),
    };
    let input = serde_json::json!({
        "scope": scope,
        "chain": chain,
        "default_max_tokens": default_max_tokens,
        "request": request,
    });
    let mut text = String::new();
    canonical(&input, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(KEY_PREFIX.len() + 64);
    out.push_str(KEY_PREFIX);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `value` as JSON with object keys sorted at every level and numbers in one form.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                out.push_str(&(f as i64).to_string())
            }
            (_, _, Some(f)) => out.push_str(&format!("{f:e}")),
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

/// A stored entry.
#[derive(Debug, Deserialize)]
pub struct Cached {
    /// The route that produced the answer (`x-storycad-route` of a hit).
    pub route: String,
    /// The complete OpenAI answer, as sent the first time.
    pub answer: Box<RawValue>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    v: u32,
    route: &'a str,
    answer: &'a RawValue,
}

#[derive(Deserialize)]
struct Version {
    v: u32,
}

/// The entry to store for `answer` (a complete OpenAI answer, JSON) produced by `route`;
/// `None` when the answer is not a JSON object or the entry would be too large.
pub fn entry(route: &str, answer: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(answer).ok()?;
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    if !raw.get().trim_start().starts_with('{') {
        return None;
    }
    let out = serde_json::to_string(&EntryOut {
        v: 1,
        route,
        answer: raw,
    })
    .ok()?;
    (out.len() <= MAX_ENTRY_BYTES).then_some(out)
}

/// Reads a stored entry; `None` for anything unreadable (treated as a miss).
pub fn parse_entry(text: &str) -> Option<Cached> {
    if serde_json::from_str::<Version>(text).ok()?.v != 1 {
        return None;
    }
    let cached: Cached = serde_json::from_str(text).ok()?;
    // Replays need it to be an answer.
    serde_json::from_str::<ChatResponse>(cached.answer.get()).ok()?;
    Some(cached)
}

impl Cached {
    /// The answer as a JSON body.
    pub fn json_body(&self) -> Vec<u8> {
        self.answer.get().as_bytes().to_vec()
    }

    /// The answer replayed as an event stream.
    pub fn sse_body(&self, include_usage: bool) -> Option<Vec<u8>> {
        let answer: ChatResponse = serde_json::from_str(self.answer.get()).ok()?;
        Some(replay_sse(&answer, include_usage))
    }
}

fn data(out: &mut Vec<u8>, chunk: &ChatChunk) {
    out.extend_from_slice(b"data: ");
    // Plain data: serialising cannot fail.
    out.extend_from_slice(&serde_json::to_vec(chunk).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

/// `text` cut into at most `n` non-empty pieces of about equal size, at character boundaries.
fn pieces(text: &str, n: usize) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let size = text.len().div_ceil(n.max(1));
    let mut out = Vec::with_capacity(n);
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// A complete answer as the event stream a provider would have sent (see the module docs).
pub fn replay_sse(answer: &ChatResponse, include_usage: bool) -> Vec<u8> {
    let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
        id: answer.id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: answer.created,
        model: answer.model.clone(),
        choices,
        usage,
        system_fingerprint: answer.system_fingerprint.clone(),
        extra: Extra::new(),
    };
    let one = |index: u32, delta: Delta, finish: Option<FinishReason>| {
        chunk(
            vec![ChunkChoice {
                index,
                delta,
                finish_reason: finish,
                logprobs: None,
                extra: Extra::new(),
            }],
            None,
        )
    };
    let mut out = Vec::new();
    for choice in &answer.choices {
        let m = &choice.message;
        data(
            &mut out,
            &one(
                choice.index,
                Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            ),
        );
        for piece in pieces(m.content.as_deref().unwrap_or(""), REPLAY_PIECES) {
            let delta = Delta {
                content: Some(piece.to_owned()),
                ..Delta::default()
            };
            data(&mut out, &one(choice.index, delta, None));
        }
        if let Some(refusal) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
            let delta = Delta {
                refusal: Some(refusal.to_owned()),
                ..Delta::default()
            };
            data(&mut out, &one(choice.index, delta, None));
        }
        for (i, call) in m.tool_calls.iter().flatten().enumerate() {
            let delta = Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    id: Some(call.id.clone()),
                    kind: Some(call.kind.clone()),
                    function: Some(FunctionCallDelta {
                        name: Some(call.function.name.clone()),
                        arguments: Some(call.function.arguments.clone()),
                    }),
                }]),
                ..Delta::default()
            };
            data(&mut out, &one(choice.index, delta, None));
        }
        data(
            &mut out,
            &one(
                choice.index,
                Delta::default(),
                Some(choice.finish_reason.clone().unwrap_or(FinishReason::Stop)),
            ),
        );
    }
    if include_usage {
        if let Some(usage) = &answer.usage {
            data(&mut out, &chunk(Vec::new(), Some(usage.clone())));
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

#[derive(Default)]
struct FoldChoice {
    content: String,
    has_content: bool,
    refusal: String,
    tool_calls: BTreeMap<u32, ToolCall>,
    finish: Option<FinishReason>,
}

/// Folds the OpenAI event stream sent to the caller back into one complete answer, to store it.
///
/// It reads what the relays emit (whole `data: ...\n\n` events and keep-alive comments), so it
/// works the same for every provider.
#[derive(Default)]
pub struct StreamFold {
    buf: Vec<u8>,
    seen: usize,
    id: String,
    created: u64,
    fingerprint: Option<String>,
    choices: BTreeMap<u32, FoldChoice>,
    done: bool,
    broken: bool,
}

impl StreamFold {
    /// An empty fold.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes sent to the caller.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.broken || self.done {
            return;
        }
        self.seen += bytes.len();
        if self.seen > MAX_FOLD_BYTES {
            self.broken = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            self.on_event(&event[..end]);
            if self.broken || self.done {
                return;
            }
        }
    }

    fn on_event(&mut self, event: &[u8]) {
        let Ok(text) = std::str::from_utf8(event) else {
            self.broken = true;
            return;
        };
        let Some(payload) = text.strip_prefix("data:") else {
            // A keep-alive comment.
            return;
        };
        let payload = payload.trim();
        if payload == "[DONE]" {
            self.done = true;
            return;
        }
        let chunk = match serde_json::from_str::<ChatChunk>(payload) {
            // An error event ({"error":...}: every chunk field has a default, so it parses).
            Ok(chunk) if chunk.extra.contains_key("error") => None,
            Ok(chunk) => Some(chunk),
            Err(_) => None,
        };
        let Some(chunk) = chunk else {
            // Not cacheable.
            self.broken = true;
            return;
        };
        if self.id.is_empty() {
            self.id = chunk.id;
            self.created = chunk.created;
        }
        if chunk.system_fingerprint.is_some() {
            self.fingerprint = chunk.system_fingerprint;
        }
        for c in chunk.choices {
            let slot = self.choices.entry(c.index).or_default();
            if let Some(t) = c.delta.content {
                // The role chunk's `"content":""` does not make a tool-call answer a text one.
                slot.has_content |= !t.is_empty();
                slot.content.push_str(&t);
            }
            if let Some(r) = c.delta.refusal {
                slot.refusal.push_str(&r);
            }
            for d in c.delta.tool_calls.into_iter().flatten() {
                let call = slot.tool_calls.entry(d.index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    kind: "function".to_owned(),
                    function: FunctionCall::default(),
                });
                if let Some(id) = d.id {
                    call.id = id;
                }
                if let Some(kind) = d.kind {
                    call.kind = kind;
                }
                if let Some(f) = d.function {
                    if let Some(name) = f.name {
                        call.function.name.push_str(&name);
                    }
                    if let Some(args) = f.arguments {
                        call.function.arguments.push_str(&args);
                    }
                }
            }
            if let Some(f) = c.finish_reason {
                slot.finish = Some(f);
            }
        }
    }

    /// The complete answer (JSON, `model` = `alias`), when the stream ended with `[DONE]`, had
    /// no error and every choice finished (not with `error`); `None` otherwise. `usage`: what
    /// the provider reported (the caller may not have asked for the usage chunk).
    pub fn finish(self, alias: &str, usage: Option<Usage>) -> Option<Vec<u8>> {
        if !self.done || self.broken || self.choices.is_empty() {
            return None;
        }
        let mut choices = Vec::with_capacity(self.choices.len());
        for (index, c) in self.choices {
            let finish = c.finish?;
            if finish.as_str() == "error" {
                return None;
            }
            let tool_calls: Vec<ToolCall> = c.tool_calls.into_values().collect();
            let content = if !c.has_content && !tool_calls.is_empty() {
                None
            } else {
                Some(c.content)
            };
            choices.push(Choice {
                index,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content,
                    refusal: (!c.refusal.is_empty()).then_some(c.refusal),
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                    extra: Extra::new(),
                },
                finish_reason: Some(finish),
                logprobs: None,
                extra: Extra::new(),
            });
        }
        let answer = ChatResponse {
            id: self.id,
            object: "chat.completion".to_owned(),
            created: self.created,
            model: alias.to_owned(),
            choices,
            usage,
            system_fingerprint: self.fingerprint,
            extra: Extra::new(),
        };
        serde_json::to_vec(&answer).ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::ProviderKind;
    use crate::provider::Relay;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    const CHAIN: [&str; 2] = ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"];

    fn chain() -> Vec<String> {
        CHAIN.iter().map(|s| s.to_string()).collect()
    }

    fn k(v: Value) -> String {
        key(Scope::User, "user-a", &chain(), 4096, &body(v))
    }

    fn base() -> Value {
        json!({"model":"fast","temperature":0,"messages":[{"role":"user","content":"hi"}]})
    }

    #[test]
    fn scope_and_ttl() {
        assert_eq!(Scope::parse(None), Ok(Scope::User));
        assert_eq!(Scope::parse(Some(" Shared ")), Ok(Scope::Shared));
        assert_eq!(Scope::parse(Some("user")), Ok(Scope::User));
        assert!(Scope::parse(Some("global")).is_err());
        assert_eq!(ttl(0), None);
        assert_eq!(ttl(1), Some(60));
        assert_eq!(ttl(59), Some(60));
        assert_eq!(ttl(60), Some(60));
        assert_eq!(ttl(3600), Some(3600));
    }

    #[test]
    fn what_is_cacheable() {
        let zero = body(base());
        let warm = body(json!({"model":"m","temperature":0.7,"messages":[]}));
        let unset = body(json!({"model":"m","messages":[]}));
        let float_zero = body(json!({"model":"m","temperature":0.0,"messages":[]}));
        assert!(wants_cache(None, &zero));
        assert!(wants_cache(None, &float_zero));
        assert!(!wants_cache(None, &warm));
        assert!(!wants_cache(None, &unset));
        assert!(wants_cache(Some("on"), &warm));
        assert!(wants_cache(Some(" ON "), &unset));
        assert!(!wants_cache(Some("off"), &zero));
        assert!(!wants_cache(Some("Off"), &zero));
        assert!(
            wants_cache(Some("maybe"), &zero),
            "unknown values are ignored"
        );
    }

    #[test]
    fn key_shape_and_stability() {
        let a = k(base());
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert!(a[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, k(base()));
        // Member order and number spelling do not matter.
        let reordered: Value = serde_json::from_str(
            r#"{"messages":[{"content":"hi","role":"user"}],"temperature":0.0,"model":"fast"}"#,
        )
        .unwrap();
        assert_eq!(a, k(reordered));
    }

    #[test]
    fn stream_and_user_are_not_in_the_key() {
        let a = k(base());
        let mut v = base();
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
        v["user"] = json!("end-user-42");
        assert_eq!(a, k(v));
    }

    #[test]
    fn everything_that_changes_the_answer_is_in_the_key() {
        let a = k(base());
        let changes = [
            ("model", json!("smart")),
            ("messages", json!([{"role":"user","content":"hi!"}])),
            ("temperature", json!(0.5)),
            ("top_p", json!(0.9)),
            ("max_tokens", json!(10)),
            ("max_completion_tokens", json!(10)),
            ("stop", json!(["\n"])),
            ("seed", json!(7)),
            ("n", json!(2)),
            ("presence_penalty", json!(0.1)),
            ("frequency_penalty", json!(0.1)),
            (
                "tools",
                json!([{"type":"function","function":{"name":"f"}}]),
            ),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type":"json_object"})),
            ("logit_bias", json!({"50256": -100})),
        ];
        let mut seen = std::collections::HashSet::new();
        for (field, value) in changes {
            let mut v = base();
            v[field] = value;
            let changed = k(v);
            assert_ne!(changed, a, "{field}");
            assert!(seen.insert(changed), "{field} collides");
        }
        // The scope, the chain and the default cap.
        let b = body(base());
        assert_ne!(a, key(Scope::User, "user-b", &chain(), 4096, &b));
        assert_ne!(a, key(Scope::Shared, "user-a", &chain(), 4096, &b));
        assert_eq!(
            key(Scope::Shared, "user-a", &chain(), 4096, &b),
            key(Scope::Shared, "user-b", &chain(), 4096, &b),
            "shared scope ignores the user"
        );
        assert_ne!(a, key(Scope::User, "user-a", &chain()[..1], 4096, &b));
        assert_ne!(a, key(Scope::User, "user-a", &chain(), 1024, &b));
    }

    #[test]
    fn entries_round_trip() {
        let answer = fixture("openai/chat_completion.json");
        let text = entry("openai:gpt-4o-mini", &answer).unwrap();
        let cached = parse_entry(&text).unwrap();
        assert_eq!(cached.route, "openai:gpt-4o-mini");
        let a: Value = serde_json::from_slice(&cached.json_body()).unwrap();
        let b: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(a, b);
        assert!(entry("r", b"[1]").is_none());
        assert!(entry("r", b"{broken").is_none());
        for bad in [
            "",
            "{}",
            r#"{"v":2,"route":"r","answer":{}}"#,
            r#"{"v":1,"route":"r","answer":[1]}"#,
            r#"{"v":1,"route":"r"}"#,
        ] {
            assert!(parse_entry(bad).is_none(), "{bad}");
        }
    }

    fn events(sse: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(sse).unwrap();
        assert!(text.ends_with("\n\n"));
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }

    fn fold_all(sse: &[u8], alias: &str, usage: Option<Usage>) -> Option<ChatResponse> {
        let mut f = StreamFold::new();
        // Any chunking.
        for piece in sse.chunks(7) {
            f.feed(piece);
        }
        f.finish(alias, usage)
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn replay_of_a_text_answer() {
        let answer: ChatResponse =
            serde_json::from_slice(&fixture("openai/chat_completion.json")).unwrap();
        for include_usage in [false, true] {
            let sse = replay_sse(&answer, include_usage);
            let ev = events(&sse);
            assert_eq!(ev.last().unwrap(), "[DONE]");
            let chunks: Vec<ChatChunk> = ev[..ev.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
            let text: String = chunks.iter().filter_map(|c| c.text()).collect();
            assert_eq!(text, answer.text());
            let content_chunks = chunks
                .iter()
                .filter(|c| c.text().is_some_and(|t| !t.is_empty()))
                .count();
            assert!(
                (2..=REPLAY_PIECES).contains(&content_chunks),
                "{content_chunks}"
            );
            let usage_chunks: Vec<_> = chunks.iter().filter(|c| c.usage.is_some()).collect();
            assert_eq!(usage_chunks.len(), usize::from(include_usage));
            if include_usage {
                assert!(usage_chunks[0].choices.is_empty());
            }
            assert!(chunks
                .iter()
                .all(|c| c.object == "chat.completion.chunk" && c.id == answer.id));
            // Folding the replay gives the answer back.
            let back = fold_all(&sse, &answer.model, answer.usage.clone()).unwrap();
            assert_eq!(back.choices, answer.choices);
            assert_eq!(back.usage, answer.usage);
        }
    }

    #[test]
    fn replay_of_tool_calls() {
        let answer: ChatResponse =
            serde_json::from_slice(&fixture("openai/chat_completion_tool_calls.json")).unwrap();
        let sse = replay_sse(&answer, false);
        let back = fold_all(&sse, &answer.model, None).unwrap();
        assert_eq!(
            back.choices[0].message.tool_calls,
            answer.choices[0].message.tool_calls
        );
        assert_eq!(back.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn pieces_respect_characters() {
        assert_eq!(pieces("", 4), Vec::<&str>::new());
        assert_eq!(pieces("ab", 4), ["a", "b"]);
        let text = "héllo wörld ✓ done";
        let p = pieces(text, 4);
        assert!(p.len() <= 4 && p.iter().all(|s| !s.is_empty()));
        assert_eq!(p.concat(), text);
    }

    /// Runs a recorded upstream stream through the provider's relay and folds what the caller
    /// would receive.
    fn relay_and_fold(kind: ProviderKind, path: &str, cut: Option<usize>) -> Option<ChatResponse> {
        let input = fixture(path);
        let input = &input[..cut.unwrap_or(input.len())];
        let mut relay = Relay::new(kind, "fast", false, vec![], 1_700_000_000);
        let mut fold = StreamFold::new();
        for piece in input.chunks(11) {
            fold.feed(&relay.feed(piece));
        }
        fold.feed(&relay.finish());
        fold.finish("fast", relay.usage())
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn folds_relayed_openai_streams() {
        let a = relay_and_fold(
            ProviderKind::OpenAiCompatible,
            "openai/chat_stream_text_usage.sse",
            None,
        )
        .unwrap();
        assert_eq!(a.model, "fast");
        assert_eq!(a.object, "chat.completion");
        assert!(!a.text().is_empty());
        assert_eq!(a.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(a.usage.unwrap().completion_tokens, 30);
        let t = relay_and_fold(
            ProviderKind::OpenAiCompatible,
            "openai/chat_stream_parallel_tool_calls_usage.sse",
            None,
        )
        .unwrap();
        let calls = t.choices[0].message.tool_calls.clone().unwrap();
        assert!(calls.len() >= 2, "{calls:?}");
        for c in &calls {
            assert!(!c.id.is_empty() && !c.function.name.is_empty());
            serde_json::from_str::<Value>(&c.function.arguments).unwrap();
        }
        assert_eq!(t.choices[0].message.content, None);
    }

    #[test]
    fn folds_relayed_anthropic_streams() {
        let a = relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_text.sse",
            None,
        )
        .unwrap();
        assert!(!a.text().is_empty());
        assert!(a.usage.is_some());
        let t = relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_tool_use.sse",
            None,
        )
        .unwrap();
        let calls = t.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 1);
        serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap();
        assert_eq!(t.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn cut_and_failed_streams_are_not_folded() {
        let full = fixture("openai/chat_stream_text_usage.sse").len();
        for cut in [0, 10, full / 2, full - 16] {
            assert!(
                relay_and_fold(
                    ProviderKind::OpenAiCompatible,
                    "openai/chat_stream_text_usage.sse",
                    Some(cut)
                )
                .is_none(),
                "cut at {cut}"
            );
        }
        let full = fixture("anthropic/messages_stream_text.sse").len();
        assert!(relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_text.sse",
            Some(full / 2)
        )
        .is_none());
        assert!(relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_error_overloaded.sse",
            None
        )
        .is_none());
        // An error event after content, then [DONE] (not what a relay sends, but never cached).
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\n");
        f.feed(b"data: {\"error\":{\"message\":\"x\",\"code\":\"upstream_error\"}}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
        // No finish reason, or finish_reason "error".
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
        // Keep-alive comments are fine.
        let mut f = StreamFold::new();
        f.feed(b": ping\n\ndata: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_some());
    }

    #[test]
    fn a_tool_call_answer_has_no_content_despite_the_role_chunk() {
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n");
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n");
        let a: ChatResponse = serde_json::from_slice(&f.finish("m", None).unwrap()).unwrap();
        assert_eq!(a.choices[0].message.content, None);
        assert_eq!(
            a.choices[0].message.tool_calls.as_ref().unwrap()[0].id,
            "c1"
        );
        // Text stays text, even empty.
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        let a: ChatResponse = serde_json::from_slice(&f.finish("m", None).unwrap()).unwrap();
        assert_eq!(a.choices[0].message.content.as_deref(), Some(""));
    }

    #[test]
    fn oversized_streams_are_not_folded() {
        let mut f = StreamFold::new();
        let big = vec![b'x'; MAX_FOLD_BYTES + 1];
        f.feed(&big);
        f.feed(b"\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
    }
}
