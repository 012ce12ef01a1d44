using System;
using System.Threading;
using System.Threading.Tasks;
using StoryCad.Collaborator.Ffi;
using MsLogLevel = Microsoft.Extensions.Logging.LogLevel;

namespace StoryCad.Collaborator;

/// <summary>
/// What <see cref="Microsoft.Extensions.DependencyInjection.CollaboratorServiceCollectionExtensions.AddStoryCadCollaborator"/>
/// builds the client from. Only <see cref="BaseUrl"/> and a token source are required; every
/// value left null keeps the Rust client's default.
/// </summary>
public sealed class CollaboratorOptions
{
    /// <summary>The proxy's API root, e.g. <c>https://llm.example.org/v1</c>. Required.</summary>
    public string? BaseUrl { get; set; }

    /// <summary>
    /// Gets a bearer token (the user's JWT), e.g. from MSAL. Called on first use, shortly before
    /// the token expires, and once after a 401; concurrent requests share one call. When null,
    /// a <see cref="TokenProvider"/> registered in the container is used instead.
    /// </summary>
    public Func<IServiceProvider, CancellationToken, Task<AccessToken>>? GetToken { get; set; }

    /// <summary>How long one <see cref="GetToken"/> call may take (default 30 s).</summary>
    public TimeSpan TokenTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The model alias the <c>IChatClient</c> uses when <c>ChatOptions.ModelId</c> is
    /// not set, e.g. <c>storycad-fast</c>.</summary>
    public string? DefaultModel { get; set; }

    /// <summary>Opening a connection (client default 10 s).</summary>
    public TimeSpan? ConnectTimeout { get; set; }

    /// <summary>Waiting for an answer's status and headers (client default 300 s). Also bounds
    /// how long an abandoned non-streamed call keeps running in Rust.</summary>
    public TimeSpan? ResponseTimeout { get; set; }

    /// <summary>The longest silence inside a stream or body (client default 60 s).</summary>
    public TimeSpan? StreamIdleTimeout { get; set; }

    /// <summary>How failed requests are retried (client default: 2 retries, 500 ms doubling
    /// backoff capped at 8 s).</summary>
    public RetrySettings? Retry { get; set; }

    /// <summary>The <c>user-agent</c> header (client default <c>storycad-client/&lt;version&gt;</c>).</summary>
    public string? UserAgent { get; set; }

    /// <summary>An explicit HTTP(S) proxy URL, e.g. <c>http://proxy.corp:8080</c>.</summary>
    public string? Proxy { get; set; }

    /// <summary>Whether the system's proxy settings apply when <see cref="Proxy"/> is not set
    /// (client default true).</summary>
    public bool? SystemProxy { get; set; }

    /// <summary>Extra root certificates to trust, PEM text (e.g. a corporate TLS-inspecting
    /// proxy's CA).</summary>
    public string? ExtraRootCertificatesPem { get; set; }

    /// <summary>Whether the operating system's certificate store is trusted (client default
    /// true).</summary>
    public bool? SystemTrust { get; set; }

    /// <summary>Whether a stream whose connection breaks is resumed, when the server allows it
    /// (client default true; <see cref="ChatStream.Resumptions"/> counts them). False: the break
    /// throws <see cref="CollaboratorException.StreamTruncated"/>.</summary>
    public bool? ResumeStreams { get; set; }

    /// <summary>Whether the library's log goes to the container's <c>ILoggerFactory</c>, when
    /// one is registered (default true). The library has one logger per process.</summary>
    public bool ForwardLogs { get; set; } = true;

    /// <summary>The most verbose level forwarded (default: what the <c>storycad_client</c>
    /// category has enabled when the client is created).</summary>
    public MsLogLevel? MinimumLogLevel { get; set; }

    /// <summary>
    /// The escape hatch: edits the <see cref="ClientConfig"/> built from these options before the
    /// client is created, for a field these options do not name, e.g.
    /// <c>c =&gt; c with { UserAgent = "StoryCAD/3.1" }</c>.
    /// </summary>
    public Func<ClientConfig, ClientConfig>? ConfigureClient { get; set; }

    /// <summary>The <see cref="ClientConfig"/> these options describe.</summary>
    public ClientConfig ToClientConfig()
    {
        if (string.IsNullOrWhiteSpace(BaseUrl))
        {
            throw new InvalidOperationException("CollaboratorOptions.BaseUrl is required.");
        }
        var config = new ClientConfig(
            BaseUrl: BaseUrl,
            ConnectTimeoutMs: Milliseconds(ConnectTimeout),
            ResponseTimeoutMs: Milliseconds(ResponseTimeout),
            StreamIdleTimeoutMs: Milliseconds(StreamIdleTimeout),
            Retry: Retry,
            UserAgent: UserAgent,
            ProxyUrl: Proxy,
            SystemProxy: SystemProxy,
            ExtraRootCertificatesPem: ExtraRootCertificatesPem,
            SystemTrust: SystemTrust,
            ResumeStreams: ResumeStreams);
        return ConfigureClient is null ? config : ConfigureClient(config);
    }

    private static ulong? Milliseconds(TimeSpan? span) => span switch
    {
        null => (ulong?)null,
        { Ticks: < 0 } => throw new ArgumentOutOfRangeException(nameof(span), span, "timeouts cannot be negative"),
        TimeSpan s => checked((ulong)s.TotalMilliseconds),
    };
}
