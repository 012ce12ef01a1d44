//! `worker_relay`: upstream OpenAI SSE bytes, whole and in pieces, through the Worker's OpenAI
//! stream relay ([`Relay`] for `ProviderKind::OpenAiCompatible`).
//!
//! Checked: no panic; the same output, outcome, usage and chunk count whether the bytes come
//! whole or cut anywhere; the output is well-formed SSE the caller can read: UTF-8, each event a
//! `data: ` line (or a `:` comment) ending in a blank line, its payload `[DONE]` or one JSON
//! object on one line, chunks carrying the caller's alias as `model`, and exactly one ending:
//! `[DONE]` or an error event, last, matching the relay's outcome. Error messages never carry the
//! scrubbed secret.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use storycad_protocol::Usage;
use storycad_worker::{
    config::ProviderKind,
    providers::{Outcome, Relay},
};

use crate::pieces::Input;

/// The caller's alias every chunk must carry.
pub const ALIAS: &str = "storycad-fast";
/// A secret the relay must keep out of error messages.
pub const SECRET: &str = concat!("sk-", "fuzz-secret-0123456789");

#[derive(Debug, PartialEq)]
struct Run {
    out: Vec<u8>,
    outcome: Outcome,
    usage: Option<Usage>,
    chunks: u64,
}

fn relay(pieces: &[&[u8]], include_usage: bool) -> Run {
    let mut r = Relay::new(
        ProviderKind::OpenAiCompatible,
        ALIAS,
        include_usage,
        vec![SECRET.to_owned()],
        1_700_000_000,
    );
    let mut out = Vec::new();
    for p in pieces {
        out.extend(r.feed(p));
    }
    out.extend(r.finish());
    assert!(r.is_closed(), "open after finish");
    // Nothing more once finished.
    assert!(r.feed(b"data: [DONE]\n\n").is_empty());
    assert!(r.finish().is_empty());
    Run {
        out,
        outcome: r.outcome(),
        usage: r.usage(),
        chunks: r.chunks(),
    }
}

/// The check for one fuzz input; panics on a violation.
pub fn check(data: &[u8]) {
    let input = Input::parse(data);
    let include_usage = input.flags & 1 != 0;
    let whole = relay(&[input.body], include_usage);
    let cut = relay(&input.pieces(), include_usage);
    assert_eq!(whole, cut, "pieces changed the relay's answer");
    check_output(&whole);
}

fn check_output(run: &Run) {
    let text = std::str::from_utf8(&run.out).expect("relay output is UTF-8");
    assert!(text.ends_with("\n\n"), "unterminated output: {text:?}");
    let events: Vec<&str> = text[..text.len() - 2].split("\n\n").collect();
    let last = events.len() - 1;
    let mut chunks = 0;
    for (i, event) in events.iter().enumerate() {
        assert!(
            !event.contains(['\n', '\r']),
            "event {i} is not one line: {event:?}"
        );
        if event.starts_with(':') {
            assert!(i < last, "a comment cannot end the stream");
            continue;
        }
        let payload = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("event {i} is not a data line: {event:?}"));
        if payload == "[DONE]" {
            assert_eq!(i, last, "[DONE] before the end");
            assert_eq!(run.outcome, Outcome::Done);
            continue;
        }
        // Members kept raw: the relay passes upstream values as sent, and JSON's grammar allows
        // numbers (1E999) that serde_json's `Value` refuses to hold.
        let object: BTreeMap<String, &RawValue> = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("event {i} is not a JSON object ({e}): {payload:?}"));
        if object.get("error").is_some_and(|e| e.get() != "null") {
            assert_eq!(i, last, "an error event before the end");
            assert!(matches!(
                run.outcome,
                Outcome::Failed(_) | Outcome::Truncated
            ));
            let body: storycad_protocol::ErrorBody =
                serde_json::from_str(payload).expect("error event is an ErrorBody");
            assert!(!body.error.message.contains(SECRET), "secret in {body:?}");
            assert!(!body.error.message.is_empty());
            continue;
        }
        assert!(i < last, "a chunk cannot end the stream");
        let model = object.get("model").map(|m| m.get());
        assert_eq!(model, Some(format!("{ALIAS:?}").as_str()), "model");
        chunks += 1;
    }
    assert_eq!(chunks, run.chunks, "chunk count");
}
