//! Bearer-token checks on the runtime: the token from the header, keys from `JWT_PUBLIC_JWK` or
//! from `JWT_JWKS_URL` (fetched with the Worker's `Fetch`, cached per isolate by the
//! [`JwksCache`] policy), and the auth module's [`Verifier`].

use std::cell::RefCell;
use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::{
    console_log, AbortController, Date, Delay, Fetch, Headers, Method, Request, RequestInit,
};

use crate::auth::{
    bearer_token, token_kid, AuthError, Claims, ClaimsCache, FetchReason, JwksCache, KeySet,
    Lookup, Verifier, MAX_JWKS_BYTES, MAX_TOKEN_BYTES,
};
use crate::error::{shorten, AppError};

/// Longest wait for the issuer's JWKS.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Token verification state of one isolate.
pub struct Authenticator {
    verifier: Verifier,
    jwks_url: Option<String>,
    jwks: RefCell<JwksCache>,
    verified: RefCell<ClaimsCache>,
}

impl Authenticator {
    /// Built once per isolate, with the configuration; `cache_entries` verified tokens are
    /// kept (`JWT_CACHE_ENTRIES`).
    pub fn new(verifier: Verifier, jwks_url: Option<String>, cache_entries: usize) -> Self {
        Authenticator {
            verifier,
            jwks_url,
            jwks: RefCell::new(JwksCache::new()),
            verified: RefCell::new(ClaimsCache::new(cache_entries)),
        }
    }

    /// The verified claims of the request's bearer token: from the isolate's cache when this
    /// exact token was verified before and has not expired, else checked now (and kept).
    pub async fn authenticate(&self, req: &Request, request_id: &str) -> Result<Claims, AppError> {
        let header = req.headers().get("authorization").ok().flatten();
        let token = bearer_token(header.as_deref())?;
        let now = Date::now().as_millis() / 1000;
        // An oversized token is refused by the verifier before it is even hashed.
        let key = (token.len() <= MAX_TOKEN_BYTES).then(|| ClaimsCache::key(token));
        if let Some(claims) = key.and_then(|k| self.verified.borrow_mut().get(&k, now)) {
            return Ok(claims);
        }
        let claims = self.verify(token, now, request_id).await?;
        if let Some(key) = key {
            self.verified.borrow_mut().insert(key, claims.clone(), now);
        }
        Ok(claims)
    }

    async fn verify(&self, token: &str, now: u64, request_id: &str) -> Result<Claims, AppError> {
        let Some(url) = &self.jwks_url else {
            return Ok(self.verifier.verify(token, now)?);
        };
        let kid = token_kid(token)?;
        // No RefCell borrow may live across the fetch: other requests of this isolate run
        // while it is awaited.
        let lookup = self.jwks.borrow_mut().lookup(now, kid.as_deref());
        if let Lookup::Fetch(reason) = lookup {
            match fetch_jwks(url).await {
                Ok(set) => {
                    self.jwks.borrow_mut().store(now, set);
                    // A key may have been withdrawn: tokens it signed must be checked again.
                    self.verified.borrow_mut().clear();
                }
                Err(problem) => {
                    self.jwks.borrow_mut().fetch_failed(now);
                    log_fetch_failure(request_id, reason, &problem);
                }
            }
        }
        let cache = self.jwks.borrow();
        let keys = cache.keys(now).ok_or(AuthError::KeysUnavailable)?;
        Ok(self.verifier.verify_with(keys, token, now)?)
    }
}

fn log_fetch_failure(request_id: &str, reason: FetchReason, problem: &str) {
    let line = serde_json::json!({
        "request_id": request_id,
        "event": "jwks_fetch_failed",
        "reason": reason.as_str(),
        "detail": shorten(problem, 200),
    });
    console_log!("{line}");
}

/// GETs the JWKS: 200, at most `MAX_JWKS_BYTES`, within `JWKS_TIMEOUT`, parsed.
async fn fetch_jwks(url: &str) -> Result<KeySet, String> {
    let headers = Headers::new();
    headers
        .set("accept", "application/json")
        .map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let request = Request::new_with_init(url, &init).map_err(|e| e.to_string())?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let read = async {
        let mut response = fetch
            .send_with_signal(&signal)
            .await
            .map_err(|_| "the JWKS request failed".to_owned())?;
        let status = response.status_code();
        if status != 200 {
            return Err(format!("the JWKS answered HTTP {status}"));
        }
        let mut stream = response
            .stream()
            .map_err(|_| "the JWKS answer has no body".to_owned())?;
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| "the JWKS body could not be read".to_owned())?;
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| "the JWKS is not UTF-8".to_owned())?;
        KeySet::from_json(&text).map_err(|e| e.to_string())
    };
    // Bound to a name so the borrowed futures are dropped before `fetch` and `signal`.
    #[allow(clippy::let_and_return)]
    let result = match select(Box::pin(read), Delay::from(JWKS_TIMEOUT)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => {
            controller.abort();
            Err("the JWKS did not answer in time".to_owned())
        }
    };
    result
}
