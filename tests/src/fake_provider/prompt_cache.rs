//! Provider prompt caching, modelled the way the real APIs report it.
//!
//! Tokens are the fake's own (whitespace-separated words of the text; see the module docs of
//! [`super`]), so a cached prefix's size is the words it holds.
//!
//! # Anthropic (explicit breakpoints)
//!
//! The request's content is a list of blocks, in the order Anthropic caches them: each tool,
//! then each `system` block (a string is one text block), then each message's content blocks
//! (a string content is one text block). A block carrying `cache_control` is a breakpoint, and
//! the prefix up to and including it is cacheable. For one request:
//!
//! - `cache_read_input_tokens`: the tokens of the longest prefix already cached (live). As the
//!   real API does, each breakpoint also checks the block boundaries before it, up to
//!   [`ANTHROPIC_LOOKBACK`] blocks back, for a prefix an earlier request cached: so one
//!   breakpoint that moves along a conversation reads what the previous turn wrote.
//! - `cache_creation_input_tokens`: the longest breakpoint prefix not cached yet, less the
//!   part read, if that prefix is at least the model's minimum (1024 tokens; 2048 for a model
//!   whose name contains `haiku`); 0 otherwise.
//! - `input_tokens`: the rest of the prompt.
//!
//! Then every breakpoint prefix of at least the minimum is cached (a shorter one the real API
//! does not cache either: it could never be read without having been written).
//!
//! # OpenAI (automatic)
//!
//! Prompts of [`OPENAI_MIN_TOKENS`] tokens or more are cached whole-message prefix by
//! whole-message prefix, per `prompt_cache_key` (or per model for requests without one).
//! `cached_tokens` is the longest prefix an earlier request of the same scope cached, rounded
//! down to a multiple of [`OPENAI_STEP_TOKENS`], 0 under the minimum. OpenAI never reports
//! writes.
//!
//! # Lifetime
//!
//! Every entry lives for the TTL (5 minutes by default), refreshed when it is read or written
//! again. The time is passed in ([`PromptCache::apply`] takes `now`), so tests move the clock.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::answer;

/// How long an entry lives unless it is used again: both providers' default, 5 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// How many block boundaries before a breakpoint Anthropic checks for an earlier cache entry.
pub const ANTHROPIC_LOOKBACK: usize = 20;
/// The shortest cacheable prefix for Anthropic models (but haiku's).
pub const ANTHROPIC_MIN_TOKENS: u64 = 1024;
/// The shortest cacheable prefix for haiku models.
pub const ANTHROPIC_HAIKU_MIN_TOKENS: u64 = 2048;
/// The shortest prompt OpenAI caches.
pub const OPENAI_MIN_TOKENS: u64 = 1024;
/// OpenAI's cache hits come in steps of this many tokens.
pub const OPENAI_STEP_TOKENS: u64 = 128;

/// What one request read from the cache and wrote to it, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Tokens read from the cache (Anthropic `cache_read_input_tokens`, OpenAI
    /// `prompt_tokens_details.cached_tokens`).
    pub read: u64,
    /// Tokens written to the cache (Anthropic `cache_creation_input_tokens`; always 0 for
    /// OpenAI).
    pub write: u64,
}

/// The end of one cacheable unit (an Anthropic block, an OpenAI message).
#[derive(Debug, Clone)]
pub(crate) struct Boundary {
    /// The hash of the prompt's content from its start to here.
    hash: [u8; 32],
    /// The tokens from the prompt's start to here.
    tokens: u64,
    /// Anthropic: this block carries `cache_control`.
    breakpoint: bool,
}

/// A request's cacheable structure, read by the dialect.
#[derive(Debug, Clone, Default)]
pub(crate) enum CacheQuery {
    /// Nothing to cache (a request the fake does not cache).
    #[default]
    None,
    /// Anthropic: blocks, some of them breakpoints.
    Anthropic {
        scope: String,
        min_tokens: u64,
        boundaries: Vec<Boundary>,
    },
    /// OpenAI: whole messages.
    OpenAi {
        scope: String,
        boundaries: Vec<Boundary>,
    },
}

/// Builds the boundaries: one hash chained over the units' canonical text.
struct Chain {
    hasher: Sha256,
    tokens: u64,
    boundaries: Vec<Boundary>,
}

impl Chain {
    fn new(dialect: &str) -> Chain {
        let mut hasher = Sha256::new();
        hasher.update(dialect.as_bytes());
        Chain {
            hasher,
            tokens: 0,
            boundaries: Vec::new(),
        }
    }

