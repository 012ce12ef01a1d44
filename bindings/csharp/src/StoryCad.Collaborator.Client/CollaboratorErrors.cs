using System;
using StoryCad.Collaborator.Ffi;

namespace StoryCad.Collaborator;

/// <summary>
/// What every <see cref="CollaboratorException"/> variant carries, without a switch over the
/// variants. The generated variants hold these as fields of their own (<c>requestId</c>,
/// <c>retryAfterMs</c>), not on the base class.
/// </summary>
public static class CollaboratorErrors
{
    /// <summary>The server's <c>x-request-id</c> of the failed call, when there was an answer:
    /// quote it when reporting a problem.</summary>
    public static string? RequestId(this CollaboratorException error) => error switch
    {
        CollaboratorException.Unauthorized e => e.requestId,
        CollaboratorException.RateLimited e => e.requestId,
        CollaboratorException.BudgetExhausted e => e.requestId,
        CollaboratorException.InvalidRequest e => e.requestId,
        CollaboratorException.ModelNotAllowed e => e.requestId,
        CollaboratorException.UpstreamUnavailable e => e.requestId,
        CollaboratorException.Network e => e.requestId,
        CollaboratorException.Timeout e => e.requestId,
        CollaboratorException.StreamTruncated e => e.requestId,
        CollaboratorException.Cancelled e => e.requestId,
        null => throw new ArgumentNullException(nameof(error)),
        _ => null,
    };

    /// <summary>How long the server asked to wait before trying again, when it said
    /// (<see cref="CollaboratorException.RateLimited"/>, <see cref="CollaboratorException.BudgetExhausted"/>,
    /// <see cref="CollaboratorException.UpstreamUnavailable"/>).</summary>
    public static TimeSpan? RetryAfter(this CollaboratorException error)
    {
        ArgumentNullException.ThrowIfNull(error);
        ulong? ms = error switch
        {
            CollaboratorException.RateLimited e => e.retryAfterMs,
            CollaboratorException.BudgetExhausted e => e.retryAfterMs,
            CollaboratorException.UpstreamUnavailable e => e.retryAfterMs,
            _ => null,
        };
        return ms is ulong value ? TimeSpan.FromMilliseconds(value) : null;
    }
}
