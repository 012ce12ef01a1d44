//! A response body fed by a task the runtime keeps running (`Context::wait_until`), so the
//! upstream side of a stream (relay, usage, log line) finishes even when the caller goes away.
//!
//! Under workerd a caller that disconnects mid-stream stops the body's pulls and the body
//! stream is never dropped, so work driven by the body (or by its `Drop`) silently stops. Here
//! the producer is the `wait_until` task: it pushes chunks to this queue and learns, from
//! `send`, when the body has been dropped.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::Stream;

#[derive(Default)]
struct Shared {
    queue: VecDeque<Vec<u8>>,
    closed: bool,
    body_dropped: bool,
    waker: Option<Waker>,
}

/// The producer's end.
pub struct Outlet(Rc<RefCell<Shared>>);

/// The response body's end.
pub struct Body(Rc<RefCell<Shared>>);

/// A connected pair.
pub fn channel() -> (Outlet, Body) {
    let shared = Rc::new(RefCell::new(Shared::default()));
    (Outlet(Rc::clone(&shared)), Body(shared))
}

impl Outlet {
    /// Queues bytes for the caller; `false` when the body is gone (the caller left).
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        let mut s = self.0.borrow_mut();
        if s.body_dropped {
            return false;
        }
        s.queue.push_back(bytes);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        true
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        let mut s = self.0.borrow_mut();
        s.closed = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

impl Stream for Body {
    type Item = worker::Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.0.borrow_mut();
        if let Some(bytes) = s.queue.pop_front() {
            return Poll::Ready(Some(Ok(bytes)));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let mut s = self.0.borrow_mut();
        s.body_dropped = true;
        s.queue.clear();
    }
}
