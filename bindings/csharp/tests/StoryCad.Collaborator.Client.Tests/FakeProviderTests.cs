using System.Collections.Concurrent;
using System.Diagnostics;
using StoryCad.Collaborator;
using Microsoft.Extensions.AI;
using StoryCad.Collaborator.Ffi;
using Xunit;
using ChatResponse = StoryCad.Collaborator.Ffi.ChatResponse;

namespace StoryCad.Collaborator.Tests;

[Collection("fake provider")]
[Trait("Category", "FakeProvider")]
public sealed class FakeProviderTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly FakeProviderFixture _fake;

    public FakeProviderTests(FakeProviderFixture fake) => _fake = fake;

    private static ChatRequest Ask(string text, bool includeUsage = false) =>
        new("storycad-fast", new[] { new Message(Role.User, text) }, IncludeUsage: includeUsage);

    [Fact]
    public async Task ChatReturnsTheAnswerUsageAndMeta()
    {
        using CollaboratorClient client = _fake.Client();
        ChatResponse answer = await client.Chat(Ask("hello there")).WaitAsync(Deadline);
        Assert.Equal("echo: hello there", answer.Text);
        Assert.Equal("stop", answer.Choices[0].FinishReason);
        Assert.Equal(new Usage(2, 3, 5), answer.Usage);
        Assert.Equal((ushort)200, answer.Meta.Status);
        Assert.StartsWith("req_fake", answer.Meta.RequestId);
        Assert.Equal(1u, answer.Meta.Attempts);
    }

    [Fact]
    public async Task StreamEnumeratesEveryChunkToTheEnd()
    {
        using CollaboratorClient client = _fake.Client();
        using var cts = new CancellationTokenSource(Deadline);
        var text = "";
        Usage? usage = null;
        await foreach (ChatChunk chunk in client.StreamChatAsync(Ask("one two three", includeUsage: true), cts.Token))
        {
            text += chunk.Text() ?? "";
            usage ??= chunk.Usage;
        }
        Assert.Equal("echo: one two three", text);
        Assert.Equal(new Usage(3, 4, 7), usage);
    }

    [Fact]
    public async Task CancellingTheTokenStopsAPendingRead()
    {
        using CollaboratorClient client = _fake.Client();
        using var cts = new CancellationTokenSource();
        var seen = 0;
        var watch = Stopwatch.StartNew();
        // One content event every 5 s: after the role event, the read waits until cancelled.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (ChatChunk _ in client.StreamChatAsync(Ask("fault:slow=5000 a b c"), cts.Token))
            {
                if (++seen == 1)
                {
                    cts.CancelAfter(TimeSpan.FromMilliseconds(200));
                }
            }
        }).WaitAsync(Deadline);
        Assert.Equal(1, seen);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(4), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task A401MakesTheClientAskForANewToken()
    {
        var calls = 0;
        using CollaboratorClient client = _fake.Client(_ =>
        {
            int n = Interlocked.Increment(ref calls);
            return Task.FromResult(new AccessToken(n == 1 ? "stale-key" : FakeProviderFixture.Key));
        });
        ChatResponse answer = await client.Chat(Ask("hello")).WaitAsync(Deadline);
        Assert.Equal("echo: hello", answer.Text);
        Assert.Equal(2, calls);
        Assert.Equal(2u, answer.Meta.Attempts);
    }

    [Fact]
    public async Task ATokenProviderFailureIsUnauthorized()
    {
        using CollaboratorClient client = _fake.Client(_ => throw new InvalidOperationException("signed out"));
        var e = await Assert.ThrowsAsync<CollaboratorException.Unauthorized>(() => client.Chat(Ask("hello"))).WaitAsync(Deadline);
        Assert.Contains("signed out", e.message);
    }

    [Fact]
    public async Task RateLimitedCarriesRetryAfter()
    {
        using CollaboratorClient client = _fake.Client();
        var e = await Assert.ThrowsAsync<CollaboratorException.RateLimited>(() => client.Chat(Ask("fault:429=90"))).WaitAsync(Deadline);
        Assert.Equal(90_000UL, e.retryAfterMs);
        Assert.Equal(0UL, e.rateLimit.RemainingRequests);
        Assert.StartsWith("req_fake", e.requestId);
    }

    [Fact]
    public async Task InvalidRequestCarriesStatusAndParam()
    {
        using CollaboratorClient client = _fake.Client();
        var e = await Assert.ThrowsAsync<CollaboratorException.InvalidRequest>(() => client.Chat(Ask("fault:400"))).WaitAsync(Deadline);
        Assert.Equal((ushort)400, e.status);
        Assert.Equal("temperature", e.param);
    }

    [Fact]
    public async Task ServerFailuresAreUpstreamUnavailable()
    {
        using CollaboratorClient client = _fake.Client(retry: new RetrySettings(MaxRetries: 0));
        var e = await Assert.ThrowsAsync<CollaboratorException.UpstreamUnavailable>(() => client.Chat(Ask("fault:503"))).WaitAsync(Deadline);
        Assert.Equal((ushort)503, e.status);
    }

    [Fact]
    public async Task ACutStreamIsTruncated()
    {
        using CollaboratorClient client = _fake.Client();
        using var cts = new CancellationTokenSource(Deadline);
        await Assert.ThrowsAsync<CollaboratorException.StreamTruncated>(async () =>
        {
            await foreach (ChatChunk _ in client.StreamChatAsync(Ask("fault:cut a b c d e"), cts.Token))
            {
            }
        });
    }

    [Fact]
    public async Task AStalledStreamTimesOut()
    {
        using CollaboratorClient client = _fake.Client(streamIdleTimeoutMs: 300);
        using var cts = new CancellationTokenSource(Deadline);
        var e = await Assert.ThrowsAsync<CollaboratorException.Timeout>(async () =>
        {
            await foreach (ChatChunk _ in client.StreamChatAsync(Ask("fault:stall"), cts.Token))
            {
            }
        });
        Assert.Equal(TimeoutPhase.StreamIdle, e.phase);
        Assert.Equal(300UL, e.afterMs);
    }

    [Fact]
    public async Task FiftyConcurrentCallsShareOneTokenFetch()
    {
        var calls = 0;
        using CollaboratorClient client = _fake.Client(async ct =>
        {
            Interlocked.Increment(ref calls);
            await Task.Delay(50, ct);
            return new AccessToken(FakeProviderFixture.Key, DateTime.UtcNow.AddHours(1));
        });
        ChatResponse[] answers = await Task.WhenAll(
            Enumerable.Range(0, 50).Select(i => client.Chat(Ask($"call {i}")))).WaitAsync(Deadline);
        Assert.Equal(Enumerable.Range(0, 50).Select(i => $"echo: call {i}"), answers.Select(a => a.Text));
        Assert.Equal(1, calls);

        var texts = new ConcurrentDictionary<int, string>();
        await Task.WhenAll(Enumerable.Range(0, 20).Select(async i =>
        {
            var text = "";
            await foreach (ChatChunk chunk in client.StreamChatAsync(Ask($"stream {i} x")))
            {
                text += chunk.Text() ?? "";
            }
            texts[i] = text;
        })).WaitAsync(Deadline);
        Assert.All(Enumerable.Range(0, 20), i => Assert.Equal($"echo: stream {i} x", texts[i]));
    }

    [Fact]
    public async Task TheChatClientAnswersWholeAndStreamed()
    {
        using CollaboratorClient client = _fake.Client();
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        Microsoft.Extensions.AI.ChatResponse whole = await chat.GetResponseAsync("hello there").WaitAsync(Deadline);
        Assert.Equal("echo: hello there", whole.Text);
        Assert.Equal(ChatFinishReason.Stop, whole.FinishReason);
        Assert.Equal(5L, whole.Usage?.TotalTokenCount);

        using var cts = new CancellationTokenSource(Deadline);
        var updates = new List<ChatResponseUpdate>();
        await foreach (ChatResponseUpdate update in chat.GetStreamingResponseAsync("one two three", cancellationToken: cts.Token))
        {
            updates.Add(update);
        }
        Microsoft.Extensions.AI.ChatResponse streamed = updates.ToChatResponse();
        Assert.Equal("echo: one two three", streamed.Text);
        Assert.Equal(ChatFinishReason.Stop, streamed.FinishReason);
        Assert.Equal((3L, 4L, 7L), (streamed.Usage!.InputTokenCount, streamed.Usage.OutputTokenCount, streamed.Usage.TotalTokenCount));
    }

    [Fact]
    public async Task TheFakeProvidersToolCallBecomesAFunctionCall()
    {
        using CollaboratorClient client = _fake.Client();
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        AIFunction shout = AIFunctionFactory.Create((string text) => text.ToUpperInvariant(), "shout", "Shouts the text.");
        Microsoft.Extensions.AI.ChatResponse response = await chat
            .GetResponseAsync("fault:tool-call make it loud", new ChatOptions { Tools = [shout] })
            .WaitAsync(Deadline);
        FunctionCallContent call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Equal("shout", call.Name);
        Assert.Equal("make it loud", call.Arguments!["text"]!.ToString());
        Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);
    }
}