    fn push(&mut self, canonical: &str, tokens: u64, breakpoint: bool) {
        self.hasher.update((canonical.len() as u64).to_le_bytes());
        self.hasher.update(canonical.as_bytes());
        self.tokens += tokens;
        self.boundaries.push(Boundary {
            hash: self.hasher.clone().finalize().into(),
            tokens: self.tokens,
            breakpoint,
        });
    }
}

/// JSON with object keys sorted and no spaces, whatever the map type serde_json was built
/// with: equal content gives equal text.
pub(crate) fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The blocks of an Anthropic `system` or message `content`: a string is one text block.
fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) => vec![serde_json::json!({"type": "text", "text": s})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    }
}

/// An Anthropic block as cached: without its `cache_control` (where the breakpoints sit does
/// not change the content), and whether it had one.
fn strip_cache_control(block: &Value) -> (Value, bool) {
    let mut block = block.clone();
    let had = block
        .as_object_mut()
        .and_then(|o| o.remove("cache_control"))
        .is_some_and(|c| !c.is_null());
    (block, had)
}

/// The tokens of one Anthropic block: the words of a text block's text.
fn block_tokens(block: &Value) -> u64 {
    if block.get("type").and_then(Value::as_str) == Some("text") {
        block
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, answer::words)
    } else {
        0
    }
}

impl CacheQuery {
    /// How many blocks carry `cache_control` (Anthropic allows 4).
    pub fn breakpoints(&self) -> usize {
        match self {
            CacheQuery::Anthropic { boundaries, .. } => {
                boundaries.iter().filter(|b| b.breakpoint).count()
            }
            _ => 0,
        }
    }
}

/// An Anthropic `/v1/messages` body's cacheable structure.
pub(crate) fn anthropic_query(body: &Value) -> CacheQuery {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let mut chain = Chain::new("anthropic");
    for tool in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (tool, bp) = strip_cache_control(tool);
        chain.push(&format!("tool\0{}", canonical(&tool)), 0, bp);
    }
    for block in body.get("system").map(blocks).unwrap_or_default() {
        let (block, bp) = strip_cache_control(&block);
        let tokens = block_tokens(&block);
        chain.push(&format!("system\0{}", canonical(&block)), tokens, bp);
    }
    for (i, m) in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        for block in m.get("content").map(blocks).unwrap_or_default() {
            let (block, bp) = strip_cache_control(&block);
            let tokens = block_tokens(&block);
            chain.push(
                &format!("message\0{i}\0{role}\0{}", canonical(&block)),
                tokens,
                bp,
            );
        }
    }
    CacheQuery::Anthropic {
        scope: format!("anthropic\0{model}"),
        min_tokens: if model.contains("haiku") {
            ANTHROPIC_HAIKU_MIN_TOKENS
        } else {
            ANTHROPIC_MIN_TOKENS
        },
        boundaries: chain.boundaries,
    }
}

/// An OpenAI `/v1/chat/completions` body's cacheable structure: its messages, scoped by
/// `prompt_cache_key` (or by model without one).
pub(crate) fn openai_query(body: &Value) -> CacheQuery {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let scope = match body.get("prompt_cache_key").and_then(Value::as_str) {
        Some(key) => format!("openai\0{model}\0key\0{key}"),
        None => format!("openai\0{model}\0model"),
    };
    let mut chain = Chain::new("openai");
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let tokens = m
            .get("content")
            .map_or(0, |c| answer::words(&answer::content_text(c)));
        chain.push(&canonical(m), tokens, false);
    }
    CacheQuery::OpenAi {
        scope,
        boundaries: chain.boundaries,
    }
}

/// One provider instance's cache: prefix hashes (per scope) with their tokens and expiry.
#[derive(Debug)]
pub(crate) struct PromptCache {
    ttl: Duration,
    entries: HashMap<(String, [u8; 32]), Instant>,
}

