//! `PROMPT_CACHE=off`: the writer's session of e2e_prompt_cache through a Worker that asks
//! for no caching. No request carries a `cache_control` breakpoint or a `prompt_cache_key`;
//! Anthropic caches nothing (no reads, no writes) and each turn is charged prompt +
//! completion. OpenAI caches long prompts by itself whatever the caller sends (as the fake
//! does, per model without a key): its answers are charged by the ledger's rule on the usage
//! it reports.

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc};

use storycad_e2e::writer_session::{Weights, TURNS};
use support::{
    prompt_session::{self, cache_controls, Turn},
    Suite, SuiteConfig, ANTHROPIC_ALIAS, OPENAI_ALIAS,
};

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_prompt_cache_off",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![
                ("MAX_BODY_BYTES".into(), "1048576".into()),
                ("PROMPT_CACHE".into(), "off".into()),
            ],
        },
        cases![
            anthropic_json_session_is_not_cached,
            anthropic_stream_session_is_not_cached,
            openai_json_session_has_no_cache_key,
            openai_stream_session_has_no_cache_key,
        ],
    )
}

/// Nothing about caching in any request the provider received.
fn check_requests(what: &str, turns: &[Turn]) {
    assert_eq!(turns.len(), TURNS);
    for (i, t) in turns.iter().enumerate() {
        let body = t.upstream.json().unwrap();
        assert!(
            cache_controls(&body).is_empty(),
            "{what} turn {}: a breakpoint was sent",
            i + 1
        );
        assert!(
            body.get("prompt_cache_key").is_none(),
            "{what} turn {}: a prompt_cache_key was sent: {}",
            i + 1,
            body["prompt_cache_key"]
        );
    }
}

fn check_anthropic(what: &str, turns: &[Turn]) {
    check_requests(what, turns);
    for (i, t) in turns.iter().enumerate() {
        let u = t.usage;
        assert_eq!(
            (u.cached, u.cache_write),
            (0, 0),
            "{what} turn {}: {u:?}",
            i + 1
        );
        assert_eq!(
            (t.cache.read, t.cache.write),
            (0, 0),
            "{what} turn {}",
            i + 1
        );
        assert_eq!(
            t.charged,
            u.prompt + u.completion,
            "{what} turn {}: {u:?}",
            i + 1
        );
    }
    let total = prompt_session::total(turns);
    eprintln!(
        "[e2e_prompt_cache_off] {what}: prompt {}, completion {}, charged {}",
        total.prompt,
        total.completion,
        turns.iter().map(|t| t.charged).sum::<u64>()
    );
}

fn check_openai(what: &str, turns: &[Turn]) {
    check_requests(what, turns);
    for (i, t) in turns.iter().enumerate() {
        let u = t.usage;
        assert_eq!(u.cached, t.cache.read, "{what} turn {}: {u:?}", i + 1);
        assert_eq!(u.cache_write, 0, "{what} turn {}: {u:?}", i + 1);
        assert_eq!(
            t.charged,
            Weights::OPENAI.charge(&u),
            "{what} turn {}: {u:?}",
            i + 1
        );
    }
    let total = prompt_session::total(turns);
    eprintln!(
        "[e2e_prompt_cache_off] {what}: prompt {} (OpenAI's own caching: {} cached), \
         completion {}, charged {}",
        total.prompt,
        total.cached,
        total.completion,
        turns.iter().map(|t| t.charged).sum::<u64>()
    );
}

async fn anthropic_json_session_is_not_cached(s: Arc<Suite>) {
    let story = format!("Saltmere{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-ant-json", ANTHROPIC_ALIAS, &story, false).await;
    check_anthropic("anthropic json", &turns);
}

async fn anthropic_stream_session_is_not_cached(s: Arc<Suite>) {
    let story = format!("Gullrock{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-ant-sse", ANTHROPIC_ALIAS, &story, true).await;
    check_anthropic("anthropic stream", &turns);
}

async fn openai_json_session_has_no_cache_key(s: Arc<Suite>) {
    let story = format!("Fenwater{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-oai-json", OPENAI_ALIAS, &story, false).await;
    check_openai("openai json", &turns);
}

async fn openai_stream_session_has_no_cache_key(s: Arc<Suite>) {
    let story = format!("Brackenholt{}", s.nonce());
    let turns = prompt_session::run(&s, "writer-oai-sse", OPENAI_ALIAS, &story, true).await;
    check_openai("openai stream", &turns);
}
