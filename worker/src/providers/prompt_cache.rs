//! Provider prompt caching: what the Worker asks of each provider so that a writer's session,
//! which repeats a long prefix (the story's outline, characters and settings, then the
//! conversation so far) on every turn, is billed at the cached price.
//!
//! - **Anthropic** caches only where asked: [`place_breakpoints`] puts `cache_control:
//!   {"type":"ephemeral"}` at the end of the system prompt and at the end of the conversation
//!   before the newest user turn, each only where the prefix up to it is long enough for the
//!   model to cache ([`PromptCache::min_tokens`]), never more than [`MAX_BREAKPOINTS`] with the
//!   caller's own.
//! - **OpenAI** caches prompts of 1,024 tokens or more by itself; [`cache_key`] keeps one user's
//!   requests for one alias on the same cache (`prompt_cache_key`).
//! - What the caching saves is charged at its own weights ([`CacheWeights`]); see
//!   [`crate::lifecycle::usage_charge`].
//!
//! `PROMPT_CACHE=off` turns the requests' part off (no breakpoint, no key); the weights still
//! apply, since OpenAI caches long prompts whatever the request says.

use serde_json::{json, Value};
use storycad_protocol::Usage;

use crate::config::{ConfigError, ProviderKind};

/// Anthropic's limit of `cache_control` breakpoints in one request.
pub const MAX_BREAKPOINTS: usize = 4;

/// Anthropic's documented minimum cacheable prefix per model family (2026), most specific
/// first: a model name containing the pattern takes its minimum; others take
/// [`DEFAULT_MIN_TOKENS`].
pub const DEFAULT_MIN_TOKENS_BY_MODEL: [(&str, u64); 5] = [
    ("haiku-4-5", 4096),
    ("opus-4-5", 4096),
    ("opus-4-6", 4096),
    ("sonnet-4-6", 2048),
    ("haiku", 2048),
];

/// The minimum for a model no pattern names (Sonnet 4.x, Opus 4 and 4.1, Claude 3.x Sonnet).
pub const DEFAULT_MIN_TOKENS: u64 = 1024;

/// `PROMPT_CACHE` and `PROMPT_CACHE_MIN_TOKENS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptCache {
    /// `PROMPT_CACHE`: `auto` (default) or `off`.
    pub enabled: bool,
    /// Model-name pattern -> minimum tokens, most specific first.
    pub min_by_model: Vec<(String, u64)>,
    /// The minimum for other models.
    pub default_min: u64,
}

impl Default for PromptCache {
    fn default() -> Self {
        PromptCache {
            enabled: true,
            min_by_model: DEFAULT_MIN_TOKENS_BY_MODEL
                .iter()
                .map(|(p, n)| ((*p).to_owned(), *n))
                .collect(),
            default_min: DEFAULT_MIN_TOKENS,
        }
    }
}

impl PromptCache {
    /// From `PROMPT_CACHE` (`auto` or `off`) and `PROMPT_CACHE_MIN_TOKENS` (a JSON object of
    /// model-name pattern -> minimum tokens, `"*"` for every other model; it replaces the
    /// defaults it names and keeps the others).
    pub fn parse(mode: Option<&str>, min_tokens: Option<&str>) -> Result<Self, ConfigError> {
        let mut out = PromptCache::default();
        match mode.map(str::trim) {
            None | Some("") | Some("auto") => {}
            Some("off") => out.enabled = false,
            Some(_) => return Err(ConfigError::new("PROMPT_CACHE", "must be auto or off")),
        }
        let Some(text) = min_tokens.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(out);
        };
        const VAR: &str = "PROMPT_CACHE_MIN_TOKENS";
        let map: serde_json::Map<String, Value> = serde_json::from_str(text).map_err(|e| {
            ConfigError::new(
                VAR,
                format!(
                    "must be a JSON object of model pattern -> minimum tokens ({})",
                    crate::config::json_problem(&e)
                ),
            )
        })?;
        for (pattern, value) in map {
            let n = value.as_u64().ok_or_else(|| {
                ConfigError::new(VAR, format!("{pattern:?} must be a whole number of tokens"))
            })?;
            if pattern == "*" {
                out.default_min = n;
            } else if let Some(slot) = out.min_by_model.iter_mut().find(|(p, _)| *p == pattern) {
                slot.1 = n;
            } else {
                // A pattern of the operator's is more specific than the built-in families.
                out.min_by_model.insert(0, (pattern, n));
            }
        }
        Ok(out)
    }

    /// The shortest prefix `model` caches, in tokens.
    pub fn min_tokens(&self, model: &str) -> u64 {
        let model = model.to_ascii_lowercase();
        self.min_by_model
            .iter()
            .find(|(pattern, _)| model.contains(pattern.as_str()))
            .map_or(self.default_min, |(_, n)| *n)
    }
}

