//! A stream's way to the caller, as plain Rust (tested on the host): what the pump has made and
//! not yet written ([`Outbox`]), and the signal that the caller went away ([`Hangup`]).
//!
//! The runtime side (`runtime::stream`) writes to the native stream that is the response's body:
//! the bytes leave through the runtime's own pipe, with no JavaScript stream between the Worker
//! and the caller. The [`Outbox`] decides when to write: at once when the last write was at least
//! the coalescing window ago, else together with what comes next, at most a window later (a
//! burst of events costs one write per window, not one per event). It also counts what the
//! runtime has not yet taken: the provider is read only while less than [`BUFFER_BYTES`] wait,
//! so a caller that stops reading makes the Worker hold at most that much. The caller's
//! departure is a [`Hangup`]: raised by the runtime's abort signal for the request, or by a
//! write the runtime refused (the caller's side of the pipe is gone).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Bytes the queue holds before the producer waits for the caller (one read of the provider
/// may go past it).
pub const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct HangupState {
    gone: bool,
    waiters: Vec<Waker>,
}

/// Whether the caller went away; shared by everything that waits on the caller.
#[derive(Clone, Default)]
pub struct Hangup(Rc<RefCell<HangupState>>);

impl Hangup {
    /// A caller still here.
    pub fn new() -> Hangup {
        Hangup::default()
    }

