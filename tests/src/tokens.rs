//! JWTs for tests and for `cargo xtask dev`: signing keys from JWK JSON (RS256, ES256, EdDSA),
//! [`mint`], a runtime-generated Ed25519 [`DevKey`], and [`forge`] for the bad tokens the
//! Worker must reject.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The signature algorithms the Worker accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// The JOSE name (`RS256`, `ES256`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// All three.
    pub const ALL: [Alg; 3] = [Alg::RS256, Alg::ES256, Alg::EdDSA];
}

enum Inner {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ec(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
}

/// A private signing key with its `kid`.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    inner: Inner,
    private_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private parts.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn field<'a>(jwk: &'a Value, name: &str) -> Result<&'a str> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("JWK has no `{name}`"))
}

fn bytes(jwk: &Value, name: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(field(jwk, name)?)
        .with_context(|| format!("JWK `{name}` is not base64url"))
}

impl SigningKey {
    /// A key from a private JWK (`kty` RSA with `n,e,d[,p,q]`, EC P-256 with `x,y,d`, or OKP
    /// Ed25519 with `x,d`). The `kid` is the JWK's, or its RFC 7638 thumbprint.
    pub fn from_jwk(jwk: &Value) -> Result<SigningKey> {
        let (alg, inner) = match field(jwk, "kty")? {
            "RSA" => {
                let n = rsa::BigUint::from_bytes_be(&bytes(jwk, "n")?);
                let e = rsa::BigUint::from_bytes_be(&bytes(jwk, "e")?);
                let d = rsa::BigUint::from_bytes_be(&bytes(jwk, "d")?);
                let primes = match (bytes(jwk, "p"), bytes(jwk, "q")) {
                    (Ok(p), Ok(q)) => vec![
                        rsa::BigUint::from_bytes_be(&p),
                        rsa::BigUint::from_bytes_be(&q),
                    ],
                    _ => Vec::new(),
                };
                let key =
                    rsa::RsaPrivateKey::from_components(n, e, d, primes).context("bad RSA JWK")?;
                (Alg::RS256, Inner::Rsa(Box::new(key)))
            }
            "EC" => {
                if field(jwk, "crv")? != "P-256" {
                    bail!("only P-256 EC keys are supported");
                }
                let key = p256::ecdsa::SigningKey::from_slice(&bytes(jwk, "d")?)
                    .map_err(|e| anyhow!("bad P-256 JWK: {e}"))?;
                (Alg::ES256, Inner::Ec(key))
            }
            "OKP" => {
                if field(jwk, "crv")? != "Ed25519" {
                    bail!("only Ed25519 OKP keys are supported");
                }
                let d: [u8; 32] = bytes(jwk, "d")?
                    .try_into()
                    .map_err(|_| anyhow!("Ed25519 `d` must be 32 bytes"))?;
                (
                    Alg::EdDSA,
                    Inner::Ed(ed25519_dalek::SigningKey::from_bytes(&d)),
                )
            }
            other => bail!("unsupported JWK kty `{other}`"),
        };
        let mut key = SigningKey {
            kid: String::new(),
            alg,
            inner,
            private_jwk: jwk.clone(),
        };
        key.kid = match jwk.get("kid").and_then(Value::as_str) {
            Some(kid) => kid.to_owned(),
            None => key.thumbprint(),
        };
        key.private_jwk["kid"] = json!(key.kid);
        key.private_jwk["alg"] = json!(alg.as_str());
        Ok(key)
    }

    /// A key from a private JWK's JSON text.
    pub fn from_jwk_str(text: &str) -> Result<SigningKey> {
        SigningKey::from_jwk(&serde_json::from_str(text).context("JWK is not JSON")?)
    }

