using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace StoryCad.Collaborator.Tests;

/// <summary>
/// A one-request HTTP server on 127.0.0.1 that answers with a slow event stream and notes
/// when the client hangs up: what the fake provider cannot tell a test.
/// </summary>
public sealed class SseServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<int> _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _serving;

    private SseServer(int events, TimeSpan interval)
    {
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        BaseUrl = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/v1";
        _serving = Task.Run(() => ServeAsync(events, interval, _stop.Token));
    }

    public string BaseUrl { get; }

    /// <summary>The request's Authorization header.</summary>
    public string? Authorization { get; private set; }

    /// <summary>Completes with the number of events sent when the stream ended: the client hung
    /// up, or every event was sent.</summary>
    public Task<int> Ended => _ended.Task;

    public static SseServer Start(int events, TimeSpan interval) => new(events, interval);

    private async Task ServeAsync(int events, TimeSpan interval, CancellationToken stop)
    {
        var sent = 0;
        try
        {
            using Socket socket = await _listener.AcceptSocketAsync(stop);
            await using var stream = new NetworkStream(socket, ownsSocket: false);
            await ReadRequestAsync(stream, stop);
            const string head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" +
                                "x-request-id: req_csharp\r\nconnection: close\r\n\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head), stop);
            for (; sent < events; sent++)
            {
                await Task.Delay(interval, stop);
                // Readable with nothing to read: the client closed the connection.
                if (socket.Poll(0, SelectMode.SelectRead) && socket.Available == 0)
                {
                    break;
                }
                string data = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1," +
                              "\"model\":\"storycad-fast\",\"choices\":[{\"index\":0,\"delta\":" +
                              $"{{\"content\":\" w{sent}\"}},\"finish_reason\":null}}]}}\n\n";
                await stream.WriteAsync(Encoding.UTF8.GetBytes(data), stop);
            }
        }
        catch (IOException)
        {
            // A write after the client left.
        }
        catch (SocketException)
        {
        }
        catch (OperationCanceledException)
        {
        }
        _ended.TrySetResult(sent);
    }

    private async Task ReadRequestAsync(NetworkStream stream, CancellationToken stop)
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
        var length = 0;
        foreach (string line in Encoding.ASCII.GetString(head.ToArray()).Split("\r\n"))
        {
            int colon = line.IndexOf(':');
            if (colon <= 0)
            {
                continue;
            }
            string name = line[..colon].Trim().ToLowerInvariant();
            string value = line[(colon + 1)..].Trim();
            if (name == "content-length")
            {
                length = int.Parse(value, CultureInfo.InvariantCulture);
            }
            else if (name == "authorization")
            {
                Authorization = value;
            }
        }
        await stream.ReadExactlyAsync(new byte[length], stop);
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
