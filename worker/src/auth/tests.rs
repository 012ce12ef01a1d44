//! Verification tests: one valid token per algorithm, one test per way of being refused.
//! Tokens are signed with the committed test-only fixture keys (`test_signer`).

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::test_signer::{b64, fixture, raw_signature, sign, sign_bytes, TestKey};
use super::*;

const ISS: &str = "https://issuer.storycad.test";
const AUD: &str = "storycad-llm-proxy";
const NOW: u64 = 1_800_000_000;

fn all_keys() -> KeySet {
    KeySet::from_json(fixture("test-only-jwks.public.json")).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(
        all_keys(),
        ISS.into(),
        AUD.into(),
        Algorithm::DEFAULT.to_vec(),
    )
}

fn verifier_with(keys: &str) -> Verifier {
    Verifier::new(
        KeySet::from_json(keys).unwrap(),
        ISS.into(),
        AUD.into(),
        Algorithm::DEFAULT.to_vec(),
    )
}

fn header(key: TestKey) -> Value {
    json!({"alg": key.alg(), "kid": key.kid(), "typ": "JWT"})
}

fn claims() -> Value {
    json!({
        "sub": "user-42",
        "exp": NOW + 300,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "iss": ISS,
        "aud": AUD,
        "plan": "pro",
        "scope": "chat"
    })
}

fn token_with(
    key: TestKey,
    edit_header: impl FnOnce(&mut Value),
    edit_claims: impl FnOnce(&mut Value),
) -> String {
    let mut h = header(key);
    edit_header(&mut h);
    let mut c = claims();
    edit_claims(&mut c);
    sign(key, &h, &c)
}

fn with_header(key: TestKey, edit: impl FnOnce(&mut Value)) -> String {
    token_with(key, edit, |_| {})
}

fn with_claims(key: TestKey, edit: impl FnOnce(&mut Value)) -> String {
    token_with(key, |_| {}, edit)
}

fn refused(token: &str) -> AuthError {
    verifier().verify(token, NOW).unwrap_err()
}

fn expected_claims() -> Claims {
    Claims {
        sub: "user-42".into(),
        exp: NOW + 300,
        iat: Some(NOW - 10),
        nbf: Some(NOW - 10),
        plan: Some("pro".into()),
    }
}

/// HMAC-SHA256, to build the classic "public key as HMAC secret" forgery.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

// ---- valid tokens ------------------------------------------------------------------------

#[test]
fn valid_rs256_token() {
    let token = sign(TestKey::Rs256, &header(TestKey::Rs256), &claims());
    assert_eq!(verifier().verify(&token, NOW), Ok(expected_claims()));
}

#[test]
fn valid_es256_token() {
    let token = sign(TestKey::Es256, &header(TestKey::Es256), &claims());
    assert_eq!(verifier().verify(&token, NOW), Ok(expected_claims()));
}

#[test]
fn valid_eddsa_token() {
    let token = sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims());
    assert_eq!(verifier().verify(&token, NOW), Ok(expected_claims()));
    // RFC 9864's fully specified name for the same algorithm.
    let token = with_header(TestKey::EdDsa, |h| h["alg"] = json!("Ed25519"));
    assert_eq!(verifier().verify(&token, NOW), Ok(expected_claims()));
}

#[test]
fn valid_token_with_minimal_claims_and_header() {
    let c = json!({"sub": "u", "exp": NOW + 1, "iss": ISS, "aud": AUD});
    let token = sign(
        TestKey::Es256,
        &json!({"alg": "ES256", "kid": "test-es256"}),
        &c,
    );
    let got = verifier().verify(&token, NOW).unwrap();
    assert_eq!(
        got,
        Claims {
            sub: "u".into(),
            exp: NOW + 1,
            iat: None,
            nbf: None,
            plan: None
        }
    );
}

