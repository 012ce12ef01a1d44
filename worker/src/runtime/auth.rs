//! Bearer-token checks on the runtime: the token from the header, keys from `JWT_PUBLIC_JWK` or
//! from `JWT_JWKS_URL` (fetched with the Worker's `Fetch`, cached per isolate by the
//! [`JwksCache`] policy), the auth module's [`Verifier`], and the signature checked with
//! WebCrypto (`signature`).

use std::cell::RefCell;
use std::time::Duration;

use super::fetch::{fetch, read_capped, Body, FetchError, Outgoing, ReadError};
use super::signature;
use super::wake::sleep;
use super::{apart, now_ms};

use crate::auth::{
    bearer_token, token_kid, AuthError, Claims, ClaimsCache, FetchReason, JwksCache, KeyId, KeySet,
    Lookup, Verifier, MAX_JWKS_BYTES, MAX_TOKEN_BYTES,
};
use crate::error::AppError;
use crate::log::Event;

/// Longest wait for the issuer's JWKS.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a request waiting for another request's JWKS fetch looks again. (A request
/// cannot await another request's I/O under workerd, which cancels it as hung: it waits on a
/// timer of its own.)
const WAIT_STEP: Duration = Duration::from_millis(20);

/// The isolate's key set and verified tokens.
struct KeyState {
    jwks: RefCell<JwksCache>,
    verified: RefCell<ClaimsCache>,
}

/// Token verification state of one isolate.
pub struct Authenticator {
    verifier: Verifier,
    jwks_url: Option<String>,
    state: KeyState,
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

impl Authenticator {
    /// Built once per isolate, with the configuration; `cache_entries` verified tokens are
    /// kept (`JWT_CACHE_ENTRIES`).
    pub fn new(verifier: Verifier, jwks_url: Option<String>, cache_entries: usize) -> Self {
        Authenticator {
            verifier,
            jwks_url,
            state: KeyState {
                jwks: RefCell::new(JwksCache::new()),
                verified: RefCell::new(ClaimsCache::new(cache_entries)),
            },
        }
    }

    /// The verified claims of the request's bearer token: from the isolate's cache when this
    /// exact token was verified before, has not expired, and its key set is fresh (or was just
    /// refreshed and still has its key), else checked now (and kept).
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        request_id: &str,
    ) -> Result<Claims, AppError> {
        let token = bearer_token(authorization)?;
        // An oversized token is refused by the verifier before it is even hashed.
        let key = (token.len() <= MAX_TOKEN_BYTES).then(|| ClaimsCache::key(token));
        if let Some(key) = &key {
            if let Some(claims) = self.cached(key, request_id).await {
                return Ok(claims);
            }
        }
        // In a function of its own: a request whose token is cached never compiles it.
        let (claims, signer) = apart(self.verify(token, request_id)).await?;
        if let Some(key) = key {
            self.state
                .verified
                .borrow_mut()
                .insert(key, claims.clone(), signer, now_secs());
        }
        Ok(claims)
    }

    /// A cached verification, served only while the key set it was made with is fresh: past
    /// that, the set is refreshed first (which drops the entries of withdrawn keys).
    async fn cached(&self, key: &[u8; 32], request_id: &str) -> Option<Claims> {
        let claims = self.state.verified.borrow_mut().get(key, now_secs())?;
        if self.jwks_url.is_none() || self.state.jwks.borrow().is_fresh(now_secs()) {
            return Some(claims);
        }
        apart(self.refresh(None, request_id)).await;
        self.state.verified.borrow_mut().get(key, now_secs())
    }

    async fn verify(&self, token: &str, request_id: &str) -> Result<(Claims, KeyId), AppError> {
        let signed = if self.jwks_url.is_none() {
            self.verifier.signed(token)?
        } else {
            let kid = token_kid(token)?;
            self.refresh(kid.as_deref(), request_id).await;
            let cache = self.state.jwks.borrow();
            let keys = cache.keys(now_secs()).ok_or(AuthError::KeysUnavailable)?;
            self.verifier.signed_with(keys, token)?
        };
        let valid = match signature::check(&signed).await {
            Ok(valid) => valid,
            Err(problem) => {
                let event = Event::new("key_import_failed")
                    .in_request(request_id)
                    .with_detail(&problem);
                super::log_line(&event.to_line());
                false
            }
        };
        Ok(self.verifier.claims(signed.verdict(valid)?, now_secs())?)
    }

    /// Fetches the JWKS when the policy says so, or waits for another request's fetch in
    /// flight (at most [`crate::auth::FETCH_WINDOW_SECS`]). No `RefCell` borrow lives across an
    /// await: other requests of this isolate run meanwhile.
    async fn refresh(&self, kid: Option<&str>, request_id: &str) {
        let Some(url) = &self.jwks_url else {
            return;
        };
        loop {
            let lookup = self.state.jwks.borrow_mut().lookup(now_secs(), kid);
            match lookup {
                Lookup::Hit | Lookup::Cooldown => return,
                Lookup::Wait => sleep(WAIT_STEP).await,
                Lookup::Fetch(reason) => {
                    self.fetch_into(url, reason, request_id).await;
                    return;
                }
            }
        }
    }

    /// Fetches the JWKS: the new set replaces the old, and verified tokens whose key it lacks
    /// are forgotten; a failure leaves the old set (within its staleness limit).
    async fn fetch_into(&self, url: &str, reason: FetchReason, request_id: &str) {
        match fetch_jwks(url).await {
            Ok(set) => {
                self.state
                    .verified
                    .borrow_mut()
                    .retain_keys(|id| set.contains_key_id(id));
                self.state.jwks.borrow_mut().store(now_secs(), set);
            }
            Err(problem) => {
                self.state.jwks.borrow_mut().fetch_failed(now_secs());
                log_fetch_failure(request_id, reason, &problem);
            }
        }
    }
}

fn log_fetch_failure(request_id: &str, reason: FetchReason, problem: &str) {
    let event = Event::new("jwks_fetch_failed")
        .in_request(request_id)
        .with_detail(&format!("{}: {problem}", reason.as_str()));
    super::log_line(&event.to_line());
}

/// GETs the JWKS: 200, at most `MAX_JWKS_BYTES`, within `JWKS_TIMEOUT`, parsed.
async fn fetch_jwks(url: &str) -> Result<KeySet, String> {
    let started = now_ms();
    // A redirect is an error, not followed: keys come from the configured URL only.
    let request = Outgoing {
        url,
        method: "GET",
        headers: &[("accept", "application/json")],
        body: None,
    };
    let response = fetch(request, JWKS_TIMEOUT, None)
        .await
        .map_err(|e| match e {
            FetchError::NoAnswer => "the JWKS did not answer in time".to_owned(),
            FetchError::NotSent | FetchError::NoConnection | FetchError::CallerGone => {
                "the JWKS request failed".to_owned()
            }
        })?;
    let status = response.status();
    if status != 200 {
        return Err(format!("the JWKS answered HTTP {status}"));
    }
    // What is left of the time limit.
    let spent = Duration::from_millis(now_ms().saturating_sub(started));
    let body = read_capped(
        Body::of(&response, MAX_JWKS_BYTES as u64),
        Some(JWKS_TIMEOUT.saturating_sub(spent)),
    )
    .await
    .map_err(|e| match e {
        ReadError::TooLarge => format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"),
        ReadError::Broken => "the JWKS body could not be read".to_owned(),
        ReadError::Timeout => "the JWKS did not answer in time".to_owned(),
    })?;
    let text = String::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".to_owned())?;
    KeySet::from_json(&text).map_err(|e| e.to_string())
}
