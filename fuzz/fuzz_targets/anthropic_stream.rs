//! `anthropic_stream`: see `fuzz/checks/anthropic_stream.rs` for what is checked.
#![no_main]

#[path = "../checks/anthropic_stream.rs"]
mod anthropic_stream;
#[path = "../checks/pieces.rs"]
mod pieces;
#[path = "../checks/relay.rs"]
mod relay;

libfuzzer_sys::fuzz_target!(|data: &[u8]| anthropic_stream::check(data));