#[test]
fn token_without_kid_is_fine_with_one_candidate_key() {
    for key in TestKey::ALL {
        let token = with_header(key, |h| {
            h.as_object_mut().unwrap().remove("kid");
        });
        // A lone JWK (which has a kid itself; a kid-less key works the same).
        assert_eq!(
            verifier_with(key.public_jwk()).verify(&token, NOW),
            Ok(expected_claims()),
            "{key:?} alone"
        );
        // A JWKS where only one key is for the token's algorithm.
        assert_eq!(
            verifier().verify(&token, NOW),
            Ok(expected_claims()),
            "{key:?} in set"
        );
    }
    let mut kidless: Value = serde_json::from_str(TestKey::EdDsa.public_jwk()).unwrap();
    kidless.as_object_mut().unwrap().remove("kid");
    let token = with_header(TestKey::EdDsa, |h| {
        h.as_object_mut().unwrap().remove("kid");
    });
    assert_eq!(
        verifier_with(&kidless.to_string()).verify(&token, NOW),
        Ok(expected_claims())
    );
}

#[test]
fn audience_may_be_an_array() {
    let token = with_claims(TestKey::EdDsa, |c| c["aud"] = json!(["other", AUD]));
    assert_eq!(verifier().verify(&token, NOW), Ok(expected_claims()));
}

#[test]
fn typ_jwt_and_at_jwt_are_accepted_case_insensitively() {
    for typ in [
        "JWT",
        "jwt",
        "at+jwt",
        "AT+JWT",
        "application/jwt",
        "application/at+jwt",
    ] {
        let token = with_header(TestKey::EdDsa, |h| h["typ"] = json!(typ));
        assert_eq!(
            verifier().verify(&token, NOW),
            Ok(expected_claims()),
            "{typ}"
        );
    }
    let token = with_header(TestKey::EdDsa, |h| {
        h.as_object_mut().unwrap().remove("typ");
    });
    assert_eq!(verifier().verify(&token, NOW), Ok(expected_claims()));
}

#[test]
fn fractional_dates_are_rounded_down() {
    let token = with_claims(TestKey::EdDsa, |c| {
        c["exp"] = json!((NOW + 300) as f64 + 0.75)
    });
    assert_eq!(verifier().verify(&token, NOW).unwrap().exp, NOW + 300);
}

// ---- refused: algorithm ------------------------------------------------------------------

#[test]
fn rejects_alg_none_in_any_casing() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "kid": "test-rs256", "typ": "JWT"});
        // With a signature segment (some libraries accept any), and without one.
        assert_eq!(
            refused(&unsigned(&h, &claims(), "AAAA")),
            AuthError::AlgorithmNone,
            "{alg}"
        );
        assert_eq!(
            refused(&unsigned(&h, &claims(), "")),
            AuthError::Segments,
            "{alg}"
        );
    }
}

