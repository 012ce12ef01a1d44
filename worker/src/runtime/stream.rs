//! A stream's bytes between the provider and the caller, with as little JavaScript per piece as
//! the runtime allows.
//!
//! The provider's body is read with its own reader and the answer is written to the runtime's
//! native `IdentityTransformStream`, whose readable side is the response body: the runtime moves
//! the bytes to the caller itself, as it does for a plain passthrough. No JavaScript stream sits
//! between (a `ReadableStream` made from Rust costs a pull, a promise and an enqueue per piece,
//! and the runtime's read of it more).
//!
//! Each read or write is one call into a small JavaScript helper (below) that reports the
//! outcome to one callback per isolate, keyed by the pipe's number: no closure is made per piece
//! (`JsFuture` makes two), and an outcome that arrives after its pipe was dropped is ignored
//! rather than calling a freed closure.
//!
//! A [`Pipe`] is driven from that callback: each piece read, write taken and timer fired goes
//! straight to its [`Driver`] (the stream's pump), which relays the piece, writes and starts the
//! next read there and then. No task is woken and no future polled per piece; an async task only
//! waits for the stream's end or the caller's departure.
//!
//! A whole body whose length is known to be within its cap (the caller's request with its
//! `content-length`, an uncompressed answer with one) is read by the runtime in one call
//! ([`BodyReader::whole`]): one outcome instead of a read per piece and one for the end.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::js_sys::{Array, Function, Uint8Array};
use worker::web_sys::ReadableStream;

use super::wake::{clear_timer, timer_ms};
use crate::caller::body::Hangup;
use crate::mix_map::{mix_map, MixMap};

#[wasm_bindgen(inline_js = r#"
export function storycadPipe() {
  const { readable, writable } = new IdentityTransformStream();
  return [readable, writable.getWriter()];
}
export function storycadRead(reader, id, report) {
  reader.read().then(
    (r) => report(id, r.done ? 1 : 0, r.value),
    (e) => report(id, 2, e),
  );
}
export function storycadWrite(writer, id, bytes, report) {
  writer.write(bytes.slice()).then(
    () => report(id, 3, undefined),
    (e) => report(id, 4, e),
  );
}
export function storycadWatch(writer, id, report) {
  writer.closed.then(undefined, (e) => report(id, 4, e));
}
export function storycadClose(writer) {
  writer.close().catch(() => {});
}
export function storycadCancel(reader) {
  reader.cancel().catch(() => {});
}
export function storycadWhole(message, id, report) {
  let all;
  try {
    all = message.arrayBuffer();
  } catch (e) {
    all = Promise.reject(e);
  }
  all.then(
    (b) => report(id, 5, new Uint8Array(b)),
    (e) => report(id, 2, e),
  );
}
export function storycadTimer(id, kind, ms, report) {
  return setTimeout(() => report(id, kind, undefined), ms);
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadPipe, catch)]
    fn js_pipe() -> Result<Array, JsValue>;
    #[wasm_bindgen(js_name = storycadRead)]
    fn js_read(reader: &JsValue, id: u32, report: &Function);
    #[wasm_bindgen(js_name = storycadWrite)]
    fn js_write(writer: &JsValue, id: u32, bytes: &[u8], report: &Function);
    #[wasm_bindgen(js_name = storycadWatch)]
    fn js_watch(writer: &JsValue, id: u32, report: &Function);
    #[wasm_bindgen(js_name = storycadClose)]
    fn js_close(writer: &JsValue);
    #[wasm_bindgen(js_name = storycadCancel)]
    fn js_cancel(reader: &JsValue);
    #[wasm_bindgen(js_name = storycadWhole)]
    fn js_whole(message: &JsValue, id: u32, report: &Function);
    #[wasm_bindgen(js_name = storycadTimer)]
    fn js_timer(id: u32, kind: u32, ms: u32, report: &Function) -> JsValue;
}

/// What the helper reports (its second argument).
const READ_VALUE: u32 = 0;
const READ_DONE: u32 = 1;
const READ_FAILED: u32 = 2;
const WRITTEN: u32 = 3;
const WRITE_FAILED: u32 = 4;
/// A whole body read at once ([`BodyReader::whole`]): its bytes, after which it ends.
const READ_WHOLE: u32 = 5;
/// A [`Timer`] fired: `TIMER + timer as u32`.
const TIMER: u32 = 8;

/// One piece read from the provider.
pub enum Piece {
    Bytes(Vec<u8>),
    /// The body ended.
    End,
    /// The body broke (a network error, or not bytes).
    Broken,
}

/// A pipe's timers (one of each at most).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The coalescing window ended.
    Flush = 0,
    /// The provider's idle limit.
    Idle = 1,
    /// The caller's stall limit.
    Stall = 2,
}

const TIMERS: [Timer; 3] = [Timer::Flush, Timer::Idle, Timer::Stall];

/// What happened to a driven [`Pipe`].
pub enum PipeEvent {
    /// The read under way ended with this piece.
    Read(Piece),
    /// The runtime took a write (count them with [`Pipe::taken`]).
    Written,
    /// A timer armed with [`Pipe::arm`] fired.
    Timer(Timer),
}

