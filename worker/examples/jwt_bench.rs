//! JWT verification time per algorithm, on the host.
//!
//! ```sh
//! cargo run --release -p storycad-worker --example jwt_bench [-- ROUNDS]
//! ```
//!
//! Prints the median and the 90th percentile of single verifications (the key set is parsed
//! once, as in the Worker), plus the one-off cost of parsing the JWKS. Host numbers: workerd runs
//! the same code as wasm, typically a few times slower; Cloudflare's free plan allows 10 ms of CPU
//! per request.

use std::time::{Duration, Instant};

use serde_json::json;
use storycad_worker::auth::{Algorithm, KeySet, Verifier};

#[allow(dead_code)]
#[path = "../src/auth/test_signer.rs"]
mod test_signer;

use test_signer::{fixture, sign, TestKey};

const NOW: u64 = 1_800_000_000;

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() - 1) * p / 100]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let jwks = fixture("test-only-jwks.public.json");

    let mut parse = Vec::with_capacity(rounds.min(500));
    for _ in 0..rounds.min(500) {
        let start = Instant::now();
        std::hint::black_box(KeySet::from_json(std::hint::black_box(jwks))?);
        parse.push(start.elapsed());
    }
    println!(
        "parse JWKS (RSA-2048 + P-256 + Ed25519): median {:?}",
        percentile(&mut parse, 50)
    );

    let verifier = Verifier::new(
        KeySet::from_json(jwks)?,
        "https://issuer.storycad.test".into(),
        "storycad-llm-proxy".into(),
        Algorithm::DEFAULT.to_vec(),
    );
    let claims = json!({
        "sub": "user-42", "exp": NOW + 300, "iat": NOW, "iss": "https://issuer.storycad.test",
        "aud": "storycad-llm-proxy", "plan": "pro"
    });
    for key in TestKey::ALL {
        let token = sign(
            key,
            &json!({"alg": key.alg(), "kid": key.kid(), "typ": "JWT"}),
            &claims,
        );
        // Warm up, and make sure the benchmark measures successful verifications.
        verifier.verify(&token, NOW)?;
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let claims = verifier.verify(std::hint::black_box(&token), NOW);
            samples.push(start.elapsed());
            std::hint::black_box(claims)?;
        }
        let median = percentile(&mut samples, 50);
        let p90 = percentile(&mut samples, 90);
        println!(
            "verify {:<5} ({} bytes): median {median:?}, p90 {p90:?} over {rounds} rounds",
            key.alg(),
            token.len()
        );
    }
    Ok(())
}
