//! Entry points for the fuzz targets (`fuzz/`) and their regression tests. Not part of the API:
//! hidden from the docs and free to change.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::{ChatChunk, ChatStream, ResponseMeta, Result};

/// Reads a 200 answer's SSE body, arriving in `pieces`, through [`ChatStream`] exactly as a body
/// read from the network, and returns every item the stream yields until it ends. Must run
/// inside a Tokio runtime with time enabled.
pub async fn read_stream(pieces: Vec<Bytes>) -> Vec<Result<ChatChunk>> {
    let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<Bytes, reqwest::Error>));
    let meta = ResponseMeta {
        status: 200,
        request_id: Some("req-fuzz".to_owned()),
        ..ResponseMeta::default()
    };
    let stream =
        ChatStream::from_bytes(body, meta, Duration::from_secs(3600), tracing::Span::none());
    stream.collect().await
}