/// The `cache_control` the Worker places.
fn ephemeral() -> Value {
    json!({ "type": "ephemeral" })
}

/// Tokens of a piece of JSON, estimated as its bytes / 4 (what the plans' estimates use).
fn estimate(v: &Value) -> u64 {
    // Only string keys: serialising cannot fail.
    serde_json::to_vec(v).map_or(0, |b| b.len() as u64 / 4)
}

/// Places the Worker's breakpoints in an Anthropic `/v1/messages` body (serialized
/// [`super::anthropic::MessagesRequest`]): after the system prompt (which then becomes one text
/// block), and after the last block of the message before the newest user turn, where the
/// prefix up to each is at least `min_tokens`; keeps the caller's (`system_marked`: a system
/// part of the caller's carried one) and never exceeds [`MAX_BREAKPOINTS`]. Returns how many
/// it placed.
pub fn place_breakpoints(body: &mut Value, min_tokens: u64, system_marked: bool) -> usize {
    let Some(obj) = body.as_object_mut() else {
        return 0;
    };
    let callers = count_marks(obj.get("messages")) + usize::from(system_marked);
    let mut room = MAX_BREAKPOINTS.saturating_sub(callers);
    let mut placed = 0;

    // Tools come first in Anthropic's cache prefix, then the system prompt.
    let mut prefix = obj.get("tools").map_or(0, estimate);
    let system_len = obj.get("system").map_or(0, estimate);
    prefix += system_len;
    let system_wanted = system_len > 0 && prefix >= min_tokens && room > 0;
    if system_marked || system_wanted {
        if let Some(Value::String(text)) = obj.get("system") {
            let block = json!([{ "type": "text", "text": text, "cache_control": ephemeral() }]);
            obj.insert("system".to_owned(), block);
            if !system_marked {
                room -= 1;
                placed += 1;
            }
        }
    }

    // The conversation before the newest user turn: everything but the last message.
    let Some(Value::Array(messages)) = obj.get_mut("messages") else {
        return placed;
    };
    let n = messages.len();
    if n < 2 || room == 0 {
        return placed;
    }
    let newest_is_user = messages[n - 1].get("role").and_then(Value::as_str) == Some("user");
    if !newest_is_user {
        return placed;
    }
    prefix += messages[..n - 1].iter().map(estimate).sum::<u64>();
    if prefix < min_tokens {
        return placed;
    }
    let last_block = messages[n - 2]
        .get_mut("content")
        .and_then(Value::as_array_mut)
        .and_then(|blocks| blocks.last_mut())
        .and_then(Value::as_object_mut);
    if let Some(block) = last_block {
        if !block.contains_key("cache_control") {
            block.insert("cache_control".to_owned(), ephemeral());
            placed += 1;
        }
    }
    placed
}

/// Blocks of the messages that already carry a `cache_control` (the caller's).
fn count_marks(messages: Option<&Value>) -> usize {
    let Some(Value::Array(messages)) = messages else {
        return 0;
    };
    messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|b| b.get("cache_control").is_some())
        .count()
}

