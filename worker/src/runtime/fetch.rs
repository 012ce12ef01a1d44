//! The runtime's HTTP reads, one of each: a fetch that gives up after a time limit (or when the
//! caller goes away), and a body read with a size cap and a time limit. Providers' answers, the
//! issuer's JWKS and the caller's own request body all go through these.

use std::ops::Deref;
use std::time::Duration;

use futures_util::future::{pending, select, Either};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::js_sys::Promise;
use worker::web_sys::{self, ReadableStream};
use worker::AbortController;

use super::stream::{BodyReader, Piece};
use super::wake::{settled, sleep};
use crate::caller::body::Hangup;
use crate::caller::request::{header_lines, reads_whole, BodyLimit};

/// A request for the runtime's `fetch`, handed over in one call as a URL and options: no
/// `Request` object is built here for the runtime to copy into its own. A redirect is answered,
/// never followed (a provider's key or the JWKS URL goes nowhere else).
pub(crate) struct Outgoing<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

// The headers come as one string ([`header_lines`]); `Headers` refuses what no header can hold,
// here, before anything is sent.
#[wasm_bindgen(inline_js = r#"
export function storycadFetch(url, method, lines, body, signal) {
  const headers = new Headers();
  const parts = lines === "" ? [] : lines.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) headers.set(parts[i], parts[i + 1]);
  const init = { method, headers, redirect: "manual", signal };
  if (body !== undefined) init.body = body.slice();
  return fetch(url, init);
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadFetch, catch)]
    fn js_fetch(
        url: &str,
        method: &str,
        lines: &str,
        body: Option<&[u8]>,
        signal: &JsValue,
    ) -> Result<Promise, JsValue>;
}

/// Why a fetch gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The request could not be made (a header the runtime refuses): nothing was sent.
    NotSent,
    /// The connection failed before any headers.
    NoConnection,
    /// No headers within the time limit.
    NoAnswer,
    /// The caller went away first.
    CallerGone,
}

/// A response as the runtime gave it. (workers-rs' `Response`, made of it, read its headers,
/// status, body, `cf` and `webSocket` from the runtime whatever was used.)
pub(crate) struct Answer(web_sys::Response);

impl Answer {
    pub(crate) fn status(&self) -> u16 {
        self.0.status()
    }

    /// The header `name`'s value; `None` when it has none.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.0.headers().get(name).ok().flatten()
    }

    /// Its body; `None` when it has none.
    pub(crate) fn body(&self) -> Option<ReadableStream> {
        self.0.body()
    }
}

/// Sends `request` and waits for its headers, at most `timeout`, and, with a `hangup`, no
/// longer than the caller stays; the fetch is aborted when it gives up.
pub(crate) async fn fetch(
    request: Outgoing<'_>,
    timeout: Duration,
    hangup: Option<&Hangup>,
) -> Result<Answer, FetchError> {
    let lines = header_lines(request.headers).ok_or(FetchError::NotSent)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let promise = js_fetch(
        request.url,
        request.method,
        &lines,
        request.body,
        signal.deref().as_ref(),
    )
    .map_err(|_| FetchError::NotSent)?;
    let sent = async {
        let answer = settled(promise).await.ok()?;
        answer.dyn_into::<web_sys::Response>().ok().map(Answer)
    };
    let gone = async {
        match hangup {
            Some(h) => h.wait().await,
            None => pending::<()>().await,
        }
    };
    let waited = select(sleep(timeout), Box::pin(gone));
    match select(Box::pin(sent), waited).await {
        Either::Left((Some(response), _)) => Ok(response),
        Either::Left((None, _)) => Err(FetchError::NoConnection),
        Either::Right((Either::Left(_), _)) => {
            controller.abort();
            Err(FetchError::NoAnswer)
        }
        Either::Right((Either::Right(_), _)) => {
            controller.abort();
            Err(FetchError::CallerGone)
        }
    }
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
    /// The `Request` or `Response` it is the body of: a whole read asks it for its bytes.
    message: JsValue,
    stream: Option<ReadableStream>,
    limit: u64,
    /// Read whole by the runtime, in one call, instead of one call per piece
    /// ([`reads_whole`]).
    whole: bool,
}

impl Body {
    /// A message's body, at most `limit` bytes of it, with its headers' `content-length` and
    /// `content-encoding`. `message`: the `Request` or `Response`.
    pub(crate) fn new(
        message: &JsValue,
        stream: Option<ReadableStream>,
        limit: u64,
        content_length: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Body {
        Body {
            message: message.clone(),
            stream,
            limit,
            whole: reads_whole(content_length, content_encoding, limit),
        }
    }

    /// A response's body, at most `limit` bytes of it.
    pub(crate) fn of(response: &Answer, limit: u64) -> Body {
        Body::new(
            response.0.as_ref(),
            response.body(),
            limit,
            response.header("content-length").as_deref(),
            response.header("content-encoding").as_deref(),
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
        BodyReader::whole(&body.message)
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
    match select(Box::pin(read), sleep(timeout)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(ReadError::Timeout),
    }
}
