using System.Diagnostics;
using StoryCad.Collaborator;
using StoryCad.Collaborator.Ffi;
using Xunit;

namespace StoryCad.Collaborator.Tests;

/// <summary>
/// The fake provider (tests/src/bin/fake-provider.rs) on 127.0.0.1, started once for the
/// collection and killed at its end. It accepts only <see cref="Key"/>.
/// </summary>
public sealed class FakeProviderFixture : IDisposable
{
    public const string Key = "fake-provider-key";

    private readonly Process _process;

    public string BaseUrl { get; }

    public FakeProviderFixture()
    {
        string binary = Environment.GetEnvironmentVariable("STORYCAD_FAKE_PROVIDER")
            ?? throw new InvalidOperationException(
                "STORYCAD_FAKE_PROVIDER must name the fake provider binary " +
                "(cargo build -p storycad-e2e --bin fake-provider)");
        var start = new ProcessStartInfo(binary)
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("--openai-key");
        start.ArgumentList.Add(Key);
        _process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {binary}");
        Task<string?> firstLine = _process.StandardOutput.ReadLineAsync();
        if (!firstLine.Wait(TimeSpan.FromSeconds(10)) || string.IsNullOrWhiteSpace(firstLine.Result))
        {
            Dispose();
            throw new InvalidOperationException("the fake provider did not print its address within 10 s");
        }
        BaseUrl = $"http://{firstLine.Result.Trim()}/v1";
    }

    public CollaboratorClient Client(
        Func<CancellationToken, Task<AccessToken>>? tokens = null,
        RetrySettings? retry = null,
        ulong? streamIdleTimeoutMs = null) =>
        new(new ClientConfig(BaseUrl: BaseUrl, StreamIdleTimeoutMs: streamIdleTimeoutMs, Retry: retry),
            new DelegateTokenProvider(tokens ?? (_ => Task.FromResult(new AccessToken(Key)))));

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
            // It had already gone.
        }
        _process.Dispose();
    }
}

[CollectionDefinition("fake provider")]
public sealed class FakeProviderCollection : ICollectionFixture<FakeProviderFixture>
{
}
