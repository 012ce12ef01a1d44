//! Verification keys: a JWK or a JWKS parsed once into checked public keys (the Worker's
//! WebCrypto and the host's RustCrypto both take them from there: `signature.rs`).
//!
//! Each usable key fixes exactly one [`Algorithm`] from its `kty`/`crv` (and `alg`, when the JWK
//! states one), so a token's `alg` can only ever select a key that was made for it.
//!
//! | JWK | algorithm |
//! |---|---|
//! | `kty: RSA`, 2048..=4096-bit modulus, `alg` absent or `RS256` | RS256 |
//! | `kty: EC`, `crv: P-256`, `alg` absent or `ES256` | ES256 |
//! | `kty: OKP`, `crv: Ed25519`, `alg` absent, `EdDSA` or `Ed25519` | EdDSA |
//!
//! Keys of other types (`oct`, P-384, RSA with `alg: PS256`, ...) and keys whose `use` is not
//! `sig` or whose `key_ops` lacks `verify` are kept as *unusable*: a JWKS may well hold such
//! keys, and keeping their `kid` lets a token that names one fail as a key mismatch rather than
//! trigger a JWKS refetch. A key of a supported type that is broken is an error, as is a set with
//! no usable key at all.

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use serde_json::{Map, Value};

use super::{curve, Algorithm, KeyError, KeyLabel, MAX_JWKS_BYTES};

/// Key fields are our configuration (or the issuer's JWKS), not attacker input: accept them with
/// or without padding.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (the `rsa` crate's own limit).
pub const MAX_RSA_BITS: usize = 4096;

/// A checked public key: its material, already judged as a key of its algorithm (modulus size;
/// a point of the curve, not of small order), so the signature check has nothing left to refuse
/// it for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// Big-endian modulus and exponent, without leading zeros.
    Rs256 { n: Vec<u8>, e: Vec<u8> },
    /// The SEC1 uncompressed point, `0x04 || x || y`.
    Es256 { sec1: [u8; 65] },
    /// The encoded point.
    EdDsa { x: [u8; 32] },
}

impl PublicKey {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Self::Rs256 { .. } => Algorithm::RS256,
            Self::Es256 { .. } => Algorithm::ES256,
            Self::EdDsa { .. } => Algorithm::EdDSA,
        }
    }
}

/// A key's identity: the SHA-256 of its type and public material (whatever its `kid`), so a
/// cached verification can be tied to the key that made it and dropped when the key is
/// withdrawn from the JWKS.
pub type KeyId = [u8; 32];

fn key_id(kty: &str, parts: &[&[u8]]) -> KeyId {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kty.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

#[derive(Clone, Debug)]
struct Entry {
    kid: Option<String>,
    /// `Err` holds why the key is skipped.
    key: Result<(PublicKey, KeyId), &'static str>,
}

/// The keys a token may be verified with: parsed once, then shared by every request.
#[derive(Clone, Debug)]
pub struct KeySet {
    entries: Vec<Entry>,
}

/// Outcome of picking a key for a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    Unknown,
    Ambiguous,
    Mismatch,
}

