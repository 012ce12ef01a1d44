//! `jwt`: tokens and keys through the Worker's verifier (`storycad_worker::auth`).
//!
//! The first byte picks the mode:
//!
//! - 0: the rest is an `Authorization` value / token, verified against the committed test JWKS
//!   (RS256, ES256 and EdDSA keys).
//! - 1: `[1, key, header, 0xFF, claims, 0xFF, edits]`: the header and claims bytes are signed with
//!   a test private key (`key` bit 0: EdDSA or ES256), so the claims checks behind the signature
//!   are reached; then `edits` (3 bytes each: offset u16 LE, byte) change the token, which must
//!   then fail unless the change left a token that is still really signed.
//! - 2: the rest is a JWK/JWKS text for `KeySet::from_json` (and `JWT_ALGORITHMS` for
//!   `parse_algorithms`); tokens signed by each test key are verified against it.
//!
//! Checked: no panic, and no token is accepted unless it is really signed by a key the
//! verifier was given: the signature segment is canonical base64url and verifies (checked here,
//! apart from the verifier) with the key of the header's `alg` (and `kid`, when given); the
//! header names no key of its own, no `crit`, an allowed `typ`; the returned claims match the
//! token (`sub` non-empty, `iss`, `aud`, `exp`/`nbf` within the leeway). A key set accepting a
//! test key's token must contain that key's public material.

use base64::{
    alphabet,
    engine::{
        general_purpose::URL_SAFE_NO_PAD, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig,
    },
    Engine as _,
};
use rsa::signature::Verifier as _;
use serde_json::{json, Value};
use storycad_worker::auth::{
    bearer_token, parse_algorithms, token_kid, Algorithm, Claims, KeySet, Verifier,
};

use crate::test_signer::{fixture, sign_bytes, TestKey};

/// The configured issuer and audience.
pub const ISSUER: &str = "https://auth.fuzz.test";
/// The configured audience.
pub const AUDIENCE: &str = "storycad-fuzz";
/// The verifier's clock.
pub const NOW: u64 = 1_800_000_000;
const LEEWAY: u64 = 60;

/// Claims that pass.
pub fn good_claims() -> Value {
    json!({"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 3600, "plan": "pro"})
}

fn verifier(keys: KeySet) -> Verifier {
    Verifier::new(
        keys,
        ISSUER.to_owned(),
        AUDIENCE.to_owned(),
        Algorithm::DEFAULT.to_vec(),
    )
}

fn fixture_verifier() -> &'static Verifier {
    static V: std::sync::OnceLock<Verifier> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let keys = KeySet::from_json(fixture("test-only-jwks.public.json")).expect("test JWKS");
        verifier(keys)
    })
}

/// The check for one fuzz input; panics on a violation.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw_token(rest),
        1 => signed_token(rest),
        _ => key_set(rest),
    }
}

fn raw_token(rest: &[u8]) {
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = token_kid(text);
    verify_fixture(text);
    if let Ok(token) = bearer_token(Some(text)) {
        verify_fixture(token);
    }
}

fn verify_fixture(token: &str) {
    if let Ok(claims) = fixture_verifier().verify(token, NOW) {
        assert_really_signed(token, &claims, FixtureKeys::All);
    }
}

fn signed_token(rest: &[u8]) {
    let Some((&which, rest)) = rest.split_first() else {
        return;
    };
    let key = if which & 1 == 0 {
        TestKey::EdDsa
    } else {
        TestKey::Es256
    };
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let header = parts.next().unwrap_or_default();
    let default_claims = good_claims().to_string();
    let claims = parts.next().unwrap_or(default_claims.as_bytes());
    let edits = parts.next().unwrap_or_default();
    let token = sign_bytes(key, header, claims);
    verify_fixture(&token);
    let mut edited = token.clone().into_bytes();
    for e in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % edited.len();
        edited[at] = e[2];
    }
    if let Ok(edited) = String::from_utf8(edited) {
        verify_fixture(&edited);
    }
}

/// Which keys a verifier held.
#[derive(Clone, Copy)]
enum FixtureKeys {
    All,
    Only(TestKey),
}

fn strict_b64(segment: &str) -> Vec<u8> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|e| panic!("accepted a segment that is not base64url ({e}): {segment:?}"));
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&bytes),
        segment,
        "accepted a non-canonical segment"
    );
    bytes
}

fn public_jwk(key: TestKey) -> Value {
    serde_json::from_str(key.public_jwk()).expect("fixture JWK")
}

fn jwk_field(jwk: &Value, name: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwk[name].as_str().expect("JWK field"))
        .expect("JWK field is base64url")
}

/// Verifies with the fixture public key of `key`, with code of our own (no key choice).
fn fixture_verifies(key: TestKey, message: &[u8], sig: &[u8]) -> bool {
    let jwk = public_jwk(key);
    match key {
        TestKey::Rs256 => {
            let big = |n| rsa::BigUint::from_bytes_be(&jwk_field(&jwk, n));
            let public = rsa::RsaPublicKey::new(big("n"), big("e")).expect("RSA fixture");
            let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
            rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| key.verify(message, &s).is_ok())
        }
        TestKey::Es256 => {
            let mut sec1 = vec![4u8];
            sec1.extend(jwk_field(&jwk, "x"));
            sec1.extend(jwk_field(&jwk, "y"));
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("P-256 fixture");
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| key.verify(message, &s).is_ok())
        }
        TestKey::EdDsa => {
            let x: [u8; 32] = jwk_field(&jwk, "x").try_into().expect("Ed25519 fixture");
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).expect("Ed25519 fixture");
            ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| key.verify_strict(message, &s).is_ok())
        }
    }
}

