using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using StoryCad.Collaborator.Ffi;

namespace StoryCad.Collaborator;

/// <summary>
/// Streams as <see cref="IAsyncEnumerable{T}"/>, cancelled through a <see cref="CancellationToken"/>.
/// </summary>
public static class ChatStreaming
{
    /// <summary>
    /// Streams the answer to <paramref name="request"/>. HTTP errors (after the client's
    /// retries) are thrown by the first <c>MoveNextAsync</c> as <see cref="CollaboratorException"/>s;
    /// later failures (<see cref="CollaboratorException.StreamTruncated"/>, ...) by the one that
    /// meets them. Cancelling <paramref name="cancellationToken"/> closes the connection (the
    /// server stops generating) and throws <see cref="OperationCanceledException"/>; so does
    /// leaving the loop early, without the exception.
    /// </summary>
    public static IAsyncEnumerable<ChatChunk> StreamChatAsync(
        this CollaboratorClient client,
        ChatRequest request,
        CancellationToken cancellationToken = default) =>
        StreamChatCoreAsync(client, request, null, cancellationToken);

    /// <summary>
    /// <see cref="StreamChatAsync(CollaboratorClient, ChatRequest, CancellationToken)"/> with
    /// per-request <paramref name="options"/>: extra headers, the request id, a <c>traceparent</c>.
    /// </summary>
    public static IAsyncEnumerable<ChatChunk> StreamChatAsync(
        this CollaboratorClient client,
        ChatRequest request,
        RequestOptions options,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        return StreamChatCoreAsync(client, request, options, cancellationToken);
    }

    private static async IAsyncEnumerable<ChatChunk> StreamChatCoreAsync(
        CollaboratorClient client,
        ChatRequest request,
        RequestOptions? options,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(request);
        using ChatStream stream = await client.ChatStreamAsync(request, options, cancellationToken).ConfigureAwait(false);
        await foreach (ChatChunk chunk in stream.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return chunk;
        }
    }

    /// <summary>
    /// Reads <paramref name="stream"/> to its end. Cancelling <paramref name="cancellationToken"/>
    /// calls <see cref="ChatStream.Cancel"/> (the connection closes) and throws
    /// <see cref="OperationCanceledException"/>. The stream stays the caller's to dispose.
    /// </summary>
    public static async IAsyncEnumerable<ChatChunk> ReadAllAsync(
        this ChatStream stream,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        cancellationToken.ThrowIfCancellationRequested();
        using CancellationTokenRegistration registration =
            cancellationToken.Register(static s => ((ChatStream)s!).Cancel(), stream);
        while (true)
        {
            ChatChunk? chunk;
            try
            {
                chunk = await stream.Next().ConfigureAwait(false);
            }
            catch (CollaboratorException.Cancelled) when (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException(cancellationToken);
            }
            if (chunk is null)
            {
                yield break;
            }
            yield return chunk;
        }
    }

    /// <summary>The text the chunk adds to the first choice, if any.</summary>
    public static string? Text(this ChatChunk chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        return chunk.Choices.Length > 0 ? chunk.Choices[0].Content : null;
    }
}