/// Who handles a driven pipe's events, in the helper's callback. A refused write is not an
/// event: it raises the pipe's hangup.
pub trait Driver {
    fn event(&self, event: PipeEvent);
}

/// Where the helper's reports for one pipe land.
struct Mailbox {
    read: Option<Piece>,
    /// A read was started and its outcome has not come.
    reading: bool,
    written: usize,
    hangup: Hangup,
    /// The task waiting on a read (an undriven reader).
    read_waker: Option<Waker>,
    /// Who gets the events, for a driven pipe.
    driver: Option<Weak<dyn Driver>>,
    /// The armed timers, by [`Timer`].
    timers: [Option<JsValue>; 3],
}

thread_local! {
    static PIPES: RefCell<MixMap<u32, Rc<RefCell<Mailbox>>>> = RefCell::new(mix_map());
    static NEXT: Cell<u32> = const { Cell::new(1) };
    /// The one callback of the isolate: `report(id, kind, value)`. Never dropped.
    static REPORT: Function = {
        let report = Closure::<dyn FnMut(u32, u32, JsValue)>::new(deliver);
        let f: Function = report.as_ref().unchecked_ref::<Function>().clone();
        report.forget();
        f
    };
}

fn deliver(id: u32, kind: u32, value: JsValue) {
    let Some(mailbox) = PIPES.with(|p| p.borrow().get(&id).cloned()) else {
        return;
    };
    let mut m = mailbox.borrow_mut();
    let event = match kind {
        READ_VALUE | READ_DONE | READ_FAILED | READ_WHOLE => {
            m.reading = false;
            PipeEvent::Read(match kind {
                READ_VALUE | READ_WHOLE => match value.dyn_into::<Uint8Array>() {
                    Ok(bytes) => Piece::Bytes(bytes.to_vec()),
                    Err(_) => Piece::Broken,
                },
                READ_DONE => Piece::End,
                _ => Piece::Broken,
            })
        }
        WRITTEN => {
            m.written += 1;
            PipeEvent::Written
        }
        WRITE_FAILED => {
            // A write refused or the body errored: the caller's side is gone.
            let hangup = m.hangup.clone();
            drop(m);
            hangup.raise();
            return;
        }
        k if k >= TIMER => match TIMERS.get((k - TIMER) as usize) {
            Some(&timer) => {
                m.timers[timer as usize] = None;
                PipeEvent::Timer(timer)
            }
            None => return,
        },
        _ => return,
    };
    if let Some(driver) = m.driver.as_ref().and_then(Weak::upgrade) {
        drop(m);
        driver.event(event);
        return;
    }
    if let PipeEvent::Read(piece) = event {
        m.read = Some(piece);
        let waker = m.read_waker.take();
        drop(m);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A body read piece by piece: the provider's answer, the caller's request, a JWKS.
pub struct BodyReader {
    id: u32,
    mailbox: Rc<RefCell<Mailbox>>,
    /// The stream's reader; `None` for a body read whole.
    reader: Option<JsValue>,
}

impl BodyReader {
    /// A reader of `body` (which it locks). `hangup`: raised when a write of a [`Pipe`] built
    /// on this reader is refused.
    pub fn new(body: &ReadableStream, hangup: Option<&Hangup>) -> BodyReader {
        let mut reader = BodyReader::on(hangup);
        reader.reader = Some(body.get_reader().into());
        reader
    }

    /// The body of `message` (a `Request` or `Response`) read whole by the runtime, in one call
    /// (its `arrayBuffer()`): one piece (all of it), then the end. For a body whose length is
    /// known to be within what the caller will take.
    pub fn whole(message: &JsValue) -> BodyReader {
        let reader = BodyReader::on(None);
        reader.mailbox.borrow_mut().reading = true;
        REPORT.with(|report| js_whole(message, reader.id, report));
        reader
    }

    fn on(hangup: Option<&Hangup>) -> BodyReader {
        let id = NEXT.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1).max(1));
            id
        });
        let mailbox = Rc::new(RefCell::new(Mailbox {
            read: None,
            reading: false,
            written: 0,
            hangup: hangup.cloned().unwrap_or_default(),
            read_waker: None,
            driver: None,
            timers: [None, None, None],
        }));
        PIPES.with(|p| p.borrow_mut().insert(id, Rc::clone(&mailbox)));
        BodyReader {
            id,
            mailbox,
            reader: None,
        }
    }

    /// Whether a read is under way: started, and its piece not yet taken.
    pub fn is_reading(&self) -> bool {
        let m = self.mailbox.borrow();
        m.reading || m.read.is_some()
    }

    /// Starts the next read unless one is under way (or its piece is still to be taken).
    fn start_read(&self) {
        let mut m = self.mailbox.borrow_mut();
        if m.reading || m.read.is_some() {
            return;
        }
        match &self.reader {
            Some(reader) => {
                m.reading = true;
                drop(m);
                REPORT.with(|report| js_read(reader, self.id, report));
            }
            // Read whole: after its one piece, the end.
            None => m.read = Some(Piece::End),
        }
    }

    /// The next piece. Dropping the future leaves the read under way: the next call waits for
    /// the same read.
    pub fn read(&mut self) -> Read<'_> {
        self.start_read();
        Read(self)
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        PIPES.with(|p| p.borrow_mut().remove(&self.id));
        // The rest of the body is not wanted (after its end, this does nothing): for a
        // provider's answer the runtime cancels the request. (A body read whole is read to its
        // end by the runtime.)
        if let Some(reader) = &self.reader {
            js_cancel(reader);
        }
    }
}

