//! [`CollaboratorClient`]: the client's calls, run on the library's runtime.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

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
    /// Send every request through this HTTP proxy (`http://host:port`, with `user:password@`
    /// when it asks for them), whatever the system's settings say.
    #[uniffi(default = None)]
    pub proxy_url: Option<String>,
    /// Use the system's proxy settings when `proxy_url` is absent (default true):
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, and the proxy set in Windows' or macOS's
    /// settings (not PAC scripts).
    #[uniffi(default = None)]
    pub system_proxy: Option<bool>,
    /// Root certificates to trust besides the system's (PEM, one or more `BEGIN CERTIFICATE`
    /// blocks), e.g. a company's TLS-inspecting proxy's CA.
    #[uniffi(default = None)]
    pub extra_root_certificates_pem: Option<String>,
    /// Let the operating system decide which servers are trusted (default true); false:
    /// Mozilla's bundled roots and `extra_root_certificates_pem` only.
    #[uniffi(default = None)]
    pub system_trust: Option<bool>,
    /// Resume a stream whose connection breaks, when the server made it resumable (default
    /// true): the stream asks for the rest and goes on, within the retry policy. False: the
    /// break ends the stream (`StreamTruncated`).
    #[uniffi(default = None)]
    pub resume_streams: Option<bool>,
}

/// What one call sends beside its body: extra headers (e.g. `x-storycad-cache: off`), and the
/// caller's own ids, which the Worker logs beside its own request id and passes to the provider
/// where it can (OpenAI's `X-Client-Request-Id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct RequestOptions {
    /// Extra headers. The client's own (`authorization`, `content-type`, `accept`,
    /// `idempotency-key`, ...) cannot be replaced: the call fails with `InvalidRequest`.
    /// Optional rather than an empty map by default: uniffi-bindgen-cs gives a map's default
    /// as `null`, which C# would then fail to send.
    #[uniffi(default = None)]
    pub headers: Option<HashMap<String, String>>,
    /// `x-request-id`: the caller's id for this request.
    #[uniffi(default = None)]
    pub request_id: Option<String>,
    /// A W3C `traceparent` (the Worker logs its trace id).
    #[uniffi(default = None)]
    pub traceparent: Option<String>,
}

impl From<RequestOptions> for storycad_client::RequestOptions {
    fn from(o: RequestOptions) -> Self {
        // Sorted, so the same options always send the same headers in the same order.
        let headers: BTreeMap<String, String> = o.headers.into_iter().flatten().collect();
        let mut out = storycad_client::RequestOptions::new();
        for (name, value) in headers {
            out = out.header(name, value);
        }
        if let Some(id) = o.request_id {
            out = out.request_id(id);
        }
        if let Some(tp) = o.traceparent {
            out = out.traceparent(tp);
        }
        out
    }
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
        if let Some(url) = config.proxy_url {
            builder = builder.proxy(url);
        }
        if let Some(on) = config.system_proxy {
            builder = builder.system_proxy(on);
        }
        if let Some(pem) = config.extra_root_certificates_pem {
            builder = builder.add_root_certificates_pem(pem);
        }
        if let Some(on) = config.system_trust {
            builder = builder.system_trust(on);
        }
        if let Some(on) = config.resume_streams {
            builder = builder.resume_streams(on);
        }
        // reqwest's connector belongs to a runtime: build it inside ours.
        let _in_runtime = runtime().enter();
        let client = builder.build()?;
        Ok(Arc::new(CollaboratorClient { client }))
    }

    /// The whole answer at once (`stream` is off whatever the request says).
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, CollaboratorError> {
        self.chat_with_options(request, RequestOptions::default())
            .await
    }

    /// [`chat`](Self::chat) with extra headers and the caller's ids.
    pub async fn chat_with_options(
        &self,
        request: ChatRequest,
        options: RequestOptions,
    ) -> Result<ChatResponse, CollaboratorError> {
        let client = self.client.clone();
        on_runtime(async move {
            let req = request.into_protocol(false)?;
            Ok(client.chat_with(&req, &options.into()).await?.into())
        })
        .await
    }

    /// The answer piece by piece. Returns once the answer's headers arrived: HTTP errors come
    /// from this call, never from the stream's first `next()`.
    pub async fn chat_stream(
        &self,
        request: ChatRequest,
    ) -> Result<Arc<ChatStream>, CollaboratorError> {
        self.chat_stream_with_options(request, RequestOptions::default())
            .await
    }

    /// [`chat_stream`](Self::chat_stream) with extra headers and the caller's ids.
    pub async fn chat_stream_with_options(
        &self,
        request: ChatRequest,
        options: RequestOptions,
    ) -> Result<Arc<ChatStream>, CollaboratorError> {
        let client = self.client.clone();
        on_runtime(async move {
            let req = request.into_protocol(true)?;
            let stream = client.chat_stream_with(&req, &options.into()).await?;
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