#[test]
fn rejects_hmac_algorithms_even_keyed_with_the_public_key() {
    // The classic confusion attack: HMAC keyed with the verifier's own public key text.
    for alg in ["HS256", "HS384", "HS512", "hs256"] {
        let h = json!({"alg": alg, "kid": "test-rs256", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let mac = hmac_sha256(TestKey::Rs256.public_jwk().as_bytes(), input.as_bytes());
        let token = format!("{input}.{}", b64(&mac));
        assert_eq!(refused(&token), AuthError::AlgorithmHmac, "{alg}");
    }
}

#[test]
fn rejects_algorithm_not_in_allow_list() {
    let v = Verifier::new(all_keys(), ISS.into(), AUD.into(), vec![Algorithm::ES256]);
    let token = sign(TestKey::Rs256, &header(TestKey::Rs256), &claims());
    assert_eq!(v.verify(&token, NOW), Err(AuthError::AlgorithmNotAllowed));
    let token = sign(TestKey::Es256, &header(TestKey::Es256), &claims());
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn rejects_unknown_or_missing_alg() {
    for alg in ["RS384", "PS256", "ES384", "rs256", "EdDSA2"] {
        let token = with_header(TestKey::Rs256, |h| h["alg"] = json!(alg));
        assert_eq!(refused(&token), AuthError::AlgorithmNotAllowed, "{alg}");
    }
    let token = with_header(TestKey::Rs256, |h| {
        h.as_object_mut().unwrap().remove("alg");
    });
    assert_eq!(refused(&token), AuthError::NoAlgorithm);
    let token = with_header(TestKey::Rs256, |h| h["alg"] = json!(256));
    assert_eq!(refused(&token), AuthError::Json(TokenPart::Header));
}

// ---- refused: key choice -----------------------------------------------------------------

#[test]
fn rejects_kid_with_no_key() {
    let token = with_header(TestKey::EdDsa, |h| h["kid"] = json!("retired-2024"));
    assert_eq!(refused(&token), AuthError::UnknownKey);
}

#[test]
fn rejects_rs256_token_with_an_ec_key() {
    // The token names the EC key but claims RS256 (signed with the RSA key).
    let token = with_header(TestKey::Rs256, |h| h["kid"] = json!("test-es256"));
    assert_eq!(refused(&token), AuthError::KeyMismatch);
    // A lone EC key and a kid-less RS256 token.
    let token = with_header(TestKey::Rs256, |h| {
        h.as_object_mut().unwrap().remove("kid");
    });
    let v = verifier_with(TestKey::Es256.public_jwk());
    assert_eq!(v.verify(&token, NOW), Err(AuthError::KeyMismatch));
    // EdDSA token pointed at the RSA key.
    let token = with_header(TestKey::EdDsa, |h| h["kid"] = json!("test-rs256"));
    assert_eq!(refused(&token), AuthError::KeyMismatch);
}

#[test]
fn rejects_es256_token_with_a_p384_key() {
    let keys = format!(
        r#"{{"keys":[{},{}]}}"#,
        fixture("test-only-p384.public.jwk.json"),
        TestKey::Es256.public_jwk()
    );
    let token = with_header(TestKey::Es256, |h| h["kid"] = json!("test-es384"));
    assert_eq!(
        verifier_with(&keys).verify(&token, NOW),
        Err(AuthError::KeyMismatch)
    );
}

#[test]
fn rejects_keys_whose_use_or_key_ops_forbid_verification() {
    let mut enc: Value = serde_json::from_str(TestKey::EdDsa.public_jwk()).unwrap();
    enc["use"] = json!("enc");
    let mut no_verify: Value = serde_json::from_str(TestKey::Es256.public_jwk()).unwrap();
    no_verify["key_ops"] = json!(["sign"]);
    let keys = format!(
        r#"{{"keys":[{enc},{no_verify},{}]}}"#,
        TestKey::Rs256.public_jwk()
    );
    let v = verifier_with(&keys);
    for key in [TestKey::EdDsa, TestKey::Es256] {
        let token = sign(key, &header(key), &claims());
        assert_eq!(
            v.verify(&token, NOW),
            Err(AuthError::KeyMismatch),
            "{key:?}"
        );
    }
    let token = sign(TestKey::Rs256, &header(TestKey::Rs256), &claims());
    assert!(v.verify(&token, NOW).is_ok());
}

#[test]
fn rejects_kidless_token_when_several_keys_fit() {
    let keys = format!(
        r#"{{"keys":[{},{}]}}"#,
        TestKey::EdDsa.public_jwk(),
        TestKey::EdDsa.public_jwk().replace("test-eddsa", "second")
    );
    let token = with_header(TestKey::EdDsa, |h| {
        h.as_object_mut().unwrap().remove("kid");
    });
    assert_eq!(
        verifier_with(&keys).verify(&token, NOW),
        Err(AuthError::AmbiguousKey)
    );
}

// ---- refused: header parameters ----------------------------------------------------------

#[test]
fn rejects_jwk_header_even_with_a_matching_embedded_key() {
    let embedded: Value = serde_json::from_str(TestKey::EdDsa.public_jwk()).unwrap();
    let token = with_header(TestKey::EdDsa, |h| h["jwk"] = embedded);
    assert_eq!(refused(&token), AuthError::KeyInHeader("jwk"));
    let token = with_header(TestKey::EdDsa, |h| h["jwk"] = Value::Null);
    assert_eq!(refused(&token), AuthError::KeyInHeader("jwk"));
}

#[test]
fn rejects_jku_header() {
    let token = with_header(TestKey::EdDsa, |h| {
        h["jku"] = json!("https://attacker.example/jwks.json");
    });
    assert_eq!(refused(&token), AuthError::KeyInHeader("jku"));
}

#[test]
fn rejects_x5u_header() {
    let token = with_header(TestKey::EdDsa, |h| {
        h["x5u"] = json!("https://attacker.example/cert.pem");
    });
    assert_eq!(refused(&token), AuthError::KeyInHeader("x5u"));
}

#[test]
fn rejects_x5c_header() {
    let token = with_header(TestKey::EdDsa, |h| h["x5c"] = json!(["MIIB"]));
    assert_eq!(refused(&token), AuthError::KeyInHeader("x5c"));
}

#[test]
fn rejects_crit_header() {
    for crit in [json!(["exp"]), json!([]), json!("b64")] {
        let token = with_header(TestKey::EdDsa, |h| h["crit"] = crit.clone());
        assert_eq!(refused(&token), AuthError::CriticalHeader, "{crit}");
    }
}

#[test]
fn rejects_typ_other_than_jwt_or_at_jwt() {
    for typ in [
        "dpop+jwt",
        "secevent+jwt",
        "JOSE",
        "JWS",
        "",
        "application/json",
    ] {
        let token = with_header(TestKey::EdDsa, |h| h["typ"] = json!(typ));
        assert_eq!(refused(&token), AuthError::WrongType, "{typ:?}");
    }
    let token = with_header(TestKey::EdDsa, |h| h["typ"] = json!(1));
    assert_eq!(refused(&token), AuthError::Json(TokenPart::Header));
}

// ---- refused: claims ---------------------------------------------------------------------

#[test]
fn rejects_expired_token_beyond_the_leeway() {
    let at =
        |exp: u64| verifier().verify(&with_claims(TestKey::EdDsa, |c| c["exp"] = json!(exp)), NOW);
    assert!(at(NOW - LEEWAY_SECS + 1).is_ok());
    assert_eq!(at(NOW - LEEWAY_SECS), Err(AuthError::Expired));
    assert_eq!(at(NOW - 3600), Err(AuthError::Expired));
    assert_eq!(at(0), Err(AuthError::Expired));
}

#[test]
fn rejects_not_yet_valid_token_beyond_the_leeway() {
    let at =
        |nbf: u64| verifier().verify(&with_claims(TestKey::EdDsa, |c| c["nbf"] = json!(nbf)), NOW);
    assert!(at(NOW + LEEWAY_SECS).is_ok());
    assert_eq!(at(NOW + LEEWAY_SECS + 1), Err(AuthError::NotYetValid));
}

#[test]
fn rejects_wrong_issuer() {
    for iss in [
        json!("https://evil.test"),
        json!(ISS.to_uppercase()),
        json!(format!("{ISS}/")),
        json!(null),
    ] {
        let token = with_claims(TestKey::EdDsa, |c| c["iss"] = iss.clone());
        assert_eq!(refused(&token), AuthError::WrongIssuer, "{iss}");
    }
    let token = with_claims(TestKey::EdDsa, |c| {
        c.as_object_mut().unwrap().remove("iss");
    });
    assert_eq!(refused(&token), AuthError::WrongIssuer);
}

#[test]
fn rejects_wrong_audience() {
    for aud in [json!("other"), json!(["a", "b"]), json!([]), json!(null)] {
        let token = with_claims(TestKey::EdDsa, |c| c["aud"] = aud.clone());
        assert_eq!(refused(&token), AuthError::WrongAudience, "{aud}");
    }
    let token = with_claims(TestKey::EdDsa, |c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    assert_eq!(refused(&token), AuthError::WrongAudience);
    let token = with_claims(TestKey::EdDsa, |c| c["aud"] = json!([AUD, 1]));
    assert_eq!(refused(&token), AuthError::Json(TokenPart::Claims));
}

#[test]
fn rejects_token_without_exp() {
    let token = with_claims(TestKey::EdDsa, |c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_eq!(refused(&token), AuthError::MissingExp);
    let token = with_claims(TestKey::EdDsa, |c| c["exp"] = Value::Null);
    assert_eq!(refused(&token), AuthError::MissingExp);
    for bad in [json!("1800000300"), json!(-1)] {
        let token = with_claims(TestKey::EdDsa, |c| c["exp"] = bad.clone());
        assert_eq!(refused(&token), AuthError::Json(TokenPart::Claims), "{bad}");
    }
}

#[test]
fn rejects_token_without_sub_or_with_an_empty_one() {
    let token = with_claims(TestKey::EdDsa, |c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    assert_eq!(refused(&token), AuthError::MissingSub);
    let token = with_claims(TestKey::EdDsa, |c| c["sub"] = json!(""));
    assert_eq!(refused(&token), AuthError::MissingSub);
    let token = with_claims(TestKey::EdDsa, |c| c["sub"] = json!(42));
    assert_eq!(refused(&token), AuthError::Json(TokenPart::Claims));
}

// ---- refused: shape ----------------------------------------------------------------------

#[test]
fn rejects_tokens_over_8_kib() {
    // Find claims padding that puts the token exactly at the limit, and one byte over.
    let token_of = |pad: usize| with_claims(TestKey::EdDsa, |c| c["pad"] = json!("x".repeat(pad)));
    let base = token_of(0).len();
    let mut at_limit = None;
    let mut over = None;
    for pad in (MAX_TOKEN_BYTES - base) * 3 / 4 - 8..(MAX_TOKEN_BYTES - base) * 3 / 4 + 8 {
        let t = token_of(pad);
        if t.len() == MAX_TOKEN_BYTES {
            at_limit = Some(t);
        } else if t.len() == MAX_TOKEN_BYTES + 1 {
            over = Some(t);
        }
    }
    let (at_limit, over) = (at_limit.unwrap(), over.unwrap());
    assert!(verifier().verify(&at_limit, NOW).is_ok());
    assert_eq!(refused(&over), AuthError::TooLarge);
}

#[test]
fn rejects_malformed_base64() {
    let good = sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let join = |h: &str, c: &str, s: &str| format!("{h}.{c}.{s}");
    // Characters outside base64url, padding, standard-alphabet characters.
    assert_eq!(
        refused(&join("e!J", parts[1], parts[2])),
        AuthError::Base64(TokenPart::Header)
    );
    assert_eq!(
        refused(&join(&format!("{}=", parts[0]), parts[1], parts[2])),
        AuthError::Base64(TokenPart::Header)
    );
    let std_sig = parts[2].replace('-', "+").replace('_', "/");
    if std_sig != parts[2] {
        assert_eq!(
            refused(&join(parts[0], parts[1], &std_sig)),
            AuthError::Base64(TokenPart::Signature)
        );
    }
    assert_eq!(
        refused(&join(parts[0], parts[1], "a$b")),
        AuthError::Base64(TokenPart::Signature)
    );
    // A segment of impossible length (4n+1).
    assert_eq!(
        refused(&join(parts[0], parts[1], "AAAAA")),
        AuthError::Base64(TokenPart::Signature)
    );
    // Non-canonical trailing bits: "AB" decodes to one byte only if the spare bits are zero.
    assert_eq!(
        refused(&join(parts[0], parts[1], "AB")),
        AuthError::Base64(TokenPart::Signature)
    );
    // Claims: signed correctly over a claims segment that is not base64url.
    let input = format!("{}.{}", parts[0], "eyJ*");
    let sig = b64(&raw_signature(TestKey::EdDsa, input.as_bytes()));
    assert_eq!(
        refused(&format!("{input}.{sig}")),
        AuthError::Base64(TokenPart::Claims)
    );
}

#[test]
fn rejects_malformed_json() {
    let k = TestKey::EdDsa;
    let h = header(k).to_string();
    let c = claims().to_string();
    let header_cases: [&[u8]; 4] = [
        b"not json",
        b"[\"EdDSA\",\"test-eddsa\"]",
        b"{\"alg\":\"EdDSA\"",
        b"\"EdDSA\"",
    ];
    for bad in header_cases {
        let token = sign_bytes(k, bad, c.as_bytes());
        assert_eq!(
            refused(&token),
            AuthError::Json(TokenPart::Header),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let dup = br#"{"alg":"EdDSA","alg":"none","kid":"test-eddsa"}"#;
    assert_eq!(
        refused(&sign_bytes(k, dup, c.as_bytes())),
        AuthError::Json(TokenPart::Header)
    );
    let claims_cases: [&[u8]; 4] = [b"not json", b"[1,2]", b"{\"sub\":", b"\xff\xfe"];
    for bad in claims_cases {
        let token = sign_bytes(k, h.as_bytes(), bad);
        assert_eq!(
            refused(&token),
            AuthError::Json(TokenPart::Claims),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // Two `sub`s: which one would a limiter use? Neither.
    let dup = format!(
        r#"{{"sub":"a","sub":"b","exp":{},"iss":"{ISS}","aud":"{AUD}"}}"#,
        NOW + 300
    );
    assert_eq!(
        refused(&sign_bytes(k, h.as_bytes(), dup.as_bytes())),
        AuthError::Json(TokenPart::Claims)
    );
}

#[test]
fn rejects_wrong_number_of_segments() {
    let good = sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims());
    let parts: Vec<&str> = good.split('.').collect();
    for bad in [
        parts[0].to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.{}", parts[2]),
        format!(
            "{}.{}.{}.{}.{}",
            parts[0], parts[1], parts[2], parts[1], parts[2]
        ),
        format!(".{}.{}", parts[1], parts[2]),
        format!("{}..{}", parts[0], parts[2]),
        format!("{}.{}.", parts[0], parts[1]),
        String::new(),
    ] {
        assert_eq!(refused(&bad), AuthError::Segments, "{bad}");
    }
}

#[test]
fn rejects_bad_signatures() {
    for key in TestKey::ALL {
        let good = sign(key, &header(key), &claims());
        let (input, sig) = good.rsplit_once('.').unwrap();
        let mut raw =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        // One bit flipped.
        let mid = raw.len() / 2;
        raw[mid] ^= 1;
        assert_eq!(
            refused(&format!("{input}.{}", b64(&raw))),
            AuthError::BadSignature,
            "{key:?} flipped"
        );
        // Truncated.
        raw.pop();
        assert_eq!(
            refused(&format!("{input}.{}", b64(&raw))),
            AuthError::BadSignature,
            "{key:?} short"
        );
        // The signature of other claims.
        let other = with_claims(key, |c| c["sub"] = json!("admin"));
        let other_sig = other.rsplit_once('.').unwrap().1;
        assert_eq!(
            refused(&format!("{input}.{other_sig}")),
            AuthError::BadSignature,
            "{key:?} swapped"
        );
        // Claims changed after signing.
        let forged = format!(
            "{}.{}.{sig}",
            input.split_once('.').unwrap().0,
            b64(json!({"sub":"admin","exp":NOW+300,"iss":ISS,"aud":AUD})
                .to_string()
                .as_bytes())
        );
        assert_eq!(refused(&forged), AuthError::BadSignature, "{key:?} forged");
    }
}

#[test]
fn rejects_es256_signature_in_der_form() {
    let k = TestKey::Es256;
    let h = header(k).to_string();
    let c = claims().to_string();
    let input = format!("{}.{}", b64(h.as_bytes()), b64(c.as_bytes()));
    let raw = raw_signature(k, input.as_bytes());
    let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
    let token = format!("{input}.{}", b64(der.as_bytes()));
    assert_eq!(refused(&token), AuthError::BadSignature);
    // The same signature as raw r || s passes.
    assert!(verifier()
        .verify(&format!("{input}.{}", b64(&raw)), NOW)
        .is_ok());
}

#[test]
fn rejects_eddsa_signature_with_non_canonical_s() {
    // S + l verifies under lax checks (same point arithmetic) but is a second spelling of the
    // same signature: refused, so tokens are not malleable.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let good = sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims());
    let plus_l = signature_changed(&good, |raw| {
        let mut carry = 0u16;
        for (i, l) in L.iter().enumerate() {
            let sum = u16::from(raw[32 + i]) + u16::from(*l) + carry;
            raw[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
    });
    assert_eq!(refused(&plus_l), AuthError::BadSignature);
}

/// `token` with its signature's bytes changed by `change`.
fn signature_changed(token: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    change(&mut raw);
    format!("{input}.{}", b64(&raw))
}

#[test]
fn refuses_signatures_of_the_wrong_form_before_checking_them() {
    // What `signed_with` refuses on its own, so that WebCrypto (the Worker) and RustCrypto
    // (here) never see it: each is `BadSignature`, and never gets as far as a `Signed`.
    let v = verifier();
    let keys = all_keys();
    let cases = [
        // R the identity point: small order.
        signature_changed(
            &sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims()),
            |s| {
                s[..32].fill(0);
                s[0] = 1;
            },
        ),
        // R of order 2 (y = p - 1), whatever the sign bit.
        signature_changed(
            &sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims()),
            |s| {
                s[..32].fill(0xff);
                s[0] = 0xec;
            },
        ),
        signature_changed(
            &sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims()),
            |s| {
                s.pop();
            },
        ),
        // An RS256 signature one byte short of the modulus, or with a zero byte in front.
        signature_changed(
            &sign(TestKey::Rs256, &header(TestKey::Rs256), &claims()),
            |s| {
                s.remove(0);
            },
        ),
        signature_changed(
            &sign(TestKey::Rs256, &header(TestKey::Rs256), &claims()),
            |s| {
                s.insert(0, 0);
            },
        ),
        signature_changed(
            &sign(TestKey::Es256, &header(TestKey::Es256), &claims()),
            |s| {
                s.push(0);
            },
        ),
    ];
    for token in &cases {
        assert_eq!(
            v.signed_with(&keys, token).unwrap_err(),
            AuthError::BadSignature,
            "{token}"
        );
    }
    // A well-formed signature gets a `Signed`, and only a passing verdict reaches the claims.
    let good = sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims());
    let signed = v.signed_with(&keys, &good).unwrap();
    assert!(signed.check());
    let forged = signature_changed(&good, |s| s[40] ^= 1);
    let signed_forged = v.signed_with(&keys, &forged).unwrap();
    assert!(!signed_forged.check());
    let signed_forged_text = format!("{signed_forged:?}");
    assert!(signed_forged_text.contains("EdDSA"), "{signed_forged_text}");
    assert_eq!(
        signed_forged.verdict(false).unwrap_err(),
        AuthError::BadSignature
    );
    // Neither shows the token in a log line, should one ever be formatted.
    let (_, sig) = good.rsplit_once('.').unwrap();
    let (input, _) = good.rsplit_once('.').unwrap();
    let verified = signed.verdict(true).unwrap();
    for text in [signed_forged_text, format!("{verified:?}")] {
        assert!(!text.contains(sig) && !text.contains(input), "{text}");
    }
    let (claims, _) = v.claims(verified, NOW).unwrap();
    assert_eq!(claims, expected_claims());
}

#[test]
fn rejects_token_signed_by_another_key_with_our_kid() {
    // Signed with the ES256 fixture key but presented as a token of a different P-256 key.
    let other = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let point = other.verifying_key().to_encoded_point(false);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "test-es256",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())
    });
    let token = sign(TestKey::Es256, &header(TestKey::Es256), &claims());
    assert_eq!(
        verifier_with(&jwk.to_string()).verify(&token, NOW),
        Err(AuthError::BadSignature)
    );
}

// ---- other entry points ------------------------------------------------------------------

#[test]
fn remote_key_verifier_uses_the_given_set() {
    let v = Verifier::with_remote_keys(ISS.into(), AUD.into(), Algorithm::DEFAULT.to_vec());
    let token = sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims());
    assert_eq!(v.verify(&token, NOW), Err(AuthError::KeysUnavailable));
    assert_eq!(AuthError::KeysUnavailable.status(), 503);
    assert_eq!(
        v.verify_with(&all_keys(), &token, NOW),
        Ok(expected_claims())
    );
}

#[test]
fn token_kid_reads_the_header_only() {
    let token = sign(TestKey::EdDsa, &header(TestKey::EdDsa), &claims());
    assert_eq!(token_kid(&token), Ok(Some("test-eddsa".into())));
    let token = with_header(TestKey::EdDsa, |h| {
        h.as_object_mut().unwrap().remove("kid");
    });
    assert_eq!(token_kid(&token), Ok(None));
    let token = with_header(TestKey::EdDsa, |h| h["kid"] = json!("k\u{e9}\"y"));
    assert_eq!(token_kid(&token), Ok(Some("k\u{e9}\"y".into())));
    assert_eq!(token_kid("a.b"), Err(AuthError::Segments));
    let token = with_header(TestKey::EdDsa, |h| h["jku"] = json!("https://x"));
    assert_eq!(token_kid(&token), Err(AuthError::KeyInHeader("jku")));
}

#[test]
fn bearer_token_extraction() {
    assert_eq!(bearer_token(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
    assert_eq!(bearer_token(Some("  bearer \t abc  ")), Ok("abc"));
    assert_eq!(bearer_token(Some("BEARER abc")), Ok("abc"));
    assert_eq!(bearer_token(None), Err(AuthError::Missing));
    assert_eq!(bearer_token(Some("")), Err(AuthError::Missing));
    assert_eq!(bearer_token(Some("Bearer")), Err(AuthError::Missing));
    assert_eq!(bearer_token(Some("Bearer   ")), Err(AuthError::Missing));
    assert_eq!(
        bearer_token(Some("Basic dXNlcjpwYXNz")),
        Err(AuthError::NotBearer)
    );
    assert_eq!(bearer_token(Some("Bearerabc")), Err(AuthError::NotBearer));
    assert_eq!(bearer_token(Some("abc.def.ghi")), Err(AuthError::NotBearer));
}

#[test]
fn errors_never_echo_the_token() {
    let secret_sub = "sub-that-must-not-leak";
    let token = with_claims(TestKey::EdDsa, |c| {
        c["sub"] = json!(secret_sub);
        c["exp"] = json!(1);
    });
    let err = refused(&token);
    assert_eq!(err, AuthError::Expired);
    for text in [
        err.to_string(),
        format!("{err:?}"),
        err.reason().to_string(),
    ] {
        assert!(
            !text.contains(secret_sub) && !text.contains(&token[..20]),
            "{text}"
        );
    }
    assert_eq!(err.status(), 401);
}
