//! uniffi bindings of [`storycad_client`] for StoryCAD Collaborator (C#, through
//! uniffi-bindgen-cs) and Python (uniffi's own generator, which the tests use).
//!
//! A thin layer: every call goes to the client, which keeps all the logic (token cache and
//! refresh, retries, SSE parsing, error classification). What this crate adds is what crossing
//! the FFI needs:
//!
//! - [`CollaboratorClient`]: built from a [`ClientConfig`] record and a host-implemented
//!   [`TokenProvider`] (a foreign async trait), with async `chat`, `chat_stream`, `models` and
//!   `usage`.
//! - [`ChatStream`]: async `next()` (None after `[DONE]`) and `cancel()`; dropping it or
//!   cancelling it closes the connection.
//! - Records for the wire types ([`types`]) and a small error enum, [`CollaboratorError`], with
//!   one variant per action a caller can take.
//! - The tokio runtime: one multi-thread runtime inside the library ([`runtime`]). Every call's
//!   work runs there; the host's threads only poll a join handle or a channel, so no call
//!   blocks them.
//! - Logging (`log`): [`set_logger`] forwards the client's `tracing` events, as
//!   [`LogRecord`]s, to a host-implemented [`Logger`] (in C#, an `ILogger` adapter), filtered
//!   by a [`LogLevel`] before they are formatted; [`clear_logger`] stops it.
#![warn(missing_docs)]
// CollaboratorError is the FFI's error record (about 200 bytes, one per failed call, serialised
// into a buffer at the boundary); boxing it would change the foreign API, not the cost.
#![allow(clippy::result_large_err)]

mod client;
mod error;
mod log;
mod runtime;
mod stream;
mod token;
pub mod types;

pub use client::{ClientConfig, CollaboratorClient, RequestOptions, RetrySettings};
pub use error::{CollaboratorError, TimeoutPhase};
pub use log::{clear_logger, set_logger, LogLevel, LogRecord, Logger};
pub use stream::ChatStream;
pub use token::{AccessToken, TokenError, TokenProvider};

uniffi::setup_scaffolding!();
