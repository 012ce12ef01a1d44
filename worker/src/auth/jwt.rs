//! Compact JWS (JWT) verification: header checks, key choice, signature, claims.
//!
//! The order is fixed and cheap-first: size, segments, header (base64, JSON, `alg`, forbidden
//! parameters, `typ`), allow-list, key choice, signature, and only then the claims, so nothing in
//! an unauthenticated payload is acted upon.

use std::borrow::Cow;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::{
    de::{self, IgnoredAny},
    Deserialize, Deserializer,
};

use super::{
    algorithm::HeaderAlg,
    curve,
    jwk::{KeyId, Pick, PublicKey},
    Algorithm, AuthError, KeySet, TokenPart,
};

/// Longest token accepted, in bytes (checked before anything is decoded).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// The claims a verified token carries that the Worker uses. `iss` and `aud` are checked, not
/// returned: they are fixed by configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id: non-empty. Limits and cache scope are per `sub`.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (a fractional value is rounded down).
    pub exp: u64,
    /// Issued at, when present.
    pub iat: Option<u64>,
    /// Not before, when present.
    pub nbf: Option<u64>,
    /// The plan name, when present; the configured default applies otherwise.
    pub plan: Option<String>,
}

/// A token checked up to its signature ([`Verifier::signed_with`]): the key it names, what the
/// signature covers and the signature. Its claims are out of reach until the signature's check
/// says it is valid ([`Signed::verdict`]). Its `Debug` names the algorithm only: the rest is
/// the token.
pub struct Signed<'t> {
    pub(crate) key: PublicKey,
    key_id: KeyId,
    /// `header.claims` as sent: what the signature covers.
    pub(crate) message: &'t str,
    pub(crate) signature: Vec<u8>,
    claims: &'t str,
}

impl<'t> Signed<'t> {
    /// The signature check's verdict: a valid token goes on to its claims
    /// ([`Verifier::claims`]), any other is [`AuthError::BadSignature`].
    pub fn verdict(self, valid: bool) -> Result<Verified<'t>, AuthError> {
        if valid {
            Ok(Verified {
                key_id: self.key_id,
                claims: self.claims,
            })
        } else {
            Err(AuthError::BadSignature)
        }
    }

    /// The key's identity (for a cache of imported keys).
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

/// A token whose signature is valid; its claims are not checked yet (nor shown by `Debug`).
pub struct Verified<'t> {
    key_id: KeyId,
    claims: &'t str,
}

impl std::fmt::Debug for Signed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("algorithm", &self.key.algorithm())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified").finish_non_exhaustive()
    }
}

/// Verifies bearer tokens against one issuer, one audience and an algorithm allow-list.
///
/// Built once per isolate from the configuration. With `JWT_PUBLIC_JWK` it owns its keys
/// ([`Verifier::new`], [`Verifier::signed`]); with `JWT_JWKS_URL` the keys live in a
/// [`super::JwksCache`] and each call passes them ([`Verifier::with_remote_keys`],
/// [`Verifier::signed_with`]). Either way the signature's check is the caller's (WebCrypto in
/// the Worker, [`Signed::check`] on the host), between [`Verifier::signed_with`] and
/// [`Verifier::claims`].
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Option<KeySet>,
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
}

impl Verifier {
    /// A verifier with fixed keys (`JWT_PUBLIC_JWK`). `issuer` and `audience` are compared
    /// exactly; `algorithms` is the allow-list (from [`super::parse_algorithms`] or
    /// [`Algorithm::DEFAULT`]); an empty list accepts nothing.
    pub fn new(keys: KeySet, issuer: String, audience: String, algorithms: Vec<Algorithm>) -> Self {
        Self {
            keys: Some(keys),
            issuer,
            audience,
            algorithms,
        }
    }

    /// A verifier whose keys come from a JWKS fetched at run time: use [`Verifier::signed_with`]
    /// ([`Verifier::signed`] then answers [`AuthError::KeysUnavailable`]).
    pub fn with_remote_keys(issuer: String, audience: String, algorithms: Vec<Algorithm>) -> Self {
        Self {
            keys: None,
            issuer,
            audience,
            algorithms,
        }
    }

