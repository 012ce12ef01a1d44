//! `jwt`: see `fuzz/checks/jwt.rs` for what is checked.
#![no_main]

#[path = "../checks/jwt.rs"]
mod jwt;
#[allow(dead_code)]
#[path = "../../worker/src/auth/test_signer.rs"]
mod test_signer;

libfuzzer_sys::fuzz_target!(|data: &[u8]| jwt::check(data));