impl PromptCache {
    pub fn new(ttl: Duration) -> PromptCache {
        PromptCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// Whether `hash` is cached in `scope` at `now`; if so its lifetime starts again.
    fn hit(&mut self, scope: &str, hash: &[u8; 32], now: Instant) -> bool {
        match self.entries.get_mut(&(scope.to_owned(), *hash)) {
            Some(expires) if *expires > now => {
                *expires = now + self.ttl;
                true
            }
            _ => false,
        }
    }

    fn live(&self, scope: &str, hash: &[u8; 32], now: Instant) -> bool {
        self.entries
            .get(&(scope.to_owned(), *hash))
            .is_some_and(|expires| *expires > now)
    }

    fn store(&mut self, scope: &str, hash: &[u8; 32], now: Instant) {
        self.entries
            .insert((scope.to_owned(), *hash), now + self.ttl);
    }

    /// What `query` reads and writes at `now`, and the cache updated for it.
    pub fn apply(&mut self, query: &CacheQuery, now: Instant) -> CacheUsage {
        self.entries.retain(|_, expires| *expires > now);
        match query {
            CacheQuery::None => CacheUsage::default(),
            CacheQuery::Anthropic {
                scope,
                min_tokens,
                boundaries,
            } => self.anthropic(scope, *min_tokens, boundaries, now),
            CacheQuery::OpenAi { scope, boundaries } => self.openai(scope, boundaries, now),
        }
    }

    fn anthropic(
        &mut self,
        scope: &str,
        min_tokens: u64,
        boundaries: &[Boundary],
        now: Instant,
    ) -> CacheUsage {
        let breakpoints: Vec<usize> = (0..boundaries.len())
            .filter(|&i| boundaries[i].breakpoint)
            .collect();
        let mut read = 0;
        for &b in &breakpoints {
            // The latest cached boundary at or before this breakpoint, within the lookback.
            let first = b.saturating_sub(ANTHROPIC_LOOKBACK);
            if let Some(i) = (first..=b)
                .rev()
                .find(|&i| self.hit(scope, &boundaries[i].hash, now))
            {
                read = read.max(boundaries[i].tokens);
            }
        }
        let write = breakpoints
            .iter()
            .map(|&b| &boundaries[b])
            .filter(|p| p.tokens >= min_tokens && p.tokens > read)
            .filter(|p| !self.live(scope, &p.hash, now))
            .map(|p| p.tokens - read)
            .max()
            .unwrap_or(0);
        for &b in &breakpoints {
            if boundaries[b].tokens >= min_tokens {
                self.store(scope, &boundaries[b].hash, now);
            }
        }
        CacheUsage { read, write }
    }

    fn openai(&mut self, scope: &str, boundaries: &[Boundary], now: Instant) -> CacheUsage {
        let total = boundaries.last().map_or(0, |b| b.tokens);
        if total < OPENAI_MIN_TOKENS {
            return CacheUsage::default();
        }
        let longest = boundaries
            .iter()
            .rev()
            .find(|b| self.hit(scope, &b.hash, now))
            .map_or(0, |b| b.tokens);
        let rounded = longest / OPENAI_STEP_TOKENS * OPENAI_STEP_TOKENS;
        let read = if rounded >= OPENAI_MIN_TOKENS {
            rounded
        } else {
            0
        };
        for b in boundaries {
            self.store(scope, &b.hash, now);
        }
        CacheUsage { read, write: 0 }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `n` distinct words.
    fn text(tag: &str, n: usize) -> String {
        (0..n)
            .map(|i| format!("{tag}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn bp(t: &str) -> Value {
        json!([{"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}])
    }

    /// An Anthropic body: a system prompt of `system` words with a breakpoint, then
    /// `turns` (user, assistant) pairs and a last user turn, with a breakpoint on the last
    /// assistant turn, as the Worker places them.
    fn anthropic_body(model: &str, system: usize, turns: &[(String, String)], last: &str) -> Value {
        let mut messages = Vec::new();
        for (i, (u, a)) in turns.iter().enumerate() {
            messages.push(json!({"role": "user", "content": u}));
            if i + 1 == turns.len() {
                messages.push(json!({"role": "assistant", "content": bp(a)}));
            } else {
                messages.push(json!({"role": "assistant", "content": a}));
            }
        }
        messages.push(json!({"role": "user", "content": last}));
        json!({"model": model, "max_tokens": 10, "system": bp(&text("s", system)),
               "messages": messages})
    }

    fn apply(cache: &mut PromptCache, body: &Value, now: Instant) -> CacheUsage {
        let q = if body.get("system").is_some() || body.get("max_tokens").is_some() {
            anthropic_query(body)
        } else {
            openai_query(body)
        };
        cache.apply(&q, now)
    }

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
    }

    #[test]
    fn anthropic_miss_creates_then_hits() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        let body = anthropic_body("claude-sonnet-4-5", 1500, &[], "hello there");
        assert_eq!(
            apply(&mut c, &body, now),
            CacheUsage {
                read: 0,
                write: 1500
            }
        );
        assert_eq!(
            apply(&mut c, &body, now + Duration::from_secs(1)),
            CacheUsage {
                read: 1500,
                write: 0
            }
        );
        // Another last turn: the system prefix still reads.
        let other = anthropic_body("claude-sonnet-4-5", 1500, &[], "something else");
        assert_eq!(apply(&mut c, &other, now).read, 1500);
    }

    #[test]
    fn anthropic_below_minimum_is_never_cached() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        // 1500 tokens: enough for sonnet, not for haiku (2048).
        let body = anthropic_body("claude-haiku-4-5", 1500, &[], "hi");
        assert_eq!(apply(&mut c, &body, now), CacheUsage::default());
        assert_eq!(apply(&mut c, &body, now), CacheUsage::default());
        let body = anthropic_body("claude-haiku-4-5", 2048, &[], "hi");
        assert_eq!(apply(&mut c, &body, now).write, 2048);
    }

    #[test]
    fn anthropic_no_breakpoint_no_cache() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 5,
            "system": text("s", 3000), "messages": [{"role": "user", "content": "hi"}]});
        let now = Instant::now();
        assert_eq!(apply(&mut c, &body, now), CacheUsage::default());
        assert_eq!(apply(&mut c, &body, now), CacheUsage::default());
    }

    #[test]
    fn anthropic_moving_breakpoint_reads_the_previous_turns_write() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        let model = "claude-sonnet-4-5";
        let t1 = anthropic_body(model, 2000, &[], &text("u1_", 10));
        assert_eq!(
            apply(&mut c, &t1, now),
            CacheUsage {
                read: 0,
                write: 2000
            }
        );
        let turns2 = vec![(text("u1_", 10), text("a1_", 11))];
        let t2 = anthropic_body(model, 2000, &turns2, &text("u2_", 12));
        // The system prefix is read; the conversation up to the assistant turn is written.
        assert_eq!(
            apply(&mut c, &t2, now),
            CacheUsage {
                read: 2000,
                write: 21
            }
        );
        let turns3 = vec![
            (text("u1_", 10), text("a1_", 11)),
            (text("u2_", 12), text("a2_", 13)),
        ];
        let t3 = anthropic_body(model, 2000, &turns3, &text("u3_", 14));
        // The breakpoint moved to a2; a1's boundary (written by turn 2) is found by the
        // lookback, without a breakpoint on it now.
        assert_eq!(
            apply(&mut c, &t3, now),
            CacheUsage {
                read: 2021,
                write: 25
            }
        );
    }