impl KeySet {
    /// Parses `JWT_PUBLIC_JWK` or a fetched JWKS: either one JWK object or `{"keys": [...]}`.
    ///
    /// Errors name the broken key by `kid` (or by index when it has none) and never contain key
    /// material. See the module docs for which keys are used and which are skipped.
    pub fn from_json(text: &str) -> Result<KeySet, KeyError> {
        if text.len() > MAX_JWKS_BYTES {
            return Err(KeyError::TooLarge);
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            // serde_json's message gives a position, never the text itself.
            KeyError::Json(e.to_string())
        })?;
        let Value::Object(mut object) = value else {
            return Err(KeyError::Json("expected a JSON object".into()));
        };
        let jwks: Vec<Value> = match object.remove("keys") {
            Some(Value::Array(keys)) => keys,
            Some(_) => return Err(KeyError::Json("`keys` must be an array".into())),
            None => vec![Value::Object(object)],
        };
        let mut entries = Vec::with_capacity(jwks.len());
        for (index, jwk) in jwks.iter().enumerate() {
            let Value::Object(jwk) = jwk else {
                return Err(KeyError::InvalidKey {
                    key: KeyLabel::Index(index),
                    reason: "not a JSON object",
                });
            };
            entries.push(parse_jwk(jwk, index)?);
        }
        let set = KeySet { entries };
        if set.usable_len() == 0 {
            return Err(KeyError::NoUsableKey(set.skipped()));
        }
        Ok(set)
    }

    /// Number of keys that can verify a signature.
    pub fn usable_len(&self) -> usize {
        self.usable().count()
    }

    fn usable(&self) -> impl Iterator<Item = &(PublicKey, KeyId)> {
        self.entries.iter().filter_map(|e| e.key.as_ref().ok())
    }

    /// Whether the key with this identity is (still) in the set.
    pub fn contains_key_id(&self, id: &KeyId) -> bool {
        self.usable().any(|(_, k)| k == id)
    }

    /// Whether any key in the set (usable or not) has this `kid`. A JWKS cache refetches only
    /// for a `kid` it has never seen.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.entries.iter().any(|e| e.kid.as_deref() == Some(kid))
    }

    /// The keys that were skipped, and why: for one log line at startup or after a fetch.
    pub fn skipped(&self) -> Vec<(KeyLabel, &'static str)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.key
                    .as_ref()
                    .err()
                    .map(|why| (label(e.kid.as_deref(), i), *why))
            })
            .collect()
    }

    /// The algorithms the usable keys can verify (each listed once).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut out = Vec::with_capacity(3);
        for alg in self.usable().map(|(k, _)| k.algorithm()) {
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
        out
    }

    /// The key for a token with this `kid` and `alg`.
    ///
    /// With a `kid`: a key with that `kid` made for `alg`, else `Mismatch` when the `kid` exists
    /// but only for other algorithms or unusable keys, else `Unknown`. Without a `kid`: the only
    /// usable key (`Mismatch` if it is for another algorithm), or the only usable key for `alg`
    /// (`Ambiguous` if several).
    pub(crate) fn pick(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<&(PublicKey, KeyId), Pick> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .entries
                    .iter()
                    .filter(|e| e.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(Pick::Unknown);
                }
                named
                    .find_map(|e| e.key.as_ref().ok().filter(|(k, _)| k.algorithm() == alg))
                    .ok_or(Pick::Mismatch)
            }
            None => {
                let mut all = self.usable();
                let only = all.next().ok_or(Pick::Unknown)?;
                if all.next().is_none() {
                    return if only.0.algorithm() == alg {
                        Ok(only)
                    } else {
                        Err(Pick::Mismatch)
                    };
                }
                let mut fitting = self.usable().filter(|(k, _)| k.algorithm() == alg);
                let key = fitting.next().ok_or(Pick::Mismatch)?;
                if fitting.next().is_some() {
                    return Err(Pick::Ambiguous);
                }
                Ok(key)
            }
        }
    }
}

fn label(kid: Option<&str>, index: usize) -> KeyLabel {
    match kid {
        Some(kid) => KeyLabel::Kid(kid.to_owned()),
        None => KeyLabel::Index(index),
    }
}

