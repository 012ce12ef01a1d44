//! The token helpers on their own: the fixture keys load, their public halves match the
//! committed public JWKs, minted tokens verify with the crypto crates' verifiers, and each
//! forgery has the flaw it claims.

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::{json, Value};
use storycad_e2e::tokens::{self, forge, Alg, DevKey, SigningKey, TestKeys};

fn fixture(name: &str) -> Value {
    let path = TestKeys::dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn parts(token: &str) -> (Value, Value, Vec<u8>) {
    let p: Vec<&str> = token.split('.').collect();
    assert_eq!(p.len(), 3, "{token}");
    let d = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap();
    (
        serde_json::from_slice(&d(p[0])).unwrap(),
        serde_json::from_slice(&d(p[1])).unwrap(),
        d(p[2]),
    )
}

fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').unwrap().0
}

/// Verifies with the crypto crates directly, from the committed *public* JWK.
fn verify(public: &Value, token: &str) -> bool {
    let sig = URL_SAFE_NO_PAD
        .decode(token.rsplit_once('.').unwrap().1)
        .unwrap();
    let input = signing_input(token).as_bytes();
    let b = |k: &str| URL_SAFE_NO_PAD.decode(public[k].as_str().unwrap()).unwrap();
    match public["kty"].as_str().unwrap() {
        "RSA" => {
            use rsa::{pkcs1v15::VerifyingKey, signature::Verifier, BigUint, RsaPublicKey};
            let key = RsaPublicKey::new(
                BigUint::from_bytes_be(&b("n")),
                BigUint::from_bytes_be(&b("e")),
            )
            .unwrap();
            let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig.as_slice()) else {
                return false;
            };
            VerifyingKey::<sha2::Sha256>::new(key)
                .verify(input, &sig)
                .is_ok()
        }
        "EC" => {
            use p256::ecdsa::{signature::Verifier, Signature, VerifyingKey};
            let mut point = vec![4u8];
            point.extend(b("x"));
            point.extend(b("y"));
            let key = VerifyingKey::from_sec1_bytes(&point).unwrap();
            let Ok(sig) = Signature::from_slice(&sig) else {
                return false;
            };
            key.verify(input, &sig).is_ok()
        }
        "OKP" => {
            use ed25519_dalek::{Signature, Verifier, VerifyingKey};
            let key = VerifyingKey::from_bytes(&b("x").try_into().unwrap()).unwrap();
            let Ok(sig) = Signature::from_slice(&sig) else {
                return false;
            };
            key.verify(input, &sig).is_ok()
        }
        other => panic!("kty {other}"),
    }
}

#[test]
fn fixture_keys_match_their_public_files() {
    let keys = TestKeys::load().unwrap();
    for (alg, file, kid) in [
        (Alg::RS256, "test-only-rs256.public.jwk.json", "test-rs256"),
        (Alg::ES256, "test-only-es256.public.jwk.json", "test-es256"),
        (Alg::EdDSA, "test-only-eddsa.public.jwk.json", "test-eddsa"),
    ] {
        let key = keys.get(alg);
        assert_eq!(key.kid(), kid);
        assert_eq!(key.public_jwk(), fixture(file), "{alg:?}");
    }
    assert_eq!(keys.jwks(), fixture("test-only-jwks.public.json"));
}

#[test]
fn minted_tokens_verify_with_the_public_keys() {
    let keys = TestKeys::load().unwrap();
    let claims = tokens::claims("iss", "aud", "user-1", std::time::Duration::from_secs(60));
    for alg in Alg::ALL {
        let key = keys.get(alg);
        let token = tokens::mint(key, &claims);
        let (header, body, _) = parts(&token);
        assert_eq!(
            header,
            json!({"alg": alg.as_str(), "typ": "JWT", "kid": key.kid()})
        );
        assert_eq!(body, claims);
        assert!(verify(&key.public_jwk(), &token), "{alg:?}");
        // A changed payload no longer verifies.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let (h, _) = head.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        assert!(
            !verify(&key.public_jwk(), &format!("{h}.{other}.{sig}")),
            "{alg:?}"
        );
    }
}

#[test]
fn ed25519_matches_rfc_8037() {
    // RFC 8037 appendix A.4: the same key and payload give exactly this JWS (Ed25519 is
    // deterministic).
    let key = SigningKey::from_jwk(&json!({
        "kty": "OKP", "crv": "Ed25519",
        "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }))
    .unwrap();
    let jws = tokens::sign_raw(&key, br#"{"alg":"EdDSA"}"#, b"Example of Ed25519 signing");
    assert_eq!(
        jws,
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    );
    // RFC 7638 thumbprint of that key, as given in RFC 8037 A.3.
    assert_eq!(
        key.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn forgeries_have_the_flaw_they_claim() {
    let keys = TestKeys::load().unwrap();
    let c = tokens::claims("iss", "aud", "u", std::time::Duration::from_secs(60));
    let (h, _, sig) = parts(&forge::alg_none("nOnE", &c));
    assert_eq!(h["alg"], "nOnE");
    assert!(sig.is_empty());
    let t = forge::alg_none_with_signature("NONE", &c, b"x");
    assert_eq!(parts(&t).2, b"x");

    let rs = &keys.rs256;
    let pem = rs.public_key_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let t = forge::hs256(pem.as_bytes(), rs.kid(), &c);
    let (h, _, sig) = parts(&t);
    assert_eq!(
        (h["alg"].as_str(), h["kid"].as_str()),
        (Some("HS256"), Some("test-rs256"))
    );
    assert_eq!(sig.len(), 32);

    let t = forge::with_header(rs, &json!({"kid": "test-es256"}), &c);
    assert_eq!(parts(&t).0["kid"], "test-es256");
    assert!(
        verify(&rs.public_jwk(), &t),
        "signed by the RSA key all the same"
    );

    let t = forge::embedded_jwk(&c).unwrap();
    let (h, _, _) = parts(&t);
    assert!(verify(&h["jwk"], &t), "signed by the key it embeds");

    let t = forge::bad_base64(rs, &c);
    assert!(t.split('.').nth(1).unwrap().starts_with('*'));
    assert!(verify(&rs.public_jwk(), &t), "only the encoding is wrong");

    let t = forge::bad_json_payload(&keys.es256);
    assert!(verify(&keys.es256.public_jwk(), &t));
    let payload = URL_SAFE_NO_PAD
        .decode(t.split('.').nth(1).unwrap())
        .unwrap();
    assert!(serde_json::from_slice::<Value>(&payload).is_err());

    assert!(forge::oversized(&keys.eddsa, &c, 9 * 1024).len() > 9 * 1024);
}

#[test]
fn dev_key_has_a_thumbprint_kid_and_verifies() {
    let key = DevKey::generate().unwrap();
    let jwk = key.public_jwk();
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["kid"], key.kid());
    assert!(
        jwk.get("d").is_none(),
        "the public JWK holds no private part"
    );
    let token = key.mint(&json!({"sub": "dev"}));
    assert!(verify(&jwk, &token));
    assert_ne!(DevKey::generate().unwrap().kid(), key.kid());
}
