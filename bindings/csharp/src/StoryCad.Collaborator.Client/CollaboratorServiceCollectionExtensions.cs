using System;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using StoryCad.Collaborator;
using StoryCad.Collaborator.Ffi;

// In this namespace, as Microsoft.Extensions.AI's and Semantic Kernel's registrations are, so
// `services.AddStoryCadCollaborator(...)` needs no extra using.
namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the StoryCAD proxy client in a service collection.</summary>
public static class CollaboratorServiceCollectionExtensions
{
    /// <summary>
    /// Registers, as singletons: the <see cref="TokenProvider"/> over
    /// <see cref="CollaboratorOptions.GetToken"/> (when set; otherwise the container must hold
    /// one), the <see cref="CollaboratorClient"/>, and an <see cref="IChatClient"/>
    /// (<see cref="CollaboratorChatClient"/>). When the container has an
    /// <see cref="ILoggerFactory"/>, the library's log goes to it (see
    /// <see cref="CollaboratorOptions.ForwardLogs"/>) from the moment the client is created.
    /// </summary>
    /// <returns>The chat client's builder, to add middleware:
    /// <c>.UseFunctionInvocation()</c> runs the tools the model calls,
    /// <c>.UseOpenTelemetry()</c>, <c>.UseLogging()</c>, ...</returns>
    /// <example>
    /// <code>
    /// services.AddStoryCadCollaborator(o =>
    /// {
    ///     o.BaseUrl = "https://llm.example.org/v1";
    ///     o.DefaultModel = "storycad-fast";
    ///     o.GetToken = async (sp, ct) =>
    ///         new AccessToken(await sp.GetRequiredService&lt;IAuth&gt;().GetJwtAsync(ct));
    /// }).UseFunctionInvocation();
    /// </code>
    /// </example>
    public static ChatClientBuilder AddStoryCadCollaborator(
        this IServiceCollection services,
        Action<CollaboratorOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        var options = new CollaboratorOptions();
        configure(options);
        // Checked now rather than at first resolution, where the error is harder to trace.
        ClientConfig config = options.ToClientConfig();
        Uri.TryCreate(config.BaseUrl, UriKind.Absolute, out Uri? baseUrl);

        services.AddSingleton(options);
        if (options.GetToken is { } getToken)
        {
            TimeSpan timeout = options.TokenTimeout;
            services.AddSingleton<TokenProvider>(sp => new DelegateTokenProvider(ct => getToken(sp, ct), timeout));
        }
        services.AddSingleton(sp =>
        {
            if (options.ForwardLogs && sp.GetService<ILoggerFactory>() is ILoggerFactory loggers)
            {
                CollaboratorLogging.UseLogger(loggers, options.MinimumLogLevel);
            }
            TokenProvider tokens = sp.GetService<TokenProvider>() ?? throw new InvalidOperationException(
                "AddStoryCadCollaborator needs a token source: set CollaboratorOptions.GetToken, " +
                "or register a StoryCad.Collaborator.Ffi.TokenProvider.");
            return new CollaboratorClient(config, tokens);
        });
        return services.AddChatClient(sp => new CollaboratorChatClient(
            sp.GetRequiredService<CollaboratorClient>(), options.DefaultModel, baseUrl));
    }
}
