//! Access tokens: where they come from ([`TokenProvider`]) and the cache that refreshes them
//! ahead of expiry, one refresh at a time.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;

use crate::error::BoxError;

/// A bearer token and, when known, when it expires: [`AccessToken::new`], then
/// [`with_expiry`](AccessToken::with_expiry) when the expiry is known.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token sent as `Authorization: Bearer <token>`. Never logged.
    pub token: String,
    /// When it stops being valid. When `None`, the client reads the JWT's `exp` claim; a token
    /// with neither is treated as never expiring (until a 401 says otherwise).
    pub expires_at: Option<SystemTime>,
}

impl AccessToken {
    /// A token with no stated expiry (the JWT's `exp` is used if it has one).
    pub fn new(token: impl Into<String>) -> Self {
        AccessToken {
            token: token.into(),
            expires_at: None,
        }
    }

    /// The same token, stated to expire at `at`.
    pub fn with_expiry(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The stated expiry, else the JWT's `exp` claim read without verifying the signature.
    pub fn effective_expiry(&self) -> Option<SystemTime> {
        self.expires_at.or_else(|| jwt_expiry(&self.token))
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field(
                "token",
                &format_args!("<redacted {} bytes>", self.token.len()),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Reads `exp` from a JWT's payload without verifying anything: only to know when to refresh.
pub(crate) fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let payload = payload.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get(storycad_protocol::claims::EXPIRES)?.as_f64()?;
    if !(exp.is_finite() && exp >= 0.0) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(exp).ok()?)
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl TokenError {
    /// An error with this message (it must not contain a secret).
    pub fn new(message: impl Into<String>) -> Self {
        TokenError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and its cause.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TokenError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Where the client gets its bearer tokens (a sign-in service, the host app through FFI, a
/// fixed string). The client caches what it returns; it is called again when the token is
/// about to expire or the server rejected it with a 401.
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// A valid token.
    async fn token(&self) -> Result<AccessToken, TokenError>;
}

/// A fixed token (an API key, or a JWT for a short-lived tool).
#[derive(Clone)]
pub struct StaticToken(AccessToken);

impl StaticToken {
    /// Always hands out `token`.
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken(AccessToken::new(token))
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticToken").field(&self.0).finish()
    }
}

#[async_trait::async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        Ok(self.0.clone())
    }
}

type TokenFuture = Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send>>;

/// A provider from a closure returning a future, e.g.
/// `FnTokenProvider::new(|| async { Ok(AccessToken::new(fetch().await?)) })`.
pub struct FnTokenProvider {
    f: Box<dyn Fn() -> TokenFuture + Send + Sync>,
}

impl FnTokenProvider {
    /// Calls `f` each time a token is needed.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AccessToken, TokenError>> + Send + 'static,
    {
        FnTokenProvider {
            f: Box::new(move || Box::pin(f())),
        }
    }
}

impl fmt::Debug for FnTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnTokenProvider")
    }
}

#[async_trait::async_trait]
impl TokenProvider for FnTokenProvider {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        (self.f)().await
    }
}

/// A token in the cache, with a number that changes on every refresh so that a 401 on an old
/// token does not throw away a newer one.
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub(crate) value: Arc<str>,
    pub(crate) generation: u64,
    expires_at: Option<SystemTime>,
    fetched_at: Instant,
}

/// Caches the provider's token. The mutex is held across the provider call, so callers that
/// find the token stale while a refresh runs wait for it and use its result: one call, however
/// many requests are in flight.
pub(crate) struct TokenCache {
    provider: Arc<dyn TokenProvider>,
    refresh_ahead: Duration,
    state: tokio::sync::Mutex<State>,
}

struct State {
    current: Option<CachedToken>,
    generation: u64,
}

impl TokenCache {
    pub(crate) fn new(provider: Arc<dyn TokenProvider>, refresh_ahead: Duration) -> Self {
        TokenCache {
            provider,
            refresh_ahead,
            state: tokio::sync::Mutex::new(State {
                current: None,
                generation: 0,
            }),
        }
    }

    /// A token fresh enough to send now.
    pub(crate) async fn get(&self) -> Result<CachedToken, TokenError> {
        let asked_at = Instant::now();
        let mut state = self.state.lock().await;
        if let Some(cached) = &state.current {
            // A token fetched while we waited for the lock is the freshest there is, even if
            // its lifetime is shorter than `refresh_ahead`.
            if cached.fetched_at >= asked_at || self.is_fresh(cached) {
                return Ok(cached.clone());
            }
            tracing::debug!(
                generation = cached.generation,
                "access token expires soon; refreshing"
            );
        }
        let token = self.provider.token().await?;
        state.generation += 1;
        let cached = CachedToken {
            expires_at: token.effective_expiry(),
            value: Arc::from(token.token),
            generation: state.generation,
            fetched_at: Instant::now(),
        };
        tracing::debug!(
            generation = cached.generation,
            expires_in_s = cached
                .expires_at
                .and_then(|e| e.duration_since(SystemTime::now()).ok())
                .map(|d| d.as_secs()),
            "fetched an access token"
        );
        state.current = Some(cached.clone());
        Ok(cached)
    }

    /// Forgets the token of `generation` (the server rejected it); a newer one is kept.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|c| c.generation == generation)
        {
            state.current = None;
        }
    }

    fn is_fresh(&self, cached: &CachedToken) -> bool {
        match cached.expires_at {
            None => true,
            Some(exp) => SystemTime::now()
                .checked_add(self.refresh_ahead)
                .is_some_and(|deadline| deadline < exp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims))
    }

    #[test]
    fn reads_exp_without_verifying() {
        let t = jwt(r#"{"sub":"u1","exp":2000000000}"#);
        assert_eq!(
            jwt_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"u1"}"#)), None);
        assert_eq!(jwt_expiry("a.%%%.c"), None);
    }

    #[test]
    fn debug_hides_the_token() {
        let t = AccessToken::new("sekrit-value");
        let s = format!("{t:?} {:?}", StaticToken::new("sekrit-value"));
        assert!(!s.contains("sekrit"), "{s}");
    }
}
