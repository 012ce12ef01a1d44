//! Signature checks on the host (tests, benches, `cargo xtask`'s tools) with RustCrypto. The
//! Worker checks them with the runtime's WebCrypto instead (`runtime/signature.rs`); the rules
//! both apply beyond the algorithm itself (lengths, Ed25519's canonical `S` and `R` not of small
//! order, the keys' own checks) are in [`super::Verifier::signed_with`] and `jwk.rs`, shared.

use rsa::signature::Verifier as _;

use super::{jwk::PublicKey, Signed};

impl Signed<'_> {
    /// Whether the signature is valid for the token's key and signing input.
    pub fn check(&self) -> bool {
        let message = self.message.as_bytes();
        let sig = self.signature.as_slice();
        match &self.key {
            PublicKey::Rs256 { n, e } => {
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from_bytes_be(e),
                );
                let sig = rsa::pkcs1v15::Signature::try_from(sig);
                match (key, sig) {
                    (Ok(key), Ok(sig)) => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
                        .verify(message, &sig)
                        .is_ok(),
                    _ => false,
                }
            }
            PublicKey::Es256 { sec1 } => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1);
                let sig = p256::ecdsa::Signature::from_slice(sig);
                matches!((key, sig), (Ok(key), Ok(sig)) if key.verify(message, &sig).is_ok())
            }
            PublicKey::EdDsa { x } => {
                let key = ed25519_dalek::VerifyingKey::from_bytes(x);
                let sig = ed25519_dalek::Signature::from_slice(sig);
                matches!((key, sig), (Ok(key), Ok(sig)) if key.verify_strict(message, &sig).is_ok())
            }
        }
    }
}
