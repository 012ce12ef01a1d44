//! Rust client for the StoryCAD Collaborator LLM proxy (an OpenAI-compatible API).
//!
//! - **Tokens**: a [`TokenProvider`] hands out bearer tokens; the client caches the token,
//!   replaces it ahead of its expiry (the provider's `expires_at`, else the JWT's `exp`), lets
//!   concurrent requests share one refresh, and on a 401 refreshes once and tries once more.
//! - **Retries**: connection failures, 408, 409, 429 (not a spent budget or quota), 500, 502,
//!   503, 504 and 529, honouring `retry-after-ms`, `retry-after` and `x-should-retry`, with
//!   jittered capped backoff, a maximum and a retry budget ([`RetryPolicy`]). Every attempt of
//!   one call carries the same `idempotency-key`.
//! - **Streaming**: [`Client::chat_stream`] returns HTTP errors itself; the [`ChatStream`] then
//!   yields [`ChatChunk`]s until `[DONE]`, and an error item (never a silent end) when the
//!   server sends an error event, the body is cut, or the stream stalls. A stream the server
//!   made resumable picks itself up after a cut instead, skipping what it already yielded
//!   ([`ChatStream`] says how). Dropping it closes the connection.
//! - **Errors**: one [`Error`] enum keeping status, code, request id, `retry-after` and
//!   rate-limit headers.
//! - **Networks**: the operating system's certificate store and proxy settings by default
//!   (a company's TLS-inspecting proxy and the Windows proxy setting work as in a browser), with
//!   extra root certificates, an explicit proxy, or either turned off on the [`ClientBuilder`].
//! - **TLS**: rustls with the platform's verifier (feature `rustls`, the default), or the
//!   platform's TLS library (feature `native-tls`: SChannel, Security.framework, OpenSSL).
//! - **Tracing**: one `storycad_request` span per call (method, path, model, stream, request id),
//!   an `attempt` span (`n`) inside it per HTTP attempt, and a
//!   `debug!` event per retry decision. Token values are never logged.
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use storycad_client::{Client, Error, Message, ChatRequest, RetryPolicy};
//!
//! # async fn run() -> Result<(), Error> {
//! let client = Client::builder()
//!     .base_url("http://127.0.0.1:8787/v1")
//!     .token("eyJhbGciOi...")
//!     .retry_policy(RetryPolicy::default().max_retries(3))
//!     .build()?;
//!
//! let request = ChatRequest::new("storycad-fast", vec![Message::user("Name three plot twists.")]);
//!
//! // The whole answer at once.
//! let answer = client.chat(&request).await?;
//! println!("{} (request {:?})", answer.text(), answer.meta.request_id);
//!
//! // Or piece by piece.
//! let mut stream = client.chat_stream(&request).await?;
//! while let Some(chunk) = stream.next().await {
//!     match chunk {
//!         Ok(chunk) => print!("{}", chunk.text().unwrap_or("")),
//!         Err(Error::StreamTruncated { .. }) => eprintln!("\n[the answer was cut off]"),
//!         Err(e) => return Err(e),
//!     }
//! }
//!
//! // Errors say what to do next.
//! match client.chat(&request).await {
//!     Err(Error::BudgetExhausted(d)) => eprintln!("budget spent, resets in {:?}", d.retry_after),
//!     Err(e) if e.is_retryable() => eprintln!("try later: {e}"),
//!     other => { other?; }
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

#[cfg(not(any(feature = "rustls", feature = "native-tls")))]
compile_error!(
    "storycad-client needs a TLS backend: the `rustls` (default) or `native-tls` feature"
);

mod client;
mod config;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod network;
mod options;
mod response;
mod resume;
mod retry;
mod stream;
mod token;

pub use client::Client;
pub use config::{ClientBuilder, Timeouts};
pub use error::{BoxError, Error, HttpErrorDetails, Result, TimeoutPhase};
pub use options::RequestOptions;
pub use response::{Completion, ResponseMeta};
pub use retry::RetryPolicy;
pub use storycad_protocol::ResponseAccumulator;
pub use stream::ChatStream;
pub use token::{AccessToken, FnTokenProvider, StaticToken, TokenError, TokenProvider};

/// The wire types, re-exported so callers need only this crate.
pub use storycad_protocol as protocol;
pub use storycad_protocol::{
    ratelimit::RateLimitInfo, ChatChunk, ChatRequest, ChatResponse, Message, ModelList, Role,
    UsageReport,
};

#[cfg(test)]
mod tests {
    // The FFI layer and multi-threaded apps move these across threads.
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn public_types_cross_threads() {
        send_sync::<crate::Client>();
        send_sync::<crate::Error>();
        send_sync::<crate::Completion>();
        send::<crate::ChatStream>();
        send_sync::<crate::ResponseAccumulator>();
    }
}

/// This crate's README examples, compiled as doctests so they stay true. (The repository
/// README's are compiled by the `storycad-examples` crate: a published crate cannot read it.)
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
