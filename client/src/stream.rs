//! [`ChatStream`]: server-sent events from the response body to typed chunks.
//!
//! The body goes through [`Body`] (the idle timer, and a blank line added at the end so that a
//! last event the server did not terminate is still dispatched), then eventsource-stream, then
//! JSON. The stream ends only on `data: [DONE]`; an end of body without it is
//! [`Error::StreamTruncated`], unless the stream is resumable ([`crate::resume`]): then the
//! break is repaired by a new connection whose body takes the old one's place.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use eventsource_stream::{EventStream, EventStreamError, Eventsource as _};
use std::future::Future as _;

use futures_util::{Stream, StreamExt as _};
use storycad_protocol::{ChatChunk, ChatResponse, ErrorBody, ResponseAccumulator};
use tokio::time::{Instant, Sleep};
use tracing::Instrument as _;

use crate::{
    error::{Error, Result, TimeoutPhase},
    response::ResponseMeta,
    resume::{Resume, Verdict},
};

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Why the body stopped giving bytes.
#[derive(Debug)]
pub(crate) enum BodyError {
    Transport(reqwest::Error),
    Idle,
    /// Bytes that are not UTF-8 (an event stream is UTF-8 throughout).
    NotUtf8,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Transport(e) => e.fmt(f),
            BodyError::Idle => f.write_str("idle timeout"),
            BodyError::NotUtf8 => f.write_str("the body is not UTF-8"),
        }
    }
}

/// The response body as bytes, failing with [`BodyError::Idle`] after `idle` without any, and
/// ending with an extra `"\n\n"` so the SSE parser dispatches an unterminated last event.
pub(crate) struct Body {
    inner: ByteStream,
    // Bytes read but not yet handed on; handed on one event at a time (see `next_piece`).
    pending: Bytes,
    idle: Duration,
    last_activity: Instant,
    // Armed lazily: each chunk only notes the time; the timer is moved when it fires early.
    timer: Pin<Box<Sleep>>,
    ended_cleanly: Arc<AtomicBool>,
    done: bool,
    // The start of a UTF-8 character the last piece cut off (at most 3 bytes).
    utf8_carry: Vec<u8>,
    // Bytes that are not UTF-8 came; what preceded them has been handed on.
    not_utf8: bool,
}

impl Body {
    pub(crate) fn new(
        inner: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
        idle: Duration,
    ) -> (Self, Arc<AtomicBool>) {
        let ended = Arc::new(AtomicBool::new(false));
        let now = Instant::now();
        let body = Body {
            inner: Box::pin(inner),
            pending: Bytes::new(),
            idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            ended_cleanly: ended.clone(),
            done: false,
            utf8_carry: Vec::new(),
            not_utf8: false,
        };
        (body, ended)
    }
}

impl Stream for Body {
    type Item = std::result::Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // eventsource-stream keeps every byte from the first one that is not UTF-8 to the end
        // of the body, copying them all again for each piece (quadratic time, unbounded
        // memory): such a body fails here, at once, once the bytes before it are handed on (so
        // where the reads were cut does not change what the caller sees).
        if self.not_utf8 {
            self.done = true;
            self.pending = Bytes::new();
            self.not_utf8 = false;
            return Poll::Ready(Some(Err(BodyError::NotUtf8)));
        }
        let item = self.as_mut().poll_piece(cx);
        if let Poll::Ready(Some(Ok(piece))) = &item {
            let this = &mut *self;
            if let Some(valid) = utf8_bad_at(&mut this.utf8_carry, piece) {
                this.not_utf8 = true;
                if valid > 0 {
                    return Poll::Ready(Some(Ok(piece.slice(..valid))));
                }
                return this.poll_next_unpin(cx);
            }
        }
        item
    }
}

impl Body {
    fn poll_piece(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Bytes, BodyError>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Some(Ok(next_piece(&mut self.pending))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(mut bytes))) => {
                self.last_activity = Instant::now();
                let piece = next_piece(&mut bytes);
                self.pending = bytes;
                Poll::Ready(Some(Ok(piece)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(BodyError::Transport(e))))
            }
            Poll::Ready(None) => {
                self.done = true;
                self.ended_cleanly.store(true, Ordering::Release);
                Poll::Ready(Some(Ok(Bytes::from_static(b"\n\n"))))
            }
            Poll::Pending => loop {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = self.last_activity + self.idle;
                if Instant::now() >= deadline {
                    self.done = true;
                    return Poll::Ready(Some(Err(BodyError::Idle)));
                }
                self.timer.as_mut().reset(deadline);
            },
        }
    }
}