    /// The caller went away: wakes everything waiting on [`Hangup::wait`].
    pub fn raise(&self) {
        let waiters = {
            let mut s = self.0.borrow_mut();
            s.gone = true;
            std::mem::take(&mut s.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// Whether the caller went away.
    pub fn is_raised(&self) -> bool {
        self.0.borrow().gone
    }

    /// Resolves when the caller goes away.
    pub fn wait(&self) -> HangupWait {
        HangupWait(self.clone())
    }
}

/// [`Hangup::wait`]'s future.
pub struct HangupWait(Hangup);

impl Future for HangupWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0 .0.borrow_mut();
        if s.gone {
            return Poll::Ready(());
        }
        if !s.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            s.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// What the pump made for the caller: held for the coalescing window, then written; and the
/// writes the runtime has not yet taken, oldest first.
#[derive(Debug)]
pub struct Outbox {
    window_ms: u64,
    pending: Vec<u8>,
    last_write: Option<u64>,
    in_flight: VecDeque<usize>,
    in_flight_bytes: usize,
}

impl Outbox {
    /// An empty outbox whose writes are at least `window_ms` apart (0: every piece at once).
    pub fn new(window_ms: u64) -> Outbox {
        Outbox {
            window_ms,
            pending: Vec::new(),
            last_write: None,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    /// Adds `bytes` at `now_ms`; returns what to write now: everything held, when the last
    /// write was a window ago or more (or there was none), or when the outbox is full (only
    /// written bytes can be taken, so holding them then would wait for nothing).
    pub fn push(&mut self, bytes: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        self.pending.extend_from_slice(bytes);
        if self.pending.is_empty() {
            return None;
        }
        match self.last_write {
            Some(last) if now_ms.saturating_sub(last) < self.window_ms && self.has_room() => None,
            _ => self.take(now_ms),
        }
    }

    /// Everything held, to write now (the window ended, or the stream did).
    pub fn take(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            return None;
        }
        let out = std::mem::take(&mut self.pending);
        self.last_write = Some(now_ms);
        self.in_flight.push_back(out.len());
        self.in_flight_bytes += out.len();
        Some(out)
    }

    /// When bytes are held: how long from `now_ms` until they are due.
    pub fn due_in(&self, now_ms: u64) -> Option<u64> {
        if self.pending.is_empty() {
            return None;
        }
        let last = self.last_write.unwrap_or(now_ms);
        Some((last + self.window_ms).saturating_sub(now_ms))
    }

    /// The runtime took the oldest `n` writes.
    pub fn written(&mut self, n: usize) {
        for _ in 0..n {
            let Some(len) = self.in_flight.pop_front() else {
                break;
            };
            self.in_flight_bytes -= len;
        }
    }

    /// Bytes made for the caller that the runtime has not taken yet (held or written).
    pub fn waiting(&self) -> usize {
        self.in_flight_bytes + self.pending.len()
    }

    /// Whether the provider may be read: less than [`BUFFER_BYTES`] wait.
    pub fn has_room(&self) -> bool {
        self.waiting() < BUFFER_BYTES
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn the_first_piece_goes_at_once_and_a_burst_waits_for_the_window() {
        let mut out = Outbox::new(10);
        assert_eq!(out.push(b"data: 1\n\n", 100), Some(b"data: 1\n\n".to_vec()));
        assert_eq!(out.due_in(100), None, "nothing held");
        // Within the window: held, due when it ends.
        assert_eq!(out.push(b"data: 2\n\n", 103), None);
        assert_eq!(out.push(b"data: 3\n\n", 105), None);
        assert_eq!(out.due_in(105), Some(5));
        // The next piece after the window takes everything held with it, in order.
        assert_eq!(
            out.push(b"data: 4\n\n", 110),
            Some(b"data: 2\n\ndata: 3\n\ndata: 4\n\n".to_vec())
        );
        // Or the window's timer does.
        assert_eq!(out.push(b"data: 5\n\n", 111), None);
        assert_eq!(out.due_in(125), Some(0), "overdue is due now");
        assert_eq!(out.take(125), Some(b"data: 5\n\n".to_vec()));
        assert_eq!(out.take(126), None, "nothing twice");
    }

    #[test]
    fn spaced_pieces_each_go_at_once() {
        let mut out = Outbox::new(10);
        for (i, at) in [0u64, 20, 40, 60].into_iter().enumerate() {
            let piece = format!("data: {i}\n\n");
            assert_eq!(out.push(piece.as_bytes(), at), Some(piece.into_bytes()));
        }
        let mut none = Outbox::new(0);
        assert!(none.push(b"a", 5).is_some() && none.push(b"b", 5).is_some());
        assert_eq!(none.push(b"", 5), None, "nothing to write");
    }

    #[test]
    fn the_provider_is_read_only_while_the_caller_takes_what_was_written() {
        let mut out = Outbox::new(0);
        let chunk = vec![b'x'; 16 * 1024];
        let mut writes = 0;
        let mut made = 0;
        while out.has_room() {
            assert!(out.push(&chunk, 0).is_some());
            writes += 1;
            made += chunk.len();
            assert!(made <= 10 * 1024 * 1024, "no backpressure");
        }
        assert_eq!(out.waiting(), BUFFER_BYTES);
        // The runtime takes one write: room again; then all of them, and more than there were.
        out.written(1);
        assert!(out.has_room());
        out.written(writes + 5);
        assert_eq!(out.waiting(), 0);
        // Held bytes count too, and a full window is written at once: the caller can only take
        // what was written.
        let mut held = Outbox::new(1000);
        held.push(b"first", 0);
        assert!(held.push(&[0; 1000], 1).is_none());
        assert_eq!(held.waiting(), 1005);
        assert_eq!(
            held.push(&vec![0; BUFFER_BYTES], 2).map(|b| b.len()),
            Some(BUFFER_BYTES + 1000)
        );
        assert!(!held.has_room());
        assert_eq!(held.due_in(2), None, "nothing held");
        held.written(2);
        assert!(held.has_room());
    }

    #[test]
    fn a_raised_hangup_wakes_its_waiters() {
        let hangup = Hangup::new();
        let mut wait = hangup.wait();
        assert_eq!(poll(&mut wait), Poll::Pending);
        assert!(!hangup.is_raised());
        hangup.clone().raise();
        assert!(hangup.is_raised());
        assert_eq!(poll(&mut wait), Poll::Ready(()));
        assert_eq!(poll(&mut hangup.wait()), Poll::Ready(()));
    }
}
