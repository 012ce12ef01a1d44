//! `worker_relay`: see `fuzz/checks/worker_relay.rs` for what is checked.
#![no_main]

#[path = "../checks/pieces.rs"]
mod pieces;
#[path = "../checks/relay.rs"]
mod relay;
#[path = "../checks/worker_relay.rs"]
mod worker_relay;

libfuzzer_sys::fuzz_target!(|data: &[u8]| worker_relay::check(data));
