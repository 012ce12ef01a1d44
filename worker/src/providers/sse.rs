//! Incremental SSE framing, shared by both stream relays.
//!
//! Bytes go in as they arrive, in chunks cut anywhere; whole events come out as soon as their
//! blank line arrives. Framing follows the SSE spec: lines end with `\n`, `\r\n` or `\r` (also
//! when split across chunks); `event:` names the event; `data:` lines are joined with `\n`; one
//! space after the colon is dropped; `id:`, `retry:` and unknown fields are skipped. Lines are
//! decoded only when whole, so a UTF-8 character split across chunks is fine. The line and data
//! buffers are reused from event to event.

/// Longest line or event accepted from the upstream (a larger one means it is broken).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// UTF-8's byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What the framer hands to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An event with data. `terminated`: its blank line came; `false` only from
    /// [`SseFramer::finish`], for a last event the body ended without terminating (the caller
    /// decides whether it is whole enough to count).
    Event {
        name: Option<&'a str>,
        data: &'a str,
        terminated: bool,
    },
    /// A comment line: the bytes after its `:`, not checked for UTF-8.
    Comment(&'a [u8]),
    /// A field line that is not UTF-8.
    NotUtf8,
    /// The pending line and data passed the size bound.
    TooLarge,
}

/// The framing state of one stream.
#[derive(Debug, Default)]
pub struct SseFramer {
    strip_bom: bool,
    max_event_bytes: usize,
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    /// A BOM may still be arriving (split across chunks): this many of its bytes are held.
    bom_pending: bool,
    bom_held: usize,
    event: String,
    has_event: bool,
    data: String,
    has_data: bool,
    saw_sse: bool,
}

impl SseFramer {
    /// A framer that drops a UTF-8 BOM at the start of the stream (also split across chunks) when
    /// `strip_bom`, and reports [`Frame::TooLarge`] once the pending line and data pass
    /// `max_event_bytes`.
    pub fn new(strip_bom: bool, max_event_bytes: usize) -> Self {
        SseFramer {
            strip_bom,
            max_event_bytes,
            ..SseFramer::default()
        }
    }

