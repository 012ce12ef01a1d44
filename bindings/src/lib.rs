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
#![warn(missing_docs)]
// CollaboratorError is the FFI's error record (about 200 bytes, one per failed call, serialised
// into a buffer at the boundary); boxing it would change the foreign API, not the cost.
#![allow(clippy::result_large_err)]

mod client;
mod error;
mod runtime;
mod stream;
mod token;
pub mod types;

pub use client::{ClientConfig, CollaboratorClient, RetrySettings};
pub use error::{CollaboratorError, TimeoutPhase};
pub use stream::ChatStream;
pub use token::{AccessToken, TokenError, TokenProvider};

uniffi::setup_scaffolding!();
