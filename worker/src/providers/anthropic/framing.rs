//! Upstream Anthropic SSE bytes in, OpenAI SSE bytes out: SSE framing around
//! [`StreamTranslator`], with the same shape as the OpenAI relay (`feed`, `finish`, `fail`), so
//! the glue streams both providers the same way.
//!
//! Framing (line ends, `event:`/`data:` fields, a BOM at the start, the size bound) is
//! [`SseFramer`]'s; comments are skipped.

use storycad_protocol::{codes, ErrorBody, Usage};

use super::StreamTranslator;
pub use crate::providers::sse::MAX_EVENT_BYTES;
use crate::providers::sse::{Frame, SseFramer};

/// The relay for one Anthropic stream.
#[derive(Debug)]
pub struct AnthropicStream {
    translator: StreamTranslator,
    framer: SseFramer,
}

impl AnthropicStream {
    /// A relay answering as model `alias`, chunks stamped `created`; `include_usage`: the
    /// caller's `stream_options.include_usage`.
    pub fn new(alias: &str, created: u64, include_usage: bool) -> Self {
        AnthropicStream {
            translator: StreamTranslator::new(alias, created, include_usage),
            framer: SseFramer::new(true, MAX_EVENT_BYTES),
        }
    }

    /// Feeds bytes from the upstream; returns the bytes to send to the caller now (possibly
    /// none: an incomplete event waits for its blank line).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        let translator = &mut self.translator;
        self.framer
            .feed(bytes, |frame| on_frame(translator, frame, &mut out));
        out
    }

    /// The upstream body ended. Returns the last bytes for the caller: a final event that lacked
    /// its blank line (only when its JSON is whole: a cut-off object is truncation), and a
    /// `stream_truncated` error event unless the stream had ended (`upstream_error` instead
    /// when the body was not an event stream at all, e.g. JSON).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        let translator = &mut self.translator;
        self.framer
            .finish(|frame| on_frame(translator, frame, &mut out));
        if self.framer.not_an_event_stream() {
            self.translator
                .fail_with(bad_stream("a body that is not an event stream"), &mut out);
        }
        self.translator.finish(&mut out);
        out
    }

    /// The upstream failed while streaming (a read error, a stall): ends the stream with `error`
    /// as its last event, unless it had already ended.
    pub fn fail(&mut self, error: ErrorBody) -> Vec<u8> {
        let mut out = Vec::new();
        self.translator.fail_with(error, &mut out);
        out
    }

    /// Whether the stream has ended (`[DONE]` or an error event was sent).
    pub fn is_closed(&self) -> bool {
        self.translator.is_done()
    }

    /// Tokens used so far (see [`StreamTranslator::usage`]).
    pub fn usage(&self) -> Option<Usage> {
        self.translator.usage()
    }

    /// The error event that ended the stream, if one did.
    pub fn error(&self) -> Option<&ErrorBody> {
        self.translator.error()
    }

    /// The translator underneath (message id, state).
    pub fn translator(&self) -> &StreamTranslator {
        &self.translator
    }
}

/// One frame from the upstream into `translator`; returns whether the stream is still open.
fn on_frame(translator: &mut StreamTranslator, frame: Frame<'_>, out: &mut Vec<u8>) -> bool {
    match frame {
        Frame::Event {
            name,
            data,
            terminated,
        } => {
            // A last event without its blank line counts only when its JSON is whole.
            if terminated || serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok() {
                translator.on_event(name, data, out);
            }
        }
        Frame::Comment(_) => {}
        Frame::NotUtf8 => translator.fail_with(bad_stream("bytes that are not UTF-8"), out),
        Frame::TooLarge => translator.fail_with(bad_stream("an event too large"), out),
    }
    !translator.is_done()
}

fn bad_stream(what: &str) -> ErrorBody {
    ErrorBody::new(
        codes::SERVER,
        codes::UPSTREAM_ERROR,
        format!("the Anthropic stream sent {what}"),
    )
}
