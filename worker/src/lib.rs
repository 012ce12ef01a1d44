//! The StoryCAD LLM proxy Worker.
//!
//! Everything that decides something is plain Rust, built and unit-tested on the host; the
//! runtime's glue is one module, [`runtime`], compiled for `wasm32` only.
//!
//! - [`config`]: every variable (`PLANS` included) parsed and checked once per isolate.
//! - [`auth`]: bearer JWT verification, the JWKS refresh policy, the verified-token cache.
//! - [`caller`]: the caller's side: the routes ([`caller::endpoints`]), the request body
//!   ([`caller::request`]) and a stream answer's way out: when to write, how much waits, the
//!   caller's hang-up ([`caller::body`]).
//! - [`plans`]: `PLANS`: allowed models, the output cap, choices, gated fields, each plan's
//!   limits.
//! - [`lifecycle`]: an admitted chat request's state machine: which route, when to move on,
//!   what the caller is told and what the user is charged.
//! - [`providers`]: the providers behind one interface (the upstream request, error answers,
//!   complete answers, the stream [`providers::Relay`]): [`providers::openai`] (passthrough)
//!   and [`providers::anthropic`] (translation), the alias routing
//!   ([`providers::routing`]) and the SSE framer both stream relays use ([`providers::sse`]).
//! - [`limiter`]: per-user limits (requests per minute, tokens per day, streams): the state
//!   machine, the Durable Object's logic and write policy, the settlements an isolate holds.
//! - [`cache`]: the KV cache's rules and key, its entries and their replay, and the stream
//!   fold that makes an entry of a stream.
//! - [`resume`]: resumable streams: their ids, the numbered event log, the store of the
//!   streams whose caller left before the end.
//! - [`error`]: one error type, mapped to status, OpenAI error body and headers.
//! - [`log`]: the one JSON log line per request, and the other events the Worker logs.
//! - [`mix_map`]: a `HashMap` without SipHash, for keys no caller chooses freely.
//! - `runtime` (wasm only): the `fetch` event and the request's task (`entry`), the one
//!   subrequest with a time limit and capped body read (`fetch`), the `UserLimiter` Durable
//!   Object (`durable`) and its client (`limiter`), the KV (`kv`) and JWKS (`auth`) I/O, a
//!   stream's pipe from the provider's body to the caller's native one (`stream`). It awaits;
//!   the modules above decide.

pub mod auth;
pub mod cache;
pub mod caller;
pub mod config;
pub mod error;
pub mod json_read;
pub mod json_write;
pub mod lifecycle;
pub mod limiter;
pub mod log;
pub mod mix_map;
pub mod named;
pub mod plans;
pub mod providers;
pub mod resume;

#[cfg(target_arch = "wasm32")]
mod runtime;

/// `bytes` in lowercase hex, appended to `out` (ids, hashes and keys made of digests).
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// A file of the workspace's `fixtures/` (recorded provider answers), for unit tests.
#[cfg(test)]
pub(crate) fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Generated test inputs' choices: `pick(n)` is in `0..n`, the same sequence for the same `seed`
/// (xorshift64).
#[cfg(test)]
pub(crate) fn picker(seed: u64) -> impl FnMut(usize) -> usize {
    let mut state = seed;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}
