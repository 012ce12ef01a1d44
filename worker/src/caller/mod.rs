//! The caller's side of a request.
//!
//! - [`endpoints`]: the routes, 404 and 405.
//! - [`request`]: the chat request body: size limit, content type, JSON, schema, the fields
//!   that may go upstream.
//! - [`located`]: a typed value read out of the parsed body, naming the field that failed.
//! - [`body`]: a stream answer's body, fed by the request's task with backpressure, and the
//!   caller's hang-up.

pub mod body;
pub mod endpoints;
pub mod located;
pub mod request;
