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
    public static async IAsyncEnumerable<ChatChunk> StreamChatAsync(
        this CollaboratorClient client,
        ChatRequest request,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(request);
        cancellationToken.ThrowIfCancellationRequested();
        Task<ChatStream> opening = client.ChatStream(request);
        ChatStream stream;
        try
        {
            stream = await opening.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // A call in flight cannot be withdrawn from Rust: close its stream when it arrives.
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
        using (stream)
        {
            await foreach (ChatChunk chunk in stream.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                yield return chunk;
            }
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
