//! Why a token or a key was refused.
//!
//! [`AuthError`] is per request: every variant has a short public message that is safe to send
//! to the caller (it never contains the token or any part of it) and a fixed `reason` for the log.
//! [`KeyError`] is per configuration (a JWK, a JWKS or `JWT_ALGORITHMS` that cannot be used); its
//! message names the offending key by `kid` or position and never contains key material.

use std::fmt;

/// Which part of a token could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPart {
    /// The protected header (first segment).
    Header,
    /// The claims (second segment).
    Claims,
    /// The signature (third segment).
    Signature,
}

/// Why a bearer token was refused. Every variant maps to HTTP 401, except
/// [`AuthError::KeysUnavailable`] (503: the fault is ours or the issuer's, not the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header, or `Bearer` with nothing after it.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
    /// Longer than [`super::MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not three dot-separated segments (a JWE has five; an unsecured JWS has an empty third).
    Segments,
    /// A segment is not canonical unpadded base64url.
    Base64(TokenPart),
    /// A segment decodes but is not the JSON object it must be (or has a field of the wrong type).
    Json(TokenPart),
    /// The header has no `alg`.
    NoAlgorithm,
    /// `alg` is `none` (in any casing).
    AlgorithmNone,
    /// `alg` is an HMAC algorithm (`HS256`, ...): never accepted, whatever the configuration.
    AlgorithmHmac,
    /// `alg` is not one this Worker implements, or not in `JWT_ALGORITHMS`.
    AlgorithmNotAllowed,
    /// The header carries a key or a key location (`jwk`, `jku`, `x5u`, `x5c`). Keys come from
    /// the configuration only, so such a token is refused rather than trusted or ignored.
    KeyInHeader(&'static str),
    /// The header has `crit`: we implement no extension, so none can be honoured.
    CriticalHeader,
    /// `typ` is present and is not `JWT` or `at+jwt` (case-insensitive, `application/` allowed).
    WrongType,
    /// No configured key has the token's `kid` (or, without `kid`, no key at all).
    UnknownKey,
    /// The token has no `kid` and several configured keys could have signed it.
    AmbiguousKey,
    /// The key the token names does not fit its `alg` (an RSA key for ES256, a P-384 key, a key
    /// whose `use` or `key_ops` forbids verification, ...).
    KeyMismatch,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is absent.
    MissingExp,
    /// `sub` is absent or empty.
    MissingSub,
    /// `exp` is more than the leeway in the past.
    Expired,
    /// `nbf` is more than the leeway in the future.
    NotYetValid,
    /// `iss` is absent or not the configured issuer.
    WrongIssuer,
    /// `aud` is absent or does not contain the configured audience.
    WrongAudience,
    /// No keys to verify with: the JWKS could not be fetched (or is too old to trust).
    KeysUnavailable,
}