    /// The allow-list this verifier enforces.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// A token checked up to its signature, with the verifier's own keys: see [`Signed`].
    pub fn signed<'t>(&self, token: &'t str) -> Result<Signed<'t>, AuthError> {
        match &self.keys {
            Some(keys) => self.signed_with(keys, token),
            None => Err(AuthError::KeysUnavailable),
        }
    }

    /// A token checked up to its signature, with `keys` (e.g. the JWKS cache's current set):
    /// its size and segments, its header, the allow-list, the key for it, and the signature's
    /// form (length; for Ed25519 a canonical `S` and an `R` not of small order, so the check of
    /// the signature itself finds nothing else to refuse).
    pub fn signed_with<'t>(&self, keys: &KeySet, token: &'t str) -> Result<Signed<'t>, AuthError> {
        let parts = split(token)?;
        let raw_header = decode(parts.header, TokenPart::Header)?;
        let header = parse_header(&raw_header)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let (key, id) =
            keys.pick(header.kid.as_deref(), header.alg)
                .map_err(|pick| match pick {
                    Pick::Unknown => AuthError::UnknownKey,
                    Pick::Ambiguous => AuthError::AmbiguousKey,
                    Pick::Mismatch => AuthError::KeyMismatch,
                })?;
        let signature = decode(parts.signature, TokenPart::Signature)?;
        let well_formed = match key {
            PublicKey::Rs256 { n, .. } => signature.len() == n.len(),
            // JOSE ES256 is raw r || s: exactly 64 bytes (DER is refused).
            PublicKey::Es256 { .. } => signature.len() == 64,
            // dalek's verify_strict: a second spelling of a signature (S + l) or a small-order R
            // is refused, so tokens are not malleable.
            PublicKey::EdDsa { .. } => match <&[u8; 64]>::try_from(signature.as_slice()) {
                Ok(sig) => {
                    let (r, s) = sig.split_at(32);
                    let (r, s) = (r.try_into(), s.try_into());
                    matches!((r, s), (Ok(r), Ok(s))
                        if curve::ed25519_canonical_s(s) && !curve::ed25519_small_order(r))
                }
                Err(_) => false,
            },
        };
        if !well_formed {
            return Err(AuthError::BadSignature);
        }
        Ok(Signed {
            key: key.clone(),
            key_id: *id,
            message: parts.signing_input,
            signature,
            claims: parts.claims,
        })
    }

    /// The claims of a token whose signature was checked ([`Signed::verdict`]), checked at
    /// `now_unix` (seconds since the epoch), with the key that signed it.
    pub fn claims(&self, token: Verified<'_>, now_unix: u64) -> Result<(Claims, KeyId), AuthError> {
        let claims = decode(token.claims, TokenPart::Claims)?;
        Ok((self.check_claims(&claims, now_unix)?, token.key_id))
    }

    /// Verifies `token` (the bearer value, without `Bearer `) with the verifier's own keys at
    /// `now_unix` (seconds since the epoch), checking its signature with RustCrypto. Host
    /// builds only: the Worker checks signatures with WebCrypto (`runtime/signature.rs`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        self.verify_keyed(token, now_unix).map(|(claims, _)| claims)
    }

    /// [`Verifier::verify`] with `keys` (e.g. the JWKS cache's current set).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify_with(
        &self,
        keys: &KeySet,
        token: &str,
        now_unix: u64,
    ) -> Result<Claims, AuthError> {
        self.verify_with_key(keys, token, now_unix)
            .map(|(claims, _)| claims)
    }

    /// [`Verifier::verify`], also naming the key that verified the token.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify_keyed(&self, token: &str, now_unix: u64) -> Result<(Claims, KeyId), AuthError> {
        let signed = self.signed(token)?;
        let valid = signed.check();
        self.claims(signed.verdict(valid)?, now_unix)
    }

    /// [`Verifier::verify_with`], also naming the key that verified the token.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify_with_key(
        &self,
        keys: &KeySet,
        token: &str,
        now_unix: u64,
    ) -> Result<(Claims, KeyId), AuthError> {
        let signed = self.signed_with(keys, token)?;
        let valid = signed.check();
        self.claims(signed.verdict(valid)?, now_unix)
    }

    fn check_claims(&self, raw: &[u8], now: u64) -> Result<Claims, AuthError> {
        if !is_json_object(raw) {
            return Err(AuthError::Json(TokenPart::Claims));
        }
        let claims: RawClaims<'_> = json_text(raw, TokenPart::Claims)?;
        let exp = claims.exp.ok_or(AuthError::MissingExp)?.0;
        let sub = match claims.sub {
            Some(sub) if !sub.is_empty() => sub,
            _ => return Err(AuthError::MissingSub),
        };
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(AuthError::WrongIssuer);
        }
        if !claims.aud.is_some_and(|aud| aud.contains(&self.audience)) {
            return Err(AuthError::WrongAudience);
        }
        // Valid while now < exp (RFC 7519 4.1.4), give or take the leeway.
        if now >= exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        let nbf = claims.nbf.map(|d| d.0);
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(Claims {
            sub: sub.into_owned(),
            exp,
            iat: claims.iat.map(|d| d.0),
            nbf,
            plan: claims.plan.map(Cow::into_owned),
        })
    }
}

/// The `kid` of a token's header, without verifying anything but the token's shape and header
/// (the same checks [`Verifier::signed_with`] starts with). The JWKS glue uses it to ask the
/// cache whether a fetch is needed before verifying.
pub fn token_kid(token: &str) -> Result<Option<String>, AuthError> {
    let parts = split(token)?;
    let raw_header = decode(parts.header, TokenPart::Header)?;
    Ok(parse_header(&raw_header)?.kid.map(Cow::into_owned))
}

