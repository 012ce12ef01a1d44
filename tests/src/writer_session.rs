//! A writer's session with StoryCAD Collaborator, as the prompt-cache suite and
//! `cargo xtask bench cache` replay it: a story context of some 6,000 words (outline,
//! characters, settings) in the system prompt, then ten turns of conversation, each request
//! carrying the whole conversation so far.
//!
//! Everything here is deterministic and free of I/O: the callers send the requests
//! ([`Session::request`]), feed back the answers ([`Session::answered`]) and read the usage
//! ([`TurnUsage`]); [`Weights`] computes the charge the ledger's rules give for a usage.

use serde_json::{json, Value};

/// Turns in a session.
pub const TURNS: usize = 10;
/// Words in the story context (the fake provider's tokens are words).
pub const CONTEXT_WORDS: usize = 6000;

const NAMES: &[&str] = &[
    "Mara Quill",
    "Tobias Fenn",
    "Ilse Varga",
    "Corin Ashdown",
    "Hester Lyle",
    "Oren Blackwood",
    "Selka Moraine",
    "Jude Perrault",
];
const PLACES: &[&str] = &[
    "the lighthouse at Grey Point",
    "the salt market of Veddam",
    "the flooded chapel",
    "the harbour master's office",
    "the orchard above the cliffs",
    "the night ferry",
    "the archive under the customs house",
];
const TRAITS: &[&str] = &[
    "stubborn",
    "soft-spoken",
    "ambitious",
    "grieving",
    "reckless",
    "meticulous",
    "charming",
    "haunted",
    "loyal",
    "secretive",
];
const BEATS: &[&str] = &[
    "discovers a letter that was never sent",
    "lies to protect an old friend",
    "loses the map in the storm",
    "confronts the harbour master about the missing ledger",
    "finds the second key hidden in the orchard wall",
    "hears the bell ring although the tower is empty",
    "agrees to a bargain that costs more than money",
    "returns to the chapel at low tide",
];

/// The story context: a title naming `story`, then the outline, the characters and the
/// settings, about `words` words in all. Equal arguments give equal text; another `story`
/// gives another context (so two sessions never share a cached prefix).
pub fn story_context(story: &str, words: usize) -> String {
    let mut out = format!(
        "You are the writing partner for the novel \"The Keeper of {story}\". Stay consistent \
         with the story bible below.\n\n# Outline\n"
    );
    let mut n = 0usize;
    let count = |s: &str| s.split_whitespace().count();
    let mut total = count(&out);
    while total < words {
        let section = match n % 3 {
            0 => format!(
                "Chapter {}: {} {} in {}, and the tide turns against the village of {story}.\n",
                n / 3 + 1,
                NAMES[n % NAMES.len()],
                BEATS[(n * 3 + 1) % BEATS.len()],
                PLACES[(n * 5 + 2) % PLACES.len()],
            ),
            1 => format!(
                "Character: {} is {} and {}, remembers {} from childhood, and wants what the \
                 keeper of {story} hid before the war (note {n}).\n",
                NAMES[(n * 7 + 3) % NAMES.len()],
                TRAITS[n % TRAITS.len()],
                TRAITS[(n * 3 + 4) % TRAITS.len()],
                PLACES[n % PLACES.len()],
            ),
            _ => format!(
                "Setting: {} smells of tar and rain; lamps burn there until the {} bell, and \
                 strangers are watched by {} (detail {n}).\n",
                PLACES[(n * 2 + 5) % PLACES.len()],
                ["first", "second", "third", "last"][n % 4],
                NAMES[(n + 5) % NAMES.len()],
            ),
        };
        total += count(&section);
        out.push_str(&section);
        n += 1;
    }
    out
}

/// What the writer asks on turn `turn` (1-based).
pub fn user_turn(turn: usize) -> String {
    format!(
        "Turn {turn}: please revise chapter {turn} so that {} {} in {}; keep the voice of the \
         earlier chapters and suggest two lines of dialogue for {}.",
        NAMES[turn % NAMES.len()],
        BEATS[turn % BEATS.len()],
        PLACES[turn % PLACES.len()],
        NAMES[(turn + 3) % NAMES.len()],
    )
}

/// One session: the alias it talks to, its story context and the conversation so far.
#[derive(Debug, Clone)]
pub struct Session {
    alias: String,
    system: String,
    history: Vec<Value>,
}

impl Session {
    /// A session with the model `alias` on the story named `story`.
    pub fn new(alias: &str, story: &str) -> Session {
        Session {
            alias: alias.to_owned(),
            system: story_context(story, CONTEXT_WORDS),
            history: Vec::new(),
        }
    }

    /// The turn the next request is for (1-based).
    pub fn turn(&self) -> usize {
        self.history.len() / 2 + 1
    }

