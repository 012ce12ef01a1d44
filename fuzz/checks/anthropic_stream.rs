//! `anthropic_stream`: upstream Anthropic Messages SSE bytes, whole and in pieces, through the
//! Worker's translation relay ([`Relay`](storycad_worker::providers::Relay) for
//! `ProviderKind::Anthropic`).
//!
//! Checked: what `relay.rs` checks of every relay, with no comments; every chunk is one the
//! client reads: it parses as the protocol's `ChatChunk`, `object` `chat.completion.chunk`,
//! `model` the alias, at most one choice.

use storycad_protocol::ChatChunk;
use storycad_worker::config::ProviderKind;

use crate::relay::Target;

/// The caller's alias every chunk must carry.
pub const ALIAS: &str = "storycad-smart";

const TARGET: Target = Target {
    kind: ProviderKind::Anthropic,
    alias: ALIAS,
    secret: None,
    after_close: b"event: message_stop\ndata: {}\n\n",
    comments: false,
    counts_chunks: false,
    chunk,
};

/// The check for one fuzz input; panics on a violation.
pub fn check(data: &[u8]) {
    TARGET.check(data);
}

fn chunk(i: usize, payload: &str) {
    let value: serde_json::Value = serde_json::from_str(payload)
        .unwrap_or_else(|e| panic!("event {i} is not JSON ({e}): {payload:?}"));
    assert_eq!(value["object"], "chat.completion.chunk");
    assert_eq!(value["model"], ALIAS);
    let chunk: ChatChunk = serde_json::from_str(payload)
        .unwrap_or_else(|e| panic!("event {i} is not a ChatChunk ({e}): {payload:?}"));
    assert!(chunk.choices.len() <= 1);
}
