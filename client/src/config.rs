//! [`ClientBuilder`] and [`Timeouts`].

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    client::{Client, Inner},
    error::{Error, Result},
    network::{redact, Network},
    retry::{RetryBudget, RetryPolicy},
    token::{AccessToken, FnTokenProvider, StaticToken, TokenCache, TokenError, TokenProvider},
};

/// The client's deadlines: start from [`Timeouts::default`] and change what differs, e.g.
/// `Timeouts::default().with_stream_idle(Duration::from_secs(30))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Opening the connection (TCP and TLS). Default 10 s. A connect timeout is retried like any
    /// connection failure.
    pub connect: Duration,
    /// From sending the request to receiving the answer's status and headers. Default 300 s:
    /// a non-streamed completion only answers once the whole text is generated, which takes
    /// minutes for long answers. Not retried (the server may still be working on it).
    pub response_headers: Duration,
    /// The longest silence between two pieces of a body: between stream events (keep-alive
    /// comments count as activity) and while reading a JSON body. Default 60 s.
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            response_headers: Duration::from_secs(300),
            stream_idle: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The same deadlines with [`connect`](Self::connect) set.
    #[must_use]
    pub fn with_connect(mut self, d: Duration) -> Self {
        self.connect = d;
        self
    }

    /// The same deadlines with [`response_headers`](Self::response_headers) set.
    #[must_use]
    pub fn with_response_headers(mut self, d: Duration) -> Self {
        self.response_headers = d;
        self
    }

    /// The same deadlines with [`stream_idle`](Self::stream_idle) set.
    #[must_use]
    pub fn with_stream_idle(mut self, d: Duration) -> Self {
        self.stream_idle = d;
        self
    }
}

/// Builds a [`Client`]. `base_url` and a token source are required.
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    provider: Option<Arc<dyn TokenProvider>>,
    retry: RetryPolicy,
    timeouts: Timeouts,
    refresh_ahead: Duration,
    user_agent: String,
    network: Network,
    resume_streams: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: None,
            provider: None,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            refresh_ahead: Duration::from_secs(60),
            user_agent: concat!("storycad-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            network: Network::default(),
            resume_streams: true,
        }
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("has_token_provider", &self.provider.is_some())
            .field("retry", &self.retry)
            .field("timeouts", &self.timeouts)
            .field("refresh_ahead", &self.refresh_ahead)
            .field("system_trust", &self.network.system_trust)
            .field("extra_roots", &self.network.extra_roots.len())
            .field("proxy", &self.network.proxy.as_deref().map(redact))
            .field("system_proxy", &self.network.system_proxy)
            .field("resume_streams", &self.resume_streams)
            .finish()
    }
}

impl ClientBuilder {
    /// The API root including `/v1`, e.g. `https://proxy.example.com/v1`; the client appends
    /// `/chat/completions`, `/models` and `/usage`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Where tokens come from.
    pub fn token_provider(mut self, provider: impl TokenProvider + 'static) -> Self {
        self.provider = Some(Arc::new(provider));
        self
    }

    /// A fixed token ([`StaticToken`]).
    pub fn token(self, token: impl Into<String>) -> Self {
        self.token_provider(StaticToken::new(token))
    }

    /// Tokens from a closure returning a future ([`FnTokenProvider`]).
    pub fn token_fn<F, Fut>(self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<AccessToken, TokenError>> + Send + 'static,
    {
        self.token_provider(FnTokenProvider::new(f))
    }

    /// The retry policy (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The deadlines (default [`Timeouts::default`]).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// How long before its expiry a token is replaced (default 60 s).
    pub fn refresh_ahead(mut self, d: Duration) -> Self {
        self.refresh_ahead = d;
        self
    }

    /// The `user-agent` header (default `storycad-client/<version>`).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// Whether the operating system decides which servers are trusted (default: yes): the
    /// CryptoAPI chain engine on Windows, the Security framework on macOS, the system's CA
    /// bundle on Linux, so roots an administrator installed (a company's TLS-inspecting proxy)
    /// and Windows' on-demand roots work as in a browser (with the `native-tls` feature: SChannel,
    /// the Security framework, OpenSSL's default paths). Off: Mozilla's bundled roots and the
    /// [extra ones](Self::add_root_certificates_pem) only.
    pub fn system_trust(mut self, on: bool) -> Self {
        self.network.system_trust = on;
        self
    }

    /// Also trusts these root certificates: PEM text with one or more `BEGIN CERTIFICATE`
    /// blocks (e.g. a company's TLS-inspecting proxy's CA). May be called more than once. A
    /// text without a certificate fails [`build`](Self::build).
    pub fn add_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.network.extra_roots.push(pem.into());
        self
    }

    /// Sends every request through this HTTP proxy (`http://host:port`, with `user:password@`
    /// when it asks for them), whatever the system's settings say.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.network.proxy = Some(url.into());
        self
    }

    /// Whether the system's proxy settings apply when no [`proxy`](Self::proxy) is given
    /// (default: yes): `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, and on Windows and
    /// macOS the proxy set in the system's settings.
    pub fn system_proxy(mut self, on: bool) -> Self {
        self.network.system_proxy = on;
        self
    }

    /// Whether a stream the server made resumable picks itself up after its connection breaks
    /// (default: yes; see [`ChatStream`](crate::ChatStream)). Off: a broken stream ends with its
    /// error, as with a server that does not resume streams.
    pub fn resume_streams(mut self, on: bool) -> Self {
        self.resume_streams = on;
        self
    }

    /// The client, or [`Error::Config`] when the URL is missing or bad or there is no token.
    pub fn build(self) -> Result<Client> {
        let base = self
            .base_url
            .ok_or_else(|| Error::Config("base_url is required".into()))?;
        let base = base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| Error::Config(format!("base_url {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "base_url must be http or https, not {}",
                parsed.scheme()
            )));
        }
        let provider = self.provider.ok_or_else(|| {
            Error::Config("a token provider is required (token, token_fn, token_provider)".into())
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect)
            .user_agent(self.user_agent)
            .tcp_nodelay(true);
        let http = self
            .network
            .apply(http)?
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let url = |path: &str| format!("{base}{path}");
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                chat_url: url("/chat/completions"),
                models_url: url("/models"),
                usage_url: url("/usage"),
                tokens: TokenCache::new(provider, self.refresh_ahead),
                budget: RetryBudget::new(&self.retry),
                retry: self.retry,
                timeouts: self.timeouts,
                resume_streams: self.resume_streams,
            }),
        })
    }
}
