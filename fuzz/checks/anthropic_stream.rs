//! `anthropic_stream`: upstream Anthropic Messages SSE bytes, whole and in pieces, through the
//! Worker's translation relay ([`Relay`] for `ProviderKind::Anthropic`).
//!
//! Checked: no panic; the same output, outcome and usage whether the bytes come whole or cut
//! anywhere; the output is OpenAI SSE the client reads: UTF-8, each event one `data: ` line
//! ending in a blank line; every payload is a chat chunk (it parses as the protocol's
//! `ChatChunk`, `object` `chat.completion.chunk`, `model` the alias), or an error body, or
//! `[DONE]`; the stream ends exactly once, with `[DONE]` or an error event, matching the outcome.

use storycad_protocol::{ChatChunk, ErrorBody, Usage};
use storycad_worker::{
    config::ProviderKind,
    providers::{Outcome, Relay},
};

use crate::pieces::Input;

/// The caller's alias every chunk must carry.
pub const ALIAS: &str = "storycad-smart";

#[derive(Debug, PartialEq)]
struct Run {
    out: Vec<u8>,
    outcome: Outcome,
    usage: Option<Usage>,
}

fn relay(pieces: &[&[u8]], include_usage: bool) -> Run {
    let mut r = Relay::new(
        ProviderKind::Anthropic,
        ALIAS,
        include_usage,
        Vec::new(),
        1_700_000_000,
    );
    let mut out = Vec::new();
    for p in pieces {
        out.extend(r.feed(p));
    }
    out.extend(r.finish());
    assert!(r.is_closed(), "open after finish");
    assert!(r.feed(b"event: message_stop\ndata: {}\n\n").is_empty());
    assert!(r.finish().is_empty());
    Run {
        out,
        outcome: r.outcome(),
        usage: r.usage(),
    }
}

/// The check for one fuzz input; panics on a violation.
pub fn check(data: &[u8]) {
    let input = Input::parse(data);
    let include_usage = input.flags & 1 != 0;
    let whole = relay(&[input.body], include_usage);
    let cut = relay(&input.pieces(), include_usage);
    assert_eq!(whole, cut, "pieces changed the translation");
    check_output(&whole);
}

fn check_output(run: &Run) {
    let text = std::str::from_utf8(&run.out).expect("relay output is UTF-8");
    assert!(text.ends_with("\n\n"), "unterminated output: {text:?}");
    let events: Vec<&str> = text[..text.len() - 2].split("\n\n").collect();
    let last = events.len() - 1;
    for (i, event) in events.iter().enumerate() {
        assert!(
            !event.contains(['\n', '\r']),
            "event {i} is not one line: {event:?}"
        );
        let payload = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("event {i} is not a data line: {event:?}"));
        if payload == "[DONE]" {
            assert_eq!(i, last, "[DONE] before the end");
            assert_eq!(run.outcome, Outcome::Done);
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("event {i} is not JSON ({e}): {payload:?}"));
        if value.get("error").is_some() {
            assert_eq!(i, last, "an error event before the end");
            assert!(matches!(
                run.outcome,
                Outcome::Failed(_) | Outcome::Truncated
            ));
            let body: ErrorBody =
                serde_json::from_value(value).expect("error event is an ErrorBody");
            assert!(!body.error.message.is_empty());
            continue;
        }
        assert!(i < last, "a chunk cannot end the stream");
        assert_eq!(value["object"], "chat.completion.chunk");
        assert_eq!(value["model"], ALIAS);
        let chunk: ChatChunk = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("event {i} is not a ChatChunk ({e}): {payload:?}"));
        assert!(chunk.choices.len() <= 1);
    }
}
