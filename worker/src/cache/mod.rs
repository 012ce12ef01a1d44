//! The response cache for repeated prompts: which requests are cached and their key (here),
//! the stored entry and its replay ([`entry`]), and the fold of a relayed stream into the answer
//! to store ([`fold`]). Host code; the KV reads and writes are in `runtime/kv.rs` (wasm only).
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

mod entry;
mod fold;

pub use entry::{entry, parse_entry, replay_sse, Cached, MAX_ENTRY_BYTES};
pub use fold::{StreamFold, MAX_FOLD_BYTES};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// KV's minimum `expiration_ttl`: shorter TTLs are clamped up to it.
pub const MIN_TTL_SECONDS: u64 = 60;

/// Every key starts with this (a format change bumps the version, orphaning old entries).
pub const KEY_PREFIX: &str = "chat:v1:";

/// Request fields that do not change the answer, left out of the key.
const NOT_IN_KEY: [&str; 3] = ["stream", "stream_options", "user"];

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
    crate::push_hex(&mut out, &digest);
    out
}

/// `value` as JSON with object keys sorted at every level and numbers in one form.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut sorted: Vec<(&String, &Value)> = map.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
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
}