fn without_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Parses one JWK. `Ok` with an unusable entry for keys we skip; `Err` for broken keys.
fn parse_jwk(jwk: &Map<String, Value>, index: usize) -> Result<Entry, KeyError> {
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(KeyError::InvalidKey {
                key: KeyLabel::Index(index),
                reason: "`kid` is not a string",
            })
        }
    };
    let invalid = |reason: &'static str| KeyError::InvalidKey {
        key: label(kid.as_deref(), index),
        reason,
    };
    let skip = |why: &'static str| {
        Ok(Entry {
            kid: kid.clone(),
            key: Err(why),
        })
    };

    let kty = match jwk.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        Some(_) => return Err(invalid("`kty` is not a string")),
        None => return Err(invalid("`kty` is missing")),
    };
    // Symmetric keys are secrets and never used; skip before looking at anything else.
    if kty == "oct" {
        return skip("symmetric (oct) keys are never used");
    }
    // A verification key set must not carry private keys: refuse loudly so an operator who
    // pasted a private JWK into a var learns it (and rotates it).
    if ["d", "p", "q", "dp", "dq", "qi", "oth"]
        .iter()
        .any(|f| jwk.contains_key(*f))
    {
        return Err(invalid(
            "contains private key material; configure the public key only",
        ));
    }
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(Value::String(_)) => return skip("`use` is not `sig`"),
        Some(_) => return Err(invalid("`use` is not a string")),
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) => {
            if ops.iter().any(|o| !o.is_string()) {
                return Err(invalid("`key_ops` has a non-string entry"));
            }
            if !ops.iter().any(|o| o.as_str() == Some("verify")) {
                return skip("`key_ops` lacks `verify`");
            }
        }
        Some(_) => return Err(invalid("`key_ops` is not an array")),
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(alg)) => Some(alg.as_str()),
        Some(_) => return Err(invalid("`alg` is not a string")),
    };
    let crv = match jwk.get("crv") {
        None => None,
        Some(Value::String(crv)) => Some(crv.as_str()),
        Some(_) => return Err(invalid("`crv` is not a string")),
    };
    let field = |name: &'static str, why_missing: &'static str| -> Result<Vec<u8>, KeyError> {
        match jwk.get(name) {
            Some(Value::String(s)) => KEY_B64.decode(s).map_err(|_| invalid(why_missing)),
            _ => Err(invalid(why_missing)),
        }
    };

    let key = match kty {
        "RSA" => {
            if !matches!(alg, None | Some("RS256")) {
                return skip("RSA key for an algorithm other than RS256");
            }
            let n = field("n", "`n` missing or not base64url")?;
            let e = field("e", "`e` missing or not base64url")?;
            let (n, e) = (without_leading_zeros(n), without_leading_zeros(e));
            let bits = n.first().map_or(0, |top| {
                8 * n.len() - usize::try_from(top.leading_zeros()).unwrap_or(0)
            });
            if bits < MIN_RSA_BITS {
                return Err(invalid("RSA modulus shorter than 2048 bits"));
            }
            if bits > MAX_RSA_BITS {
                return Err(invalid("RSA modulus longer than 4096 bits"));
            }
            // An RSA key's exponent is odd and its modulus too; the exponent from 3 to 2^33 - 1
            // (the `rsa` crate's bounds).
            let odd = e.last().is_some_and(|low| low & 1 == 1);
            if !odd || e.len() > 5 || (e.len() == 5 && e[0] > 1) || e == [1] {
                return Err(invalid("RSA public key rejected (bad exponent or modulus)"));
            }
            if n.last().is_some_and(|low| low & 1 == 0) {
                return Err(invalid("RSA public key rejected (bad exponent or modulus)"));
            }
            let id = key_id("RSA", &[&n, &e]);
            (PublicKey::Rs256 { n, e }, id)
        }
        "EC" => {
            if crv != Some("P-256") {
                return skip("EC curve other than P-256");
            }
            if !matches!(alg, None | Some("ES256")) {
                return skip("P-256 key for an algorithm other than ES256");
            }
            let x = field("x", "`x` missing or not base64url")?;
            let y = field("y", "`y` missing or not base64url")?;
            let (Ok(x), Ok(y)) = (<[u8; 32]>::try_from(x), <[u8; 32]>::try_from(y)) else {
                return Err(invalid("P-256 coordinates must be 32 bytes each"));
            };
            if !curve::p256_on_curve(&x, &y) {
                return Err(invalid("P-256 point is not on the curve"));
            }
            // SEC1 uncompressed point: 0x04 || x || y.
            let mut sec1 = [0u8; 65];
            sec1[0] = 4;
            sec1[1..33].copy_from_slice(&x);
            sec1[33..].copy_from_slice(&y);
            (PublicKey::Es256 { sec1 }, key_id("EC", &[&sec1]))
        }
        "OKP" => {
            if crv != Some("Ed25519") {
                return skip("OKP curve other than Ed25519");
            }
            if !matches!(alg, None | Some("EdDSA") | Some("Ed25519")) {
                return skip("Ed25519 key for an algorithm other than EdDSA");
            }
            let x = field("x", "`x` missing or not base64url")?;
            let x: [u8; 32] = x
                .try_into()
                .map_err(|_| invalid("Ed25519 key must be 32 bytes"))?;
            if !curve::ed25519_decodes(&x) {
                return Err(invalid("Ed25519 key is not a curve point"));
            }
            if curve::ed25519_small_order(&x) {
                return Err(invalid("Ed25519 key has small order"));
            }
            (PublicKey::EdDsa { x }, key_id("OKP", &[&x]))
        }
        _ => return skip("unsupported key type"),
    };
    Ok(Entry { kid, key: Ok(key) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_signer::fixture;

    #[test]
    fn parses_each_fixture_key_alone_and_as_a_set() {
        for (name, alg) in [
            ("rs256", Algorithm::RS256),
            ("es256", Algorithm::ES256),
            ("eddsa", Algorithm::EdDSA),
        ] {
            let set =
                KeySet::from_json(fixture(&format!("test-only-{name}.public.jwk.json"))).unwrap();
            assert_eq!(set.usable_len(), 1);
            assert_eq!(set.algorithms(), vec![alg]);
            assert!(set.contains_kid(&format!("test-{name}")));
        }
        let set = KeySet::from_json(fixture("test-only-jwks.public.json")).unwrap();
        assert_eq!(set.usable_len(), 3);
        assert!(set.skipped().is_empty());
    }

    #[test]
    fn unsupported_keys_are_skipped_but_remembered() {
        let p384 = fixture("test-only-p384.public.jwk.json");
        let ed = fixture("test-only-eddsa.public.jwk.json");
        let text = format!(
            r#"{{"keys":[{p384},{{"kty":"oct","kid":"h","k":"c2VjcmV0"}},{ed},
            {{"kty":"RSA","kid":"ps","alg":"PS256","n":"AQAB","e":"AQAB"}},
            {{"kty":"OKP","kid":"x","crv":"X25519","x":"AAAA"}}]}}"#
        );
        let set = KeySet::from_json(&text).unwrap();
        assert_eq!(set.usable_len(), 1);
        assert!(set.contains_kid("test-es384"));
        assert!(set.contains_kid("h"));
        let skipped = set.skipped();
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert_eq!(
            skipped[0],
            (
                KeyLabel::Kid("test-es384".into()),
                "EC curve other than P-256"
            )
        );
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error_listing_why() {
        let err = KeySet::from_json(fixture("test-only-p384.public.jwk.json")).unwrap_err();
        assert!(matches!(err, KeyError::NoUsableKey(ref v) if v.len() == 1));
        assert!(err.to_string().contains("test-es384"), "{err}");
        assert!(matches!(
            KeySet::from_json(r#"{"keys":[]}"#),
            Err(KeyError::NoUsableKey(v)) if v.is_empty()
        ));
    }

    #[test]
    fn use_other_than_sig_or_key_ops_without_verify_is_skipped() {
        let ed: Value = serde_json::from_str(fixture("test-only-eddsa.public.jwk.json")).unwrap();
        for (field, value) in [
            ("use", serde_json::json!("enc")),
            ("key_ops", serde_json::json!(["encrypt"])),
            ("key_ops", serde_json::json!([])),
        ] {
            let mut jwk = ed.clone();
            jwk[field] = value;
            let err = KeySet::from_json(&jwk.to_string()).unwrap_err();
            assert!(matches!(err, KeyError::NoUsableKey(_)), "{field}: {err}");
        }
        let mut jwk = ed.clone();
        jwk["key_ops"] = serde_json::json!(["verify"]);
        assert_eq!(KeySet::from_json(&jwk.to_string()).unwrap().usable_len(), 1);
    }

    #[test]
    fn broken_keys_are_errors_naming_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"kty":"EC","kid":"a","crv":"P-256","x":"AAAA","y":"AAAA"}"#,
                "32 bytes",
            ),
            (
                r#"{"kty":"EC","kid":"a","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
                "not on the curve",
            ),
            (
                r#"{"kty":"OKP","kid":"a","crv":"Ed25519","x":"!!"}"#,
                "base64url",
            ),
            (
                r#"{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}"#,
                "shorter than 2048",
            ),
            (r#"{"kty":"RSA","kid":"a","e":"AQAB"}"#, "`n` missing"),
            (r#"{"kid":"a"}"#, "`kty` is missing"),
        ];
        for (text, want) in cases {
            let err = KeySet::from_json(text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("kid=\"a\"") && msg.contains(want),
                "{text}: {msg}"
            );
        }
        let err = KeySet::from_json(r#"{"keys":[{"kty":"OKP","crv":"Ed25519"}]}"#).unwrap_err();
        assert!(err.to_string().contains("key #0"), "{err}");
        // Ed25519 small-order point (the identity).
        let identity = format!(
            r#"{{"kty":"OKP","kid":"a","crv":"Ed25519","x":"{}"}}"#,
            KEY_B64.encode(
                [1u8]
                    .iter()
                    .chain([0u8; 31].iter())
                    .copied()
                    .collect::<Vec<_>>()
            )
        );
        assert!(KeySet::from_json(&identity)
            .unwrap_err()
            .to_string()
            .contains("small order"));
    }

    #[test]
    fn private_keys_are_refused() {
        let err = KeySet::from_json(fixture("test-only-es256.private.jwk.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("private key material"), "{msg}");
        // The message never carries key material.
        let d = serde_json::from_str::<Value>(fixture("test-only-es256.private.jwk.json")).unwrap()
            ["d"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!msg.contains(&d));
    }

    #[test]
    fn not_json_or_wrong_shape_is_an_error() {
        for text in ["", "nope", "[]", r#"{"keys":{}}"#, r#"{"keys":[1]}"#] {
            assert!(KeySet::from_json(text).is_err(), "{text}");
        }
        let big = " ".repeat(MAX_JWKS_BYTES + 1);
        assert_eq!(KeySet::from_json(&big).unwrap_err(), KeyError::TooLarge);
    }

    #[test]
    fn a_key_is_known_by_its_material_not_its_kid() {
        let set = KeySet::from_json(fixture("test-only-jwks.public.json")).unwrap();
        let (_, id) = set.pick(Some("test-es256"), Algorithm::ES256).unwrap();
        assert!(set.contains_key_id(id));
        // The same key under another kid is the same key; another key is not.
        let jwk: Value = serde_json::from_str(fixture("test-only-es256.public.jwk.json")).unwrap();
        let mut renamed = jwk.clone();
        renamed["kid"] = Value::from("renamed");
        let alone = KeySet::from_json(&renamed.to_string()).unwrap();
        assert!(alone.contains_key_id(id));
        let other = KeySet::from_json(fixture("test-only-eddsa.public.jwk.json")).unwrap();
        assert!(!other.contains_key_id(id));
    }

    #[test]
    fn pick_follows_kid_then_algorithm() {
        let set = KeySet::from_json(fixture("test-only-jwks.public.json")).unwrap();
        let alg = |k: Result<&(PublicKey, KeyId), Pick>| k.map(|(k, _)| k.algorithm());
        assert_eq!(
            alg(set.pick(Some("test-es256"), Algorithm::ES256)),
            Ok(Algorithm::ES256)
        );
        assert_eq!(
            alg(set.pick(Some("test-es256"), Algorithm::RS256)),
            Err(Pick::Mismatch)
        );
        assert_eq!(
            alg(set.pick(Some("nope"), Algorithm::RS256)),
            Err(Pick::Unknown)
        );
        // No kid, several keys: the only key for the algorithm is fine.
        assert_eq!(alg(set.pick(None, Algorithm::EdDSA)), Ok(Algorithm::EdDSA));
        let two = format!(
            r#"{{"keys":[{},{}]}}"#,
            fixture("test-only-eddsa.public.jwk.json"),
            fixture("test-only-eddsa.public.jwk.json").replace("test-eddsa", "other")
        );
        let set = KeySet::from_json(&two).unwrap();
        assert_eq!(alg(set.pick(None, Algorithm::EdDSA)), Err(Pick::Ambiguous));
        assert_eq!(alg(set.pick(None, Algorithm::ES256)), Err(Pick::Mismatch));
        assert_eq!(
            alg(set.pick(Some("other"), Algorithm::EdDSA)),
            Ok(Algorithm::EdDSA)
        );
    }
}
