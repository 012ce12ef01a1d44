using System.Diagnostics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using StoryCad.Collaborator;
using Xunit;

namespace StoryCad.Collaborator.Tests;

/// <summary>The IChatClient, the DI registration and the log bridge against scripted servers
/// (every OS: the servers are in-process).</summary>
public sealed class ChatClientTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private static readonly object Answer = new
    {
        id = "chatcmpl-1",
        @object = "chat.completion",
        created = 1,
        model = "storycad-fast",
        choices = new[] { new { index = 0, finish_reason = "stop", message = new { role = "assistant", content = "a twist" } } },
        usage = new { prompt_tokens = 4, completion_tokens = 2, total_tokens = 6 },
    };

    private static object Chunk(object delta, string? finish = null) => new
    {
        id = "chatcmpl-2",
        @object = "chat.completion.chunk",
        created = 1,
        model = "storycad-fast",
        choices = new[] { new { index = 0, delta, finish_reason = finish } },
    };

    private static readonly object UsageChunk = new
    {
        id = "chatcmpl-2",
        @object = "chat.completion.chunk",
        created = 1,
        model = "storycad-fast",
        choices = Array.Empty<object>(),
        usage = new { prompt_tokens = 3, completion_tokens = 2, total_tokens = 5 },
    };

    private static Ffi.CollaboratorClient Client(string baseUrl, Ffi.RetrySettings? retry = null) =>
        new(new Ffi.ClientConfig(BaseUrl: baseUrl, Retry: retry),
            new DelegateTokenProvider(_ => Task.FromResult(new Ffi.AccessToken("token-1"))));

    [Fact]
    public async Task AWholeAnswerCarriesTextUsageFinishAndIds()
    {
        await using var server = new ScriptedServer(ScriptedReply.Json(Answer));
        using Ffi.CollaboratorClient client = Client(server.BaseUrl);
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        ChatResponse response = await chat.GetResponseAsync(
            "Name a plot twist.",
            new ChatOptions { Temperature = 0.5f, MaxOutputTokens = 50, Instructions = "Be brief." }).WaitAsync(Deadline);

        Assert.Equal("a twist", response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal("chatcmpl-1", response.ResponseId);
        Assert.Equal("storycad-fast", response.ModelId);
        Assert.Equal((4L, 2L, 6L), (response.Usage!.InputTokenCount, response.Usage.OutputTokenCount, response.Usage.TotalTokenCount));
        Assert.Equal("req_scripted", response.AdditionalProperties![CollaboratorChatClient.RequestIdKey]);

        var sent = server.Requests.Single().Json;
        Assert.Equal("storycad-fast", sent.GetProperty("model").GetString());
        Assert.Equal(0.5, sent.GetProperty("temperature").GetDouble(), 3);
        Assert.Equal(50, sent.GetProperty("max_completion_tokens").GetInt32());
        Assert.Equal("system", sent.GetProperty("messages")[0].GetProperty("role").GetString());
        Assert.Equal("Name a plot twist.", sent.GetProperty("messages")[1].GetProperty("content").GetString());
    }

    [Fact]
    public async Task AStreamedAnswerCarriesTextUsageAndFinish()
    {
        await using var server = new ScriptedServer(ScriptedReply.Events(
            Chunk(new { role = "assistant", content = "" }),
            Chunk(new { content = "a " }),
            Chunk(new { content = "twist" }),
            Chunk(new { }, "stop"),
            UsageChunk));
        using Ffi.CollaboratorClient client = Client(server.BaseUrl);
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        var updates = new List<ChatResponseUpdate>();
        await foreach (ChatResponseUpdate update in chat.GetStreamingResponseAsync("Name a plot twist.").WithCancellation(new CancellationTokenSource(Deadline).Token))
        {
            updates.Add(update);
        }
        ChatResponse whole = updates.ToChatResponse();
        Assert.Equal("a twist", whole.Text);
        Assert.Equal(ChatFinishReason.Stop, whole.FinishReason);
        Assert.Equal(5L, whole.Usage?.TotalTokenCount);
        Assert.Single(updates.SelectMany(u => u.Contents).OfType<UsageContent>());
        Assert.True(server.Requests.Single().Json.GetProperty("stream_options").GetProperty("include_usage").GetBoolean());
    }

    // The model calls a tool; UseFunctionInvocation runs it and sends the result back.
    [Fact]
    public async Task AToolCallRoundTrips()
    {
        var toolCall = new
        {
            id = "chatcmpl-t",
            @object = "chat.completion",
            created = 1,
            model = "storycad-fast",
            choices = new[]
            {
                new
                {
                    index = 0,
                    finish_reason = "tool_calls",
                    message = new
                    {
                        role = "assistant",
                        content = (string?)null,
                        tool_calls = new[] { new { id = "call_1", type = "function", function = new { name = "CharacterAge", arguments = "{\"name\":\"Ada\"}" } } },
                    },
                },
            },
        };
        await using var server = new ScriptedServer(ScriptedReply.Json(toolCall), ScriptedReply.Json(Answer));
        using Ffi.CollaboratorClient client = Client(server.BaseUrl);
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast").AsBuilder().UseFunctionInvocation().Build();
        var calledWith = new List<string>();
        AIFunction age = AIFunctionFactory.Create((string name) => { calledWith.Add(name); return 37; }, "CharacterAge", "How old a character is.");

        ChatResponse response = await chat.GetResponseAsync("How old is Ada?", new ChatOptions { Tools = [age] }).WaitAsync(Deadline);

        Assert.Equal("a twist", response.Text);
        Assert.Equal(new[] { "Ada" }, calledWith);
        Assert.Equal(2, server.Requests.Count);
        var first = server.Requests[0].Json;
        var function = first.GetProperty("tools")[0].GetProperty("function");
        Assert.Equal("CharacterAge", function.GetProperty("name").GetString());
        Assert.Equal("string", function.GetProperty("parameters").GetProperty("properties").GetProperty("name").GetProperty("type").GetString());
        var messages = server.Requests[1].Json.GetProperty("messages");
        var assistant = messages[messages.GetArrayLength() - 2];
        Assert.Equal("call_1", assistant.GetProperty("tool_calls")[0].GetProperty("id").GetString());
        var tool = messages[messages.GetArrayLength() - 1];
        Assert.Equal("tool", tool.GetProperty("role").GetString());
        Assert.Equal("call_1", tool.GetProperty("tool_call_id").GetString());
        Assert.Equal("37", tool.GetProperty("content").GetString());
    }

    [Fact]
    public async Task AStreamedToolCallArrivesWhole()
    {
        await using var server = new ScriptedServer(ScriptedReply.Events(
            Chunk(new { role = "assistant", tool_calls = new[] { new { index = 0, id = "call_9", type = "function", function = new { name = "Find", arguments = "{\"q\":" } } } }),
            Chunk(new { tool_calls = new[] { new { index = 0, function = new { arguments = "\"x\"}" } } } }),
            Chunk(new { }, "tool_calls")));
        using Ffi.CollaboratorClient client = Client(server.BaseUrl);
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        var updates = new List<ChatResponseUpdate>();
        await foreach (ChatResponseUpdate update in chat.GetStreamingResponseAsync("find x"))
        {
            updates.Add(update);
        }
        FunctionCallContent call = Assert.Single(updates.SelectMany(u => u.Contents).OfType<FunctionCallContent>());
        Assert.Equal(("call_9", "Find"), (call.CallId, call.Name));
        Assert.Equal("x", call.Arguments!["q"]!.ToString());
        Assert.Equal(ChatFinishReason.ToolCalls, updates.ToChatResponse().FinishReason);
    }

    [Fact]
    public async Task CancellingAStreamClosesTheConnection()
    {
        const int events = 400;
        await using SseServer server = SseServer.Start(events, TimeSpan.FromMilliseconds(25));
        using Ffi.CollaboratorClient client = Client(server.BaseUrl);
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        using var cts = new CancellationTokenSource();
        var seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (ChatResponseUpdate _ in chat.GetStreamingResponseAsync("a long answer", cancellationToken: cts.Token))
            {
                if (++seen == 3)
                {
                    cts.Cancel();
                }
            }
        }).WaitAsync(Deadline);
        int sent = await server.Ended.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(sent < events, $"the server sent all {sent} events");
    }

    [Fact]
    public async Task A429KeepsItsVariantRetryAfterAndRequestId()
    {
        await using var server = new ScriptedServer(ScriptedReply.Json(
            new { error = new { message = "Rate limit reached.", type = "rate_limit_error", code = "rate_limit_exceeded", param = (string?)null } },
            429,
            new Dictionary<string, string> { ["retry-after"] = "90", ["x-request-id"] = "req_429" }));
        using Ffi.CollaboratorClient client = Client(server.BaseUrl, new Ffi.RetrySettings(MaxRetries: 0));
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");

        var e = await Assert.ThrowsAsync<Ffi.CollaboratorException.RateLimited>(() => chat.GetResponseAsync("hello")).WaitAsync(Deadline);
        Assert.Equal(90_000UL, e.retryAfterMs);
        Assert.Equal("req_429", e.requestId);
        Assert.Equal(TimeSpan.FromSeconds(90), e.RetryAfter());
        Assert.Equal("req_429", e.RequestId());
    }

    [Fact]
    public async Task PerRequestHeadersAndTraceparentAreSent()
    {
        await using var server = new ScriptedServer(ScriptedReply.Json(Answer));
        using Ffi.CollaboratorClient client = Client(server.BaseUrl);
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        using var activity = new Activity("storycad-test").SetIdFormat(ActivityIdFormat.W3C).Start();
        var options = new ChatOptions
        {
            AdditionalProperties = new()
            {
                [CollaboratorChatClient.HeadersKey] = new Dictionary<string, string> { ["x-storycad-test"] = "yes" },
                [CollaboratorChatClient.RequestIdKey] = "req_from_caller",
            },
        };
        await chat.GetResponseAsync("hello", options).WaitAsync(Deadline);
        IReadOnlyDictionary<string, string> headers = server.Requests.Single().Headers;
        Assert.Equal("yes", headers["x-storycad-test"]);
        Assert.Equal(activity.Id, headers["traceparent"]);
        Assert.Contains("req_from_caller", headers.Values);
    }

    [Fact]
    public async Task AbandoningAWholeAnswerThrowsAtOnce()
    {
        // Answers after 3 s: the wait is abandoned at 200 ms, the Rust call ends on its own.
        await using var slow = new ScriptedServer((_, _) => { Thread.Sleep(3000); return ScriptedReply.Json(Answer); });
        using Ffi.CollaboratorClient client = Client(slow.BaseUrl);
        IChatClient chat = new CollaboratorChatClient(client, "storycad-fast");
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var watch = Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => chat.GetResponseAsync("hello", cancellationToken: cts.Token));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task TheDiRegistrationResolvesAndSendsTheToken()
    {
        await using var server = new ScriptedServer(ScriptedReply.Json(Answer));
        var services = new ServiceCollection();
        services.AddStoryCadCollaborator(o =>
        {
            o.BaseUrl = server.BaseUrl;
            o.DefaultModel = "storycad-fast";
            o.GetToken = (_, _) => Task.FromResult(new Ffi.AccessToken("di-token"));
            o.ResponseTimeout = TimeSpan.FromSeconds(20);
        }).UseFunctionInvocation();
        await using ServiceProvider provider = services.BuildServiceProvider();

        IChatClient chat = provider.GetRequiredService<IChatClient>();
        Assert.NotNull(chat.GetService<FunctionInvokingChatClient>());
        ChatClientMetadata metadata = chat.GetService<ChatClientMetadata>()!;
        Assert.Equal(("storycad", "storycad-fast"), (metadata.ProviderName, metadata.DefaultModelId));
        Assert.Equal(new Uri(server.BaseUrl), metadata.ProviderUri);
        Assert.Same(provider.GetRequiredService<Ffi.CollaboratorClient>(), chat.GetService<Ffi.CollaboratorClient>());

        ChatResponse response = await chat.GetResponseAsync("hello").WaitAsync(Deadline);
        Assert.Equal("a twist", response.Text);
        Assert.Equal("Bearer di-token", server.Requests.Single().Headers["authorization"]);
    }
}

