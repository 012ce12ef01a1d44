//! `worker_relay`: upstream OpenAI SSE bytes, whole and in pieces, through the Worker's OpenAI
//! stream relay ([`Relay`](storycad_worker::providers::Relay) for
//! `ProviderKind::OpenAiCompatible`).
//!
//! Checked: what `relay.rs` checks of every relay, with `:` comments allowed (upstream's are
//! passed on) and the relay's chunk count equal to the chunk events; each chunk carries the
//! caller's alias as `model`. Error messages never carry the scrubbed secret.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use storycad_worker::config::ProviderKind;

use crate::relay::Target;

/// The caller's alias every chunk must carry.
pub const ALIAS: &str = "storycad-fast";
/// A secret the relay must keep out of error messages.
pub const SECRET: &str = concat!("sk-", "fuzz-secret-0123456789");

const TARGET: Target = Target {
    kind: ProviderKind::OpenAiCompatible,
    alias: ALIAS,
    secret: Some(SECRET),
    after_close: b"data: [DONE]\n\n",
    comments: true,
    counts_chunks: true,
    chunk,
};

/// The check for one fuzz input; panics on a violation.
pub fn check(data: &[u8]) {
    TARGET.check(data);
}

/// A chunk is passed on as sent but for `model`, the caller's alias.
fn chunk(i: usize, payload: &str) {
    let object: BTreeMap<String, &RawValue> =
        serde_json::from_str(payload).expect("checked as an object");
    let model = object.get("model").map(|m| m.get());
    assert_eq!(
        model,
        Some(format!("{ALIAS:?}").as_str()),
        "event {i}'s model"
    );
}
