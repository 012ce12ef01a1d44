//! The wire contract between the StoryCAD LLM proxy Worker and its clients.
//!
//! Plain serde types for OpenAI-style Chat Completions (request, response, streaming chunk),
//! OpenAI's error body, the models list, the `/v1/usage` body, and the names of the headers and
//! JWT claims both ends rely on; and [`ResponseAccumulator`], which folds a stream's chunks into
//! the answer a non-streamed call would have returned. No I/O: this crate builds for `wasm32-unknown-unknown` (the
//! Worker) and for native targets (the client).
//!
//! Every object keeps the fields it does not model in an `extra` map, so a field a provider adds
//! tomorrow passes through the proxy and the client unchanged. The structs and the enums that
//! grow with OpenAI's API (roles, finish reasons, content parts, tool choices) are
//! `#[non_exhaustive]`, so modelling a new field or variant is not a breaking change: build a
//! value with its constructor or `Default` and set the public fields, and give a `match` on those
//! enums a wildcard arm.
//!
//! ```
//! use storycad_protocol::{ChatRequest, Message, StreamOptions, Tool};
//!
//! let mut request = ChatRequest::new("storycad-fast", vec![Message::user("Hello")]);
//! request.stream = Some(true);
//! request.stream_options = Some(StreamOptions::with_usage());
//! request.tools = Some(vec![Tool::function("lookup", None, serde_json::json!({"type": "object"}))]);
//! assert_eq!(serde_json::to_value(&request).unwrap()["stream_options"]["include_usage"], true);
//! ```
#![warn(missing_docs)]

mod accumulate;
mod chat;
mod de;
mod error;
pub mod headers;
mod models;
pub mod ratelimit;
mod usage;

pub use accumulate::ResponseAccumulator;
pub use chat::*;
pub use error::*;
pub use models::*;
pub use usage::*;

/// A JSON object holding the fields a type does not model, kept as they came.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Names of the JWT claims the Worker reads.
pub mod claims {
    /// The user id; required. Limits and cache scope are per `sub`.
    pub const SUBJECT: &str = "sub";
    /// Expiry (seconds since the Unix epoch); required.
    pub const EXPIRES: &str = "exp";
    /// Not valid before (seconds since the Unix epoch); optional.
    pub const NOT_BEFORE: &str = "nbf";
    /// Issued at (seconds since the Unix epoch); optional.
    pub const ISSUED_AT: &str = "iat";
    /// Issuer; checked exactly against `JWT_ISSUER`.
    pub const ISSUER: &str = "iss";
    /// Audience (a string or a list); must contain `JWT_AUDIENCE`.
    pub const AUDIENCE: &str = "aud";
    /// The plan name that selects the caller's limits; the configured default when absent.
    pub const PLAN: &str = "plan";
}

/// The README's examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