    /// The next turn's `/v1/chat/completions` body: the system prompt, the conversation so
    /// far, the new user turn; streamed with usage when `stream`.
    pub fn request(&self, stream: bool) -> Value {
        let mut messages = vec![json!({"role": "system", "content": self.system})];
        messages.extend(self.history.iter().cloned());
        messages.push(json!({"role": "user", "content": user_turn(self.turn())}));
        let mut body = json!({
            "model": self.alias,
            "messages": messages,
            "max_tokens": 256,
            "stream": stream,
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    /// Records the answer to the current turn: the conversation moves on.
    pub fn answered(&mut self, text: &str) {
        self.history
            .push(json!({"role": "user", "content": user_turn(self.turn())}));
        self.history
            .push(json!({"role": "assistant", "content": text}));
    }
}

/// The usage of one answer, in OpenAI's shape as the Worker reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnUsage {
    /// `prompt_tokens`: all the input (fresh, cache reads and cache writes).
    pub prompt: u64,
    /// `prompt_tokens_details.cached_tokens`: cache reads.
    pub cached: u64,
    /// `prompt_tokens_details.cache_write_tokens`: cache writes (0 when absent).
    pub cache_write: u64,
    /// `completion_tokens`.
    pub completion: u64,
}

impl TurnUsage {
    /// From a `usage` object; `None` without `prompt_tokens`.
    pub fn from_usage(u: &Value) -> Option<TurnUsage> {
        let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        Some(TurnUsage {
            prompt: u.get("prompt_tokens")?.as_u64()?,
            cached: n("/prompt_tokens_details/cached_tokens"),
            cache_write: n("/prompt_tokens_details/cache_write_tokens"),
            completion: n("/completion_tokens"),
        })
    }

    /// The input neither read from nor written to a cache.
    pub fn fresh(&self) -> u64 {
        self.prompt.saturating_sub(self.cached + self.cache_write)
    }

    /// Adds `other` to this one.
    pub fn add(&mut self, other: &TurnUsage) {
        self.prompt += other.prompt;
        self.cached += other.cached;
        self.cache_write += other.cache_write;
        self.completion += other.completion;
    }
}

/// The text and the usage of a streamed answer (its SSE body): the content deltas joined, and
/// the usage chunk's usage, if any.
pub fn read_stream(sse: &str) -> (String, Option<TurnUsage>) {
    let mut text = String::new();
    let mut usage = None;
    for line in sse.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(c) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(c);
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = TurnUsage::from_usage(u);
        }
    }
    (text, usage)
}

/// The text and the usage of a JSON answer.
pub fn read_json(answer: &Value) -> (String, Option<TurnUsage>) {
    let text = answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    (text, answer.get("usage").and_then(TurnUsage::from_usage))
}

/// The ledger's weights for cached input, in millionths (exact for the decimal weights plans
/// are written with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// Weight of a token read from the cache, in millionths.
    pub read_millionths: u64,
    /// Weight of a token written to the cache, in millionths.
    pub write_millionths: u64,
}

impl Weights {
    /// Anthropic's defaults: reads 0.1, writes 1.25.
    pub const ANTHROPIC: Weights = Weights {
        read_millionths: 100_000,
        write_millionths: 1_250_000,
    };
    /// OpenAI-compatible providers' defaults: reads 0.5, writes 1.0.
    pub const OPENAI: Weights = Weights {
        read_millionths: 500_000,
        write_millionths: 1_000_000,
    };

    /// What `u` is charged: fresh input + ceil(cached × read) + ceil(writes × write) +
    /// completion.
    pub fn charge(&self, u: &TurnUsage) -> u64 {
        let weighted = |tokens: u64, w: u64| (tokens * w).div_ceil(1_000_000);
        u.fresh()
            + weighted(u.cached, self.read_millionths)
            + weighted(u.cache_write, self.write_millionths)
            + u.completion
    }

    /// The input part of [`Weights::charge`] (the charge less the completion).
    pub fn input_cost(&self, u: &TurnUsage) -> u64 {
        self.charge(u) - u.completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_deterministic_and_about_the_size_asked() {
        let a = story_context("Saltmere", CONTEXT_WORDS);
        assert_eq!(a, story_context("Saltmere", CONTEXT_WORDS));
        assert_ne!(a, story_context("Gullrock", CONTEXT_WORDS));
        let words = a.split_whitespace().count();
        assert!(
            (CONTEXT_WORDS..CONTEXT_WORDS + 60).contains(&words),
            "{words}"
        );
        for part in ["# Outline", "Chapter 1:", "Character:", "Setting:"] {
            assert!(a.contains(part), "{part}");
        }
    }

    #[test]
    fn the_conversation_grows_turn_by_turn() {
        let mut s = Session::new("alias", "Saltmere");
        let first = s.request(false);
        assert_eq!(first["messages"].as_array().map(Vec::len), Some(2));
        assert!(first.get("stream_options").is_none());
        s.answered("echo: one");
        let second = s.request(true);
        assert_eq!(s.turn(), 2);
        let m = second["messages"].as_array().cloned().unwrap_or_default();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1]["content"], user_turn(1));
        assert_eq!(m[2]["content"], "echo: one");
        assert_eq!(m[3]["content"], user_turn(2));
        assert_eq!(second["stream_options"]["include_usage"], true);
    }

    #[test]
    fn charges_follow_the_weights() {
        let u = TurnUsage {
            prompt: 6100,
            cached: 6001,
            cache_write: 50,
            completion: 30,
        };
        // 49 fresh + ceil(600.1) + ceil(62.5) + 30.
        assert_eq!(Weights::ANTHROPIC.charge(&u), 49 + 601 + 63 + 30);
        assert_eq!(Weights::OPENAI.charge(&u), 49 + 3001 + 50 + 30);
        assert_eq!(Weights::OPENAI.input_cost(&u), 49 + 3001 + 50);
    }

    #[test]
    fn usage_is_read_from_json_and_streams() {
        let v = json!({"choices": [{"message": {"content": "hi"}}], "usage": {
            "prompt_tokens": 10, "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 3}}});
        let (text, u) = read_json(&v);
        assert_eq!(text, "hi");
        assert_eq!(
            u,
            Some(TurnUsage {
                prompt: 10,
                cached: 4,
                cache_write: 3,
                completion: 2
            })
        );
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\" b\"}}]}\n\n\
                   data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n\
                   data: [DONE]\n\n";
        let (text, u) = read_stream(sse);
        assert_eq!(text, "a b");
        assert_eq!(u.map(|u| (u.prompt, u.cached, u.fresh())), Some((5, 0, 5)));
    }
}
