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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::js_sys::{Array, Function, Uint8Array};
use worker::web_sys::ReadableStream;

use crate::caller::body::Hangup;

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
}

/// What the helper reports (its second argument).
const READ_VALUE: u32 = 0;
const READ_DONE: u32 = 1;
const READ_FAILED: u32 = 2;
const WRITTEN: u32 = 3;
const WRITE_FAILED: u32 = 4;

/// One piece read from the provider.
pub enum Piece {
    Bytes(Vec<u8>),
    /// The body ended.
    End,
    /// The body broke (a network error, or not bytes).
    Broken,
}

/// Where the helper's reports for one pipe land.
struct Mailbox {
    read: Option<Piece>,
    written: usize,
    hangup: Hangup,
    /// The pump's task, when it waits on a read.
    read_waker: Option<Waker>,
    /// The pump's task, when it waits for a write to be taken.
    room_waker: Option<Waker>,
}

thread_local! {
    static PIPES: RefCell<HashMap<u32, Rc<RefCell<Mailbox>>>> = RefCell::new(HashMap::new());
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
    let waker = match kind {
        READ_VALUE => {
            m.read = Some(match value.dyn_into::<Uint8Array>() {
                Ok(bytes) => Piece::Bytes(bytes.to_vec()),
                Err(_) => Piece::Broken,
            });
            m.read_waker.take()
        }
        READ_DONE => {
            m.read = Some(Piece::End);
            m.read_waker.take()
        }
        READ_FAILED => {
            m.read = Some(Piece::Broken);
            m.read_waker.take()
        }
        WRITTEN => {
            m.written += 1;
            m.room_waker.take()
        }
        WRITE_FAILED => {
            // A write refused or the body errored: the caller's side is gone.
            let hangup = m.hangup.clone();
            drop(m);
            hangup.raise();
            return;
        }
        _ => return,
    };
    drop(m);
    if let Some(w) = waker {
        w.wake();
    }
}

/// A body read piece by piece: the provider's answer, the caller's request, a JWKS.
pub struct BodyReader {
    id: u32,
    mailbox: Rc<RefCell<Mailbox>>,
    reader: JsValue,
    /// A read was started and has not been taken.
    reading: bool,
}

impl BodyReader {
    /// A reader of `body` (which it locks). `hangup`: raised when a write of a [`Pipe`] built
    /// on this reader is refused.
    pub fn new(body: &ReadableStream, hangup: Option<&Hangup>) -> BodyReader {
        let reader: JsValue = body.get_reader().into();
        let id = NEXT.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1).max(1));
            id
        });
        let mailbox = Rc::new(RefCell::new(Mailbox {
            read: None,
            written: 0,
            hangup: hangup.cloned().unwrap_or_default(),
            read_waker: None,
            room_waker: None,
        }));
        PIPES.with(|p| p.borrow_mut().insert(id, Rc::clone(&mailbox)));
        BodyReader {
            id,
            mailbox,
            reader,
            reading: false,
        }
    }

    /// Whether a read is under way (started by an earlier [`BodyReader::read`] that was
    /// dropped).
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    /// The next piece. Dropping the future leaves the read under way: the next call waits for
    /// the same read.
    pub fn read(&mut self) -> Read<'_> {
        if !self.reading {
            self.reading = true;
            REPORT.with(|report| js_read(&self.reader, self.id, report));
        }
        Read(self)
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        PIPES.with(|p| p.borrow_mut().remove(&self.id));
        // The rest of the body is not wanted (after its end, this does nothing): for a
        // provider's answer the runtime cancels the request.
        js_cancel(&self.reader);
    }
}

/// [`BodyReader::read`]'s future.
pub struct Read<'a>(&'a mut BodyReader);

impl Future for Read<'_> {
    type Output = Piece;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Piece> {
        let reader = &mut *self.0;
        let mut m = reader.mailbox.borrow_mut();
        match m.read.take() {
            Some(piece) => {
                drop(m);
                reader.reading = false;
                Poll::Ready(piece)
            }
            None => {
                m.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The provider's body on one side, the caller's on the other.
pub struct Pipe {
    upstream: BodyReader,
    writer: JsValue,
    /// The caller's body was closed.
    closed: bool,
}

impl Pipe {
    /// A pipe from `upstream` (the provider's body) to a new body for the caller, returned beside
    /// it; a refused write raises `hangup`.
    pub fn new(
        upstream: &ReadableStream,
        hangup: &Hangup,
    ) -> Result<(Pipe, ReadableStream), JsValue> {
        let pipe = js_pipe()?;
        let body: ReadableStream = pipe.get(0).dyn_into()?;
        let writer = pipe.get(1);
        let upstream = BodyReader::new(upstream, Some(hangup));
        REPORT.with(|report| js_watch(&writer, upstream.id, report));
        Ok((
            Pipe {
                upstream,
                writer,
                closed: false,
            },
            body,
        ))
    }

    /// Whether a read of the provider is under way.
    pub fn is_reading(&self) -> bool {
        self.upstream.is_reading()
    }

    /// The provider's next piece (see [`BodyReader::read`]).
    pub fn read(&mut self) -> Read<'_> {
        self.upstream.read()
    }

    /// Writes `bytes` to the caller (copied; the runtime takes them when the caller reads).
    pub fn write(&mut self, bytes: &[u8]) {
        if !self.closed {
            REPORT.with(|report| js_write(&self.writer, self.upstream.id, bytes, report));
        }
    }

    /// How many writes the runtime has taken since the last call.
    pub fn taken(&mut self) -> usize {
        std::mem::take(&mut self.upstream.mailbox.borrow_mut().written)
    }

    /// Resolves when the runtime takes a write (or the caller goes: then check the hangup).
    pub fn write_taken(&mut self) -> WriteTaken<'_> {
        WriteTaken(self)
    }

    /// Ends the caller's body after what was written.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            js_close(&self.writer);
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Ended early (the caller left or stopped reading): the body ends where it is, as a
        // stream without its `[DONE]` (erroring it instead would only log an uncaught error).
        // The provider's body is cancelled as the reader drops.
        self.close();
    }
}

/// [`Pipe::write_taken`]'s future.
pub struct WriteTaken<'a>(&'a mut Pipe);

impl Future for WriteTaken<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut m = self.0.upstream.mailbox.borrow_mut();
        if m.written > 0 || m.hangup.is_raised() {
            return Poll::Ready(());
        }
        m.room_waker = Some(cx.waker().clone());
        drop(m);
        // The hangup wakes this too.
        let _ = Pin::new(&mut self.0.upstream.mailbox.borrow().hangup.wait()).poll(cx);
        Poll::Pending
    }
}
