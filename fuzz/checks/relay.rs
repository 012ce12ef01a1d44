#![allow(dead_code)] // Shared by the two stream targets and the regression tests.

//! What the two relay targets (`worker_relay`, `anthropic_stream`) share: an input fed through
//! the Worker's stream [`Relay`] whole and in pieces, and the shape every relayed stream has.
//!
//! Checked for each input: no panic; the same output, outcome, usage and chunk count whether
//! the bytes come whole or cut anywhere; the relay is closed after `finish` and ignores what
//! comes after; the output is SSE the caller can read: UTF-8, each event one `data: ` line (or,
//! where the target allows, a `:` comment) ending in a blank line, its payload `[DONE]` or one
//! JSON object, and exactly one ending, last: `[DONE]` (outcome `Done`) or an error body
//! (outcome `Failed` or `Truncated`) with a message that does not carry the scrubbed secret.
//! What a chunk must hold is the target's own check.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use storycad_protocol::{ErrorBody, Usage};
use storycad_worker::{
    config::ProviderKind,
    providers::{Outcome, Relay},
};

use crate::pieces::Input;

/// One relay target.
pub struct Target {
    pub kind: ProviderKind,
    /// The caller's alias every chunk must carry.
    pub alias: &'static str,
    /// A secret the relay scrubs: it must never be in an error message.
    pub secret: Option<&'static str>,
    /// Upstream bytes fed after `finish`: the relay must ignore them.
    pub after_close: &'static [u8],
    /// Whether `:` comments may appear (the OpenAI relay passes upstream's comments on).
    pub comments: bool,
    /// Whether [`Relay::chunks`] counts the chunk events (the OpenAI relay's does).
    pub counts_chunks: bool,
    /// The target's check of one chunk event's payload (`i`: the event's index).
    pub chunk: fn(i: usize, payload: &str),
}

/// What the relay made of one input.
#[derive(Debug, PartialEq)]
pub struct Run {
    pub out: Vec<u8>,
    pub outcome: Outcome,
    pub usage: Option<Usage>,
    pub chunks: u64,
}

impl Target {
    /// The check for one fuzz input; panics on a violation.
    pub fn check(&self, data: &[u8]) {
        let input = Input::parse(data);
        let include_usage = input.flags & 1 != 0;
        let whole = self.relay(&[input.body], include_usage);
        let cut = self.relay(&input.pieces(), include_usage);
        assert_eq!(whole, cut, "pieces changed the relay's answer");
        self.check_output(&whole);
    }

    /// `pieces` through a fresh relay, then `finish`.
    pub fn relay(&self, pieces: &[&[u8]], include_usage: bool) -> Run {
        let scrub = self.secret.iter().map(|s| (*s).to_owned()).collect();
        let mut r = Relay::new(self.kind, self.alias, include_usage, scrub, 1_700_000_000);
        let mut out = Vec::new();
        for p in pieces {
            out.extend(r.feed(p));
        }
        out.extend(r.finish());
        assert!(r.is_closed(), "open after finish");
        assert!(r.feed(self.after_close).is_empty(), "output after finish");
        assert!(r.finish().is_empty(), "a second ending");
        Run {
            out,
            outcome: r.outcome(),
            usage: r.usage(),
            chunks: r.chunks(),
        }
    }

    fn check_output(&self, run: &Run) {
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
            if self.comments && event.starts_with(':') {
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
            // Members kept raw: the relay passes upstream values as sent, and JSON's grammar
            // allows numbers (1E999) that serde_json's `Value` refuses to hold.
            let object: BTreeMap<String, &RawValue> = serde_json::from_str(payload)
                .unwrap_or_else(|e| panic!("event {i} is not a JSON object ({e}): {payload:?}"));
            if object.get("error").is_some_and(|e| e.get() != "null") {
                assert_eq!(i, last, "an error event before the end");
                assert!(matches!(
                    run.outcome,
                    Outcome::Failed(_) | Outcome::Truncated
                ));
                let body: ErrorBody =
                    serde_json::from_str(payload).expect("error event is an ErrorBody");
                assert!(!body.error.message.is_empty());
                if let Some(secret) = self.secret {
                    assert!(!body.error.message.contains(secret), "secret in {body:?}");
                }
                continue;
            }
            assert!(i < last, "a chunk cannot end the stream");
            (self.chunk)(i, payload);
            chunks += 1;
        }
        if self.counts_chunks {
            assert_eq!(chunks, run.chunks, "chunk count");
        }
    }
}
