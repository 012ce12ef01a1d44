//! `client_sse`: see `fuzz/checks/client_sse.rs` for what is checked.
#![no_main]

#[path = "../checks/client_sse.rs"]
mod client_sse;
#[path = "../checks/pieces.rs"]
mod pieces;

libfuzzer_sys::fuzz_target!(|data: &[u8]| client_sse::check(data));
