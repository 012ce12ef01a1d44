// The two ways a .NET app talks to the proxy through this package, beyond the raw client the
// REPL uses: Microsoft.Extensions.AI's IChatClient, and Semantic Kernel on top of it. Both let
// the model call a function of the app (here: how many words a draft has).
//
// With the fake provider, start the question with `fault:tool-call` to make it call the first
// tool; it calls it again on every turn, so the round trip ends at the function-invocation
// limit. A real model calls it once and then answers.

using System.ComponentModel;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using StoryCad.Collaborator;
using Ffi = StoryCad.Collaborator.Ffi;

static class Routes
{
    /// <summary>One question through IChatClient; UseFunctionInvocation runs the tool calls.</summary>
    public static async Task AskAsync(Ffi.CollaboratorClient client, string model, string question, CancellationToken ct)
    {
        IChatClient chat = new CollaboratorChatClient(client, model)
            .AsBuilder()
            .UseFunctionInvocation(configure: f => f.MaximumIterationsPerRequest = 3)
            .Build();
        var options = new ChatOptions
        {
            Tools = [AIFunctionFactory.Create(new StoryTools().CountWords, "count_words", "Counts the words of a draft.")],
        };
        await foreach (ChatResponseUpdate update in chat.GetStreamingResponseAsync(question, options, ct))
        {
            Console.Write(update.Text);
        }
        Console.WriteLine();
    }

    /// <summary>The same through Semantic Kernel: the IChatClient as its chat completion
    /// service, and a kernel function the model may call.</summary>
    public static async Task AskKernelAsync(Ffi.CollaboratorClient client, string model, string question, CancellationToken ct)
    {
        IChatClient chat = new CollaboratorChatClient(client, model)
            .AsBuilder()
            .UseKernelFunctionInvocation()
            .Build();
        IKernelBuilder builder = Kernel.CreateBuilder();
        builder.Services.AddSingleton(chat.AsChatCompletionService());
        builder.Plugins.AddFromType<StoryTools>("story");
        Kernel kernel = builder.Build();

        var history = new ChatHistory();
        history.AddUserMessage(question);
        var settings = new PromptExecutionSettings { FunctionChoiceBehavior = FunctionChoiceBehavior.Auto() };
        ChatMessageContent answer = await kernel.GetRequiredService<IChatCompletionService>()
            .GetChatMessageContentAsync(history, settings, kernel, ct);
        Console.WriteLine(answer.Content);
    }
}

/// <summary>What the model may call.</summary>
sealed class StoryTools
{
    [KernelFunction("count_words"), Description("Counts the words of a draft.")]
    public int CountWords([Description("The draft's text.")] string text) =>
        text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
}
