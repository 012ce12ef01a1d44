//! Provider prompt caching through the real Worker, with the default `PROMPT_CACHE` (auto): a
//! writer's ten-turn session (a ~6,000-token story context in the system prompt, then the
//! growing conversation) against the OpenAI alias and the Anthropic alias, JSON and streamed.
//!
//! For every session:
//! - what the provider received: Anthropic requests carry `cache_control` breakpoints (the
//!   system prompt's last block, and from turn 2 the last block of the message before the
//!   newest user turn; 4 at most); OpenAI requests carry the Worker's `prompt_cache_key`
//!   (`sc-<32 hex>`), the same across the session and another for another user;
//! - the usage the Worker answered with, in OpenAI's shape: `prompt_tokens` all the input,
//!   `prompt_tokens_details.cached_tokens` the cache reads (from turn 2 on), and for
//!   Anthropic `cache_write_tokens` the cache writes (turn 1 writes the story context); the
//!   same as what the fake provider's cache did;
//! - the charge in the Worker's log: each turn fresh input + ceil(reads × read weight) +
//!   ceil(writes × write weight) + completion with the providers' default weights (Anthropic
//!   0.1 / 1.25, OpenAI 0.5 / 1.0), so the session costs that much less than prompt +
//!   completion (on Anthropic, under half of the input).
//!
//! `PROMPT_CACHE=off` is in e2e_prompt_cache_off (a Worker has one configuration).

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc};

use serde_json::{json, Value};
use storycad_e2e::writer_session::{TurnUsage, Weights, TURNS};
use support::{
    prompt_session::{self, cache_controls, Turn},
    Suite, SuiteConfig, ANTHROPIC_ALIAS, OPENAI_ALIAS,
};

/// Room for the session's last turn (the story context and nine exchanges: ~50 KB).
pub const SESSION_BODY_BYTES: &str = "1048576";

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_prompt_cache",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("MAX_BODY_BYTES".into(), SESSION_BODY_BYTES.into())],
        },
        cases![
            anthropic_json_session_is_cached_and_charged_less,
            anthropic_stream_session_is_cached_and_charged_less,
            openai_json_session_is_cached_and_charged_less,
            openai_stream_session_is_cached_and_charged_less,
            openai_cache_key_is_per_user_and_alias,
        ],
    )
}

/// The checks every session passes, whatever the provider: usage as the provider's cache
/// did, reads from turn 2 on, each turn charged by the weights; returns the totals.
fn check_usage_and_charge(what: &str, turns: &[Turn], weights: Weights) -> TurnUsage {
    assert_eq!(turns.len(), TURNS);
    for (i, t) in turns.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            t.usage.cached, t.cache.read,
            "{what} turn {n}: {:?}",
            t.usage
        );
        assert_eq!(
            t.usage.cache_write, t.cache.write,
            "{what} turn {n}: {:?}",
            t.usage
        );
        if n >= 2 {
            assert!(
                t.usage.cached > 0,
                "{what} turn {n} read nothing: {:?}",
                t.usage
            );
        }
        assert!(
            t.usage.prompt >= t.usage.cached + t.usage.cache_write,
            "{what} turn {n}: prompt_tokens must include the cached parts: {:?}",
            t.usage
        );
        assert_eq!(
            t.charged,
            weights.charge(&t.usage),
            "{what} turn {n}: charged {} for {:?}",
            t.charged,
            t.usage
        );
    }
    let total = prompt_session::total(turns);
    let charged: u64 = turns.iter().map(|t| t.charged).sum();
    let plain = total.prompt + total.completion;
    let expected_saving: i64 = turns
        .iter()
        .map(|t| {
            let u = t.usage;
            (u.prompt + u.completion) as i64 - weights.charge(&u) as i64
        })
        .sum();
    eprintln!(
        "[e2e_prompt_cache] {what}: prompt {} (cached {}, written {}), completion {}; \
         charged {charged} instead of {plain} (saving {expected_saving})",
        total.prompt, total.cached, total.cache_write, total.completion
    );
    assert!(charged < plain, "{what}: charged {charged}, plain {plain}");
    assert_eq!(plain as i64 - charged as i64, expected_saving, "{what}");
    total
}

