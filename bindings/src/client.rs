//! [`CollaboratorClient`]: the client's calls, run on the library's runtime.

use std::sync::Arc;

use storycad_client::{Client, RetryPolicy, Timeouts};

use crate::{
    error::CollaboratorError,
    runtime::{on_runtime, runtime},
    stream::ChatStream,
    token::{ForeignTokens, TokenProvider},
    types::{from_ms, ChatRequest, ChatResponse, ModelInfo, UsageReport},
};

/// How to reach the proxy. Every field but `base_url` may be left out for the client's default.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ClientConfig {
    /// The proxy's API root, e.g. `https://llm.example.org/v1`.
    pub base_url: String,
    /// Opening the connection (default 10 000 ms).
    #[uniffi(default = None)]
    pub connect_timeout_ms: Option<u64>,
    /// Waiting for an answer's status and headers (default 300 000 ms).
    #[uniffi(default = None)]
    pub response_timeout_ms: Option<u64>,
    /// The longest silence inside a stream or body (default 60 000 ms).
    #[uniffi(default = None)]
    pub stream_idle_timeout_ms: Option<u64>,
    /// How failed requests are retried (default: the client's [`RetryPolicy`]).
    #[uniffi(default = None)]
    pub retry: Option<RetrySettings>,
    /// The `user-agent` header (default `storycad-client/<version>`).
    #[uniffi(default = None)]
    pub user_agent: Option<String>,
}

/// The retry policy; each field left out keeps the client's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, uniffi::Record)]
pub struct RetrySettings {
    /// Retries after the first attempt (default 2; 0 disables retries).
    #[uniffi(default = None)]
    pub max_retries: Option<u32>,
    /// The first backoff, doubling per retry, jittered (default 500 ms).
    #[uniffi(default = None)]
    pub initial_backoff_ms: Option<u64>,
    /// The backoff's cap (default 8 000 ms).
    #[uniffi(default = None)]
    pub max_backoff_ms: Option<u64>,
    /// The longest `retry-after` the client sleeps; longer ones return the error at once
    /// (default 60 000 ms).
    #[uniffi(default = None)]
    pub max_server_delay_ms: Option<u64>,
}

impl From<RetrySettings> for RetryPolicy {
    fn from(s: RetrySettings) -> Self {
        let mut p = RetryPolicy::default();
        if let Some(n) = s.max_retries {
            p = p.max_retries(n);
        }
        if let Some(ms) = s.initial_backoff_ms {
            p = p.initial_backoff(from_ms(ms));
        }
        if let Some(ms) = s.max_backoff_ms {
            p = p.max_backoff(from_ms(ms));
        }
        if let Some(ms) = s.max_server_delay_ms {
            p = p.max_server_delay(from_ms(ms));
        }
        p
    }
}

/// A client of the StoryCAD LLM proxy. Create one per signed-in user and share it: calls may
/// run concurrently and share the connection pool, the token cache and the retry budget.
#[derive(uniffi::Object)]
pub struct CollaboratorClient {
    client: Client,
}

impl std::fmt::Debug for CollaboratorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.client.fmt(f)
    }
}

#[uniffi::export]
impl CollaboratorClient {
    /// A client for `config.base_url` taking its tokens from `token_provider`. Fails with
    /// `InvalidRequest` on a bad URL.
    #[uniffi::constructor]
    pub fn new(
        config: ClientConfig,
        token_provider: Arc<dyn TokenProvider>,
    ) -> Result<Arc<Self>, CollaboratorError> {
        let mut timeouts = Timeouts::default();
        if let Some(ms) = config.connect_timeout_ms {
            timeouts.connect = from_ms(ms);
        }
        if let Some(ms) = config.response_timeout_ms {
            timeouts.response_headers = from_ms(ms);
        }
        if let Some(ms) = config.stream_idle_timeout_ms {
            timeouts.stream_idle = from_ms(ms);
        }
        let mut builder = Client::builder()
            .base_url(config.base_url)
            .token_provider(ForeignTokens(token_provider))
            .timeouts(timeouts)
            .retry_policy(config.retry.unwrap_or_default().into());
        if let Some(ua) = config.user_agent {
            builder = builder.user_agent(ua);
        }
        // reqwest's connector belongs to a runtime: build it inside ours.
        let _in_runtime = runtime().enter();
        let client = builder.build()?;
        Ok(Arc::new(CollaboratorClient { client }))
    }

    /// The whole answer at once (`stream` is off whatever the request says).
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, CollaboratorError> {
        let client = self.client.clone();
        on_runtime(async move {
            let req = request.into_protocol(false)?;
            Ok(client.chat(&req).await?.into())
        })
        .await
    }

    /// The answer piece by piece. Returns once the answer's headers arrived: HTTP errors come
    /// from this call, never from the stream's first `next()`.
    pub async fn chat_stream(
        &self,
        request: ChatRequest,
    ) -> Result<Arc<ChatStream>, CollaboratorError> {
        let client = self.client.clone();
        on_runtime(async move {
            let req = request.into_protocol(true)?;
            let stream = client.chat_stream(&req).await?;
            Ok(ChatStream::start(stream))
        })
        .await
    }

    /// The model aliases the user's plan allows (`GET /v1/models`).
    pub async fn models(&self) -> Result<Vec<ModelInfo>, CollaboratorError> {
        let client = self.client.clone();
        on_runtime(async move {
            let list = client.models().await?;
            Ok(list.data.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// The user's plan, its limits and what is left now (`GET /v1/usage`).
    pub async fn usage(&self) -> Result<UsageReport, CollaboratorError> {
        let client = self.client.clone();
        on_runtime(async move { Ok(client.usage().await?.into()) }).await
    }
}
