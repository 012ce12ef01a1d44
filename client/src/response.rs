//! What a successful answer carries besides its body.

use std::ops::Deref;

use reqwest::header::HeaderMap;
use storycad_protocol::{headers, ratelimit::RateLimitInfo, ChatResponse};

use crate::resume::valid_stream_id;

/// The headers of an answer that matter to a caller.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ResponseMeta {
    /// The HTTP status.
    pub status: u16,
    /// `x-request-id`: quote it when reporting a problem.
    pub request_id: Option<String>,
    /// The `x-ratelimit-*` headers.
    pub rate_limit: RateLimitInfo,
    /// `x-storycad-route`: the `provider:model` that answered.
    pub route: Option<String>,
    /// `x-storycad-cache`: `HIT`, `MISS` or `BYPASS`.
    pub cache: Option<String>,
    /// How many HTTP attempts this answer took (1 when nothing was retried).
    pub attempts: u32,
    /// `x-storycad-stream-id`: the id a broken stream is resumed by, when the server keeps it
    /// (an id that is not 1 to 64 of `A-Z a-z 0-9 - _` is ignored).
    pub stream_id: Option<String>,
    /// How many times the stream resumed after its connection broke; it grows while the
    /// stream is read ([`ChatStream::meta`](crate::ChatStream::meta)). 0 for other answers.
    pub resumptions: u32,
}

impl ResponseMeta {
    pub(crate) fn from_headers(status: u16, h: &HeaderMap, attempts: u32) -> Self {
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        ResponseMeta {
            status,
            request_id: request_id(h),
            rate_limit: RateLimitInfo::from_headers(get),
            route: get(headers::ROUTE).map(str::to_owned),
            cache: get(headers::CACHE).map(str::to_owned),
            attempts,
            stream_id: get(headers::STREAM_ID)
                .filter(|id| valid_stream_id(id))
                .map(str::to_owned),
            resumptions: 0,
        }
    }
}

pub(crate) fn request_id(h: &HeaderMap) -> Option<String> {
    h.get(headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A complete chat answer and its [`ResponseMeta`]; derefs to the [`ChatResponse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer.
    pub response: ChatResponse,
    /// Its headers.
    pub meta: ResponseMeta,
}

impl Completion {
    /// The answer without the headers.
    pub fn into_response(self) -> ChatResponse {
        self.response
    }
}

impl Deref for Completion {
    type Target = ChatResponse;
    fn deref(&self) -> &ChatResponse {
        &self.response
    }
}
