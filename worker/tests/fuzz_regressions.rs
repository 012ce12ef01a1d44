//! The fuzz targets' inputs replayed as ordinary tests: every committed seed
//! (`fuzz/seeds/<target>`) and every input a fuzzer found (`fuzz/regressions/<target>`) goes
//! through the very check the fuzz target runs (`fuzz/checks/<target>.rs`), so `cargo test`
//! keeps each fix. `cargo xtask fuzz` runs the fuzzers themselves.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/anthropic_stream.rs"]
mod anthropic_stream;
#[path = "../../fuzz/checks/jwt.rs"]
mod jwt;
#[path = "../../fuzz/checks/pieces.rs"]
mod pieces;
#[path = "../../fuzz/checks/relay.rs"]
mod relay;
#[allow(dead_code)]
#[path = "../src/auth/test_signer.rs"]
mod test_signer;
#[path = "../../fuzz/checks/worker_relay.rs"]
mod worker_relay;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The committed inputs of `target`: its seeds, then its regressions.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.expect("directory entry").path())
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).expect("committed input");
            out.push((p, bytes));
        }
    }
    out
}

/// Runs `check` on every committed input of `target`; names the inputs that fail.
fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= 5,
        "{target}: only {} committed inputs",
        inputs.len()
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, bytes)| std::panic::catch_unwind(|| check(bytes)).is_err())
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: failing inputs {failed:#?}");
}

fn regression(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(fuzz_dir().join("regressions").join(target).join(name)).expect("regression input")
}

#[test]
fn worker_relay_inputs() {
    replay("worker_relay", worker_relay::check);
}

#[test]
fn anthropic_stream_inputs() {
    replay("anthropic_stream", anthropic_stream::check);
}

#[test]
fn jwt_inputs() {
    replay("jwt", jwt::check);
}

/// The JWT seeds reach the paths behind the signature: the check's independent verification
/// runs, not only the early refusals.
#[test]
fn jwt_seed_tokens_are_accepted() {
    let seed = std::fs::read(fuzz_dir().join("seeds/jwt/raw_eddsa_kid")).unwrap();
    let token = std::str::from_utf8(&seed[1..]).unwrap();
    let token = storycad_worker::auth::bearer_token(Some(token)).unwrap();
    let keys = storycad_worker::auth::KeySet::from_json(test_signer::fixture(
        "test-only-jwks.public.json",
    ))
    .unwrap();
    let verifier = storycad_worker::auth::Verifier::new(
        keys,
        jwt::ISSUER.to_owned(),
        jwt::AUDIENCE.to_owned(),
        storycad_worker::auth::Algorithm::DEFAULT.to_vec(),
    );
    let claims = verifier.verify(token, jwt::NOW).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.plan.as_deref(), Some("pro"));
}

/// Found by `worker_relay`: an upstream number beyond f64 (`1E727346172`) is still JSON; the
/// relay passes the chunk on, with the alias, as sent.
#[test]
fn worker_relay_number_out_of_f64_range_passes_as_sent() {
    let data = regression("worker_relay", "number_out_of_f64_range");
    worker_relay::check(&data);
    let input = pieces::Input::parse(&data);
    let mut relay =
        storycad_worker::providers::openai::OpenAiStream::new(worker_relay::ALIAS, true, vec![]);
    let mut out = relay.feed(input.body);
    out.extend(relay.finish());
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"created\":1E727346172"), "{text}");
}

/// Found by `worker_relay`: data lines joined with "\n" left a line end inside a JSON value
/// (`"choices":[` then `data:\t{...}]`), and the relayed `data:` line broke there, so the
/// caller read a cut-off object. The line end is JSON whitespace: it goes out as a space.
#[test]
fn worker_relay_newline_inside_a_value_stays_on_one_data_line() {
    worker_relay::check(&regression("worker_relay", "newline_inside_a_value"));
    let mut relay =
        storycad_worker::providers::openai::OpenAiStream::new(worker_relay::ALIAS, false, vec![]);
    let mut out = relay.feed(b"data: {\"choices\":[\ndata: {\"index\":0,\"delta\":{\"content\":\"x\"}}],\ndata: \"model\":\"gpt\"}\n\ndata: [DONE]\n\n");
    out.extend(relay.finish());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "data: {\"choices\":[ {\"index\":0,\"delta\":{\"content\":\"x\"}}],\"model\":\"storycad-fast\"}\n\ndata: [DONE]\n\n"
    );
}

/// Found by `anthropic_stream`: a BOM cut across the first two reads (`\xEF` then `\xBB\xBF`)
/// was not dropped, so `message_start` was lost behind an unknown field name and the stream
/// failed; whole, the same bytes translate fine. The framer now holds a BOM's bytes until it
/// is whole.
#[test]
fn anthropic_stream_bom_split_across_chunks_is_dropped() {
    anthropic_stream::check(&regression("anthropic_stream", "bom_split_across_chunks"));
    let body = b"\xEF\xBB\xBFevent: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":1}}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    for cut in 0..=4 {
        let mut relay = storycad_worker::providers::anthropic::AnthropicStream::new("a", 1, false);
        let mut out = relay.feed(&body[..cut]);
        out.extend(relay.feed(&body[cut..]));
        out.extend(relay.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "cut at {cut}: {text}");
        assert!(relay.error().is_none(), "cut at {cut}: {text}");
    }
}

/// Found by `jwt`: a header (or claims set) whose ignored member held bytes that are not UTF-8
/// (`{"alg":"EdDSA","x":"pro\x91key"}`) was accepted: `serde_json::from_slice` checks UTF-8
/// only in the strings it keeps. Such a part is not JSON, and is now refused as such.
#[test]
fn jwt_parts_that_are_not_utf8_are_refused() {
    use storycad_worker::auth::{AuthError, TokenPart};
    jwt::check(&regression("jwt", "header_member_not_utf8"));
    let keys = storycad_worker::auth::KeySet::from_json(test_signer::fixture(
        "test-only-jwks.public.json",
    ))
    .unwrap();
    let verifier = storycad_worker::auth::Verifier::new(
        keys,
        jwt::ISSUER.to_owned(),
        jwt::AUDIENCE.to_owned(),
        storycad_worker::auth::Algorithm::DEFAULT.to_vec(),
    );
    let claims = jwt::good_claims().to_string();
    let key = test_signer::TestKey::EdDsa;
    let good = test_signer::sign_bytes(key, br#"{"alg":"EdDSA","x":"ok"}"#, claims.as_bytes());
    assert!(verifier.verify(&good, jwt::NOW).is_ok());
    let bad_header = test_signer::sign_bytes(
        key,
        b"{\"alg\":\"EdDSA\",\"x\":\"pro\x91key\"}",
        claims.as_bytes(),
    );
    assert_eq!(
        verifier.verify(&bad_header, jwt::NOW),
        Err(AuthError::Json(TokenPart::Header))
    );
    assert_eq!(
        storycad_worker::auth::token_kid(&bad_header),
        Err(AuthError::Json(TokenPart::Header))
    );
    let mut bad_claims = claims.into_bytes();
    bad_claims.pop();
    bad_claims.extend_from_slice(b",\"x\":\"\xff\"}");
    let bad_claims = test_signer::sign_bytes(key, br#"{"alg":"EdDSA"}"#, &bad_claims);
    assert_eq!(
        verifier.verify(&bad_claims, jwt::NOW),
        Err(AuthError::Json(TokenPart::Claims))
    );
}
