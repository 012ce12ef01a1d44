//! Compact JWS (JWT) verification: header checks, key choice, signature, claims.
//!
//! The order is fixed and cheap-first: size, segments, header (base64, JSON, `alg`, forbidden
//! parameters, `typ`), allow-list, key choice, signature, and only then the claims, so nothing in
//! an unauthenticated payload is acted upon.

use serde_json::value::RawValue;
use serde_json::Value;

use super::{
    algorithm::HeaderAlg,
    curve,
    jwk::{KeyId, Pick, PublicKey},
    Algorithm, AuthError, KeySet, TokenPart,
};
use crate::providers::openai::rewrite::RawObject;

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
        let claims = claim_fields(raw)?;
        let exp = claims.exp.ok_or(AuthError::MissingExp)?;
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
        let nbf = claims.nbf;
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(Claims {
            sub,
            exp,
            iat: claims.iat,
            nbf,
            plan: claims.plan,
        })
    }
}

/// The `kid` of a token's header, without verifying anything but the token's shape and header
/// (the same checks [`Verifier::signed_with`] starts with). The JWKS glue uses it to ask the
/// cache whether a fetch is needed before verifying.
pub fn token_kid(token: &str) -> Result<Option<String>, AuthError> {
    let parts = split(token)?;
    let raw_header = decode(parts.header, TokenPart::Header)?;
    Ok(parse_header(&raw_header)?.kid)
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

/// Canonical unpadded base64url only (no `=`, non-zero trailing bits refused), so one token has
/// exactly one spelling.
fn decode(segment: &str, part: TokenPart) -> Result<Vec<u8>, AuthError> {
    base64url(segment.as_bytes()).ok_or(AuthError::Base64(part))
}

/// `text` decoded as canonical unpadded base64url, as the base64 crate's `URL_SAFE_NO_PAD`
/// decodes it (the tests hold the two equal). Its decoder is 3 KB of wasm, unrolled for long
/// inputs, that every new token's check compiled again after the runtime dropped the wasm's
/// baseline code; this loop is a tenth of that, and a token is short.
fn base64url(text: &[u8]) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    // A last group of one symbol holds no whole byte.
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for group in text.chunks(4) {
        let mut bits = 0u32;
        for &c in group {
            bits = bits << 6 | sextet(c)?;
        }
        // The group's bits, left-aligned in 24.
        let bits = bits << (6 * (4 - group.len()));
        let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        let whole = group.len() * 6 / 8;
        // The bits past the last whole byte must be zero: one spelling per value.
        if whole < 3 && bytes[whole] != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..whole]);
    }
    Some(out)
}

/// `raw`, a JOSE header or claims set, as its members: a JSON object (serde's derived visitor,
/// which read these before, also took an array), checked as UTF-8 first (a member we ignore
/// could otherwise hold bytes that are not UTF-8). Read through [`RawObject`], the parse every
/// answer's rewrite runs, and serde_json's `Value`: a token's check compiles no serde code of
/// its own (an isolate's first request, and every request after the runtime drops the wasm's
/// baseline code, compile what they run). The tests hold the reading equal to the derived one.
fn json_members(raw: &[u8], part: TokenPart) -> Result<RawObject<'_>, AuthError> {
    if !is_json_object(raw) {
        return Err(AuthError::Json(part));
    }
    let text = std::str::from_utf8(raw).map_err(|_| AuthError::Json(part))?;
    RawObject::parse(text).map_err(|_| AuthError::Json(part))
}

/// A member's value; absent and `null` are both `None`.
fn value(raw: Option<&RawValue>, part: TokenPart) -> Result<Option<Value>, AuthError> {
    match raw.map(|raw| serde_json::from_str(raw.get())) {
        None | Some(Ok(Value::Null)) => Ok(None),
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(_)) => Err(AuthError::Json(part)),
    }
}

