//! Bearer JWT verification: our own small verifier, which keeps every header decision in our
//! hands. The signature itself is checked by the runtime's WebCrypto in the Worker
//! (`runtime/signature.rs`) and by RustCrypto on the host ([`Signed::check`]); everything else,
//! the strict rules on keys and signatures included, is here and shared.
//!
//! - [`bearer_token`] takes the token out of the `Authorization` header.
//! - [`KeySet`] is `JWT_PUBLIC_JWK` or a fetched JWKS, parsed once into verifying keys
//!   (`jwk.rs` lists which keys are used).
//! - [`parse_algorithms`] reads `JWT_ALGORITHMS` (default [`Algorithm::DEFAULT`]).
//! - [`Verifier`] checks a token up to its signature ([`Signed`]), then, once the signature is
//!   found valid ([`Verified`]), its [`Claims`].
//! - [`ClaimsCache`] keeps verified tokens' claims per isolate until they expire.
//! - [`JwksCache`] decides when the glue must fetch `JWT_JWKS_URL` (the fetch itself is glue).
//!
//! The signature algorithm is chosen by the configuration and the key, never by the token: the
//! token's `alg` must be in the allow-list *and* be the one algorithm the selected key is for.
//!
//! A token is refused ([`AuthError`]) when it is over 8 KiB; has other than three segments or an
//! empty one; has a segment that is not canonical unpadded base64url, or a header or claims set
//! that is not a JSON object of the right member types; its `alg` is missing, `none` (any
//! casing), `HS*`, unknown or not allowed; its header has `jwk`, `jku`, `x5u`, `x5c` (keys come
//! from configuration only: a token naming its own key is refused, not half-trusted) or `crit`
//! (we implement no extensions); its `typ`, if present, is not `JWT` or `at+jwt` (compared
//! case-insensitively, optional `application/` prefix; other types such as `dpop+jwt` or
//! `secevent+jwt` are different kinds of token and must not pass as access tokens); no key has
//! its `kid` (or, without `kid`, no single key fits); the key is for another algorithm or curve,
//! or its `use`/`key_ops` forbids verification; the signature does not verify; `exp` or `sub` is
//! missing, or `sub` is empty; `iss` is not the configured issuer; `aud` (string or array) lacks
//! the configured audience; `exp` passed or `nbf` is ahead, beyond a 60 s leeway.
//!
//! `iat` is returned but not checked (a future `iat` with a valid `nbf`/`exp` is harmless).

mod algorithm;
mod claims_cache;
mod curve;
mod error;
mod jwk;
mod jwks_cache;
mod jwt;
#[cfg(not(target_arch = "wasm32"))]
mod signature;
#[cfg(test)]
pub(crate) mod test_signer;
#[cfg(test)]
mod tests;

pub use algorithm::{parse_algorithms, Algorithm};
pub use claims_cache::{ClaimsCache, DEFAULT_CACHE_ENTRIES};
pub use error::{AuthError, KeyError, KeyLabel, TokenPart};
#[cfg(target_arch = "wasm32")]
pub(crate) use jwk::PublicKey;
pub use jwk::{KeyId, KeySet, MAX_RSA_BITS, MIN_RSA_BITS};
pub use jwks_cache::{CachePolicy, CacheStats, FetchReason, JwksCache, Lookup, FETCH_WINDOW_SECS};
pub use jwt::{token_kid, Claims, Signed, Verified, Verifier, LEEWAY_SECS, MAX_TOKEN_BYTES};

/// Largest JWK or JWKS text accepted (configuration or a fetched body), in bytes. A real JWKS
/// is a few KiB; the glue should stop reading a fetched body at this size.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The token in an `Authorization: Bearer <token>` header value.
///
/// The scheme is matched case-insensitively; blanks around the header and the token are
/// trimmed. No header, or `Bearer` with nothing after it, is [`AuthError::Missing`]; any other
/// scheme (or no space after it) is [`AuthError::NotBearer`].
pub fn bearer_token(authorization_header: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization_header.ok_or(AuthError::Missing)?.trim();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}
