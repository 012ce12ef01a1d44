//! `anthropic_stream`: see `fuzz/checks/anthropic_stream.rs` for what is checked.
#![no_main]

#[path = "../checks/pieces.rs"]
mod pieces;
#[path = "../checks/anthropic_stream.rs"]
mod anthropic_stream;

libfuzzer_sys::fuzz_target!(|data: &[u8]| anthropic_stream::check(data));
