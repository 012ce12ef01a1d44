// A chat REPL against the StoryCAD LLM proxy, the C# twin of examples/examples/chat.rs:
//
//   dotnet run --project bindings/csharp/samples/StoryCad.Collaborator.Chat -- \
//       --base-url http://127.0.0.1:8787/v1 --token "$JWT"
//
// The token may also come from STORYCAD_TOKEN, the base URL from STORYCAD_BASE_URL, the model
// from --model or STORYCAD_MODEL. Answers stream as they arrive; Ctrl-C stops the answer being
// generated, not the REPL. Commands: /model NAME, /models, /reset, /usage, /help, /quit, and
// /ask TEXT, /sk TEXT: one question through Microsoft.Extensions.AI's IChatClient or through
// Semantic Kernel, with a function the model may call (Routes.cs).

using System.Text;
using StoryCad.Collaborator;
using StoryCad.Collaborator.Ffi;

const string Help = """
    commands: /model NAME  /models  /reset  /usage  /help  /quit
              /ask TEXT (through IChatClient)  /sk TEXT (through Semantic Kernel); both may call count_words
    anything else is sent as your message; Ctrl-C stops an answer, Ctrl-D (Ctrl-Z on Windows) or /quit leaves
    """;

Options? options = Options.Parse(args);
if (options is null)
{
    Console.Error.WriteLine(Options.Usage);
    return 2;
}

using var client = new CollaboratorClient(
    new ClientConfig(BaseUrl: options.BaseUrl),
    new DelegateTokenProvider(_ => Task.FromResult(new AccessToken(options.Token))));

string model = options.Model ?? await FirstModelAsync(client) ?? "storycad-fast";
Console.WriteLine($"connected to {options.BaseUrl} with model {model}; /help for commands");

var conversation = new List<Message>();
if (options.SystemPrompt is not null)
{
    conversation.Add(new Message(Role.System, options.SystemPrompt));
}

// The answer being streamed, if any: Ctrl-C cancels it instead of ending the process.
CancellationTokenSource? answering = null;
Console.CancelKeyPress += (_, e) =>
{
    CancellationTokenSource? current = Volatile.Read(ref answering);
    if (current is not null)
    {
        e.Cancel = true;
        current.Cancel();
    }
};

