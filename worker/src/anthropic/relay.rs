//! Upstream Anthropic SSE bytes in, OpenAI SSE bytes out: SSE framing around
//! [`StreamTranslator`], with the same shape as the OpenAI relay (`feed`, `finish`, `fail`), so
//! the glue streams both providers the same way.
//!
//! Framing follows the SSE spec: lines end with `\n`, `\r\n` or `\r` (also when split across
//! chunks); `event:` names the event; `data:` lines are joined with `\n`; one space after the
//! colon is dropped; comments and `id:`/`retry:` are skipped; an event is dispatched at its
//! blank line, as soon as it arrives. Lines are decoded only when whole, so a UTF-8 character
//! split across chunks is fine.

use storycad_protocol::{codes, ErrorBody, Usage};

use super::StreamTranslator;

/// Longest line or event accepted from the upstream (a larger one means it is broken).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The relay for one Anthropic stream.
#[derive(Debug)]
pub struct AnthropicRelay {
    translator: StreamTranslator,
    line: Vec<u8>,
    after_cr: bool,
    at_start: bool,
    event: Option<String>,
    data: Option<String>,
}

impl AnthropicRelay {
    /// A relay answering as model `alias`, chunks stamped `created`; `include_usage`: the
    /// caller's `stream_options.include_usage`.
    pub fn new(alias: &str, created: u64, include_usage: bool) -> Self {
        AnthropicRelay {
            translator: StreamTranslator::new(alias, created, include_usage),
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            event: None,
            data: None,
        }
    }

    /// Feeds bytes from the upstream; returns the bytes to send to the caller now (possibly
    /// none: an incomplete event waits for its blank line).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        if self.at_start && !bytes.is_empty() {
            self.at_start = false;
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if self.after_cr && !bytes.is_empty() {
            // The "\n" of a "\r\n" split across chunks.
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
            self.after_cr = false;
        }
        while let Some(i) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&bytes[..i]);
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut out);
            // Reuse the buffer.
            self.line = line;
            self.line.clear();
            if self.is_closed() {
                return out;
            }
            let cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() + self.data.as_ref().map_or(0, String::len) > MAX_EVENT_BYTES {
            self.translator
                .fail_with(bad_stream("an event too large"), &mut out);
        }
        out
    }

    /// The upstream body ended. Returns the last bytes for the caller: a final event that lacked
    /// its blank line (only when its JSON is whole: a cut-off object is truncation), and a
    /// `stream_truncated` error event unless the stream had ended.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut out);
        }
        if !self.is_closed() {
            if let Some(data) = self.data.take() {
                if serde_json::from_str::<serde::de::IgnoredAny>(&data).is_ok() {
                    let event = self.event.take();
                    self.translator.on_event(event.as_deref(), &data, &mut out);
                }
            }
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

    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line.is_empty() {
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                self.translator.on_event(event.as_deref(), &data, out);
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            self.translator
                .fail_with(bad_stream("bytes that are not UTF-8"), out);
            return;
        };
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

fn bad_stream(what: &str) -> ErrorBody {
    ErrorBody::new(
        codes::SERVER,
        codes::UPSTREAM_ERROR,
        format!("the Anthropic stream sent {what}"),
    )
}