impl AuthError {
    /// A short, fixed description for the log; never contains the token.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::NotBearer => "not_bearer",
            Self::TooLarge => "token_too_large",
            Self::Segments => "malformed_segments",
            Self::Base64(TokenPart::Header) => "malformed_header_base64",
            Self::Base64(TokenPart::Claims) => "malformed_claims_base64",
            Self::Base64(TokenPart::Signature) => "malformed_signature_base64",
            Self::Json(TokenPart::Header) => "malformed_header_json",
            Self::Json(TokenPart::Claims) => "malformed_claims_json",
            Self::Json(TokenPart::Signature) => "malformed_signature",
            Self::NoAlgorithm => "no_alg",
            Self::AlgorithmNone => "alg_none",
            Self::AlgorithmHmac => "alg_hmac",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::KeyInHeader("jwk") => "header_jwk",
            Self::KeyInHeader("jku") => "header_jku",
            Self::KeyInHeader("x5u") => "header_x5u",
            Self::KeyInHeader("x5c") => "header_x5c",
            Self::KeyInHeader(_) => "header_key",
            Self::CriticalHeader => "header_crit",
            Self::WrongType => "wrong_typ",
            Self::UnknownKey => "unknown_kid",
            Self::AmbiguousKey => "ambiguous_key",
            Self::KeyMismatch => "key_alg_mismatch",
            Self::BadSignature => "bad_signature",
            Self::MissingExp => "missing_exp",
            Self::MissingSub => "missing_sub",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// What the caller may be told. Short, fixed, and free of anything the caller sent.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::Missing => "Missing bearer token in the Authorization header.",
            Self::NotBearer => "The Authorization header must be 'Bearer <token>'.",
            Self::TooLarge => "The token is too large.",
            Self::Segments | Self::Base64(_) | Self::Json(_) | Self::NoAlgorithm => {
                "The token is malformed."
            }
            Self::AlgorithmNone | Self::AlgorithmHmac | Self::AlgorithmNotAllowed => {
                "The token's signing algorithm is not accepted."
            }
            Self::KeyInHeader(_) | Self::CriticalHeader | Self::WrongType => {
                "The token's header is not accepted."
            }
            Self::UnknownKey | Self::AmbiguousKey | Self::KeyMismatch => {
                "The token was not signed by a known key."
            }
            Self::BadSignature => "The token's signature is invalid.",
            Self::MissingExp => "The token has no expiry (exp).",
            Self::MissingSub => "The token has no subject (sub).",
            Self::Expired => "The token has expired.",
            Self::NotYetValid => "The token is not valid yet.",
            Self::WrongIssuer => "The token's issuer is not accepted.",
            Self::WrongAudience => "The token's audience is not accepted.",
            Self::KeysUnavailable => "Token verification is temporarily unavailable.",
        }
    }

    /// The HTTP status this refusal calls for: 401, or 503 for [`AuthError::KeysUnavailable`].
    pub fn status(&self) -> u16 {
        match self {
            Self::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.public_message())
    }
}

impl std::error::Error for AuthError {}

/// Which key of a JWKS an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLabel {
    /// The key has this `kid`.
    Kid(String),
    /// The key has no `kid`; this is its position in `keys` (0 for a lone JWK).
    Index(usize),
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A kid is configuration, not a secret, but it may come from a remote JWKS: cut it.
            Self::Kid(kid) => write!(f, "key kid={:?}", truncate(kid, 64)),
            Self::Index(i) => write!(f, "key #{i} (no kid)"),
        }
    }
}

/// Why a key, a key set or an algorithm list from the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not JSON, or not an object, or `keys` is not an array.
    Json(String),
    /// The text is over [`super::MAX_JWKS_BYTES`].
    TooLarge,
    /// A key of a supported type is broken (bad base64, wrong length, not on the curve, RSA
    /// modulus too short, private key material present, ...).
    InvalidKey {
        /// Which key.
        key: KeyLabel,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No key in the set can verify anything; lists why each was skipped.
    NoUsableKey(Vec<(KeyLabel, &'static str)>),
    /// `JWT_ALGORITHMS` is empty.
    NoAlgorithms,
    /// `JWT_ALGORITHMS` names `none`.
    AlgorithmNone,
    /// `JWT_ALGORITHMS` names an HMAC algorithm (`HS256`, ...), which a shared-secret-free proxy
    /// must never accept.
    AlgorithmHmac(String),
    /// `JWT_ALGORITHMS` names an algorithm this Worker does not implement.
    UnsupportedAlgorithm(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "not a JWK or JWKS: {e}"),
            Self::TooLarge => write!(f, "JWK set is larger than {} bytes", super::MAX_JWKS_BYTES),
            Self::InvalidKey { key, reason } => write!(f, "{key}: {reason}"),
            Self::NoUsableKey(skipped) => {
                f.write_str("no usable verification key")?;
                for (i, (key, why)) in skipped.iter().enumerate() {
                    f.write_str(if i == 0 { ": " } else { "; " })?;
                    write!(f, "{key} skipped: {why}")?;
                }
                Ok(())
            }
            Self::NoAlgorithms => f.write_str("JWT_ALGORITHMS is empty"),
            Self::AlgorithmNone => f.write_str("JWT_ALGORITHMS must not contain 'none'"),
            Self::AlgorithmHmac(a) => write!(
                f,
                "JWT_ALGORITHMS must not contain {:?}: HMAC algorithms are never accepted",
                truncate(a, 32)
            ),
            Self::UnsupportedAlgorithm(a) => write!(
                f,
                "JWT_ALGORITHMS contains {:?}; supported: RS256, ES256, EdDSA",
                truncate(a, 32)
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// At most `max` bytes of `s`, cut on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
