//! Test-only token signing with the committed fixture keys (`fixtures/keys/test-only-*`).
//!
//! Compiled into the unit tests (`#[cfg(test)]`) and, by `#[path]`, into `examples/jwt_bench.rs`;
//! never into the Worker. It depends on nothing in the crate, only on the crypto crates.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::Value;

/// A committed fixture key file, by name.
pub fn fixture(name: &str) -> &'static str {
    match name {
        "test-only-rs256.public.jwk.json" => {
            include_str!("../../../fixtures/keys/test-only-rs256.public.jwk.json")
        }
        "test-only-rs256.private.jwk.json" => {
            include_str!("../../../fixtures/keys/test-only-rs256.private.jwk.json")
        }
        "test-only-es256.public.jwk.json" => {
            include_str!("../../../fixtures/keys/test-only-es256.public.jwk.json")
        }
        "test-only-es256.private.jwk.json" => {
            include_str!("../../../fixtures/keys/test-only-es256.private.jwk.json")
        }
        "test-only-eddsa.public.jwk.json" => {
            include_str!("../../../fixtures/keys/test-only-eddsa.public.jwk.json")
        }
        "test-only-eddsa.private.jwk.json" => {
            include_str!("../../../fixtures/keys/test-only-eddsa.private.jwk.json")
        }
        "test-only-p384.public.jwk.json" => {
            include_str!("../../../fixtures/keys/test-only-p384.public.jwk.json")
        }
        "test-only-jwks.public.json" => {
            include_str!("../../../fixtures/keys/test-only-jwks.public.json")
        }
        other => panic!("no fixture {other}"),
    }
}

/// Which fixture private key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    /// `test-only-rs256.private.jwk.json`, kid `test-rs256`.
    Rs256,
    /// `test-only-es256.private.jwk.json`, kid `test-es256`.
    Es256,
    /// `test-only-eddsa.private.jwk.json`, kid `test-eddsa`.
    EdDsa,
}

impl TestKey {
    /// All three.
    pub const ALL: [TestKey; 3] = [TestKey::Rs256, TestKey::Es256, TestKey::EdDsa];

    /// The JOSE `alg` this key signs with.
    pub fn alg(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The key's `kid`.
    pub fn kid(self) -> &'static str {
        match self {
            Self::Rs256 => "test-rs256",
            Self::Es256 => "test-es256",
            Self::EdDsa => "test-eddsa",
        }
    }

    /// The public JWK text.
    pub fn public_jwk(self) -> &'static str {
        match self {
            Self::Rs256 => fixture("test-only-rs256.public.jwk.json"),
            Self::Es256 => fixture("test-only-es256.public.jwk.json"),
            Self::EdDsa => fixture("test-only-eddsa.public.jwk.json"),
        }
    }

    fn private_jwk(self) -> Value {
        let text = match self {
            Self::Rs256 => fixture("test-only-rs256.private.jwk.json"),
            Self::Es256 => fixture("test-only-es256.private.jwk.json"),
            Self::EdDsa => fixture("test-only-eddsa.private.jwk.json"),
        };
        serde_json::from_str(text).expect("fixture JWK is JSON")
    }
}

fn field(jwk: &Value, name: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwk[name].as_str().expect("JWK field"))
        .expect("JWK field is base64url")
}

/// Signs `signing_input` (`header.claims`, already encoded) with `key`; returns the raw signature
/// (RS256: PKCS#1 v1.5; ES256: r || s, 64 bytes; EdDSA: 64 bytes).
pub fn raw_signature(key: TestKey, signing_input: &[u8]) -> Vec<u8> {
    let jwk = key.private_jwk();
    match key {
        TestKey::Rs256 => {
            let big = |n| rsa::BigUint::from_bytes_be(&field(&jwk, n));
            let private = rsa::RsaPrivateKey::from_components(
                big("n"),
                big("e"),
                big("d"),
                vec![big("p"), big("q")],
            )
            .expect("RSA fixture key");
            let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private);
            signer.sign(signing_input).to_vec()
        }
        TestKey::Es256 => {
            let signer =
                p256::ecdsa::SigningKey::from_slice(&field(&jwk, "d")).expect("P-256 fixture key");
            let sig: p256::ecdsa::Signature = signer.sign(signing_input);
            sig.to_bytes().to_vec()
        }
        TestKey::EdDsa => {
            let d: [u8; 32] = field(&jwk, "d").try_into().expect("32-byte Ed25519 seed");
            let signer = ed25519_dalek::SigningKey::from_bytes(&d);
            signer.sign(signing_input).to_bytes().to_vec()
        }
    }
}

/// Encodes `bytes` as unpadded base64url.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over arbitrary header and claims bytes, signed by `key`.
pub fn sign_bytes(key: TestKey, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = raw_signature(key, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// A compact JWS over JSON header and claims, signed by `key`.
pub fn sign(key: TestKey, header: &Value, claims: &Value) -> String {
    sign_bytes(
        key,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}
