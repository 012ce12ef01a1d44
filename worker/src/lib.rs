//! The StoryCAD LLM proxy Worker.
//!
//! Everything that decides something is plain Rust, built and unit-tested on the host:
//!
//! - [`anthropic`]: OpenAI <-> Anthropic Messages translation (request, answer, errors, stream).
//! - [`config`]: every variable parsed and checked once per isolate.
//! - [`endpoints`]: the routes, 404 and 405.
//! - [`request`]: the caller's body: size limit, JSON, schema.
//! - [`routing`]: alias -> provider, model and endpoint.
//! - [`upstream`]: the provider request (fresh headers, the provider key, `model` replaced) and
//!   the complete answer passed back.
//! - [`relay`]: the SSE stream relay state machine.
//! - [`sse`]: the incremental SSE framer both stream relays use.
//! - [`rewrite`]: a JSON object's members kept raw and in order, `model` changed.
//! - [`error`]: one error type, mapped to status, OpenAI error body and headers.
//! - [`log`]: the one JSON log line per request.
//! - [`provider`]: OpenAI passthrough and Anthropic translation behind one interface.
//! - [`fallback`]: which failures move a request to the next route of its chain.
//! - [`cache`]: the KV cache's rules, key, entry, replay and stream fold (`cache_kv`: the KV
//!   glue, wasm only).
//! - [`plans`]: `PLANS`: allowed models, output cap, the limits of each plan.
//! - [`limiter`]: per-user limits (requests per minute, tokens per day, streams): the state
//!   machine, and (wasm only) the `UserLimiter` Durable Object and its client.
//!
//! The wasm-only glue (`#[event(fetch)]`, `Env`, `Fetch`, the Durable Object) lives in `entry`
//! and `limiter`, compiled for `wasm32` only.

pub mod anthropic;
pub mod auth;
pub mod cache;
pub mod config;
pub mod detached;
pub mod endpoints;
pub mod error;
pub mod fallback;
pub mod lifecycle;
pub mod limiter;
pub mod log;
pub mod plans;
pub mod provider;
pub mod relay;
pub mod request;
pub mod rewrite;
pub mod routing;
pub mod sse;
pub mod upstream;

#[cfg(target_arch = "wasm32")]
mod auth_glue;
#[cfg(target_arch = "wasm32")]
mod cache_kv;
#[cfg(target_arch = "wasm32")]
mod entry;