struct Parts<'a> {
    header: &'a str,
    claims: &'a str,
    signature: &'a str,
    /// `header.claims`, what the signature covers.
    signing_input: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    let mut dots = token.match_indices('.').map(|(i, _)| i);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(AuthError::Segments);
    };
    let (header, claims, signature) = (
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    );
    if header.is_empty() || claims.is_empty() || signature.is_empty() {
        return Err(AuthError::Segments);
    }
    Ok(Parts {
        header,
        claims,
        signature,
        signing_input: &token[..second],
    })
}

/// Canonical unpadded base64url only (the engine also refuses non-zero trailing bits), so one
/// token has exactly one spelling.
fn decode(segment: &str, part: TokenPart) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Base64(part))
}

/// `raw` as JSON text. Checked as UTF-8 first: `serde_json::from_slice` checks only the strings
/// it keeps, so a member we ignore could hold bytes that are not UTF-8 (not JSON at all).
fn json_text<'a, T: Deserialize<'a>>(raw: &'a [u8], part: TokenPart) -> Result<T, AuthError> {
    let text = std::str::from_utf8(raw).map_err(|_| AuthError::Json(part))?;
    serde_json::from_str(text).map_err(|_| AuthError::Json(part))
}

/// serde's derived struct visitor also accepts a JSON array; a JOSE header or claims set must be
/// an object.
fn is_json_object(raw: &[u8]) -> bool {
    raw.trim_ascii_start().first() == Some(&b'{')
}

struct Header<'a> {
    alg: Algorithm,
    kid: Option<Cow<'a, str>>,
}

/// The protected header as sent; parameters not listed are ignored (RFC 7515 4: unless in
/// `crit`, and `crit` itself is refused).
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    typ: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// True when the member is there at all, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// Checks a decoded header: JSON shape, `alg`, forbidden parameters, `typ`.
fn parse_header(raw: &[u8]) -> Result<Header<'_>, AuthError> {
    if !is_json_object(raw) {
        return Err(AuthError::Json(TokenPart::Header));
    }
    let header: RawHeader<'_> = json_text(raw, TokenPart::Header)?;
    let alg = Algorithm::from_header(header.alg.as_deref().ok_or(AuthError::NoAlgorithm)?)
        .map_err(|e| match e {
            HeaderAlg::None => AuthError::AlgorithmNone,
            HeaderAlg::Hmac => AuthError::AlgorithmHmac,
            HeaderAlg::Unsupported => AuthError::AlgorithmNotAllowed,
        })?;
    for (is_there, name) in [
        (header.jwk, "jwk"),
        (header.jku, "jku"),
        (header.x5u, "x5u"),
        (header.x5c, "x5c"),
    ] {
        if is_there {
            return Err(AuthError::KeyInHeader(name));
        }
    }
    if header.crit {
        return Err(AuthError::CriticalHeader);
    }
    if let Some(typ) = header.typ.as_deref() {
        // RFC 7515 4.1.9: `application/` may be omitted; media types are case-insensitive.
        let typ = match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
            _ => typ,
        };
        if !typ.eq_ignore_ascii_case("JWT") && !typ.eq_ignore_ascii_case("at+jwt") {
            return Err(AuthError::WrongType);
        }
    }
    Ok(Header {
        alg,
        kid: header.kid,
    })
}

/// The claims as sent. Unknown claims are ignored; duplicate members of known claims are an
/// error (serde refuses them), so a token cannot say two things about `sub`.
#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow)]
    sub: Option<Cow<'a, str>>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    iat: Option<NumericDate>,
    #[serde(borrow)]
    iss: Option<Cow<'a, str>>,
    #[serde(borrow)]
    aud: Option<Audience<'a>>,
    #[serde(borrow)]
    plan: Option<Cow<'a, str>>,
}

/// RFC 7519 NumericDate: a non-negative JSON number; fractions are rounded down.
struct NumericDate(u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = NumericDate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                u64::try_from(v)
                    .map(NumericDate)
                    .map_err(|_| E::custom("negative date"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
                    // Truncation is the intent: whole seconds, rounded down.
                    Ok(NumericDate(v as u64))
                } else {
                    Err(E::custom("date out of range"))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `aud`: one string or an array of strings (RFC 7519 4.1.3).
enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl Audience<'_> {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Audience<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Audience<'de>, E> {
                Ok(Audience::One(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience<'de>, E> {
                Ok(Audience::One(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Audience<'de>, A::Error> {
                let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(CowStr(a)) = seq.next_element()? {
                    all.push(a);
                }
                Ok(Audience::Many(all))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A string element that borrows when it can (serde's `Cow<str>` impl always copies inside
/// sequences).
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visitor)
    }
}
