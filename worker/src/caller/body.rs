//! A stream's response body, fed by the request's task (which the runtime keeps running with
//! `Context::wait_until`), and the signal that the caller went away.
//!
//! The body pulls from a small queue ([`BUFFER_BYTES`]); the task pushes what the relay made
//! and, before reading more from the provider, waits for [`Outlet::room`]: so the provider is
//! read only as fast as the caller reads, and a caller that stops reading makes the Worker hold
//! at most that much. The caller's departure is a [`Hangup`]: raised by the runtime's abort
//! signal for the request, or by the runtime dropping the body (under workerd a caller that
//! disconnects mid-stream gets the body cancelled; before the answer began, only the abort
//! signal can say so, and only on Cloudflare).
//!
//! Plain Rust with no runtime types, so its behaviour is tested on the host.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::Stream;

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

#[derive(Default)]
struct Shared {
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// The producer's end.
pub struct Outlet {
    shared: Rc<RefCell<Shared>>,
    hangup: Hangup,
}

/// The response body's end.
pub struct Body {
    shared: Rc<RefCell<Shared>>,
    hangup: Hangup,
}

/// A connected pair; dropping the body raises `hangup`.
pub fn channel(hangup: &Hangup) -> (Outlet, Body) {
    let shared = Rc::new(RefCell::new(Shared::default()));
    (
        Outlet {
            shared: Rc::clone(&shared),
            hangup: hangup.clone(),
        },
        Body {
            shared,
            hangup: hangup.clone(),
        },
    )
}

impl Outlet {
    /// Queues bytes for the caller; `false` when the caller is gone.
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        if self.hangup.is_raised() {
            return false;
        }
        if bytes.is_empty() {
            return true;
        }
        let reader = {
            let mut s = self.shared.borrow_mut();
            s.queued += bytes.len();
            s.queue.push_back(bytes);
            s.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
        true
    }

    /// Resolves `true` when the queue has room (less than [`BUFFER_BYTES`] queued), `false` when
    /// the caller is gone.
    pub fn room(&self) -> Room<'_> {
        Room(self)
    }

    /// Bytes queued and not yet taken by the caller.
    pub fn queued(&self) -> usize {
        self.shared.borrow().queued
    }
}

/// [`Outlet::room`]'s future.
pub struct Room<'a>(&'a Outlet);

impl Future for Room<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let outlet = self.0;
        if outlet.hangup.is_raised() {
            return Poll::Ready(false);
        }
        let mut s = outlet.shared.borrow_mut();
        if s.queued < BUFFER_BYTES {
            return Poll::Ready(true);
        }
        s.writer = Some(cx.waker().clone());
        drop(s);
        // The hangup wakes this too.
        let _ = Pin::new(&mut outlet.hangup.wait()).poll(cx);
        Poll::Pending
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        let reader = {
            let mut s = self.shared.borrow_mut();
            s.closed = true;
            s.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }
}

impl Stream for Body {
    type Item = Vec<u8>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        let mut s = self.shared.borrow_mut();
        if let Some(bytes) = s.queue.pop_front() {
            s.queued -= bytes.len();
            let writer = if s.queued < BUFFER_BYTES {
                s.writer.take()
            } else {
                None
            };
            drop(s);
            if let Some(w) = writer {
                w.wake();
            }
            return Poll::Ready(Some(bytes));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        {
            let mut s = self.shared.borrow_mut();
            s.queue.clear();
            s.queued = 0;
        }
        // The runtime dropped the body before its end: the caller is gone.
        if !self.shared.borrow().closed {
            self.hangup.raise();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use futures_util::StreamExt;

    use super::*;

    fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn next(body: &mut Body) -> Poll<Option<Vec<u8>>> {
        body.poll_next_unpin(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn the_producer_waits_while_the_caller_does_not_read() {
        let hangup = Hangup::new();
        let (outlet, mut body) = channel(&hangup);
        let chunk = vec![b'x'; 16 * 1024];
        let mut sent = 0;
        // The producer sends while there is room, as the pump does.
        while poll(&mut outlet.room()) == Poll::Ready(true) {
            assert!(outlet.send(chunk.clone()));
            sent += chunk.len();
            assert!(sent <= 10 * 1024 * 1024, "no backpressure");
        }
        assert_eq!(sent, BUFFER_BYTES);
        assert_eq!(outlet.queued(), BUFFER_BYTES);
        // The caller reads one piece: room again.
        assert_eq!(next(&mut body), Poll::Ready(Some(chunk.clone())));
        assert_eq!(poll(&mut outlet.room()), Poll::Ready(true));
        // The producer ends: the caller gets the rest, then the end.
        drop(outlet);
        let mut got = 0;
        while let Poll::Ready(Some(b)) = next(&mut body) {
            got += b.len();
        }
        assert_eq!(got, BUFFER_BYTES - chunk.len());
        assert_eq!(next(&mut body), Poll::Ready(None));
        assert!(!hangup.is_raised(), "a body read to its end is no hang-up");
        drop(body);
        assert!(!hangup.is_raised());
    }

    #[test]
    fn a_body_dropped_before_its_end_is_a_hang_up() {
        let hangup = Hangup::new();
        let (outlet, body) = channel(&hangup);
        let mut wait = hangup.wait();
        assert_eq!(poll(&mut wait), Poll::Pending);
        for _ in 0..8 {
            outlet.send(vec![0; 16 * 1024]);
        }
        let mut room = outlet.room();
        assert_eq!(poll(&mut room), Poll::Pending);
        drop(body);
        assert!(hangup.is_raised());
        assert_eq!(poll(&mut wait), Poll::Ready(()));
        assert_eq!(poll(&mut room), Poll::Ready(false));
        assert!(!outlet.send(vec![1]));
        assert_eq!(outlet.queued(), 0, "what was queued is let go");
    }

    #[test]
    fn a_raised_hangup_stops_the_producer() {
        let hangup = Hangup::new();
        let (outlet, mut body) = channel(&hangup);
        assert!(outlet.send(b"data: 1\n\n".to_vec()));
        hangup.raise();
        assert!(!outlet.send(b"data: 2\n\n".to_vec()));
        assert_eq!(poll(&mut outlet.room()), Poll::Ready(false));
        // What was queued before may still go out; nothing after.
        assert_eq!(next(&mut body), Poll::Ready(Some(b"data: 1\n\n".to_vec())));
    }
}