    /// A key from a file holding a private JWK.
    pub fn load(path: impl AsRef<Path>) -> Result<SigningKey> {
        let path = path.as_ref();
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        SigningKey::from_jwk_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The private JWK (with `kid` and `alg`).
    pub fn private_jwk(&self) -> &Value {
        &self.private_jwk
    }

    fn public_members(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match &self.inner {
            Inner::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                m.insert("kty".into(), json!("RSA"));
                m.insert("n".into(), json!(b64(&k.n().to_bytes_be())));
                m.insert("e".into(), json!(b64(&k.e().to_bytes_be())));
            }
            Inner::Ec(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                m.insert("kty".into(), json!("EC"));
                m.insert("crv".into(), json!("P-256"));
                m.insert(
                    "x".into(),
                    json!(b64(point.x().map_or(&[][..], |x| &x[..]))),
                );
                m.insert(
                    "y".into(),
                    json!(b64(point.y().map_or(&[][..], |y| &y[..]))),
                );
            }
            Inner::Ed(k) => {
                m.insert("kty".into(), json!("OKP"));
                m.insert("crv".into(), json!("Ed25519"));
                m.insert("x".into(), json!(b64(k.verifying_key().as_bytes())));
            }
        }
        m
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> String {
        // serde_json's Map is ordered by key, which is what RFC 7638 asks for.
        let canonical = Value::Object(self.public_members()).to_string();
        b64(&Sha256::digest(canonical.as_bytes()))
    }

    /// The public JWK: the public members plus `kid`, `alg` and `use: "sig"`.
    pub fn public_jwk(&self) -> Value {
        let mut m = self.public_members();
        m.insert("kid".into(), json!(self.kid));
        m.insert("alg".into(), json!(self.alg.as_str()));
        m.insert("use".into(), json!("sig"));
        Value::Object(m)
    }

    /// The public key as SPKI PEM (RSA only): the secret of the classic HS256 confusion attack.
    pub fn public_key_pem(&self) -> Option<String> {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        match &self.inner {
            Inner::Rsa(k) => k.to_public_key().to_public_key_pem(LineEnding::LF).ok(),
            _ => None,
        }
    }

    /// Signs `input` (the JWS signing input) as JWS wants: PKCS#1 v1.5, or ECDSA `r||s`, or
    /// Ed25519.
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        match &self.inner {
            Inner::Rsa(k) => {
                use rsa::signature::{SignatureEncoding, Signer};
                let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone());
                signer.sign(input).to_vec()
            }
            Inner::Ec(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = k.sign(input);
                sig.to_bytes().to_vec()
            }
            Inner::Ed(k) => {
                use ed25519_dalek::Signer;
                k.sign(input).to_bytes().to_vec()
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Claims valid for `ttl` from now: `iss`, `aud`, `sub`, `iat`, `exp` (add `plan` etc. by
/// indexing the returned object).
pub fn claims(iss: &str, aud: &str, sub: &str, ttl: Duration) -> Value {
    let now = now();
    json!({"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + ttl.as_secs()})
}

/// The standard header for `key`: `{"alg","typ":"JWT","kid"}`.
pub fn header(key: &SigningKey) -> Value {
    json!({"alg": key.alg().as_str(), "typ": "JWT", "kid": key.kid()})
}

/// A compact JWS from already-serialised parts: `b64(header).b64(payload).b64(signature)`.
pub fn assemble(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// Signs arbitrary header and payload bytes with `key` (the bytes need not be JSON).
pub fn sign_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// A JWT signed by `key` with the standard header.
pub fn mint(key: &SigningKey, claims: &Value) -> String {
    mint_with_header(key, &header(key), claims)
}

/// A JWT with `header` as given, signed by `key` whatever the header says.
pub fn mint_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
    sign_raw(
        key,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}

/// `{"keys":[...]}` with the public JWKs of `keys`: the value for `JWT_PUBLIC_JWK`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()})
}

/// The test keys in the workspace's `fixtures/keys/` (one private JWK per algorithm).
#[derive(Debug)]
pub struct TestKeys {
    /// The RS256 key.
    pub rs256: SigningKey,
    /// The ES256 key.
    pub es256: SigningKey,
    /// The EdDSA key.
    pub eddsa: SigningKey,
}

impl TestKeys {
    /// Where the fixture keys live.
    pub fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("fixtures")
            .join("keys")
    }

    /// Loads the three fixture keys, `test-only-{rs256,es256,eddsa}.private.jwk.json` in
    /// [`TestKeys::dir`] (kids `test-rs256`, `test-es256`, `test-eddsa`).
    pub fn load() -> Result<TestKeys> {
        let dir = TestKeys::dir();
        let load = |name: &str, alg: Alg| -> Result<SigningKey> {
            let key = SigningKey::load(dir.join(format!("test-only-{name}.private.jwk.json")))?;
            if key.alg() != alg {
                bail!("test-only-{name} is a {} key", key.alg().as_str());
            }
            Ok(key)
        };
        Ok(TestKeys {
            rs256: load("rs256", Alg::RS256)?,
            es256: load("es256", Alg::ES256)?,
            eddsa: load("eddsa", Alg::EdDSA)?,
        })
    }

    /// The key for `alg`.
    pub fn get(&self, alg: Alg) -> &SigningKey {
        match alg {
            Alg::RS256 => &self.rs256,
            Alg::ES256 => &self.es256,
            Alg::EdDSA => &self.eddsa,
        }
    }

    /// The JWKS holding the three public keys.
    pub fn jwks(&self) -> Value {
        jwks(&[&self.rs256, &self.es256, &self.eddsa])
    }
}

/// An Ed25519 signing key generated at runtime, for `cargo xtask dev`.
#[derive(Debug)]
pub struct DevKey {
    key: SigningKey,
}

impl DevKey {
    /// A fresh key from the OS's randomness; its `kid` is its thumbprint.
    pub fn generate() -> Result<DevKey> {
        let mut d = [0u8; 32];
        getrandom::getrandom(&mut d).map_err(|e| anyhow!("no randomness: {e}"))?;
        let ed = ed25519_dalek::SigningKey::from_bytes(&d);
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(ed.verifying_key().as_bytes()),
            "d": b64(&d),
        });
        Ok(DevKey {
            key: SigningKey::from_jwk(&jwk)?,
        })
    }

    /// Reads a key saved by [`DevKey::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<DevKey> {
        let key = SigningKey::load(path)?;
        if key.alg() != Alg::EdDSA {
            bail!("a dev key must be Ed25519");
        }
        Ok(DevKey { key })
    }

    /// Saves the private JWK to `path` (mode 0600 on Unix), creating its directory.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self.key.private_jwk())?;
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        opts.open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The key saved at `path`, or a new one saved there.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<DevKey> {
        let path = path.as_ref();
        if path.exists() {
            return DevKey::load(path);
        }
        let key = DevKey::generate()?;
        key.save(path)?;
        Ok(key)
    }

    /// The public JWK, for `JWT_PUBLIC_JWK`.
    pub fn public_jwk(&self) -> Value {
        self.key.public_jwk()
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// A JWT signed by this key.
    pub fn mint(&self, claims: &Value) -> String {
        mint(&self.key, claims)
    }
}

/// Bad tokens for the rejection tests. Each has one flaw; everything else about it is valid
/// (a trusted key's signature, good claims), so a 401 can only come from that flaw.
pub mod forge {
    use hmac::{Hmac, Mac};

    use super::*;

    /// `alg` spelled `alg_spelling` (`none`, `None`, `NONE`, ...) and an empty signature.
    pub fn alg_none(alg_spelling: &str, claims: &Value) -> String {
        let header = json!({"alg": alg_spelling, "typ": "JWT"});
        assemble(
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
            b"",
        )
    }

    /// `alg` spelled `alg_spelling` with a non-empty (junk) signature, so a verifier that checks
    /// the segments first still reaches the `alg` check.
    pub fn alg_none_with_signature(alg_spelling: &str, claims: &Value, signature: &[u8]) -> String {
        let header = json!({"alg": alg_spelling, "typ": "JWT"});
        assemble(
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
            signature,
        )
    }

    /// Signed by `key` over exactly these segment texts (which need not be valid base64url):
    /// `header_seg.payload_seg.b64(signature)`.
    pub fn signed_segments(key: &SigningKey, header_seg: &str, payload_seg: &str) -> String {
        let input = format!("{header_seg}.{payload_seg}");
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// `alg: none` with a trusted `kid` and a real signature left on (a verifier that trusts
    /// the header's `alg` would skip checking it).
    pub fn alg_none_signed(key: &SigningKey, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": key.kid()});
        mint_with_header(key, &header, claims)
    }

    /// HS256 with `secret` (e.g. the public key's PEM or JWK text) and the given `kid`: the
    /// algorithm-confusion attack.
    pub fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(m) => m,
            // HMAC takes keys of any length; this branch cannot be reached.
            Err(_) => return input,
        };
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    /// Signed by `key` with extra header members (`jku`, `jwk`, `x5u`, `x5c`, `crit`, a wrong
    /// `kid`, another `alg`...), which replace the standard ones.
    pub fn with_header(key: &SigningKey, extra: &Value, claims: &Value) -> String {
        let mut h = header(key);
        if let (Some(h), Some(extra)) = (h.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        mint_with_header(key, &h, claims)
    }

    /// Signed by a fresh attacker key that the header embeds as `jwk`.
    pub fn embedded_jwk(claims: &Value) -> Result<String> {
        let attacker = DevKey::generate()?;
        let h = json!({"alg": "EdDSA", "typ": "JWT", "kid": attacker.kid(), "jwk": attacker.public_jwk()});
        Ok(mint_with_header(attacker.signing_key(), &h, claims))
    }

    /// A token whose payload segment has a `*` (not base64url) in place of its first
    /// character, signed over that segment (so only the encoding is wrong).
    pub fn bad_base64(key: &SigningKey, claims: &Value) -> String {
        let payload = format!("*{}", &b64(claims.to_string().as_bytes())[1..]);
        signed_segments(key, &b64(header(key).to_string().as_bytes()), &payload)
    }

    /// Signed by `key` over a payload that is not JSON.
    pub fn bad_json_payload(key: &SigningKey) -> String {
        sign_raw(
            key,
            header(key).to_string().as_bytes(),
            b"{\"sub\":\"u1\",\"exp\":",
        )
    }

    /// Signed by `key` over a header that is not JSON.
    pub fn bad_json_header(key: &SigningKey, claims: &Value) -> String {
        let h = format!(
            "{{\"alg\":\"{}\",\"kid\":\"{}\"",
            key.alg().as_str(),
            key.kid()
        );
        sign_raw(key, h.as_bytes(), claims.to_string().as_bytes())
    }

    /// A valid token grown past `size` bytes by a padding claim.
    pub fn oversized(key: &SigningKey, claims: &Value, size: usize) -> String {
        let mut c = claims.clone();
        // base64 grows by 4/3, so `size` characters of claim are more than enough.
        c["padding"] = json!("x".repeat(size));
        mint(key, &c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_key_round_trips_and_signs() {
        let key = DevKey::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("storycad-devkey-{}", std::process::id()));
        let path = dir.join("dev.jwk.json");
        key.save(&path).unwrap();
        let back = DevKey::load_or_generate(&path).unwrap();
        assert_eq!(back.public_jwk(), key.public_jwk());
        assert_eq!(back.kid(), key.thumbprint_for_test());
        let token = back.mint(&claims("i", "a", "s", Duration::from_secs(60)));
        assert_eq!(token.split('.').count(), 3);
        fs::remove_dir_all(dir).unwrap();
    }

    impl DevKey {
        fn thumbprint_for_test(&self) -> String {
            self.key.thumbprint()
        }
    }
}
