using System;
using System.Threading;
using System.Threading.Tasks;
using StoryCad.Collaborator.Ffi;

namespace StoryCad.Collaborator;

/// <summary>
/// The client's calls with a <see cref="CancellationToken"/> and optional per-request
/// <see cref="RequestOptions"/> (extra headers, the request id, a W3C <c>traceparent</c>).
/// </summary>
/// <remarks>
/// uniffi-bindgen-cs 0.11 cannot withdraw a Rust call that is in flight. Cancelling the token
/// of <see cref="ChatAsync"/>, <see cref="ModelsAsync"/> or <see cref="UsageAsync"/> therefore
/// stops the wait, not the request: the task throws <see cref="OperationCanceledException"/> at
/// once, and the Rust side finishes the request on its own runtime and drops the answer (bound
/// that with <see cref="ClientConfig.ResponseTimeoutMs"/>). Streams are different: cancelling
/// one closes its connection, which stops the generation (<see cref="ChatStreamAsync"/>,
/// <see cref="ChatStreaming.StreamChatAsync(CollaboratorClient, ChatRequest, CancellationToken)"/>).
/// </remarks>
public static class CollaboratorCalls
{
    /// <summary>
    /// The whole answer to <paramref name="request"/>. Failures are thrown as the generated
    /// <see cref="CollaboratorException"/> variants. Cancelling <paramref name="cancellationToken"/>
    /// abandons the call (see the remarks of <see cref="CollaboratorCalls"/>).
    /// </summary>
    public static Task<ChatResponse> ChatAsync(
        this CollaboratorClient client,
        ChatRequest request,
        RequestOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(request);
        cancellationToken.ThrowIfCancellationRequested();
        Task<ChatResponse> call = options is null ? client.Chat(request) : client.ChatWithOptions(request, options);
        return WaitOrAbandonAsync(call, cancellationToken);
    }

    /// <summary>
    /// Opens a stream for <paramref name="request"/>: returns once the answer's headers arrived,
    /// so HTTP errors (after the client's retries) are thrown here. Cancelling
    /// <paramref name="cancellationToken"/> before that throws <see cref="OperationCanceledException"/>
    /// and closes the stream as soon as the call delivers it. The stream is the caller's to
    /// dispose; read it with <see cref="ChatStreaming.ReadAllAsync"/>.
    /// </summary>
    public static async Task<ChatStream> ChatStreamAsync(
        this CollaboratorClient client,
        ChatRequest request,
        RequestOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(request);
        cancellationToken.ThrowIfCancellationRequested();
        Task<ChatStream> opening = options is null
            ? client.ChatStream(request)
            : client.ChatStreamWithOptions(request, options);
        try
        {
            return await opening.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The call cannot be withdrawn from Rust: close its stream when it arrives.
            _ = opening.ContinueWith(
                static t =>
                {
                    if (t.IsCompletedSuccessfully)
                    {
                        t.Result.Cancel();
                        t.Result.Dispose();
                    }
                    else
                    {
                        _ = t.Exception; // observed: the caller has gone
                    }
                },
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
            throw;
        }
    }

    /// <summary>
    /// The model aliases the user's plan allows (<c>GET /v1/models</c>). Cancelling
    /// <paramref name="cancellationToken"/> abandons the call (see the remarks of
    /// <see cref="CollaboratorCalls"/>).
    /// </summary>
    public static Task<ModelInfo[]> ModelsAsync(this CollaboratorClient client, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        cancellationToken.ThrowIfCancellationRequested();
        return WaitOrAbandonAsync(client.Models(), cancellationToken);
    }

    /// <summary>
    /// The user's plan, its limits and what is left now (<c>GET /v1/usage</c>). Cancelling
    /// <paramref name="cancellationToken"/> abandons the call (see the remarks of
    /// <see cref="CollaboratorCalls"/>).
    /// </summary>
    public static Task<UsageReport> UsageAsync(this CollaboratorClient client, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        cancellationToken.ThrowIfCancellationRequested();
        return WaitOrAbandonAsync(client.Usage(), cancellationToken);
    }

    private static async Task<T> WaitOrAbandonAsync<T>(Task<T> call, CancellationToken cancellationToken)
    {
        if (!cancellationToken.CanBeCanceled)
        {
            return await call.ConfigureAwait(false);
        }
        try
        {
            return await call.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The Rust call runs to its end; nobody awaits it any more, so observe its failure
            // here rather than leave an unobserved task exception behind.
            _ = call.ContinueWith(
                static t => _ = t.Exception,
                CancellationToken.None,
                TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
            throw;
        }
    }
}
