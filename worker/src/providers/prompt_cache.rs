//! Provider prompt caching: what the Worker asks of each provider so that a writer's session,
//! which repeats a long prefix (the story's outline, characters and settings, then the
//! conversation so far) on every turn, is billed at the cached price.
//!
//! - **Anthropic** caches only where asked:
//!   [`MessagesRequest::place_breakpoints`](super::anthropic::MessagesRequest::place_breakpoints)
//!   puts `cache_control:
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

use serde_json::Value;
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

/// OpenAI's `prompt_cache_key` for one user's requests to one alias: `sc-` and 32 hex digits
/// of SHA-256 over the user's end-user id (already a keyed hash of `sub`) and the alias, so the
/// provider cannot tell who it is and two users never share a key.
pub fn cache_key(end_user: &str, alias: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"storycad-prompt-cache\0");
    h.update(end_user.as_bytes());
    h.update(b"\0");
    h.update(alias.as_bytes());
    let digest = h.finalize();
    let mut key = String::with_capacity(35);
    key.push_str("sc-");
    crate::push_hex(&mut key, &digest[..16]);
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
    use serde_json::json;

    use super::*;

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
