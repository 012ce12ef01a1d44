//! The Worker's bearer-token checks, end to end under workerd: a valid token per algorithm
//! passes; every forged or malformed one gets 401 with `WWW-Authenticate: Bearer
//! error="invalid_token"` and OpenAI's error shape, and never reaches the provider.

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::json;
use storycad_e2e::tokens::{self, forge, Alg, DevKey, TestKeys};
use support::{chat_body, Case, Suite, SuiteConfig, AUDIENCE, ISSUER, OPENAI_ALIAS};

fn main() -> ExitCode {
    let mut cases = cases![
        accepts_rs256,
        accepts_es256,
        accepts_eddsa,
        accepts_audience_in_a_list,
        accepts_lowercase_bearer_scheme,
        models_needs_a_valid_token,
        health_needs_no_token,
        a_key_webcrypto_refuses_is_logged_and_its_tokens_refused,
    ];
    for (name, reason, authorization) in rejections() {
        cases.push(Case::new(
            format!("rejects::{name}"),
            move |s: Arc<Suite>| async move {
                let header = authorization(&s);
                expect_rejected(&s, header, reason).await;
            },
        ));
    }
    // The test keys, and one our parser accepts but workerd's WebCrypto will not import.
    let keys = TestKeys::load().unwrap();
    let mut jwks = keys.jwks();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(refused_key(&keys));
    support::run(
        SuiteConfig {
            name: "e2e_auth",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("JWT_PUBLIC_JWK".into(), jwks.to_string())],
        },
        cases,
    )
}

/// POSTs a chat with `token`, expects the echo, and that the provider got exactly this one.
async fn accepted(s: &Suite, token: &str) {
    let nonce = s.nonce();
    let seen = s
        .chat(Some(token), &chat_body(OPENAI_ALIAS, &nonce, false))
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(
        seen.json()["choices"][0]["message"]["content"],
        format!("echo: {nonce}")
    );
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
}

async fn accepts_rs256(s: Arc<Suite>) {
    accepted(&s, &s.token(Alg::RS256)).await;
}

async fn accepts_es256(s: Arc<Suite>) {
    accepted(&s, &s.token(Alg::ES256)).await;
}

async fn accepts_eddsa(s: Arc<Suite>) {
    accepted(&s, &s.token(Alg::EdDSA)).await;
}

async fn accepts_audience_in_a_list(s: Arc<Suite>) {
    let mut c = s.claims("list-aud-user");
    c["aud"] = json!(["some-other-api", AUDIENCE]);
    accepted(&s, &tokens::mint(&s.keys.es256, &c)).await;
}

async fn accepts_lowercase_bearer_scheme(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = s
        .send(
            s.http
                .post(s.at("/v1/chat/completions"))
                .header("authorization", format!("bearer {}", s.token(Alg::RS256)))
                .json(&chat_body(OPENAI_ALIAS, &nonce, false)),
        )
        .await;
    assert_eq!(
        seen.status,
        200,
        "the scheme is case-insensitive: {}",
        seen.text()
    );
}

async fn models_needs_a_valid_token(s: Arc<Suite>) {
    let seen = s.send(s.http.get(s.at("/v1/models"))).await;
    assert_unauthorized(&seen);
    let seen = s
        .send(
            s.http
                .get(s.at("/v1/models"))
                .bearer_auth(forge::alg_none("none", &s.claims("u"))),
        )
        .await;
    assert_unauthorized(&seen);
    let seen = s
        .send(
            s.http
                .get(s.at("/v1/models"))
                .bearer_auth(s.token(Alg::ES256)),
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let v = seen.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&OPENAI_ALIAS), "{v}");
    // Aliases only: the provider's model names stay inside.
    assert!(!seen.text().contains(support::OPENAI_MODEL), "{v}");
}

async fn health_needs_no_token(s: Arc<Suite>) {
    let seen = s.send(s.http.get(s.at("/healthz"))).await;
    assert_eq!(seen.status, 200);
    assert!(seen.header("x-request-id").is_some());
    let text = seen.text();
    for secret_ish in [
        ISSUER,
        AUDIENCE,
        OPENAI_ALIAS,
        "127.0.0.1",
        "openai",
        "anthropic",
    ] {
        assert!(
            !text.contains(secret_ish),
            "/healthz reveals configuration: {text}"
        );
    }
}

/// The `kid` of [`refused_key`].
const REFUSED_KID: &str = "exponent-over-2-32";

