//! The host app's token source: a foreign async trait, adapted to the client's
//! [`storycad_client::TokenProvider`]. The client caches what it returns and calls it again
//! ahead of expiry or after a 401.

use std::{sync::Arc, time::SystemTime};

use storycad_client::TokenProvider as ClientTokenProvider;

/// A bearer token and, when known, when it expires.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct AccessToken {
    /// The token, sent as `Authorization: Bearer <token>`. Never logged.
    pub token: String,
    /// When it stops being valid. When absent, the client reads the JWT's `exp` claim.
    #[uniffi(default = None)]
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &format_args!("<redacted>"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why the host could not produce a token. The message must not contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TokenError {
    /// The token could not be had (signed out, network down, ...).
    #[error("{message}")]
    Failed {
        /// What happened.
        message: String,
    },
}

/// Any other exception raised by the host's implementation arrives here.
impl From<uniffi::UnexpectedUniFFICallbackError> for TokenError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        TokenError::Failed {
            message: format!(
                "the token provider raised an unexpected error: {}",
                e.reason
            ),
        }
    }
}

/// Where the client gets its bearer tokens; the host app implements it (in C#, the
/// `DelegateTokenProvider` adapter wraps a `Func<CancellationToken, Task<AccessToken>>`).
///
/// Called on first use, again shortly before `expires_at` (or the JWT's `exp`), and again once
/// after the server rejects a token with 401. Concurrent requests share one call.
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// A valid token.
    async fn token(&self) -> Result<AccessToken, TokenError>;
}

/// The host's provider seen as the client's.
pub(crate) struct ForeignTokens(pub(crate) Arc<dyn TokenProvider>);

#[async_trait::async_trait]
impl ClientTokenProvider for ForeignTokens {
    async fn token(&self) -> Result<storycad_client::AccessToken, storycad_client::TokenError> {
        match self.0.token().await {
            Ok(t) => {
                let mut token = storycad_client::AccessToken::new(t.token);
                token.expires_at = t.expires_at;
                Ok(token)
            }
            Err(TokenError::Failed { message }) => Err(storycad_client::TokenError::new(message)),
        }
    }
}