/// OpenAI's `prompt_cache_key` for one user's requests to one alias: `sc-` and 32 hex digits
/// of SHA-256 over the user's end-user id (already a keyed hash of `sub`) and the alias, so the
/// provider cannot tell who it is and two users never share a key.
pub fn cache_key(end_user: &str, alias: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut h = Sha256::new();
    h.update(b"storycad-prompt-cache\0");
    h.update(end_user.as_bytes());
    h.update(b"\0");
    h.update(alias.as_bytes());
    let digest = h.finalize();
    let mut key = String::with_capacity(35);
    key.push_str("sc-");
    for b in &digest[..16] {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// What cached input costs against fresh input, as the provider bills it: the ledger charges
/// a cache read `read` tokens and a cache write `write` tokens for each token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheWeights {
    /// A token read from the cache.
    pub read: f64,
    /// A token written to the cache.
    pub write: f64,
}

impl CacheWeights {
    /// No discount, no surcharge.
    pub const FLAT: CacheWeights = CacheWeights {
        read: 1.0,
        write: 1.0,
    };

    /// The provider's price ratios (2026): Anthropic reads at 0.1 of the input price and
    /// writes (5-minute TTL) at 1.25; OpenAI reads at 0.5 (GPT-4o family; newer models charge
    /// less, so this errs on the user paying the operator's cost) and has no write price.
    pub fn of(kind: ProviderKind) -> CacheWeights {
        match kind {
            ProviderKind::Anthropic => CacheWeights {
                read: 0.1,
                write: 1.25,
            },
            ProviderKind::OpenAiCompatible => CacheWeights {
                read: 0.5,
                write: 1.0,
            },
        }
    }

    /// With a plan's `cached_input_weight` / `cache_write_weight` where it sets them.
    pub fn with_plan(self, read: Option<f64>, write: Option<f64>) -> CacheWeights {
        CacheWeights {
            read: read.unwrap_or(self.read),
            write: write.unwrap_or(self.write),
        }
    }
}

/// The cache reads and cache writes in a usage (`prompt_tokens_details.cached_tokens` and
/// `.cache_write_tokens`), each at most the prompt.
pub fn cached_parts(usage: &Usage) -> (u64, u64) {
    let details = usage.prompt_tokens_details.as_ref();
    let get = |name: &str| {
        details
            .and_then(|d| d.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let read = get("cached_tokens").min(usage.prompt_tokens);
    let write = get("cache_write_tokens").min(usage.prompt_tokens - read);
    (read, write)
}

/// The tokens charged for a usage: fresh input and output at 1, cache reads and writes at
/// their weights (rounded up).
pub fn weighted_tokens(usage: &Usage, weights: CacheWeights) -> u64 {
    let (read, write) = cached_parts(usage);
    let fresh = usage.prompt_tokens - read - write;
    let weigh = |n: u64, w: f64| {
        let x = (n as f64 * w).ceil();
        // A weight is finite and not negative (the plan checks); the cast saturates anyway.
        if x.is_finite() && x > 0.0 {
            x as u64
        } else {
            0
        }
    };
    fresh
        .saturating_add(weigh(read, weights.read))
        .saturating_add(weigh(write, weights.write))
        .saturating_add(usage.completion_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> String {
        "lighthouse ".repeat(n)
    }

    fn body(system: Option<String>, messages: Value) -> Value {
        let mut b = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages});
        if let Some(s) = system {
            b["system"] = Value::String(s);
        }
        b
    }

    fn turn(role: &str, text: &str) -> Value {
        json!({"role": role, "content": [{"type": "text", "text": text}]})
    }

    #[test]
    fn a_long_system_and_conversation_get_one_breakpoint_each() {
        // ~6,000 tokens of story context; a short conversation after it.
        let mut b = body(
            Some(words(2200)),
            json!([
                turn("user", "Draft chapter one."),
                turn("assistant", "It was dark."),
                turn("user", "Go on.")
            ]),
        );
        assert_eq!(place_breakpoints(&mut b, 1024, false), 2);
        assert_eq!(
            b["system"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert_eq!(b["system"][0]["text"], Value::String(words(2200)));
        assert_eq!(
            b["messages"][1]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert!(b["messages"][2]["content"][0]
            .get("cache_control")
            .is_none());
        assert!(b["messages"][0]["content"][0]
            .get("cache_control")
            .is_none());
    }

    #[test]
    fn short_prefixes_are_left_alone() {
        let messages = json!([
            turn("user", "Hi."),
            turn("assistant", "Hello."),
            turn("user", "?")
        ]);
        let mut b = body(Some("You are terse.".to_owned()), messages.clone());
        let before = b.clone();
        assert_eq!(place_breakpoints(&mut b, 1024, false), 0);
        assert_eq!(
            b, before,
            "nothing changes, the system prompt stays a string"
        );
        // The model's minimum decides: the same request at a minimum of 1 gets both.
        assert_eq!(place_breakpoints(&mut b, 1, false), 2);
    }

    #[test]
    fn the_conversation_counts_towards_its_own_breakpoint() {
        // A short system prompt, a long conversation: only the conversation is worth caching.
        let long = words(1000);
        let mut b = body(
            Some("Be kind.".to_owned()),
            json!([
                turn("user", &long),
                turn("assistant", &long),
                turn("user", "Next?")
            ]),
        );
        assert_eq!(place_breakpoints(&mut b, 1024, false), 1);
        assert!(b["system"].is_string());
        assert_eq!(
            b["messages"][1]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
    }

    #[test]
    fn no_breakpoint_when_the_newest_turn_is_not_the_users_or_there_is_one_turn() {
        let long = words(3000);
        let mut one = body(None, json!([turn("user", &long)]));
        assert_eq!(place_breakpoints(&mut one, 1024, false), 0);
        let mut prefill = body(
            None,
            json!([turn("user", &long), turn("assistant", "Once")]),
        );
        assert_eq!(place_breakpoints(&mut prefill, 1024, false), 0);
    }

    #[test]
    fn the_callers_breakpoints_are_kept_and_counted() {
        let long = words(3000);
        let marked = json!({"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "1h"}});
        // Three of the caller's in the messages and one on the system prompt: no room left.
        let mut full = body(
            Some(long.clone()),
            json!([
                {"role": "user", "content": [marked.clone(), marked.clone(), marked.clone()]},
                turn("assistant", &long),
                turn("user", "?")
            ]),
        );
        assert_eq!(place_breakpoints(&mut full, 1024, true), 0);
        assert_eq!(
            full["system"][0]["cache_control"]["type"], "ephemeral",
            "the caller's"
        );
        assert!(full["messages"][1]["content"][0]
            .get("cache_control")
            .is_none());
        assert_eq!(
            full["messages"][0]["content"][0]["cache_control"]["ttl"],
            "1h"
        );
        // One of the caller's on the block the Worker would mark: not marked twice.
        let mut same = body(
            None,
            json!([turn("user", &long), {"role": "assistant", "content": [marked]}, turn("user", "?")]),
        );
        assert_eq!(place_breakpoints(&mut same, 1024, false), 0);
        assert_eq!(
            same["messages"][1]["content"][0]["cache_control"]["ttl"],
            "1h"
        );
        assert_eq!(count_marks(same.get("messages")), 1);
    }

    #[test]
    fn tools_count_in_the_prefix() {
        let tools = json!([{"name": "outline", "description": words(1100), "input_schema": {"type": "object"}}]);
        let mut b = body(Some("Short.".to_owned()), json!([turn("user", "?")]));
        b["tools"] = tools;
        assert_eq!(place_breakpoints(&mut b, 1024, false), 1);
        assert_eq!(b["system"][0]["cache_control"]["type"], "ephemeral");
    }

    #[test]
    fn minimums_by_model_and_their_configuration() {
        let d = PromptCache::default();
        assert!(d.enabled);
        assert_eq!(d.min_tokens("claude-sonnet-4-5-20250929"), 1024);
        assert_eq!(d.min_tokens("claude-haiku-4-5"), 4096);
        assert_eq!(d.min_tokens("claude-3-5-haiku-latest"), 2048);
        assert_eq!(d.min_tokens("claude-opus-4-6"), 4096);
        let c = PromptCache::parse(
            Some("auto"),
            Some(r#"{"*": 512, "haiku": 3000, "fable": 100}"#),
        )
        .unwrap();
        assert_eq!(c.min_tokens("claude-fable-5"), 100);
        assert_eq!(c.min_tokens("claude-3-haiku"), 3000);
        assert_eq!(
            c.min_tokens("claude-haiku-4-5"),
            4096,
            "the more specific default stays"
        );
        assert_eq!(c.min_tokens("claude-sonnet-4"), 512);
        assert!(!PromptCache::parse(Some("off"), None).unwrap().enabled);
        for (mode, min) in [
            (Some("on"), None),
            (None, Some("[1]")),
            (None, Some(r#"{"x":-1}"#)),
        ] {
            let e = PromptCache::parse(mode, min).unwrap_err();
            assert!(e.var.starts_with("PROMPT_CACHE"), "{e:?}");
        }
    }

    #[test]
    fn cache_keys_separate_users_and_aliases_and_reveal_neither() {
        let a = cache_key("u-1", "storycad-fast");
        assert!(a.starts_with("sc-") && a.len() == 35);
        assert_eq!(a, cache_key("u-1", "storycad-fast"));
        assert_ne!(a, cache_key("u-2", "storycad-fast"));
        assert_ne!(a, cache_key("u-1", "storycad-smart"));
        assert!(!a.contains("u-1") && !a.contains("storycad"));
    }

    fn usage(prompt: u64, completion: u64, details: Value) -> Usage {
        let mut u = Usage::new(prompt, completion);
        u.prompt_tokens_details = Some(details);
        u
    }

    #[test]
    fn cached_input_is_charged_at_its_weights() {
        let anthropic = CacheWeights::of(ProviderKind::Anthropic);
        // 6,000 read, 200 written, 50 fresh, 300 out.
        let u = usage(
            6250,
            300,
            json!({"cached_tokens": 6000, "cache_write_tokens": 200}),
        );
        assert_eq!(weighted_tokens(&u, anthropic), 50 + 600 + 250 + 300);
        assert_eq!(weighted_tokens(&u, CacheWeights::FLAT), 6250 + 300);
        let openai = CacheWeights::of(ProviderKind::OpenAiCompatible);
        let o = usage(2048, 10, json!({"cached_tokens": 1024}));
        assert_eq!(weighted_tokens(&o, openai), 1024 + 512 + 10);
        // A plan's weights win.
        let plan = anthropic.with_plan(Some(0.0), None);
        assert_eq!(weighted_tokens(&u, plan), 50 + 250 + 300);
        // Rounding is up, per part.
        let odd = usage(3, 0, json!({"cached_tokens": 3}));
        assert_eq!(weighted_tokens(&odd, anthropic), 1);
    }

    #[test]
    fn reported_parts_never_exceed_the_prompt() {
        // A provider (or a bug) reporting more cached tokens than the prompt holds cannot make
        // the fresh part negative or the charge smaller than the weighted prompt.
        let u = usage(
            100,
            5,
            json!({"cached_tokens": 10_000, "cache_write_tokens": 10_000}),
        );
        assert_eq!(cached_parts(&u), (100, 0));
        let w = usage(
            100,
            5,
            json!({"cached_tokens": 40, "cache_write_tokens": 10_000}),
        );
        assert_eq!(cached_parts(&w), (40, 60));
        let plain = Usage::new(100, 5);
        assert_eq!(
            weighted_tokens(&plain, CacheWeights::of(ProviderKind::Anthropic)),
            105
        );
        let junk = usage(100, 5, json!({"cached_tokens": "many"}));
        assert_eq!(cached_parts(&junk), (0, 0));
    }
}
