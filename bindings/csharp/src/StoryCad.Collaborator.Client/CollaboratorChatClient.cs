using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.AI;

namespace StoryCad.Collaborator;

/// <summary>
/// The StoryCAD proxy as a Microsoft.Extensions.AI <see cref="IChatClient"/>, over a
/// <see cref="Ffi.CollaboratorClient"/>: what Semantic Kernel (<c>AsChatCompletionService()</c>)
/// and the Microsoft.Extensions.AI middleware (<c>UseFunctionInvocation()</c>, logging,
/// OpenTelemetry) build on. Token refresh, retries and error classification stay in the Rust
/// client; this class only maps the types.
/// </summary>
/// <remarks>
/// <para>
/// Mapped from <see cref="ChatOptions"/>: <see cref="ChatOptions.ModelId"/> (else the default
/// model given here), <see cref="ChatOptions.Instructions"/> (a first system message),
/// temperature, top-p, max output tokens, stop sequences, seed, the response format, and the
/// <see cref="AIFunctionDeclaration"/>s of <see cref="ChatOptions.Tools"/> with their JSON
/// schemas and <see cref="ChatOptions.ToolMode"/>. Tool calls come back as
/// <see cref="FunctionCallContent"/>; their results go back as <see cref="FunctionResultContent"/>
/// in a <see cref="ChatRole.Tool"/> message. This client does not run tools itself: add
/// <c>UseFunctionInvocation()</c> for that.
/// </para>
/// <para>
/// Per-request values go in <see cref="ChatOptions.AdditionalProperties"/>:
/// <see cref="RequestIdKey"/> (a string, sent as <c>x-request-id</c>), <see cref="HeadersKey"/>
/// (extra headers, an <c>IEnumerable&lt;KeyValuePair&lt;string, string&gt;&gt;</c>) and
/// <see cref="TraceparentKey"/>; without the last, the W3C id of
/// <see cref="System.Diagnostics.Activity.Current"/> is sent as <c>traceparent</c>. Answers
/// carry the server's request id under <see cref="RequestIdKey"/> and the whole
/// <see cref="Ffi.ResponseMeta"/> under <see cref="MetaKey"/> in their
/// <c>AdditionalProperties</c>.
/// </para>
/// <para>
/// Failures are thrown as the generated <see cref="Ffi.CollaboratorException"/> variants, not
/// wrapped: callers catch <c>CollaboratorException.RateLimited</c> and read its
/// <c>retryAfterMs</c> and <c>requestId</c> as they would from the client itself, and
/// middleware passes them through unchanged. <see cref="CollaboratorErrors"/> reads the
/// request id and retry delay of any variant.
/// </para>
/// <para>
/// Cancellation: cancelling a streamed answer closes its connection (the server stops
/// generating). A whole answer (<see cref="GetResponseAsync"/>) cannot be withdrawn from Rust
/// once sent: the task stops waiting and throws <see cref="OperationCanceledException"/>, and
/// the request finishes on its own (see <see cref="CollaboratorCalls"/>).
/// </para>
/// </remarks>
public sealed class CollaboratorChatClient : IChatClient
{
    /// <summary>The provider name in <see cref="ChatClientMetadata"/>.</summary>
    public const string ProviderName = "storycad";

    /// <summary><see cref="ChatOptions.AdditionalProperties"/> key of the request id to send
    /// (a string); on answers, the key of the server's request id.</summary>
    public const string RequestIdKey = "storycad.request_id";

    /// <summary><see cref="ChatOptions.AdditionalProperties"/> key of extra request headers (an
    /// <c>IEnumerable&lt;KeyValuePair&lt;string, string&gt;&gt;</c>, e.g. a
    /// <c>Dictionary&lt;string, string&gt;</c>).</summary>
    public const string HeadersKey = "storycad.headers";

    /// <summary><see cref="ChatOptions.AdditionalProperties"/> key of a W3C <c>traceparent</c>
    /// (a string) to send instead of <see cref="System.Diagnostics.Activity.Current"/>'s.</summary>
    public const string TraceparentKey = "storycad.traceparent";

    /// <summary>Key of the answer's <see cref="Ffi.ResponseMeta"/> (status, request id, rate
    /// limits, route, cache, attempts) in the <c>AdditionalProperties</c> of a
    /// <see cref="ChatResponse"/> or of each <see cref="ChatResponseUpdate"/>.</summary>
    public const string MetaKey = "storycad.meta";

    private readonly Ffi.CollaboratorClient _client;
    private readonly string? _defaultModel;
    private readonly ChatClientMetadata _metadata;

    /// <param name="client">The client to send through; shared, not owned: disposing this
    /// chat client leaves it open.</param>
    /// <param name="defaultModel">The model alias used when <see cref="ChatOptions.ModelId"/>
    /// is not set (e.g. <c>storycad-fast</c>); without one, every call must set it.</param>
    /// <param name="baseUrl">The proxy's API root, for <see cref="ChatClientMetadata.ProviderUri"/>
    /// only.</param>
    public CollaboratorChatClient(Ffi.CollaboratorClient client, string? defaultModel = null, Uri? baseUrl = null)
    {
        _client = client ?? throw new ArgumentNullException(nameof(client));
        _defaultModel = defaultModel;
        _metadata = new ChatClientMetadata(ProviderName, baseUrl, defaultModel);
    }

    /// <summary>The client this one sends through.</summary>
    public Ffi.CollaboratorClient Client => _client;

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(
        IEnumerable<ChatMessage> messages,
        ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        Ffi.ChatRequest request = ChatConversion.ToRequest(messages, options, _defaultModel, stream: false);
        Ffi.ChatResponse answer = await _client
            .ChatAsync(request, ChatConversion.ToRequestOptions(options), cancellationToken)
            .ConfigureAwait(false);
        return ChatConversion.ToResponse(answer);
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages,
        ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        Ffi.ChatRequest request = ChatConversion.ToRequest(messages, options, _defaultModel, stream: true);
        using Ffi.ChatStream stream = await _client
            .ChatStreamAsync(request, ChatConversion.ToRequestOptions(options), cancellationToken)
            .ConfigureAwait(false);
        var answer = new StreamedAnswer();
        Ffi.ResponseMeta? meta = stream.Meta();
        await foreach (Ffi.ChatChunk chunk in stream.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            // The headers' meta rides on the first update only.
            yield return answer.Update(chunk, meta);
            meta = null;
        }
        if (answer.Final() is ChatResponseUpdate last)
        {
            yield return last;
        }
    }

    /// <summary>
    /// <see cref="ChatClientMetadata"/> (provider <c>storycad</c>, the base URL, the default
    /// model), the <see cref="Ffi.CollaboratorClient"/>, or this client; null for anything else
    /// or for a keyed request.
    /// </summary>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
        {
            return null;
        }
        if (serviceType == typeof(ChatClientMetadata))
        {
            return _metadata;
        }
        if (serviceType == typeof(Ffi.CollaboratorClient))
        {
            return _client;
        }
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>Nothing to release: the <see cref="Ffi.CollaboratorClient"/> is shared and stays
    /// open (dispose it, or let the DI container do it).</summary>
    public void Dispose()
    {
    }
}