/// Splits off the bytes up to and including the first line end (`\n`, `\r\n` or `\r`), or
/// all of them when there is none.
///
/// eventsource-stream copies the rest of its buffer for every line it parses, so handing it a
/// large read whole costs time quadratic in the read's size (so does one event of many lines);
/// one line at a time keeps that copy small. `split_to` itself copies nothing.
fn next_piece(bytes: &mut Bytes) -> Bytes {
    let end = match memchr::memchr2(b'\n', b'\r', bytes) {
        Some(i) if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') => i + 2,
        Some(i) => i + 1,
        None => bytes.len(),
    };
    bytes.split_to(end)
}

/// `None` when `piece`, following the `carry` bytes of a character the last piece cut off, is
/// UTF-8 so far (`carry` then keeps the start of a character `piece` cuts off); else how many
/// bytes of `piece` come before the first that is not.
fn utf8_bad_at(carry: &mut Vec<u8>, piece: &[u8]) -> Option<usize> {
    let mut start = 0;
    if let Some(&first) = carry.first() {
        let width = match first {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        start = (width - carry.len()).min(piece.len());
        carry.extend_from_slice(&piece[..start]);
        match std::str::from_utf8(carry) {
            Ok(_) => carry.clear(),
            Err(e) if e.error_len().is_none() => return None,
            Err(_) => return Some(0),
        }
    }
    match std::str::from_utf8(&piece[start..]) {
        Ok(_) => None,
        Err(e) if e.error_len().is_none() => {
            carry.extend_from_slice(&piece[start + e.valid_up_to()..]);
            None
        }
        Err(e) => Some(start + e.valid_up_to()),
    }
}

/// A streamed chat completion: `Stream<Item = Result<ChatChunk>>`.
///
/// Yields chunks until `data: [DONE]`, then ends. Ends with an error item instead when the
/// server sends an error event ([`Error::Stream`]), when the body ends or the connection is cut
/// before `[DONE]` ([`Error::StreamTruncated`]), or when nothing arrives for
/// [`Timeouts::stream_idle`](crate::Timeouts::stream_idle) ([`Error::Timeout`]). Dropping it
/// closes the connection, which tells the server to stop generating.
///
/// **Resuming.** When the server made the stream resumable (its answer carries
/// `x-storycad-stream-id`, kept in [`ResponseMeta::stream_id`]), a cut, an end before `[DONE]`
/// or the idle timeout does not end it: the stream asks for the events after the last one it
/// received (`GET .../chat/completions/streams/{id}` with `Last-Event-ID`) and goes on, skipping
/// events it already yielded, so the caller sees one uninterrupted answer. Each resume request
/// is one retry of the client's [`RetryPolicy`](crate::RetryPolicy) (its backoff first, its
/// budget; its maximum counts the attempts since the stream last received an event), and is
/// itself retried like any request. [`ResponseMeta::resumptions`] counts the resumes. When no
/// resume is allowed or the server refuses it (`404 stream_expired`), the stream ends with the
/// error of the break. A resumed stream that misses events (a gap in the ids, or an event
/// without one) ends with [`Error::StreamTruncated`] rather than yield a hole.
/// [`ClientBuilder::resume_streams`](crate::ClientBuilder::resume_streams) turns resuming off.
pub struct ChatStream {
    meta: ResponseMeta,
    events: EventStream<Body>,
    body_ended: Arc<AtomicBool>,
    idle: Duration,
    finished: bool,
    chunks: u64,
    span: tracing::Span,
    /// Present when the stream is resumable.
    resume: Option<Box<Resume>>,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("meta", &self.meta)
            .field("finished", &self.finished)
            .field("chunks", &self.chunks)
            .field("resumable", &self.resume.is_some())
            .finish()
    }
}

impl ChatStream {
    pub(crate) fn new(
        response: reqwest::Response,
        meta: ResponseMeta,
        idle: Duration,
        span: tracing::Span,
        resume: Option<Resume>,
    ) -> Self {
        let mut stream = Self::from_bytes(response.bytes_stream(), meta, idle, span);
        stream.resume = resume.map(Box::new);
        stream
    }

    pub(crate) fn from_bytes(
        bytes: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
        meta: ResponseMeta,
        idle: Duration,
        span: tracing::Span,
    ) -> Self {
        let (body, body_ended) = Body::new(bytes, idle);
        ChatStream {
            meta,
            events: body.eventsource(),
            body_ended,
            idle,
            finished: false,
            chunks: 0,
            span,
            resume: None,
        }
    }

