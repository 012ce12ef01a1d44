using StoryCad.Collaborator;
using StoryCad.Collaborator.Ffi;
using Xunit;

namespace StoryCad.Collaborator.Tests;

/// <summary>What only the server can see: that cancelling or disposing a stream closes its
/// connection. Runs on every OS (its server is in-process).</summary>
public sealed class ConnectionTests
{
    private const int Events = 400;
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(25);
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private static CollaboratorClient Client(SseServer server) =>
        new(new ClientConfig(BaseUrl: server.BaseUrl),
            new DelegateTokenProvider(_ => Task.FromResult(new AccessToken("token-1"))));

    private static ChatRequest Ask() => new("storycad-fast", new[] { new Message(Role.User, "a long answer") });

    [Fact]
    public async Task CancellingTheTokenClosesTheConnection()
    {
        await using SseServer server = SseServer.Start(Events, Interval);
        using CollaboratorClient client = Client(server);
        using ChatStream stream = await client.ChatStream(Ask()).WaitAsync(Deadline);
        Assert.Equal("req_csharp", stream.Meta().RequestId);
        using var cts = new CancellationTokenSource();
        var seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (ChatChunk _ in stream.ReadAllAsync(cts.Token))
            {
                if (++seen == 3)
                {
                    cts.Cancel();
                }
            }
        }).WaitAsync(Deadline);
        // The stream object is still alive (not disposed): Cancel() itself closed the connection.
        int sent = await server.Ended.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(sent < Events, $"the server sent all {sent} events");
        Assert.Equal("Bearer token-1", server.Authorization);
        await Assert.ThrowsAsync<CollaboratorException.Cancelled>(() => stream.Next());
    }

    [Fact]
    public async Task LeavingTheLoopEarlyClosesTheConnection()
    {
        await using SseServer server = SseServer.Start(Events, Interval);
        using CollaboratorClient client = Client(server);
        var seen = 0;
        await foreach (ChatChunk _ in client.StreamChatAsync(Ask()))
        {
            if (++seen == 3)
            {
                break; // disposes the enumerator, which disposes the stream
            }
        }
        int sent = await server.Ended.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(sent < Events, $"the server sent all {sent} events");
    }
}