/// A text member: anything but a string (or `null`) is an error.
fn text(raw: Option<&RawValue>, part: TokenPart) -> Result<Option<String>, AuthError> {
    match value(raw, part)? {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(AuthError::Json(part)),
    }
}

/// RFC 7519 NumericDate: a non-negative JSON number; fractions are rounded down.
fn date(raw: Option<&RawValue>) -> Result<Option<u64>, AuthError> {
    let bad = AuthError::Json(TokenPart::Claims);
    let n = match value(raw, TokenPart::Claims)? {
        None => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(bad),
    };
    if let Some(seconds) = n.as_u64() {
        return Ok(Some(seconds));
    }
    match (n.as_i64(), n.as_f64()) {
        // A negative whole number.
        (Some(_), _) => Err(bad),
        // Truncation is the intent: whole seconds, rounded down.
        (None, Some(v)) if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 => Ok(Some(v as u64)),
        _ => Err(bad),
    }
}

/// `aud`: one string or an array of strings (RFC 7519 4.1.3), as a list.
fn audience(raw: Option<&RawValue>) -> Result<Option<Vec<String>>, AuthError> {
    let bad = || AuthError::Json(TokenPart::Claims);
    match value(raw, TokenPart::Claims)? {
        None => Ok(None),
        Some(Value::String(one)) => Ok(Some(vec![one])),
        Some(Value::Array(all)) => all
            .into_iter()
            .map(|a| match a {
                Value::String(a) => Ok(a),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// serde's derived struct visitor also accepts a JSON array; a JOSE header or claims set must be
/// an object.
fn is_json_object(raw: &[u8]) -> bool {
    raw.trim_ascii_start().first() == Some(&b'{')
}

struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// The protected header as sent; parameters not listed are ignored (RFC 7515 4: unless in
/// `crit`, and `crit` itself is refused).
#[derive(Debug, PartialEq)]
struct HeaderFields {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
    /// Whether `jwk`, `jku`, `x5u`, `x5c` and `crit` are there at all, whatever their value
    /// (`null` included).
    present: [bool; 5],
}

fn header_fields(raw: &[u8]) -> Result<HeaderFields, AuthError> {
    let part = TokenPart::Header;
    let object = json_members(raw, part)?;
    // A name sent twice is an error, as it was to serde's derived visitor.
    let [alg, kid, typ, jwk, jku, x5u, x5c, crit] = object
        .named(["alg", "kid", "typ", "jwk", "jku", "x5u", "x5c", "crit"])
        .ok_or(AuthError::Json(part))?;
    Ok(HeaderFields {
        alg: text(alg, part)?,
        kid: text(kid, part)?,
        typ: text(typ, part)?,
        present: [jwk, jku, x5u, x5c, crit].map(|m| m.is_some()),
    })
}

/// Checks a decoded header: JSON shape, `alg`, forbidden parameters, `typ`.
fn parse_header(raw: &[u8]) -> Result<Header, AuthError> {
    let header = header_fields(raw)?;
    let alg = Algorithm::from_header(header.alg.as_deref().ok_or(AuthError::NoAlgorithm)?)
        .map_err(|e| match e {
            HeaderAlg::None => AuthError::AlgorithmNone,
            HeaderAlg::Hmac => AuthError::AlgorithmHmac,
            HeaderAlg::Unsupported => AuthError::AlgorithmNotAllowed,
        })?;
    let [jwk, jku, x5u, x5c, crit] = header.present;
    for (is_there, name) in [(jwk, "jwk"), (jku, "jku"), (x5u, "x5u"), (x5c, "x5c")] {
        if is_there {
            return Err(AuthError::KeyInHeader(name));
        }
    }
    if crit {
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

/// The claims as sent. Unknown claims are ignored; a known claim sent twice is an error.
#[derive(Debug, PartialEq)]
struct ClaimFields {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    iss: Option<String>,
    aud: Option<Vec<String>>,
    plan: Option<String>,
}

fn claim_fields(raw: &[u8]) -> Result<ClaimFields, AuthError> {
    let part = TokenPart::Claims;
    let object = json_members(raw, part)?;
    // A claim sent twice is an error: a token cannot say two things about `sub`.
    let [sub, exp, nbf, iat, iss, aud, plan] = object
        .named(["sub", "exp", "nbf", "iat", "iss", "aud", "plan"])
        .ok_or(AuthError::Json(part))?;
    Ok(ClaimFields {
        sub: text(sub, part)?,
        exp: date(exp)?,
        nbf: date(nbf)?,
        iat: date(iat)?,
        iss: text(iss, part)?,
        aud: audience(aud)?,
        plan: text(plan, part)?,
    })
}

/// The serde-derived reading the functions above replaced, kept as their oracle.
#[cfg(test)]
mod derived_oracle {
    use std::borrow::Cow;

    use serde::{
        de::{self, IgnoredAny},
        Deserialize, Deserializer,
    };

    use super::*;

    /// `raw` as JSON text. Checked as UTF-8 first: `serde_json::from_slice` checks only the strings
    /// it keeps, so a member we ignore could hold bytes that are not UTF-8 (not JSON at all).
    fn json_text<'a, T: Deserialize<'a>>(raw: &'a [u8], part: TokenPart) -> Result<T, AuthError> {
        let text = std::str::from_utf8(raw).map_err(|_| AuthError::Json(part))?;
        serde_json::from_str(text).map_err(|_| AuthError::Json(part))
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

    fn derived_header(raw: &[u8]) -> Result<HeaderFields, AuthError> {
        if !is_json_object(raw) {
            return Err(AuthError::Json(TokenPart::Header));
        }
        let h: RawHeader<'_> = json_text(raw, TokenPart::Header)?;
        Ok(HeaderFields {
            alg: h.alg.map(Cow::into_owned),
            kid: h.kid.map(Cow::into_owned),
            typ: h.typ.map(Cow::into_owned),
            present: [h.jwk, h.jku, h.x5u, h.x5c, h.crit],
        })
    }

    fn derived_claims(raw: &[u8]) -> Result<ClaimFields, AuthError> {
        if !is_json_object(raw) {
            return Err(AuthError::Json(TokenPart::Claims));
        }
        let c: RawClaims<'_> = json_text(raw, TokenPart::Claims)?;
        Ok(ClaimFields {
            sub: c.sub.map(Cow::into_owned),
            exp: c.exp.map(|d| d.0),
            nbf: c.nbf.map(|d| d.0),
            iat: c.iat.map(|d| d.0),
            iss: c.iss.map(Cow::into_owned),
            aud: c.aud.map(|a| match a {
                Audience::One(one) => vec![one.into_owned()],
                Audience::Many(all) => all.into_iter().map(Cow::into_owned).collect(),
            }),
            plan: c.plan.map(Cow::into_owned),
        })
    }

    /// Objects of 0-4 members drawn from `keys` and `values` (repeats included), and now and then
    /// a value alone or bytes that are not JSON.
    fn bodies(keys: &[&str], values: &[&str], seed: u64, n: usize) -> Vec<Vec<u8>> {
        let mut pick = crate::picker(seed);
        (0..n)
            .map(|_| {
                let text = match pick(16) {
                    0 => values[pick(values.len())].to_owned(),
                    // A control character inside a string: not JSON.
                    1 => "{\"alg\":\"ES256\",\"x\":\"\u{1}\"}".to_owned(),
                    _ => {
                        let members: Vec<String> = (0..pick(5))
                            .map(|_| {
                                format!(
                                    "{:?}: {}",
                                    keys[pick(keys.len())],
                                    values[pick(values.len())]
                                )
                                .replace("\\\\", "\\")
                            })
                            .collect();
                        format!(" {{{}}} ", members.join(","))
                    }
                };
                let mut bytes = text.into_bytes();
                if pick(40) == 0 {
                    bytes.push(0xff);
                }
                bytes
            })
            .collect()
    }

    const VALUES: &[&str] = &[
        "null",
        "true",
        "0",
        "1",
        "-1",
        "-0",
        "1.5",
        "1e3",
        "-1e3",
        "1e30",
        "2.5e-1",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775808",
        r#""""#,
        r#""ES256""#,
        r#""RS256""#,
        r#""none""#,
        r#""HS256""#,
        r#""JWT""#,
        r#""application/at+jwt""#,
        r#""u-1""#,
        r#""aud-1""#,
        r#""\u0061ud-1""#,
        "[]",
        r#"["aud-1"]"#,
        r#"["aud-1","x"]"#,
        r#"["aud-1",1]"#,
        r#"[null]"#,
        "{}",
        r#"{"k":[1,{"a":null}]}"#,
    ];

    /// Reads each body both ways: the same result every time, and each outcome often (the test
    /// is not vacuous).
    fn read_alike<T: PartialEq + std::fmt::Debug>(
        bodies: Vec<Vec<u8>>,
        ours: fn(&[u8]) -> Result<T, AuthError>,
        derived: fn(&[u8]) -> Result<T, AuthError>,
    ) {
        let (mut ok, mut refused) = (0, 0);
        for raw in bodies {
            let read = ours(&raw);
            assert_eq!(read, derived(&raw), "{}", String::from_utf8_lossy(&raw));
            if read.is_ok() {
                ok += 1;
            } else {
                refused += 1;
            }
        }
        assert!(ok > 2_000 && refused > 2_000, "{ok} / {refused}");
    }

    #[test]
    fn headers_are_read_as_the_derived_visitor_read_them() {
        let keys = [
            "alg",
            "kid",
            "typ",
            "jwk",
            "jku",
            "x5u",
            "x5c",
            "crit",
            "cty",
            "al\\u0067",
        ];
        let bodies = bodies(&keys, VALUES, 0x9E37_79B9_7F4A_7C15, 20_000);
        read_alike(bodies, header_fields, derived_header);
    }

    #[test]
    fn claims_are_read_as_the_derived_visitor_read_them() {
        let keys = [
            "sub",
            "exp",
            "nbf",
            "iat",
            "iss",
            "aud",
            "plan",
            "jti",
            "su\\u0062",
        ];
        let bodies = bodies(&keys, VALUES, 0x2545_F491_4F6C_DD1D, 20_000);
        read_alike(bodies, claim_fields, derived_claims);
    }
}

/// The base64 crate's decoder, which [`base64url`] replaced, kept as its oracle.
#[cfg(test)]
mod base64url_oracle {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

    use super::base64url;

    #[test]
    fn segments_are_decoded_as_the_base64_crate_decoded_them() {
        // Mostly the alphabet, sometimes what it lacks: padding, standard base64's two symbols,
        // a space, a byte that is not ASCII.
        let symbols: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(b'0'..=b'9')
            .chain(*b"-_")
            .collect();
        let strays = *b"=+/ \xff";
        let mut pick = crate::picker(0x2545_F491_4F6C_DD1Du64);
        let (mut ok, mut refused, mut partial) = (0, 0, 0);
        for _ in 0..50_000 {
            let len = pick(24);
            let text: Vec<u8> = (0..len)
                .map(|_| match pick(200) {
                    0 => strays[pick(strays.len())],
                    _ => symbols[pick(symbols.len())],
                })
                .collect();
            let ours = base64url(&text);
            assert_eq!(ours, URL_SAFE_NO_PAD.decode(&text).ok(), "{text:?}");
            match ours {
                Some(_) if !len.is_multiple_of(4) => partial += 1,
                Some(_) => ok += 1,
                None => refused += 1,
            }
        }
        // Whole groups, a last group of two or three symbols, and refusals (a stray symbol,
        // one symbol too many, trailing bits set) each occur thousands of times.
        assert!(
            ok > 2_000 && partial > 2_000 && refused > 2_000,
            "{ok} {partial} {refused}"
        );
    }
}
