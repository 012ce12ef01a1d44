//! [`ChatStream`]: the client's stream, read on the library's runtime and handed to the host
//! one chunk per `next()`.
//!
//! A task on the runtime (the pump) reads the client's stream into a small channel; `next()`
//! only waits on the channel, so the host's thread never polls a socket and a chunk costs one
//! channel hand-off. The pump owns the connection: `cancel()` aborts it and dropping the
//! `ChatStream` closes the channel, and either way the client's stream is dropped, which
//! closes the connection. The client resumes a broken stream by itself; the pump copies its
//! count of resumptions where `resumptions()` reads it.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch, Mutex};

use crate::{
    error::CollaboratorError,
    runtime::{runtime, AbortOnDrop},
    types::{ChatChunk, ResponseMeta},
};

/// Chunks read ahead of the host; enough to keep the socket busy while the host works.
const READ_AHEAD: usize = 16;

type Item = Result<ChatChunk, CollaboratorError>;

/// A streamed answer. Call `next()` until it returns nothing (the answer is complete); an
/// error ends it early (`StreamTruncated`, `UpstreamUnavailable`, `Timeout`, ...). A broken
/// connection is resumed by itself when the server allows it (`resumptions()` counts it).
/// `cancel()` stops it from any thread: the connection closes, a pending or later `next()`
/// raises `Cancelled`.
#[derive(uniffi::Object)]
pub struct ChatStream {
    meta: ResponseMeta,
    /// The client stream's `meta().resumptions`, as of the last chunk the pump read.
    resumptions: Arc<AtomicU32>,
    chunks: Mutex<mpsc::Receiver<Item>>,
    cancelled: watch::Sender<bool>,
    _pump: AbortOnDrop,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("meta", &self.meta)
            .field("cancelled", &*self.cancelled.borrow())
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// Starts the pump; must run inside the library's runtime.
    pub(crate) fn start(mut stream: storycad_client::ChatStream) -> Arc<Self> {
        let meta = ResponseMeta::from(stream.meta());
        let resumptions = Arc::new(AtomicU32::new(0));
        let count = resumptions.clone();
        let (tx, rx) = mpsc::channel::<Item>(READ_AHEAD);
        let pump = runtime().spawn(async move {
            loop {
                let item = tokio::select! {
                    // The ChatStream was dropped: stop reading, close the connection.
                    () = tx.closed() => return,
                    item = stream.next() => item,
                };
                // Before the chunk is handed on, so its reader sees at least the count it came with.
                count.store(stream.meta().resumptions, Ordering::Release);
                let (item, last) = match item {
                    None => return,
                    Some(Ok(chunk)) => (Ok(ChatChunk::from(chunk)), false),
                    Some(Err(e)) => (Err(CollaboratorError::from(e)), true),
                };
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Arc::new(ChatStream {
            meta,
            resumptions,
            chunks: Mutex::new(rx),
            cancelled: watch::Sender::new(false),
            _pump: AbortOnDrop(pump.abort_handle()),
        })
    }

    fn cancelled_error(&self) -> CollaboratorError {
        CollaboratorError::cancelled(self.meta.request_id.clone())
    }
}

#[uniffi::export]
impl ChatStream {
    /// The next chunk; nothing once the answer is complete (`[DONE]`).
    pub async fn next(&self) -> Result<Option<ChatChunk>, CollaboratorError> {
        let mut cancelled = self.cancelled.subscribe();
        if *cancelled.borrow_and_update() {
            return Err(self.cancelled_error());
        }
        let mut chunks = self.chunks.lock().await;
        tokio::select! {
            biased;
            _ = cancelled.wait_for(|c| *c) => Err(self.cancelled_error()),
            item = chunks.recv() => item.transpose(),
        }
    }

    /// Stops the stream and closes its connection (the server stops generating). Returns at
    /// once; safe to call from any thread, any number of times.
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
        self._pump.0.abort();
    }

    /// The answer's headers (request id, rate limits, route, cache, stream id), and the
    /// resumptions so far.
    pub fn meta(&self) -> ResponseMeta {
        ResponseMeta {
            resumptions: self.resumptions(),
            ..self.meta.clone()
        }
    }

    /// How many times the stream resumed after its connection broke, up to the chunks read
    /// so far (the library reads a few chunks ahead of `next()`).
    pub fn resumptions(&self) -> u32 {
        self.resumptions.load(Ordering::Acquire)
    }
}
