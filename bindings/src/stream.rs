//! [`ChatStream`]: the client's stream, read on the library's runtime and handed to the host
//! one chunk per `next()`.
//!
//! A task on the runtime (the pump) reads the client's stream into a small channel; `next()`
//! only waits on the channel, so the host's thread never polls a socket and a chunk costs one
//! channel hand-off. The pump owns the connection: `cancel()` aborts it and dropping the
//! `ChatStream` closes the channel, and either way the client's stream is dropped, which
//! closes the connection.

use std::sync::Arc;

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
/// error ends it early (`StreamTruncated`, `UpstreamUnavailable`, `Timeout`, ...). `cancel()`
/// stops it from any thread: the connection closes, a pending or later `next()` raises
/// `Cancelled`.
#[derive(uniffi::Object)]
pub struct ChatStream {
    meta: ResponseMeta,
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
        let (tx, rx) = mpsc::channel::<Item>(READ_AHEAD);
        let pump = runtime().spawn(async move {
            loop {
                let item = tokio::select! {
                    // The ChatStream was dropped: stop reading, close the connection.
                    () = tx.closed() => return,
                    item = stream.next() => item,
                };
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

    /// The answer's headers (request id, rate limits, route, cache).
    pub fn meta(&self) -> ResponseMeta {
        self.meta.clone()
    }
}