    /// The answer's headers, and [`resumptions`](ResponseMeta::resumptions) so far.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// Reads `bytes` from now on, in place of the body read so far (which is dropped, closing
    /// its connection).
    fn attach(&mut self, bytes: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static) {
        let (body, ended) = Body::new(bytes, self.idle);
        self.events = body.eventsource();
        self.body_ended = ended;
    }

    /// After a break: starts a resume when the stream is resumable and the retry policy allows
    /// one; else gives `broken` back.
    fn start_resume(&mut self, broken: Error) -> std::result::Result<(), Error> {
        let Some(resume) = self.resume.as_deref_mut() else {
            return Err(broken);
        };
        let entered = self.span.enter();
        tracing::debug!(chunks = self.chunks, error = %broken, "the stream broke");
        if !resume.cursor.resumable() {
            tracing::debug!("not resuming the stream: an event came without an id");
            return Err(broken);
        }
        let planned = resume.client.resume_stream(
            &resume.url,
            &resume.extra,
            resume.cursor.last(),
            resume.retries,
        );
        match planned {
            Ok(request) => {
                resume.pending = Some((Box::pin(request.instrument(self.span.clone())), broken));
                drop(entered);
                // Close the broken connection now: a stalled one would stay open otherwise.
                self.attach(futures_util::stream::empty());
                Ok(())
            }
            Err(why) => {
                tracing::debug!("not resuming the stream: {why}");
                Err(broken)
            }
        }
    }