/// The RS256 test key's modulus with the exponent 2^32 + 1: odd and within the 2^33 - 1 the
/// Worker's parser allows (the `rsa` crate's bound, which the host tests verify with), but
/// workerd's WebCrypto imports only 3, 17, 37 and 65537 (`Rsa::validateRsaParams`; an
/// exponent over 32 bits is refused under any compatibility flags).
fn refused_key(keys: &TestKeys) -> serde_json::Value {
    let mut jwk = keys.rs256.public_jwk();
    jwk["e"] = json!(b64(&[1, 0, 0, 0, 1]));
    jwk["kid"] = json!(REFUSED_KID);
    jwk
}

/// A key the runtime refuses to import: each token of it is refused (`bad_signature`), each
/// time with a `key_import_failed` event carrying WebCrypto's reason and no token, and the
/// other keys go on working.
async fn a_key_webcrypto_refuses_is_logged_and_its_tokens_refused(s: Arc<Suite>) {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": REFUSED_KID});
    let token = tokens::mint_with_header(&s.keys.rs256, &header, &s.claims("odd-key-user"));
    for attempt in 0..2 {
        let nonce = s.nonce();
        let seen = s
            .chat(Some(&token), &chat_body(OPENAI_ALIAS, &nonce, false))
            .await;
        assert_unauthorized(&seen);
        let id = seen.header("x-request-id").unwrap().to_owned();
        let line = s.log_line(&id).await;
        assert_eq!(line["detail"], "bad_signature", "{line}");
        let event = s.event_line(&id, "key_import_failed").await;
        let detail = event["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("publicExponent"),
            "attempt {attempt}: WebCrypto's reason is missing: {event}"
        );
        assert!(!event.to_string().contains(&token), "{event}");
        assert!(s.provider.requests_containing(&nonce).is_empty());
    }
    accepted(&s, &s.token(Alg::RS256)).await;
}

fn assert_unauthorized(seen: &support::Seen) {
    seen.assert_error(401, "invalid_token");
    assert_eq!(
        seen.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#),
        "{:?}",
        seen.headers
    );
}

async fn expect_rejected(s: &Suite, authorization: Option<String>, reason: &str) {
    let nonce = s.nonce();
    let mut rb =
        s.http
            .post(s.at("/v1/chat/completions"))
            .json(&chat_body(OPENAI_ALIAS, &nonce, true));
    if let Some(value) = &authorization {
        rb = rb.header("authorization", value);
    }
    let seen = s.send(rb).await;
    assert_unauthorized(&seen);
    // Never echo the token back.
    if let Some(value) = &authorization {
        if let Some(token) = value.split_whitespace().last().filter(|t| t.len() > 16) {
            assert!(!seen.text().contains(token), "the answer echoes the token");
        }
    }
    let line = s.log_line(seen.header("x-request-id").unwrap()).await;
    assert_eq!(line["status"], 401, "{line}");
    assert_eq!(
        line["detail"], reason,
        "rejected for another reason: {line}"
    );
    // Let a request that wrongly got through reach the provider before looking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        s.provider.requests_containing(&nonce).is_empty(),
        "a rejected request reached the provider"
    );
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn bearer(token: String) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// `token` with its signature's bytes changed by `change`.
fn signature_changed(token: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    change(&mut sig);
    format!("{input}.{}", b64(&sig))
}

