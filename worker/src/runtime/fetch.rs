//! The runtime's HTTP reads, one of each: a fetch that gives up after a time limit (or when the
//! caller goes away), and a body read with a size cap and a time limit. Providers' answers, the
//! issuer's JWKS and the caller's own request body all go through these.

use std::time::Duration;

use futures_util::future::{pending, select, Either};
use worker::web_sys::ReadableStream;
use worker::{AbortController, Delay, Fetch, Request, Response, ResponseBody};

use super::stream::{BodyReader, Piece};
use crate::caller::body::Hangup;
use crate::caller::request::{reads_whole, BodyLimit};

/// Why a fetch gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The connection failed before any headers.
    NoConnection,
    /// No headers within the time limit.
    NoAnswer,
    /// The caller went away first.
    CallerGone,
}

/// Sends `request` and waits for its headers, at most `timeout`, and, with a `hangup`, no
/// longer than the caller stays; the fetch is aborted when it gives up.
pub(crate) async fn fetch(
    request: Request,
    timeout: Duration,
    hangup: Option<&Hangup>,
) -> Result<Response, FetchError> {
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sent = Box::pin(fetch.send_with_signal(&signal));
    let gone = async {
        match hangup {
            Some(h) => h.wait().await,
            None => pending::<()>().await,
        }
    };
    let waited = select(Delay::from(timeout), Box::pin(gone));
    // Bound to a name so the borrowed futures are dropped before `fetch` and `signal`.
    #[allow(clippy::let_and_return)]
    let result = match select(sent, waited).await {
        Either::Left((Ok(response), _)) => Ok(response),
        Either::Left((Err(_), _)) => Err(FetchError::NoConnection),
        Either::Right((Either::Left(_), _)) => {
            controller.abort();
            Err(FetchError::NoAnswer)
        }
        Either::Right((Either::Right(_), _)) => {
            controller.abort();
            Err(FetchError::CallerGone)
        }
    };
    result
}

/// Why a body read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// More than the cap.
    TooLarge,
    /// The body broke off.
    Broken,
    /// It did not end within the time limit.
    Timeout,
}

/// A body to read with [`read_capped`], and how much of it will be taken.
pub(crate) struct Body {
    stream: Option<ReadableStream>,
    limit: u64,
    /// Read whole by the runtime, in one call, instead of one call per piece
    /// ([`reads_whole`]).
    whole: bool,
}

impl Body {
    /// A message's body, at most `limit` bytes of it, with its headers' `content-length` and
    /// `content-encoding`.
    pub(crate) fn new(
        stream: Option<ReadableStream>,
        limit: u64,
        content_length: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Body {
        Body {
            stream,
            limit,
            whole: reads_whole(content_length, content_encoding, limit),
        }
    }

    /// A response's body, at most `limit` bytes of it.
    pub(crate) fn of(response: &Response, limit: u64) -> Body {
        let stream = match response.body() {
            ResponseBody::Stream(stream) => Some(stream.clone()),
            _ => None,
        };
        let header = |name: &str| response.headers().get(name).ok().flatten();
        Body::new(
            stream,
            limit,
            header("content-length").as_deref(),
            header("content-encoding").as_deref(),
        )
    }
}

/// Reads a whole body (none: empty), at most its limit, within `timeout` when one is given.
/// Past the limit the rest is not read (the body is cancelled).
pub(crate) async fn read_capped(
    body: Body,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, ReadError> {
    let limit = body.limit;
    let Some(stream) = body.stream else {
        return Ok(Vec::new());
    };
    let mut reader = if body.whole {
        BodyReader::whole(&stream)
    } else {
        BodyReader::new(&stream, None)
    };
    let read = async move {
        let mut body = BodyLimit::new(limit);
        loop {
            match reader.read().await {
                Piece::Bytes(chunk) => body.push(&chunk).map_err(|_| ReadError::TooLarge)?,
                Piece::End => return Ok(body.into_bytes()),
                Piece::Broken => return Err(ReadError::Broken),
            }
        }
    };
    let Some(timeout) = timeout else {
        return read.await;
    };
    match select(Box::pin(read), Delay::from(timeout)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(ReadError::Timeout),
    }
}