/// [`BodyReader::read`]'s future.
pub struct Read<'a>(&'a mut BodyReader);

impl Future for Read<'_> {
    type Output = Piece;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Piece> {
        let mut m = self.0.mailbox.borrow_mut();
        match m.read.take() {
            Some(piece) => Poll::Ready(piece),
            None => {
                m.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A body written from Rust and read by the runtime: the caller's side of a [`Pipe`] (whose
/// writes report to it), or alone, for a body fed as events come (a resume's: no read side,
/// no backpressure, what it is fed is bounded elsewhere, no outcomes reported).
pub struct Sink {
    writer: JsValue,
    /// Whose mailbox the writes report to ([`NO_PIPE`]: nobody's).
    id: u32,
    closed: bool,
}

/// The id a lone [`Sink`]'s writes report under: no pipe has it, so the outcomes are dropped.
const NO_PIPE: u32 = 0;

impl Sink {
    /// A new body, returned beside the sink that feeds it.
    pub fn new() -> Result<(Sink, ReadableStream), JsValue> {
        let pipe = js_pipe()?;
        let body: ReadableStream = pipe.get(0).dyn_into()?;
        Ok((
            Sink {
                writer: pipe.get(1),
                id: NO_PIPE,
                closed: false,
            },
            body,
        ))
    }

    /// Writes `bytes` (copied; the runtime takes them when the body's reader reads).
    pub fn write(&mut self, bytes: &[u8]) {
        if !self.closed {
            REPORT.with(|report| js_write(&self.writer, self.id, bytes, report));
        }
    }

    /// Ends the body after what was written.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            js_close(&self.writer);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.close();
    }
}

/// The provider's body on one side, the caller's on the other, driven by a [`Driver`].
pub struct Pipe {
    upstream: BodyReader,
    caller: Sink,
}

impl Pipe {
    /// A pipe from `upstream` (the provider's body) to a new body for the caller, returned beside
    /// it; a refused write raises `hangup`. Nothing is read until [`Pipe::read`].
    pub fn new(
        upstream: &ReadableStream,
        hangup: &Hangup,
    ) -> Result<(Pipe, ReadableStream), JsValue> {
        let (mut caller, body) = Sink::new()?;
        let upstream = BodyReader::new(upstream, Some(hangup));
        caller.id = upstream.id;
        REPORT.with(|report| js_watch(&caller.writer, upstream.id, report));
        Ok((Pipe { upstream, caller }, body))
    }

    /// Sends this pipe's events to `driver` from now on (it holds the pipe: hence a weak
    /// reference; once it is gone the events are dropped).
    pub fn drive(&mut self, driver: Weak<dyn Driver>) {
        self.upstream.mailbox.borrow_mut().driver = Some(driver);
    }

    /// Whether a read of the provider is under way.
    pub fn is_reading(&self) -> bool {
        self.upstream.is_reading()
    }

    /// Reads the provider's next piece (unless a read is under way): it comes as
    /// [`PipeEvent::Read`].
    pub fn read(&mut self) {
        self.upstream.start_read();
    }

    /// Writes `bytes` to the caller (copied; the runtime takes them when the caller reads).
    pub fn write(&mut self, bytes: &[u8]) {
        self.caller.write(bytes);
    }

    /// How many writes the runtime has taken since the last call.
    pub fn taken(&mut self) -> usize {
        std::mem::take(&mut self.upstream.mailbox.borrow_mut().written)
    }

    /// Fires `timer` in `ms` (replacing that timer if armed).
    pub fn arm(&mut self, timer: Timer, ms: u64) {
        let ms = timer_ms(ms);
        let armed =
            REPORT.with(|report| js_timer(self.upstream.id, TIMER + timer as u32, ms, report));
        let old = self.upstream.mailbox.borrow_mut().timers[timer as usize].replace(armed);
        if let Some(old) = old {
            clear_timer(&old);
        }
    }

    /// Ends the caller's body after what was written.
    pub fn close(&mut self) {
        self.caller.close();
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let timers = std::mem::take(&mut self.upstream.mailbox.borrow_mut().timers);
        for timer in timers.iter().flatten() {
            clear_timer(timer);
        }
        // Ended early (the caller left or stopped reading): the body ends where it is, as a
        // stream without its `[DONE]` (erroring it instead would only log an uncaught error).
        // The provider's body is cancelled as the reader drops.
        self.close();
    }
}