/// The order of Ed25519's group, little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `to += add`, little-endian (S + l fits in 32 bytes: S < l < 2^253).
fn add_le(to: &mut [u8], add: &[u8; 32]) {
    let mut carry = 0u16;
    for (t, a) in to.iter_mut().zip(add) {
        let sum = u16::from(*t) + u16::from(*a) + carry;
        *t = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
}

/// A raw `r || s` ECDSA signature as DER (`SEQUENCE { INTEGER r, INTEGER s }`).
fn der_ecdsa(raw: &[u8]) -> Vec<u8> {
    let int = |half: &[u8]| {
        let trimmed: Vec<u8> = half.iter().copied().skip_while(|b| *b == 0).collect();
        let mut out = vec![2u8];
        let pad = trimmed.first().is_some_and(|b| b & 0x80 != 0);
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend(trimmed);
        out
    };
    let body = [int(&raw[..32]), int(&raw[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

type Build = fn(&Suite) -> Option<String>;

/// Each rejected `Authorization` value: one flaw each, everything else valid, and the reason
/// the Worker must log for it (its `detail`), which shows the flaw itself was caught.
fn rejections() -> Vec<(&'static str, &'static str, Build)> {
    vec![
        ("missing_authorization_header", "missing_token", |_| None),
        ("empty_bearer", "missing_token", |_| Some("Bearer ".into())),
        ("basic_scheme", "not_bearer", |_| {
            Some(format!("Basic {}", b64(b"user:password")))
        }),
        ("token_without_scheme", "not_bearer", |s| {
            Some(s.token(Alg::RS256))
        }),
        ("alg_none_lowercase", "alg_none", |s| {
            bearer(forge::alg_none_with_signature(
                "none",
                &s.claims("u"),
                b"junk",
            ))
        }),
        ("alg_none_capitalised", "alg_none", |s| {
            bearer(forge::alg_none_with_signature(
                "None",
                &s.claims("u"),
                b"junk",
            ))
        }),
        ("alg_none_uppercase", "alg_none", |s| {
            bearer(forge::alg_none_with_signature(
                "NONE",
                &s.claims("u"),
                b"junk",
            ))
        }),
        ("alg_none_mixed_case", "alg_none", |s| {
            bearer(forge::alg_none_with_signature(
                "nOnE",
                &s.claims("u"),
                b"junk",
            ))
        }),
        ("alg_none_with_trusted_kid_and_signature", "alg_none", |s| {
            bearer(forge::alg_none_signed(&s.keys.rs256, &s.claims("u")))
        }),
        ("hs256_keyed_with_the_rsa_public_pem", "alg_hmac", |s| {
            let pem = s.keys.rs256.public_key_pem().expect("RSA PEM");
            bearer(forge::hs256(
                pem.as_bytes(),
                s.keys.rs256.kid(),
                &s.claims("u"),
            ))
        }),
        ("hs256_keyed_with_the_public_jwk_text", "alg_hmac", |s| {
            let jwk = s.keys.rs256.public_jwk().to_string();
            bearer(forge::hs256(
                jwk.as_bytes(),
                s.keys.rs256.kid(),
                &s.claims("u"),
            ))
        }),
        ("hs256_keyed_with_the_ed25519_public_key", "alg_hmac", |s| {
            let x = s.keys.eddsa.public_jwk()["x"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let raw = URL_SAFE_NO_PAD.decode(x).unwrap_or_default();
            bearer(forge::hs256(&raw, s.keys.eddsa.kid(), &s.claims("u")))
        }),
        ("unknown_kid", "unknown_kid", |s| {
            bearer(forge::with_header(
                &s.keys.rs256,
                &json!({"kid": "no-such-key"}),
                &s.claims("u"),
            ))
        }),
        (
            "rs256_header_with_the_ec_keys_kid",
            "key_alg_mismatch",
            |s| {
                let kid = s.keys.es256.kid().to_owned();
                bearer(forge::with_header(
                    &s.keys.rs256,
                    &json!({ "kid": kid }),
                    &s.claims("u"),
                ))
            },
        ),
        (
            "es256_header_with_the_rsa_keys_kid",
            "key_alg_mismatch",
            |s| {
                let kid = s.keys.rs256.kid().to_owned();
                bearer(forge::with_header(
                    &s.keys.es256,
                    &json!({ "kid": kid }),
                    &s.claims("u"),
                ))
            },
        ),
        (
            "eddsa_header_with_the_ec_keys_kid",
            "key_alg_mismatch",
            |s| {
                let kid = s.keys.es256.kid().to_owned();
                bearer(forge::with_header(
                    &s.keys.eddsa,
                    &json!({ "kid": kid }),
                    &s.claims("u"),
                ))
            },
        ),
        ("es256_alg_on_the_eddsa_key", "key_alg_mismatch", |s| {
            bearer(forge::with_header(
                &s.keys.eddsa,
                &json!({"alg": "ES256"}),
                &s.claims("u"),
            ))
        }),
        ("embedded_jwk_of_an_attacker_key", "header_jwk", |s| {
            bearer(forge::embedded_jwk(&s.claims("u")).expect("attacker key"))
        }),
        ("jwk_header_even_with_a_trusted_key", "header_jwk", |s| {
            let jwk = s.keys.rs256.public_jwk();
            bearer(forge::with_header(
                &s.keys.rs256,
                &json!({ "jwk": jwk }),
                &s.claims("u"),
            ))
        }),
        ("jku_header", "header_jku", |s| {
            bearer(forge::with_header(
                &s.keys.rs256,
                &json!({"jku": "http://127.0.0.1:9/jwks.json"}),
                &s.claims("u"),
            ))
        }),
        ("x5u_header", "header_x5u", |s| {
            bearer(forge::with_header(
                &s.keys.es256,
                &json!({"x5u": "http://127.0.0.1:9/cert.pem"}),
                &s.claims("u"),
            ))
        }),
        ("x5c_header", "header_x5c", |s| {
            bearer(forge::with_header(
                &s.keys.es256,
                &json!({"x5c": ["MIIBszCCAVmgAwIBAgIUQ2VydA=="]}),
                &s.claims("u"),
            ))
        }),
        ("crit_header", "header_crit", |s| {
            bearer(forge::with_header(
                &s.keys.eddsa,
                &json!({"crit": ["exp"]}),
                &s.claims("u"),
            ))
        }),
        ("typ_of_another_kind_of_token", "wrong_typ", |s| {
            bearer(forge::with_header(
                &s.keys.eddsa,
                &json!({"typ": "dpop+jwt"}),
                &s.claims("u"),
            ))
        }),
        (
            "signature_of_another_key_under_a_trusted_kid",
            "bad_signature",
            |s| {
                let attacker = DevKey::generate().expect("key");
                bearer(tokens::mint_with_header(
                    attacker.signing_key(),
                    &tokens::header(&s.keys.eddsa),
                    &s.claims("u"),
                ))
            },
        ),
        ("claims_changed_after_signing", "bad_signature", |s| {
            let token = s.token(Alg::ES256);
            let parts: Vec<&str> = token.split('.').collect();
            let mut c = s.claims("admin");
            c["plan"] = json!("unlimited");
            Some(format!(
                "Bearer {}.{}.{}",
                parts[0],
                b64(c.to_string().as_bytes()),
                parts[2]
            ))
        }),
        // The signature's verdict is WebCrypto's: a changed bit fails for each algorithm.
        ("rs256_signature_with_a_bit_changed", "bad_signature", |s| {
            bearer(signature_changed(&s.token(Alg::RS256), |sig| sig[100] ^= 1))
        }),
        ("es256_signature_with_a_bit_changed", "bad_signature", |s| {
            bearer(signature_changed(&s.token(Alg::ES256), |sig| sig[40] ^= 1))
        }),
        ("eddsa_signature_with_a_bit_changed", "bad_signature", |s| {
            bearer(signature_changed(&s.token(Alg::EdDSA), |sig| sig[40] ^= 1))
        }),
        ("es256_signature_in_der_form", "bad_signature", |s| {
            bearer(signature_changed(&s.token(Alg::ES256), |sig| {
                *sig = der_ecdsa(sig)
            }))
        }),
        // The same Ed25519 signature spelt with S + l: valid arithmetic, refused (malleability).
        (
            "eddsa_signature_with_s_plus_the_group_order",
            "bad_signature",
            |s| {
                bearer(signature_changed(&s.token(Alg::EdDSA), |sig| {
                    add_le(&mut sig[32..], &ED25519_L)
                }))
            },
        ),
        // R the identity point (small order): refused before any arithmetic.
        (
            "eddsa_signature_with_a_small_order_r",
            "bad_signature",
            |s| {
                bearer(signature_changed(&s.token(Alg::EdDSA), |sig| {
                    sig[..32].fill(0);
                    sig[0] = 1;
                }))
            },
        ),
        ("signature_stripped", "malformed_segments", |s| {
            let token = s.token(Alg::RS256);
            let cut = token.rsplit_once('.').map(|(head, _)| head).unwrap_or("");
            Some(format!("Bearer {cut}."))
        }),
        ("expired", "expired", |s| {
            let mut c = s.claims("u");
            c["iat"] = json!(tokens::now() - 7200);
            c["exp"] = json!(tokens::now() - 3600);
            bearer(tokens::mint(&s.keys.rs256, &c))
        }),
        ("not_yet_valid", "not_yet_valid", |s| {
            let mut c = s.claims("u");
            c["nbf"] = json!(tokens::now() + 3600);
            bearer(tokens::mint(&s.keys.es256, &c))
        }),
        ("wrong_issuer", "wrong_issuer", |s| {
            let mut c = s.claims("u");
            c["iss"] = json!("https://evil.example");
            bearer(tokens::mint(&s.keys.eddsa, &c))
        }),
        (
            "issuer_differs_only_by_a_trailing_slash",
            "wrong_issuer",
            |s| {
                let mut c = s.claims("u");
                c["iss"] = json!(format!("{ISSUER}/"));
                bearer(tokens::mint(&s.keys.eddsa, &c))
            },
        ),
        ("wrong_audience", "wrong_audience", |s| {
            let mut c = s.claims("u");
            c["aud"] = json!("another-api");
            bearer(tokens::mint(&s.keys.rs256, &c))
        }),
        ("audience_list_without_ours", "wrong_audience", |s| {
            let mut c = s.claims("u");
            c["aud"] = json!(["a", "b"]);
            bearer(tokens::mint(&s.keys.rs256, &c))
        }),
        ("no_exp", "missing_exp", |s| {
            let mut c = s.claims("u");
            c.as_object_mut().map(|o| o.remove("exp"));
            bearer(tokens::mint(&s.keys.es256, &c))
        }),
        ("exp_as_a_string", "malformed_claims_json", |s| {
            let mut c = s.claims("u");
            c["exp"] = json!((tokens::now() + 3600).to_string());
            bearer(tokens::mint(&s.keys.es256, &c))
        }),
        ("no_sub", "missing_sub", |s| {
            let mut c = s.claims("u");
            c.as_object_mut().map(|o| o.remove("sub"));
            bearer(tokens::mint(&s.keys.eddsa, &c))
        }),
        ("empty_sub", "missing_sub", |s| {
            bearer(tokens::mint(&s.keys.eddsa, &s.claims("")))
        }),
        ("over_8_kib", "token_too_large", |s| {
            bearer(forge::oversized(&s.keys.eddsa, &s.claims("u"), 9 * 1024))
        }),
        ("payload_not_base64url", "malformed_claims_base64", |s| {
            bearer(forge::bad_base64(&s.keys.rs256, &s.claims("u")))
        }),
        (
            "payload_with_base64_padding",
            "malformed_claims_base64",
            |s| {
                let k = &s.keys.eddsa;
                let header = b64(tokens::header(k).to_string().as_bytes());
                // 4 bytes encode to 6 characters: canonical base64 pads them with "==".
                let payload = format!("{}==", b64(br#"{}  "#));
                bearer(forge::signed_segments(k, &header, &payload))
            },
        ),
        ("header_not_base64url", "malformed_header_base64", |s| {
            let k = &s.keys.es256;
            let header = format!("*{}", &b64(tokens::header(k).to_string().as_bytes())[1..]);
            let payload = b64(s.claims("u").to_string().as_bytes());
            bearer(forge::signed_segments(k, &header, &payload))
        }),
        (
            "signature_not_base64url",
            "malformed_signature_base64",
            |s| {
                let token = s.token(Alg::RS256);
                let (head, _) = token.rsplit_once('.').unwrap();
                bearer(format!("{head}.sig*nature"))
            },
        ),
        ("header_without_alg", "no_alg", |s| {
            bearer(tokens::mint_with_header(
                &s.keys.rs256,
                &json!({"typ": "JWT", "kid": s.keys.rs256.kid()}),
                &s.claims("u"),
            ))
        }),
        ("alg_not_in_the_allow_list", "alg_not_allowed", |s| {
            bearer(forge::with_header(
                &s.keys.rs256,
                &json!({"alg": "RS512"}),
                &s.claims("u"),
            ))
        }),
        ("alg_none_unsecured_jws", "malformed_segments", |s| {
            bearer(forge::alg_none("none", &s.claims("u")))
        }),
        ("header_not_json", "malformed_header_json", |s| {
            bearer(forge::bad_json_header(&s.keys.es256, &s.claims("u")))
        }),
        ("payload_not_json", "malformed_claims_json", |s| {
            bearer(forge::bad_json_payload(&s.keys.es256))
        }),
        ("payload_a_json_array", "malformed_claims_json", |s| {
            bearer(tokens::sign_raw(
                &s.keys.eddsa,
                tokens::header(&s.keys.eddsa).to_string().as_bytes(),
                b"[1,2,3]",
            ))
        }),
        ("two_segments", "malformed_segments", |s| {
            let token = s.token(Alg::EdDSA);
            let two = token
                .rsplit_once('.')
                .map(|(head, _)| head.to_owned())
                .unwrap_or_default();
            bearer(two)
        }),
        ("four_segments", "malformed_segments", |s| {
            bearer(format!("{}.e30", s.token(Alg::EdDSA)))
        }),
        ("garbage", "malformed_segments", |_| {
            Some("Bearer not-a-token-at-all".into())
        }),
    ]
}