    #[test]
    fn anthropic_cache_control_and_string_forms_do_not_change_the_content() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        let sys = text("s", 1200);
        let marked = json!({"model": "m", "max_tokens": 1, "system": bp(&sys),
            "messages": [{"role": "user", "content": "one"}]});
        assert_eq!(apply(&mut c, &marked, now).write, 1200);
        // The same system as a string, with the breakpoint on the user turn: the system
        // boundary (same content) is found by the lookback.
        let other = json!({"model": "m", "max_tokens": 1, "system": sys,
            "messages": [{"role": "user", "content": bp("one two")}]});
        assert_eq!(
            apply(&mut c, &other, now),
            CacheUsage {
                read: 1200,
                write: 2
            }
        );
    }

    #[test]
    fn anthropic_entries_expire_and_hits_refresh_them() {
        let ttl = Duration::from_secs(300);
        let mut c = PromptCache::new(ttl);
        let t0 = Instant::now();
        let body = anthropic_body("claude-sonnet-4-5", 1100, &[], "x");
        assert_eq!(apply(&mut c, &body, t0).write, 1100);
        // A hit at 4 min refreshes it: still there at 8 min.
        assert_eq!(
            apply(&mut c, &body, t0 + Duration::from_secs(240)).read,
            1100
        );
        assert_eq!(
            apply(&mut c, &body, t0 + Duration::from_secs(480)).read,
            1100
        );
        // 5 min and more without use: gone, written again.
        let late = t0 + Duration::from_secs(480 + 301);
        assert_eq!(
            apply(&mut c, &body, late),
            CacheUsage {
                read: 0,
                write: 1100
            }
        );
    }

    #[test]
    fn anthropic_models_do_not_share() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        let a = anthropic_body("claude-sonnet-4-5", 2100, &[], "x");
        let b = anthropic_body("claude-opus-4-1", 2100, &[], "x");
        assert_eq!(apply(&mut c, &a, now).write, 2100);
        assert_eq!(apply(&mut c, &b, now).write, 2100);
    }

    #[test]
    fn anthropic_counts_breakpoints_on_tools_system_and_messages() {
        let body = json!({"model": "m", "max_tokens": 1,
            "tools": [{"name": "t", "input_schema": {}, "cache_control": {"type": "ephemeral"}}],
            "system": bp("s"),
            "messages": [{"role": "user", "content": bp("a")}, {"role": "user", "content": "b"}]});
        assert_eq!(anthropic_query(&body).breakpoints(), 3);
    }

    fn openai_body(model: &str, key: Option<&str>, messages: &[(&str, String)]) -> Value {
        let mut v = json!({"model": model, "messages": messages.iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect::<Vec<_>>()});
        if let Some(k) = key {
            v["prompt_cache_key"] = json!(k);
        }
        v
    }

    #[test]
    fn openai_caches_whole_message_prefixes_in_steps() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        let sys = ("system", text("s", 1500));
        let t1 = openai_body(
            "gpt-4o",
            Some("k1"),
            &[sys.clone(), ("user", text("u", 10))],
        );
        assert_eq!(apply(&mut c, &t1, now), CacheUsage::default());
        let t2 = openai_body(
            "gpt-4o",
            Some("k1"),
            &[
                sys.clone(),
                ("user", text("u", 10)),
                ("assistant", text("a", 20)),
                ("user", text("v", 5)),
            ],
        );
        // 1510 shared tokens, in steps of 128: 1408.
        assert_eq!(
            apply(&mut c, &t2, now),
            CacheUsage {
                read: 1408,
                write: 0
            }
        );
        // Turn 3 shares all of turn 2's 1535: 1408 again (1535 / 128 = 11 steps).
        let t3 = openai_body(
            "gpt-4o",
            Some("k1"),
            &[
                sys,
                ("user", text("u", 10)),
                ("assistant", text("a", 20)),
                ("user", text("v", 5)),
                ("assistant", text("b", 200)),
                ("user", text("w", 5)),
            ],
        );
        assert_eq!(apply(&mut c, &t3, now).read, 1408);
    }

    #[test]
    fn openai_short_prompts_and_short_prefixes_are_not_cached() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        let short = openai_body("gpt-4o", None, &[("user", text("u", 1000))]);
        apply(&mut c, &short, now);
        assert_eq!(apply(&mut c, &short, now).read, 0);
        let long = openai_body(
            "gpt-4o",
            None,
            &[("user", text("u", 1000)), ("user", text("x", 900))],
        );
        assert_eq!(apply(&mut c, &long, now).read, 0);
        // Another long prompt sharing only its first 1000 tokens with it: under the minimum.
        let other = openai_body(
            "gpt-4o",
            None,
            &[("user", text("u", 1000)), ("user", text("y", 900))],
        );
        assert_eq!(apply(&mut c, &other, now).read, 0);
        assert_eq!(apply(&mut c, &long, now).read, 1792);
    }

    #[test]
    fn openai_keys_separate_users_and_no_key_scopes_by_model() {
        let mut c = PromptCache::new(DEFAULT_TTL);
        let now = Instant::now();
        let m = [("system", text("s", 2000)), ("user", "hi".to_owned())];
        apply(&mut c, &openai_body("gpt-4o", Some("sc-alice"), &m), now);
        assert_eq!(
            apply(&mut c, &openai_body("gpt-4o", Some("sc-bob"), &m), now).read,
            0
        );
        assert_eq!(
            apply(&mut c, &openai_body("gpt-4o", Some("sc-alice"), &m), now).read,
            1920
        );
        // Without a key: per model.
        apply(&mut c, &openai_body("gpt-4o", None, &m), now);
        assert_eq!(
            apply(&mut c, &openai_body("gpt-4o", None, &m), now).read,
            1920
        );
        assert_eq!(
            apply(&mut c, &openai_body("gpt-4o-mini", None, &m), now).read,
            0
        );
    }

    #[test]
    fn openai_entries_expire() {
        let mut c = PromptCache::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let m = [("system", text("s", 1100)), ("user", "hi".to_owned())];
        let body = openai_body("gpt-4o", None, &m);
        apply(&mut c, &body, t0);
        assert_eq!(
            apply(&mut c, &body, t0 + Duration::from_secs(299)).read,
            1024
        );
        assert_eq!(
            apply(&mut c, &body, t0 + Duration::from_secs(299 + 301)).read,
            0
        );
    }
}