while (true)
{
    Console.Write("> ");
    string? line = Console.ReadLine();
    if (line is null)
    {
        break;
    }
    line = line.Trim();
    if (line.Length == 0)
    {
        continue;
    }
    if (line.StartsWith('/'))
    {
        string[] parts = line.Split(' ', 2, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        switch (parts[0])
        {
            case "/quit":
                return 0;
            case "/help":
                Console.WriteLine(Help);
                break;
            case "/reset":
                conversation.RemoveAll(m => m.Role != Role.System);
                Console.WriteLine("(conversation cleared)");
                break;
            case "/model" when parts.Length == 1:
                Console.WriteLine($"model: {model}");
                break;
            case "/model":
                model = parts[1];
                Console.WriteLine($"(model is now {model})");
                break;
            case "/models":
                await ShowModelsAsync(client, model);
                break;
            case "/usage":
                await ShowUsageAsync(client);
                break;
            case "/ask" or "/sk" when parts.Length == 2:
                using (var cts = new CancellationTokenSource())
                {
                    Volatile.Write(ref answering, cts);
                    try
                    {
                        await (parts[0] == "/ask"
                            ? Routes.AskAsync(client, model, parts[1], cts.Token)
                            : Routes.AskKernelAsync(client, model, parts[1], cts.Token));
                    }
                    catch (OperationCanceledException)
                    {
                        Console.WriteLine("\n(stopped)");
                    }
                    catch (CollaboratorException e)
                    {
                        Console.WriteLine($"\nerror: {Describe(e)}");
                    }
                    finally
                    {
                        Volatile.Write(ref answering, null);
                    }
                }
                break;
            default:
                Console.WriteLine($"unknown command {parts[0]}; /help lists them");
                break;
        }
        continue;
    }

    conversation.Add(new Message(Role.User, line));
    var text = new StringBuilder();
    using (var cts = new CancellationTokenSource())
    {
        Volatile.Write(ref answering, cts);
        try
        {
            var request = new ChatRequest(model, conversation.ToArray());
            await foreach (ChatChunk chunk in client.StreamChatAsync(request, cts.Token))
            {
                string? piece = chunk.Text();
                if (piece is not null)
                {
                    text.Append(piece);
                    Console.Write(piece);
                }
            }
            Console.WriteLine();
            conversation.Add(new Message(Role.Assistant, text.ToString()));
        }
        catch (OperationCanceledException)
        {
            // Cancelling closed the connection, which stops the generation; keep what was shown.
            Console.WriteLine("\n(stopped)");
            conversation.Add(new Message(Role.Assistant, text.ToString()));
        }
        catch (CollaboratorException e)
        {
            // The question stays unanswered: take it back so a retry sends it once.
            conversation.RemoveAt(conversation.Count - 1);
            Console.WriteLine($"\nerror: {Describe(e)}");
        }
        finally
        {
            Volatile.Write(ref answering, null);
        }
    }
}
return 0;

static async Task<string?> FirstModelAsync(CollaboratorClient client)
{
    try
    {
        ModelInfo[] models = await client.Models();
        return models.Length > 0 ? models[0].Id : null;
    }
    catch (CollaboratorException e)
    {
        Console.Error.WriteLine($"could not list models: {Describe(e)}");
        return null;
    }
}

static async Task ShowModelsAsync(CollaboratorClient client, string current)
{
    try
    {
        foreach (ModelInfo m in await client.Models())
        {
            Console.WriteLine($"{(m.Id == current ? "*" : " ")} {m.Id}");
        }
    }
    catch (CollaboratorException e)
    {
        Console.WriteLine($"error: {Describe(e)}");
    }
}

static async Task ShowUsageAsync(CollaboratorClient client)
{
    try
    {
        UsageReport u = await client.Usage();
        Console.WriteLine(
            $"plan {u.Plan}: {u.Requests.Remaining}/{u.Requests.Limit} requests left this minute, " +
            $"{u.Tokens.Remaining}/{u.Tokens.Limit} tokens left today, " +
            $"{u.Streams.Remaining}/{u.Streams.Limit} streams free");
    }
    catch (CollaboratorException e)
    {
        Console.WriteLine($"error: {Describe(e)}");
    }
}

// What to tell the user, per kind of failure (the fields are the generated exception's).
static string Describe(CollaboratorException e) => e switch
{
    CollaboratorException.Unauthorized u => $"not authorised ({u.message}); sign in again",
    CollaboratorException.RateLimited r when r.retryAfterMs is ulong ms =>
        $"rate limited; try again in {ms / 1000.0:0.#} s",
    CollaboratorException.RateLimited r => $"rate limited: {r.message}",
    CollaboratorException.BudgetExhausted b when b.retryAfterMs is ulong ms =>
        $"your token budget is spent; it resets in {TimeSpan.FromMilliseconds(ms):g}",
    CollaboratorException.BudgetExhausted b => $"your token budget is spent: {b.message}",
    CollaboratorException.ModelNotAllowed m => $"{m.message} (/models lists the models you can use)",
    CollaboratorException.InvalidRequest i => $"invalid request: {i.message}",
    CollaboratorException.UpstreamUnavailable up =>
        $"the service is unavailable ({up.message}); try again later (request {up.requestId})",
    CollaboratorException.Network n => $"network problem: {n.message}",
    CollaboratorException.Timeout t => $"timed out: {t.message}",
    CollaboratorException.StreamTruncated s => $"the answer was cut off (request {s.requestId})",
    CollaboratorException.Cancelled => "cancelled",
    _ => e.Message,
};

sealed record Options(string BaseUrl, string Token, string? Model, string? SystemPrompt)
{
    public const string Usage =
        "usage: StoryCad.Collaborator.Chat --base-url URL --token JWT [--model NAME] [--system TEXT]\n" +
        "       (or STORYCAD_BASE_URL, STORYCAD_TOKEN, STORYCAD_MODEL)";

    public static Options? Parse(string[] args)
    {
        string? baseUrl = Environment.GetEnvironmentVariable("STORYCAD_BASE_URL");
        string? token = Environment.GetEnvironmentVariable("STORYCAD_TOKEN");
        string? model = Environment.GetEnvironmentVariable("STORYCAD_MODEL");
        string? system = null;
        for (int i = 0; i < args.Length; i += 2)
        {
            string? value = i + 1 < args.Length ? args[i + 1] : null;
            if (value is null)
            {
                return null;
            }
            switch (args[i])
            {
                case "--base-url": baseUrl = value; break;
                case "--token": token = value; break;
                case "--model": model = value; break;
                case "--system": system = value; break;
                default: return null;
            }
        }
        return string.IsNullOrEmpty(baseUrl) || string.IsNullOrEmpty(token)
            ? null
            : new Options(baseUrl, token, string.IsNullOrEmpty(model) ? null : model, system);
    }
}