    /// Drives a resume under way: `Ready(Ok)` when there is none (any more), `Ready(Err)` with
    /// the error of the break when it failed.
    fn poll_resume(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Error>> {
        let Some(resume) = self.resume.as_deref_mut() else {
            return Poll::Ready(Ok(()));
        };
        let Some((mut request, broken)) = resume.pending.take() else {
            return Poll::Ready(Ok(()));
        };
        match request.as_mut().poll(cx) {
            Poll::Pending => {
                resume.pending = Some((request, broken));
                Poll::Pending
            }
            Poll::Ready(Ok((response, retries))) => {
                resume.retries = retries;
                resume.cursor.reconnected();
                let last_event_id = resume.cursor.last();
                self.meta.resumptions += 1;
                let resumptions = self.meta.resumptions;
                self.span
                    .in_scope(|| tracing::debug!(last_event_id, resumptions, "the stream resumed"));
                self.attach(response.bytes_stream());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.span
                    .in_scope(|| tracing::debug!(error = %e, "the stream could not be resumed"));
                Poll::Ready(Err(broken))
            }
        }
    }

    /// Reads the whole stream and folds it into one [`ChatResponse`] (see
    /// [`ResponseAccumulator`]).
    pub async fn collect_response(mut self) -> Result<ChatResponse> {
        let mut acc = ResponseAccumulator::new();
        while let Some(chunk) = self.next().await {
            acc.push(&chunk?);
        }
        Ok(acc.finish())
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<ChatChunk>>> {
        self.finished = true;
        let chunks = self.chunks;
        self.span
            .in_scope(|| tracing::debug!(chunks, error = %e, "stream failed"));
        Poll::Ready(Some(Err(e)))
    }

    fn truncated(&mut self, source: Option<crate::error::BoxError>) -> Error {
        Error::StreamTruncated {
            request_id: self.meta.request_id.clone(),
            source,
        }
    }

    /// The error a stream carried: its `ErrorBody` when it is one, else its text as the message.
    fn error_event(&self, body: std::result::Result<ErrorBody, String>) -> Error {
        let (code, kind, message) = match body {
            Ok(body) => (body.error.code, body.error.kind, body.error.message),
            Err(text) => (None, None, text),
        };
        Error::Stream {
            code,
            kind,
            message,
            request_id: self.meta.request_id.clone(),
        }
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        'read: loop {
            match self.poll_resume(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return self.fail(e),
                Poll::Ready(Ok(())) => {}
            }
            // Each path returns or goes round again, except a break of the connection.
            let broken = 'event: {
                let event = match self.events.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(event))) => event,
                    Poll::Ready(Some(Err(EventStreamError::Transport(BodyError::Idle)))) => {
                        break 'event Error::Timeout {
                            phase: TimeoutPhase::StreamIdle,
                            after: self.idle,
                        };
                    }
                    Poll::Ready(Some(Err(EventStreamError::Transport(BodyError::Transport(
                        e,
                    ))))) => break 'event self.truncated(Some(Box::new(e))),
                    Poll::Ready(Some(Err(EventStreamError::Transport(BodyError::NotUtf8)))) => {
                        let e = Error::InvalidResponse {
                            status: self.meta.status,
                            body: String::new(),
                            reason: "not a valid event stream: not UTF-8".to_owned(),
                            request_id: self.meta.request_id.clone(),
                        };
                        return self.fail(e);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        let e = Error::InvalidResponse {
                            status: self.meta.status,
                            body: String::new(),
                            reason: format!("not a valid event stream: {e}"),
                            request_id: self.meta.request_id.clone(),
                        };
                        return self.fail(e);
                    }
                    Poll::Ready(None) => break 'event self.truncated(None),
                };
                let data = event.data.as_str();
                // Keep-alives: an empty `data:` line, or a named event other than `error` (`ping`).
                if data.trim().is_empty() || !(event.event == "message" || event.event == "error") {
                    continue 'read;
                }
                let verdict = match self.resume.as_deref_mut() {
                    None => None,
                    Some(resume) => match resume.cursor.judge(&event.id) {
                        Verdict::Duplicate => continue 'read,
                        Verdict::Gap(gap) => {
                            let e = self.truncated(Some(Box::new(gap)));
                            return self.fail(e);
                        }
                        v => Some(v),
                    },
                };
                if data == "[DONE]" {
                    self.finished = true;
                    let chunks = self.chunks;
                    self.span
                        .in_scope(|| tracing::debug!(chunks, "stream finished"));
                    return Poll::Ready(None);
                }
                if event.event == "error" {
                    let body = serde_json::from_str::<ErrorBody>(data).map_err(|_| data.to_owned());
                    let e = self.error_event(body);
                    return self.fail(e);
                }
                match serde_json::from_str::<ChatChunk>(data) {
                    Ok(mut chunk) => {
                        if let Some(err) = chunk.extra.remove("error") {
                            let body = serde_json::from_value::<ErrorBody>(
                                serde_json::json!({ "error": err }),
                            )
                            .map_err(|_| err.to_string());
                            let e = self.error_event(body);
                            return self.fail(e);
                        }
                        if let (Some(resume), Some(v)) = (self.resume.as_deref_mut(), verdict) {
                            if resume.cursor.take(v) {
                                resume.retries = 0;
                            }
                        }
                        self.chunks += 1;
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    // The blank line added at the end of the body dispatched a cut-off event.
                    Err(_) if self.body_ended.load(Ordering::Acquire) => {
                        break 'event self.truncated(None);
                    }
                    Err(e) => {
                        let e = Error::InvalidResponse {
                            status: self.meta.status,
                            body: data.to_owned(),
                            reason: format!("a stream event is not a chat chunk: {e}"),
                            request_id: self.meta.request_id.clone(),
                        };
                        return self.fail(e);
                    }
                }
            };
            if let Err(e) = self.start_resume(broken) {
                return self.fail(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_at_line_ends() {
        let mut b = Bytes::from_static(b"data: a\n\n: c\r\n\r\ndata: b\rdata: c\n\ndata: partial");
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(next_piece(&mut b));
        }
        assert_eq!(
            out,
            [
                &b"data: a\n"[..],
                b"\n",
                b": c\r\n",
                b"\r\n",
                b"data: b\r",
                b"data: c\n",
                b"\n",
                b"data: partial"
            ]
        );
    }

    #[test]
    fn utf8_is_checked_across_pieces() {
        let text = "é✓😀 data".as_bytes();
        for cut in 0..=text.len() {
            let mut carry = Vec::new();
            assert_eq!(utf8_bad_at(&mut carry, &text[..cut]), None, "cut at {cut}");
            assert_eq!(utf8_bad_at(&mut carry, &text[cut..]), None, "cut at {cut}");
            assert!(carry.is_empty(), "cut at {cut}");
        }
        // One byte at a time.
        let mut carry = Vec::new();
        assert!(text
            .iter()
            .all(|b| utf8_bad_at(&mut carry, &[*b]).is_none()));
        // Not UTF-8: a stray continuation byte, a cut character followed by ASCII, 0xFF; whole,
        // the bytes before the bad one are counted.
        for (bad, at) in [
            (&[b'a', 0x80][..], 1),
            (&[0xE2, 0x82, b'\n'], 0),
            (&[0xFF], 0),
        ] {
            let mut carry = Vec::new();
            let ok = bad.iter().all(|b| utf8_bad_at(&mut carry, &[*b]).is_none());
            assert!(!ok, "{bad:?}");
            let mut carry = Vec::new();
            assert_eq!(utf8_bad_at(&mut carry, bad), Some(at), "{bad:?}");
        }
        // After a carried character: counted from the piece's start.
        let mut carry = Vec::new();
        assert_eq!(utf8_bad_at(&mut carry, &[b'x', 0xC3]), None);
        assert_eq!(utf8_bad_at(&mut carry, &[0xA9, b'y', 0xFF]), Some(2));
    }
}
