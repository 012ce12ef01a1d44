//! The Worker on the runtime (wasm only): every `await` on workerd lives here, every decision
//! in the host-tested modules.
//!
//! - `entry`: the `fetch` event and the request's task (auth, the endpoints, the chat pipeline
//!   driven by [`crate::lifecycle`], the stream pump).
//! - `auth`: the bearer token checked against `JWT_PUBLIC_JWK` or a fetched JWKS.
//! - `signature`: a token's signature checked with the runtime's WebCrypto.
//! - `limiter`: the client of the user's Durable Object (admit, usage reports, settlements).
//! - `durable`: the `UserLimiter` Durable Object.
//! - `kv`: the response cache's KV reads and writes.
//! - `fetch`: a fetch with a time limit and a capped body read, for providers, the JWKS and the
//!   caller's body.
//! - `resume`: a stream handed to the user's Durable Object when its caller left, and the
//!   object's side: what it keeps and how a resume reads it.
//! - `stream`: a stream's pipe, the provider's body read and the caller's written natively.
//! - `wake`: the runtime's callbacks by number: timers ([`wake::sleep`]) and a request's abort
//!   signal.

mod auth;
mod durable;
mod entry;
mod fetch;
mod kv;
pub(crate) mod limiter;
mod resume;
mod signature;
mod storage;
mod stream;
mod wake;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use worker::js_sys::Uint8Array;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::web_sys::{self, RequestRedirect};
use worker::{Context, Headers, Request};

/// The time now, in ms since the Unix epoch: `Date.now()`, one call into the runtime (workers-rs'
/// `Date::now()` builds a JS `Date` to read it).
pub(crate) fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}

/// Another handle on the request's context (workers-rs' `Context` is not `Clone`).
pub(crate) fn context_handle(ctx: &Context) -> Context {
    let js: &JsValue = ctx.as_ref().as_ref();
    Context::new(js.clone().unchecked_into())
}

/// A request for `fetch` or a Durable Object stub, built on the runtime's own `RequestInit`:
/// workers-rs' `RequestInit` would link its `cf` options' conversion (image resizing, polish...,
/// with serde-wasm-bindgen), ~13 KB of code never run. A redirect is never followed: it comes
/// back as the answer.
pub(crate) fn new_request(
    url: &str,
    method: &str,
    headers: Option<&Headers>,
    body: Option<&[u8]>,
) -> worker::Result<Request> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_redirect(RequestRedirect::Manual);
    if let Some(headers) = headers {
        init.set_headers(headers.0.as_ref());
    }
    if let Some(bytes) = body {
        init.set_body(&Uint8Array::from(bytes).into());
    }
    web_sys::Request::new_with_str_and_init(url, &init)
        .map(Request::from)
        .map_err(|e| {
            worker::Error::JsError(
                e.as_string()
                    .unwrap_or_else(|| "invalid URL or options for Request".to_owned()),
            )
        })
}

/// The binding `name` of `env`, as the runtime holds it (`undefined` when not set): a variable,
/// a secret, the limiter's namespace.
pub(crate) fn binding(env: &worker::Env, name: &str) -> Option<JsValue> {
    worker::js_sys::Reflect::get(env.as_ref(), &JsValue::from_str(name)).ok()
}

/// Writes one line to the Worker's log (`console.log`), as `console_log!("{}", line)` does but
/// without the formatter: each request writes one, and the formatter's code would otherwise be
/// compiled by every request that finds the wasm's baseline code dropped.
pub(crate) fn log_line(line: &str) {
    web_sys::console::log_1(&JsValue::from_str(line));
}

/// [`log_line`] at error level (`console.error`).
pub(crate) fn error_line(line: &str) {
    web_sys::console::error_1(&JsValue::from_str(line));
}

/// `future`, polled in a wasm function of its own.
///
/// The runtime compiles a wasm function the first time it runs, all of it, whichever of its
/// branches run, and a big one slower per byte. An `async fn`'s body is inlined into its
/// caller's, so without this a request's task (every endpoint, the chat path with its fallbacks
/// and errors, the stream pump) was one function: 24 KB even with wasm-opt's inlining bounded
/// (worker/Cargo.toml), compiled in 2.1 ms on an isolate's first request. Apart, a step's code
/// is compiled when a request first takes it. The cost: a box per `await`, two calls per poll.
pub(crate) fn apart<'a, T>(future: impl Future<Output = T> + 'a) -> Apart<'a, T> {
    Apart(Box::pin(future))
}

/// See [`apart`].
pub(crate) struct Apart<'a, T>(Pin<Box<dyn Future<Output = T> + 'a>>);

impl<T> Future for Apart<'_, T> {
    type Output = T;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        self.0.as_mut().poll(cx)
    }
}
