using System;
using System.Threading;
using System.Threading.Tasks;
using StoryCad.Collaborator.Ffi;

namespace StoryCad.Collaborator;

/// <summary>
/// A <see cref="TokenProvider"/> over a function, e.g. MSAL's
/// <c>ct =&gt; app.AcquireTokenSilent(scopes, account).ExecuteAsync(ct)</c> mapped to an
/// <see cref="AccessToken"/>. The client calls it on first use, shortly before the token's
/// <see cref="AccessToken.ExpiresAt"/> (else the JWT's <c>exp</c>), and once after a 401;
/// concurrent requests share one call.
/// </summary>
public sealed class DelegateTokenProvider : TokenProvider
{
    private readonly Func<CancellationToken, Task<AccessToken>> _fetch;
    private readonly TimeSpan _timeout;
    private readonly CancellationToken _shutdown;

    /// <param name="fetch">Gets a token; honours the token it is given.</param>
    /// <param name="timeout">How long one fetch may take (default 30 s); requests waiting for it
    /// fail with <see cref="CollaboratorException.Unauthorized"/> after that.</param>
    /// <param name="shutdown">Cancels every fetch (e.g. the app is closing).</param>
    public DelegateTokenProvider(
        Func<CancellationToken, Task<AccessToken>> fetch,
        TimeSpan? timeout = null,
        CancellationToken shutdown = default)
    {
        _fetch = fetch ?? throw new ArgumentNullException(nameof(fetch));
        _timeout = timeout ?? TimeSpan.FromSeconds(30);
        _shutdown = shutdown;
    }

    /// <summary>A token from the function; its failures become <see cref="TokenException.Failed"/>.</summary>
    public async Task<AccessToken> Token()
    {
        using CancellationTokenSource cts = CancellationTokenSource.CreateLinkedTokenSource(_shutdown);
        cts.CancelAfter(_timeout);
        try
        {
            return await _fetch(cts.Token).ConfigureAwait(false);
        }
        catch (TokenException)
        {
            throw;
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            throw new TokenException.Failed(_shutdown.IsCancellationRequested
                ? "the token request was cancelled"
                : $"no token within {_timeout.TotalSeconds:0.#} s");
        }
        catch (Exception e)
        {
            // The message reaches the caller's exception: it must not carry a secret.
            throw new TokenException.Failed($"{e.GetType().Name}: {e.Message}");
        }
    }
}
