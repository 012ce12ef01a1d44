//! The caller's response: built in Rust, handed to the runtime in one call. (A workers-rs
//! `Response` costs a call per header set, and six more to become the runtime's `Response`:
//! a `ResponseInit`, its status and headers, a `Uint8Array` and its copy, the constructor.)

use wasm_bindgen::prelude::*;
use worker::web_sys::{self, ReadableStream};

use crate::caller::request::header_lines;
use crate::error::AppError;

#[wasm_bindgen(inline_js = r#"
export function storycadRespond(status, lines, bytes, stream) {
  const headers = {};
  const parts = lines === "" ? [] : lines.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) headers[parts[i]] = parts[i + 1];
  return new Response(stream === undefined ? bytes.slice() : stream, { status, headers });
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadRespond, catch)]
    fn js_respond(
        status: u16,
        lines: &str,
        bytes: &[u8],
        stream: &JsValue,
    ) -> Result<web_sys::Response, JsValue>;
}

/// A response's body.
pub(crate) enum CallerBody {
    Bytes(Vec<u8>),
    /// Written as it comes (a stream's pipe, a resume's object).
    Stream(ReadableStream),
}

/// The caller's response, before the runtime has it.
pub(crate) struct CallerResponse {
    status: u16,
    /// Each name at most once (the last [`CallerResponse::set`] wins).
    headers: Vec<(&'static str, String)>,
    body: CallerBody,
}

impl CallerResponse {
    /// `body` as JSON.
    pub(crate) fn json(status: u16, body: Vec<u8>) -> CallerResponse {
        CallerResponse {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: CallerBody::Bytes(body),
        }
    }

    /// A 200 event stream.
    pub(crate) fn sse(body: CallerBody) -> CallerResponse {
        CallerResponse {
            status: 200,
            headers: vec![
                (
                    "content-type",
                    "text/event-stream; charset=utf-8".to_owned(),
                ),
                ("cache-control", "no-cache".to_owned()),
            ],
            body,
        }
    }

    /// An error's JSON body, status and headers.
    pub(crate) fn error(error: &AppError) -> CallerResponse {
        let body = serde_json::to_vec(&error.body()).unwrap_or_default();
        let mut response = CallerResponse::json(error.status(), body);
        for (name, value) in error.headers() {
            response.set(name, value);
        }
        response
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// Sets a header, replacing its value if it is set.
    pub(crate) fn set(&mut self, name: &'static str, value: String) {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, old)) => *old = value,
            None => self.headers.push((name, value)),
        }
    }

    /// The runtime's `Response`, made in one call. Fails when a header's value holds a line
    /// break, or the runtime refuses a header.
    pub(crate) fn into_raw(self) -> Result<web_sys::Response, JsValue> {
        let pairs: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let lines = header_lines(&pairs)
            .ok_or_else(|| JsValue::from_str("a response header holds a line break"))?;
        match &self.body {
            CallerBody::Bytes(bytes) => js_respond(self.status, &lines, bytes, &JsValue::UNDEFINED),
            CallerBody::Stream(stream) => js_respond(self.status, &lines, &[], stream),
        }
    }
}
