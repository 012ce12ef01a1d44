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

mod auth;
mod durable;
mod entry;
mod fetch;
mod kv;
pub(crate) mod limiter;
mod resume;
mod signature;
mod stream;

use worker::wasm_bindgen::{JsCast, JsValue};
use worker::Context;

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
