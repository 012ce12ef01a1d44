using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace StoryCad.Collaborator.Tests;

/// <summary>One request as the server saw it (header names lower-cased).</summary>
public sealed record SeenRequest(string Method, string Path, IReadOnlyDictionary<string, string> Headers, string Body)
{
    public JsonElement Json => JsonDocument.Parse(Body).RootElement;
}

/// <summary>What to answer: a status, headers, and a JSON body or SSE events.</summary>
public sealed record ScriptedReply(int Status, string Body, IReadOnlyDictionary<string, string>? Headers = null, bool Sse = false)
{
    public static ScriptedReply Json(object body, int status = 200, IReadOnlyDictionary<string, string>? headers = null) =>
        new(status, JsonSerializer.Serialize(body), headers);

    /// <summary>An event stream: each item one <c>data:</c> event, then <c>[DONE]</c>.</summary>
    public static ScriptedReply Events(params object[] events) =>
        new(200, string.Concat(events.Select(e => $"data: {JsonSerializer.Serialize(e)}\n\n")) + "data: [DONE]\n\n", Sse: true);
}

/// <summary>
/// An HTTP server on 127.0.0.1 that answers each request with what a script returns for it and
/// keeps every request: a tool-call round trip, an error with its headers, the headers a request
/// carried. One response per connection (<c>connection: close</c>).
/// </summary>
public sealed class ScriptedServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Func<SeenRequest, int, ScriptedReply> _script;
    private readonly ConcurrentQueue<SeenRequest> _seen = new();
    private readonly Task _serving;
    private int _count;

    /// <param name="script">The reply to the request, given it and its number (0-based).</param>
    public ScriptedServer(Func<SeenRequest, int, ScriptedReply> script)
    {
        _script = script;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        BaseUrl = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/v1";
        _serving = Task.Run(() => AcceptAsync(_stop.Token));
    }

    /// <summary>Answers the requests in order with <paramref name="replies"/> (the last one again
    /// after the end).</summary>
    public ScriptedServer(params ScriptedReply[] replies)
        : this((_, n) => replies[Math.Min(n, replies.Length - 1)])
    {
    }

    public string BaseUrl { get; }

    public IReadOnlyList<SeenRequest> Requests => _seen.ToArray();

    private async Task AcceptAsync(CancellationToken stop)
    {
        var connections = new List<Task>();
        try
        {
            while (!stop.IsCancellationRequested)
            {
                Socket socket = await _listener.AcceptSocketAsync(stop);
                connections.Add(Task.Run(() => ServeAsync(socket, stop), stop));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
        await Task.WhenAll(connections.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
    }

    private async Task ServeAsync(Socket socket, CancellationToken stop)
    {
        using (socket)
        {
            try
            {
                await using var stream = new NetworkStream(socket, ownsSocket: false);
                SeenRequest request = await ReadRequestAsync(stream, stop);
                _seen.Enqueue(request);
                ScriptedReply reply = _script(request, Interlocked.Increment(ref _count) - 1);
                var head = new StringBuilder()
                    .Append(CultureInfo.InvariantCulture, $"HTTP/1.1 {reply.Status} Scripted\r\n")
                    .Append(reply.Sse ? "content-type: text/event-stream\r\n" : "content-type: application/json\r\n")
                    .Append("connection: close\r\n");
                if (reply.Headers?.ContainsKey("x-request-id") != true)
                {
                    head.Append("x-request-id: req_scripted\r\n");
                }
                foreach ((string name, string value) in reply.Headers ?? new Dictionary<string, string>())
                {
                    head.Append(CultureInfo.InvariantCulture, $"{name}: {value}\r\n");
                }
                byte[] body = Encoding.UTF8.GetBytes(reply.Body);
                if (!reply.Sse)
                {
                    head.Append(CultureInfo.InvariantCulture, $"content-length: {body.Length}\r\n");
                }
                head.Append("\r\n");
                await stream.WriteAsync(Encoding.ASCII.GetBytes(head.ToString()), stop);
                await stream.WriteAsync(body, stop);
                await stream.FlushAsync(stop);
            }
            catch (Exception e) when (e is IOException or SocketException or OperationCanceledException)
            {
                // The client left, or the server is stopping.
            }
        }
    }

    private static async Task<SeenRequest> ReadRequestAsync(NetworkStream stream, CancellationToken stop)
    {
        var head = new List<byte>();
        var one = new byte[1];
        while (!(head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n'))
        {
            if (await stream.ReadAsync(one, stop) == 0)
            {
                throw new IOException("the client closed before sending a whole request");
            }
            head.Add(one[0]);
        }
        string[] lines = Encoding.ASCII.GetString(head.ToArray()).Split("\r\n");
        string[] requestLine = lines[0].Split(' ');
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (string line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            if (colon > 0)
            {
                headers[line[..colon].Trim().ToLowerInvariant()] = line[(colon + 1)..].Trim();
            }
        }
        int length = headers.TryGetValue("content-length", out string? value)
            ? int.Parse(value, CultureInfo.InvariantCulture)
            : 0;
        var body = new byte[length];
        await stream.ReadExactlyAsync(body, stop);
        return new SeenRequest(requestLine[0], requestLine.Length > 1 ? requestLine[1] : "", headers, Encoding.UTF8.GetString(body));
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        try
        {
            await _serving;
        }
        catch (Exception)
        {
            // Stopping is best effort.
        }
        _stop.Dispose();
    }
}