/// <summary>The library's log through <see cref="CollaboratorLogging"/>; alone in its collection
/// because the library has one logger per process.</summary>
[Collection("process logger")]
public sealed class LoggingTests
{
    [Fact]
    public async Task TheLibrarysRecordsReachTheILogger()
    {
        var provider = new CollectingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(provider));
        CollaboratorLogging.UseLogger(factory, LogLevel.Debug);
        try
        {
            await using var server = new ScriptedServer(ScriptedReply.Json(new
            {
                id = "chatcmpl-l",
                @object = "chat.completion",
                created = 1,
                model = "storycad-fast",
                choices = new[] { new { index = 0, finish_reason = "stop", message = new { role = "assistant", content = "logged" } } },
            }));
            using var client = new Ffi.CollaboratorClient(
                new Ffi.ClientConfig(BaseUrl: server.BaseUrl),
                new DelegateTokenProvider(_ => Task.FromResult(new Ffi.AccessToken("secret-token-value"))));
            await client.ChatAsync(new Ffi.ChatRequest("storycad-fast", [new Ffi.Message(Ffi.Role.User, "hi")]))
                .WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            CollaboratorLogging.ClearLogger();
        }
        var records = provider.Records.ToArray();
        Assert.Contains(records, r => r.Category.StartsWith("storycad_client", StringComparison.Ordinal) && r.Level == LogLevel.Debug);
        Assert.DoesNotContain(records, r => r.Level == LogLevel.Trace);
        Assert.DoesNotContain(records, r => r.Message.Contains("secret-token-value", StringComparison.Ordinal));
    }

    private sealed record Entry(string Category, LogLevel Level, string Message);

    private sealed class CollectingLoggerProvider : ILoggerProvider
    {
        public System.Collections.Concurrent.ConcurrentQueue<Entry> Records { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Collecting(categoryName, Records);

        public void Dispose()
        {
        }

        private sealed class Collecting(string category, System.Collections.Concurrent.ConcurrentQueue<Entry> records) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                records.Enqueue(new Entry(category, logLevel, formatter(state, exception)));
        }
    }
}