/// The Anthropic checks: breakpoints where the contract puts them, the story context written
/// on turn 1, and the input charged under half of its plain price.
fn check_anthropic(what: &str, turns: &[Turn]) {
    for (i, t) in turns.iter().enumerate() {
        let n = i + 1;
        let body = t.upstream.json().unwrap();
        let controls = cache_controls(&body);
        assert!(
            (1..=4).contains(&controls.len()),
            "{what} turn {n}: {} breakpoints",
            controls.len()
        );
        for c in &controls {
            assert_eq!(c["type"], "ephemeral", "{what} turn {n}");
        }
        let system = body["system"]
            .as_array()
            .unwrap_or_else(|| panic!("{what} turn {n}: system is not blocks: {}", body["system"]));
        assert_eq!(
            system.last().unwrap()["cache_control"],
            json!({"type": "ephemeral"}),
            "{what} turn {n}: no breakpoint on the system prompt"
        );
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2 * n - 1, "{what} turn {n}");
        if n >= 2 {
            // The message before the newest user turn: its last block is a breakpoint.
            let before = &messages[messages.len() - 2];
            let blocks = before["content"]
                .as_array()
                .unwrap_or_else(|| panic!("{what} turn {n}: content not blocks: {before}"));
            assert_eq!(
                blocks.last().unwrap()["cache_control"],
                json!({"type": "ephemeral"}),
                "{what} turn {n}: {before}"
            );
        }
    }
    let first = &turns[0].usage;
    assert!(
        first.cache_write > 0 && first.cached == 0,
        "{what}: turn 1 writes the story context: {first:?}"
    );
    let total = check_usage_and_charge(what, turns, Weights::ANTHROPIC);
    let input_cost: u64 = turns
        .iter()
        .map(|t| Weights::ANTHROPIC.input_cost(&t.usage))
        .sum();
    let ratio = input_cost as f64 / total.prompt as f64;
    eprintln!(
        "[e2e_prompt_cache] {what}: input cost {input_cost} / {} = {ratio:.3}",
        total.prompt
    );
    assert!(ratio < 0.5, "{what}: input cost ratio {ratio:.3}");
}

/// The OpenAI checks: the same `prompt_cache_key` on every turn (returned), no Anthropic
/// breakpoint, nothing written.
fn check_openai(what: &str, turns: &[Turn]) -> String {
    let keys: Vec<String> = turns
        .iter()
        .map(|t| {
            let body = t.upstream.json().unwrap();
            assert!(cache_controls(&body).is_empty(), "{what}: {body}");
            body["prompt_cache_key"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no prompt_cache_key"))
                .to_owned()
        })
        .collect();
    let key = keys[0].clone();
    assert!(is_cache_key(&key), "{what}: {key}");
    assert!(keys.iter().all(|k| *k == key), "{what}: keys {keys:?}");
    for t in turns {
        assert_eq!(t.usage.cache_write, 0, "{what}: {:?}", t.usage);
    }
    check_usage_and_charge(what, turns, Weights::OPENAI);
    key
}

/// `sc-` and 32 lower-case hex digits.
fn is_cache_key(key: &str) -> bool {
    key.strip_prefix("sc-").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

async fn anthropic_json_session_is_cached_and_charged_less(s: Arc<Suite>) {
    let story = format!("Saltmere{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-ant-json", ANTHROPIC_ALIAS, &story, false).await;
    check_anthropic("anthropic json", &turns);
}

async fn anthropic_stream_session_is_cached_and_charged_less(s: Arc<Suite>) {
    let story = format!("Gullrock{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-ant-sse", ANTHROPIC_ALIAS, &story, true).await;
    check_anthropic("anthropic stream", &turns);
}

async fn openai_json_session_is_cached_and_charged_less(s: Arc<Suite>) {
    let story = format!("Fenwater{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-oai-json", OPENAI_ALIAS, &story, false).await;
    check_openai("openai json", &turns);
}

async fn openai_stream_session_is_cached_and_charged_less(s: Arc<Suite>) {
    let story = format!("Brackenholt{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-oai-sse", OPENAI_ALIAS, &story, true).await;
    check_openai("openai stream", &turns);
}

/// The key is the user's (with the alias): the same user gets the same key in another
/// session, another user another key; a key the caller sets is kept.
async fn openai_cache_key_is_per_user_and_alias(s: Arc<Suite>) {
    let key_of = |sub: &'static str, body: Value| {
        let s = s.clone();
        async move {
            let token = storycad_e2e::tokens::mint(
                s.keys.get(storycad_e2e::tokens::Alg::EdDSA),
                &s.claims(sub),
            );
            let seen = s.chat(Some(&token), &body).await;
            assert_eq!(seen.status, 200, "{}", seen.text());
            let marker = body["messages"][0]["content"].as_str().unwrap().to_owned();
            let sent = s.provider.requests_containing(&marker);
            assert_eq!(sent.len(), 1);
            sent[0].json().unwrap()["prompt_cache_key"].clone()
        }
    };
    let body = |nonce: &str| {
        json!({"model": OPENAI_ALIAS, "messages": [
            {"role": "system", "content": format!("Story bible {nonce}.")},
            {"role": "user", "content": "Hello there"}]})
    };
    let alice_1 = key_of("writer-alice", body(&s.nonce())).await;
    let alice_2 = key_of("writer-alice", body(&s.nonce())).await;
    let bob = key_of("writer-bob", body(&s.nonce())).await;
    assert!(is_cache_key(alice_1.as_str().unwrap()), "{alice_1}");
    assert_eq!(alice_1, alice_2);
    assert_ne!(alice_1, bob);
    let mut own = body(&s.nonce());
    own["prompt_cache_key"] = json!("my-own-key");
    assert_eq!(key_of("writer-alice", own).await, "my-own-key");
}