    /// Feeds bytes; calls `on` for each frame they complete, in order. `on` returns whether to
    /// go on: after `false` the rest of `bytes` is dropped (the caller has closed the stream).
    pub fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Frame<'_>) -> bool) {
        if !self.started && !bytes.is_empty() {
            self.started = true;
            self.bom_pending = self.strip_bom;
        }
        if self.bom_pending && !bytes.is_empty() {
            // The BOM's bytes are held until it is whole (dropped) or turns out not to be one.
            let rest = &BOM[self.bom_held..];
            let n = rest.len().min(bytes.len());
            if bytes[..n] == rest[..n] {
                self.bom_held += n;
                bytes = &bytes[n..];
                if self.bom_held < BOM.len() {
                    return;
                }
                self.bom_pending = false;
            } else {
                self.unhold_bom();
            }
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
            if !self.on_line(&mut on) {
                return;
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
        if self.line.len() + self.data.len() > self.max_event_bytes {
            on(Frame::TooLarge);
        }
    }

    /// Whether bytes came but not one line of them was SSE (a comment, or an `event`, `data`,
    /// `id` or `retry` field): the body is something else, e.g. JSON, not a stream that was cut.
    pub fn not_an_event_stream(&self) -> bool {
        self.started && !self.saw_sse
    }

    /// The body ended: handles a last line that lacked its line end, then hands back a last
    /// event that lacked its blank line as `Event { terminated: false, .. }`.
    pub fn finish(&mut self, mut on: impl FnMut(Frame<'_>) -> bool) {
        if self.bom_pending {
            self.unhold_bom();
        }
        if !self.line.is_empty() && !self.on_line(&mut on) {
            return;
        }
        if self.has_data {
            self.has_data = false;
            let name = self.has_event.then_some(self.event.as_str());
            self.has_event = false;
            on(Frame::Event {
                name,
                data: &self.data,
                terminated: false,
            });
            self.data.clear();
        }
    }

    /// The start of the stream is not a BOM after all: the bytes held are the first line's
    /// start (they hold no line end).
    fn unhold_bom(&mut self) {
        self.bom_pending = false;
        self.line.extend_from_slice(&BOM[..self.bom_held]);
    }

    /// Handles the whole line in `self.line` and clears it; returns what `on` returned (`true`
    /// for lines that make no frame).
    fn on_line(&mut self, on: &mut impl FnMut(Frame<'_>) -> bool) -> bool {
        let go_on = self.handle_line(on);
        self.line.clear();
        go_on
    }

    fn handle_line(&mut self, on: &mut impl FnMut(Frame<'_>) -> bool) -> bool {
        let line = self.line.as_slice();
        if line.is_empty() {
            let name = self.has_event.then_some(self.event.as_str());
            self.has_event = false;
            if !self.has_data {
                return true;
            }
            self.has_data = false;
            let go_on = on(Frame::Event {
                name,
                data: &self.data,
                terminated: true,
            });
            self.data.clear();
            return go_on;
        }
        if let Some(comment) = line.strip_prefix(b":") {
            self.saw_sse = true;
            return on(Frame::Comment(comment));
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return on(Frame::NotUtf8);
        };
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if matches!(field, "event" | "data" | "id" | "retry") {
            self.saw_sse = true;
        }
        match field {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
                self.has_event = true;
            }
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                } else {
                    self.has_data = true;
                }
                self.data.push_str(value);
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned [`Frame`], to compare.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Event(Option<String>, String, bool),
        Comment(Vec<u8>),
        NotUtf8,
        TooLarge,
    }

    fn own(frame: Frame<'_>) -> Got {
        match frame {
            Frame::Event {
                name,
                data,
                terminated,
            } => Got::Event(name.map(str::to_owned), data.to_owned(), terminated),
            Frame::Comment(c) => Got::Comment(c.to_vec()),
            Frame::NotUtf8 => Got::NotUtf8,
            Frame::TooLarge => Got::TooLarge,
        }
    }

    /// Feeds `input` cut at `cuts`, then finishes.
    fn frames_cut(framer: &mut SseFramer, input: &[u8], cuts: &[usize]) -> Vec<Got> {
        let mut got = Vec::new();
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            framer.feed(&input[start..c], |f| {
                got.push(own(f));
                true
            });
            start = c;
        }
        framer.finish(|f| {
            got.push(own(f));
            true
        });
        got
    }

    fn frames(input: &[u8]) -> Vec<Got> {
        frames_cut(&mut SseFramer::new(true, MAX_EVENT_BYTES), input, &[])
    }

    fn event(name: Option<&str>, data: &str) -> Got {
        Got::Event(name.map(str::to_owned), data.to_owned(), true)
    }

    const STREAM: &str = ": hi\n\nevent: a\ndata: {\"t\":\"é✓😀\"}\n\nid: 7\nretry: 5\ndata:x\ndata:  two\ndata\n\nevent: only\n\ndata: last";

    fn expected() -> Vec<Got> {
        vec![
            Got::Comment(b" hi".to_vec()),
            event(Some("a"), "{\"t\":\"é✓😀\"}"),
            event(None, "x\n two\n"),
            Got::Event(None, "last".to_owned(), false),
        ]
    }

    #[test]
    fn fields_comments_multi_line_data_and_an_unterminated_last_event() {
        assert_eq!(frames(STREAM.as_bytes()), expected());
    }

    #[test]
    fn every_split_point_and_every_line_end_give_the_same_frames() {
        for ending in ["\n", "\r\n", "\r"] {
            let input = STREAM.replace('\n', ending).into_bytes();
            assert_eq!(frames(&input), expected(), "{ending:?}");
            for cut in 0..=input.len() {
                let mut f = SseFramer::new(true, MAX_EVENT_BYTES);
                assert_eq!(
                    frames_cut(&mut f, &input, &[cut]),
                    expected(),
                    "{ending:?} cut at {cut}"
                );
            }
            // One byte at a time: splits every "\r\n" and every UTF-8 character.
            let cuts: Vec<usize> = (1..input.len()).collect();
            let mut f = SseFramer::new(true, MAX_EVENT_BYTES);
            assert_eq!(frames_cut(&mut f, &input, &cuts), expected(), "{ending:?}");
        }
    }

    #[test]
    fn an_event_is_handed_back_at_its_blank_line_not_later() {
        let mut f = SseFramer::new(false, MAX_EVENT_BYTES);
        let mut got = Vec::new();
        f.feed(b"data: 1\n", |fr| {
            got.push(own(fr));
            true
        });
        assert!(got.is_empty());
        f.feed(b"\n", |fr| {
            got.push(own(fr));
            true
        });
        assert_eq!(got, [event(None, "1")]);
        // Nothing left for the end of the body.
        f.finish(|fr| {
            got.push(own(fr));
            true
        });
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn a_bom_is_dropped_only_when_asked() {
        let input = b"\xEF\xBB\xBFdata: 1\n\n";
        assert_eq!(frames(input), [event(None, "1")]);
        let mut keep = SseFramer::new(false, MAX_EVENT_BYTES);
        // The BOM is part of the field name, so the line is an unknown field.
        assert_eq!(frames_cut(&mut keep, input, &[]), []);
        // Only at the very start.
        assert_eq!(
            frames(b"data: 1\n\n\xEF\xBB\xBFdata: 2\n\n"),
            [event(None, "1")]
        );
    }

    #[test]
    fn a_bom_split_across_chunks_is_dropped_too() {
        let input = b"\xEF\xBB\xBFdata: 1\n\n";
        for cuts in [&[1][..], &[2], &[1, 2], &[1, 1, 3]] {
            let mut f = SseFramer::new(true, MAX_EVENT_BYTES);
            assert_eq!(
                frames_cut(&mut f, input, cuts),
                [event(None, "1")],
                "{cuts:?}"
            );
        }
        // Only the start of a BOM: those bytes are data after all, split or not.
        for cuts in [&[][..], &[1]] {
            let mut f = SseFramer::new(true, MAX_EVENT_BYTES);
            assert_eq!(
                frames_cut(&mut f, b"\xEF\xBBdata: 1\n\n", cuts),
                [Got::NotUtf8]
            );
            let mut f = SseFramer::new(true, MAX_EVENT_BYTES);
            assert_eq!(frames_cut(&mut f, b"\xEF\xBB", cuts), [Got::NotUtf8]);
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_reported_but_a_comment_is_not_checked() {
        assert_eq!(frames(b"data: \xff\n\n"), [Got::NotUtf8]);
        assert_eq!(frames(b":\xff\n\n"), [Got::Comment(vec![0xff])]);
    }

    #[test]
    fn oversize_lines_and_events_are_reported() {
        // One long line without its end.
        let mut f = SseFramer::new(false, 16);
        assert_eq!(frames_cut(&mut f, b"data: 0123456789abcdef", &[10]), {
            vec![
                Got::TooLarge,
                Got::Event(None, "0123456789abcdef".into(), false),
            ]
        });
        // Short lines adding up: the pending data counts too.
        let mut f = SseFramer::new(false, 16);
        let got = frames_cut(&mut f, b"data: 0123456\ndata: 789abc\ndat", &[]);
        assert_eq!(got[0], Got::TooLarge);
        // At the bound exactly is fine, and a dispatched event no longer counts.
        let mut f = SseFramer::new(false, 16);
        let input = b"data: 0123456789\n\ndata: 0123456789\n\n";
        let cuts: Vec<usize> = (1..input.len()).collect();
        let got = frames_cut(&mut f, input, &cuts);
        assert_eq!(got, [event(None, "0123456789"), event(None, "0123456789")]);
    }

    #[test]
    fn a_body_without_one_sse_line_is_not_an_event_stream() {
        let framed = |input: &[u8]| {
            let mut f = SseFramer::new(true, MAX_EVENT_BYTES);
            let got = frames_cut(&mut f, input, &[]);
            (got, f.not_an_event_stream())
        };
        // JSON where a stream was expected (no line end at all, or several lines).
        assert_eq!(
            framed(br#"{"id":"x","choices":[{"message":"#),
            (vec![], true)
        );
        assert_eq!(framed(b"{\n  \"error\": {}\n}\n"), (vec![], true));
        assert_eq!(framed(b"<html>bad gateway</html>\n\n"), (vec![], true));
        // Nothing at all is not "something else": an empty body is a cut stream.
        assert_eq!(framed(b""), (vec![], false));
        // Any SSE line makes it a stream, even one that never completes an event.
        assert!(!framed(b": keep-alive\n").1);
        assert!(!framed(b"id: 1\n").1);
        assert!(!framed(b"retry: 10\n").1);
        assert!(!framed(b"event: ping\n").1);
        assert!(!framed(b"data: {\"a\":").1);
        assert!(!framed(STREAM.as_bytes()).1);
    }

    #[test]
    fn a_false_from_the_caller_stops_the_chunk() {
        let mut f = SseFramer::new(false, MAX_EVENT_BYTES);
        let mut got = Vec::new();
        f.feed(b"data: 1\n\ndata: 2\n\n", |fr| {
            got.push(own(fr));
            false
        });
        assert_eq!(got, [event(None, "1")]);
    }
}