/// An accepted token: everything the verifier promised, checked here on its own.
fn assert_really_signed(token: &str, claims: &Claims, keys: FixtureKeys) {
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "accepted {token:?}");
    let [h, c, s] = [segments[0], segments[1], segments[2]];
    let header: Value = serde_json::from_slice(&strict_b64(h)).expect("accepted header is JSON");
    let header = header.as_object().expect("accepted header is an object");
    let payload: Value = serde_json::from_slice(&strict_b64(c)).expect("accepted claims are JSON");
    let sig = strict_b64(s);
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .expect("accepted header has alg");
    let key = match alg {
        "RS256" => TestKey::Rs256,
        "ES256" => TestKey::Es256,
        "EdDSA" | "Ed25519" => TestKey::EdDsa,
        other => panic!("accepted alg {other:?}"),
    };
    if let FixtureKeys::Only(only) = keys {
        assert_eq!(
            key, only,
            "accepted a token for a key the set does not hold"
        );
    }
    let signing_input = &token.as_bytes()[..h.len() + 1 + c.len()];
    assert!(
        fixture_verifies(key, signing_input, &sig),
        "accepted a token the {alg} key did not sign: {token:?}"
    );
    // `null` is as good as absent for `kid` and `typ`.
    let member = |name: &str| header.get(name).filter(|v| !v.is_null());
    if let (Some(kid), FixtureKeys::All) = (member("kid"), keys) {
        assert_eq!(
            kid.as_str(),
            Some(key.kid()),
            "accepted with another key's kid"
        );
    }
    for forbidden in ["jwk", "jku", "x5u", "x5c", "crit"] {
        assert!(
            !header.contains_key(forbidden),
            "accepted a header with {forbidden}"
        );
    }
    if let Some(typ) = member("typ") {
        let typ = typ
            .as_str()
            .expect("accepted typ is a string")
            .to_ascii_lowercase();
        let typ = typ.strip_prefix("application/").unwrap_or(&typ);
        assert!(typ == "jwt" || typ == "at+jwt", "accepted typ {typ:?}");
    }
    let payload = payload.as_object().expect("accepted claims are an object");
    assert!(!claims.sub.is_empty());
    assert_eq!(
        payload.get("sub").and_then(Value::as_str),
        Some(claims.sub.as_str())
    );
    assert_eq!(payload.get("iss").and_then(Value::as_str), Some(ISSUER));
    let aud_ok = match payload.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(all)) => all.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    assert!(aud_ok, "accepted without the audience: {payload:?}");
    assert!(
        claims.exp.saturating_add(LEEWAY) > NOW,
        "accepted an expired token"
    );
    if let Some(nbf) = claims.nbf {
        assert!(nbf <= NOW + LEEWAY, "accepted a token not yet valid");
    }
    assert_eq!(
        claims.plan.as_deref(),
        payload.get("plan").and_then(Value::as_str),
        "plan"
    );
}

/// Tokens that pass with the fixture keys: each key, with and without `kid`.
fn fixed_tokens() -> &'static [(TestKey, String)] {
    static T: std::sync::OnceLock<Vec<(TestKey, String)>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let claims = good_claims().to_string();
        let mut out = Vec::new();
        for key in TestKey::ALL {
            for header in [
                json!({"alg": key.alg(), "typ": "JWT", "kid": key.kid()}),
                json!({"alg": key.alg()}),
            ] {
                out.push((
                    key,
                    sign_bytes(key, header.to_string().as_bytes(), claims.as_bytes()),
                ));
            }
        }
        out
    })
}

/// Every string in `v`, however deep.
fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&x| x == 0).count();
    &b[n..]
}

/// Whether the key text holds `material` as one of its (padded or not) base64url strings.
fn holds(text_strings: &[&str], material: &[u8]) -> bool {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    text_strings.iter().any(|s| {
        LENIENT
            .decode(s)
            .is_ok_and(|b| strip_zeros(&b) == strip_zeros(material))
    })
}

fn key_set(rest: &[u8]) {
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = parse_algorithms(text);
    let Ok(keys) = KeySet::from_json(text) else {
        return;
    };
    assert!(keys.usable_len() > 0, "a key set without a usable key");
    let _ = (
        keys.skipped(),
        keys.algorithms(),
        keys.contains_kid("test-eddsa"),
    );
    let value: Value = serde_json::from_str(text).expect("an accepted key set is JSON");
    let mut text_strings = Vec::new();
    strings(&value, &mut text_strings);
    let v = verifier(keys);
    for (key, token) in fixed_tokens() {
        let Ok(claims) = v.verify(token, NOW) else {
            continue;
        };
        assert_really_signed(token, &claims, FixtureKeys::Only(*key));
        let jwk = public_jwk(*key);
        let material: &[&str] = match key {
            TestKey::Rs256 => &["n"],
            TestKey::Es256 => &["x", "y"],
            TestKey::EdDsa => &["x"],
        };
        for m in material {
            assert!(
                holds(&text_strings, &jwk_field(&jwk, m)),
                "a {} token passed a key set without the key's {m}",
                key.alg()
            );
        }
    }
}
