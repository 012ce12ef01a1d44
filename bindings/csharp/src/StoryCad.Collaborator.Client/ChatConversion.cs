using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.Extensions.AI;

namespace StoryCad.Collaborator;

/// <summary>
/// Microsoft.Extensions.AI's chat types to the FFI records and back. Only shapes change here:
/// what a request means (retries, token refresh, SSE) is decided by the Rust client.
/// </summary>
internal static class ChatConversion
{
    private static readonly JsonTypeInfo ArgumentsType =
        AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>));

    private static readonly JsonTypeInfo ResultType = AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(object));

    /// <summary>The FFI request for <paramref name="messages"/> under <paramref name="options"/>.</summary>
    public static Ffi.ChatRequest ToRequest(
        IEnumerable<ChatMessage> messages, ChatOptions? options, string? defaultModel, bool stream)
    {
        string model = options?.ModelId ?? defaultModel ?? throw new InvalidOperationException(
            "No model: set ChatOptions.ModelId, or give the chat client a default model.");
        var wire = new List<Ffi.Message>();
        if (options?.Instructions is { Length: > 0 } instructions)
        {
            wire.Add(new Ffi.Message(Ffi.Role.System, instructions));
        }
        foreach (ChatMessage message in messages)
        {
            AddMessage(wire, message);
        }

        Ffi.Tool[] tools = options?.Tools?.OfType<AIFunctionDeclaration>().Select(ToTool).ToArray() ?? [];
        return new Ffi.ChatRequest(
            Model: model,
            Messages: wire.ToArray(),
            Temperature: options?.Temperature,
            TopP: options?.TopP,
            MaxCompletionTokens: options?.MaxOutputTokens is int max ? checked((uint)max) : null,
            Stop: options?.StopSequences?.ToArray() ?? [],
            Tools: tools,
            // A tool_choice without tools is an error for OpenAI: leave it out then.
            ToolChoice: tools.Length > 0 ? ToToolChoice(options?.ToolMode) : null,
            ParallelToolCalls: tools.Length > 0 ? options?.AllowMultipleToolCalls : null,
            ResponseFormatJson: ToResponseFormatJson(options?.ResponseFormat),
            Seed: options?.Seed,
            // Streams always ask for the usage chunk: it becomes the UsageContent callers expect.
            IncludeUsage: stream);
    }

    /// <summary>
    /// The per-request options: the request id and headers from
    /// <see cref="ChatOptions.AdditionalProperties"/>, and the W3C <c>traceparent</c> of
    /// <see cref="Activity.Current"/> unless one was given. Null when there is nothing to send.
    /// </summary>
    public static Ffi.RequestOptions? ToRequestOptions(ChatOptions? options)
    {
        AdditionalPropertiesDictionary? props = options?.AdditionalProperties;
        string? requestId = null;
        string? traceparent = null;
        Dictionary<string, string>? headers = null;
        if (props is not null)
        {
            _ = props.TryGetValue(CollaboratorChatClient.RequestIdKey, out requestId);
            _ = props.TryGetValue(CollaboratorChatClient.TraceparentKey, out traceparent);
            if (props.TryGetValue(CollaboratorChatClient.HeadersKey, out object? value) && value is not null)
            {
                if (value is not IEnumerable<KeyValuePair<string, string>> pairs)
                {
                    throw new ArgumentException(
                        $"ChatOptions.AdditionalProperties[\"{CollaboratorChatClient.HeadersKey}\"] must be an " +
                        $"IEnumerable<KeyValuePair<string, string>> (e.g. a Dictionary<string, string>), not {value.GetType()}.");
                }
                headers = new Dictionary<string, string>(pairs, StringComparer.OrdinalIgnoreCase);
            }
        }
        if (traceparent is null && Activity.Current is { IdFormat: ActivityIdFormat.W3C } activity)
        {
            // A W3C activity's Id is the traceparent header's value: 00-<trace>-<span>-<flags>.
            traceparent = activity.Id;
        }
        if (requestId is null && traceparent is null && headers is null)
        {
            return null;
        }
        return new Ffi.RequestOptions(
            Headers: headers ?? new Dictionary<string, string>(),
            RequestId: requestId,
            Traceparent: traceparent);
    }

    private static void AddMessage(List<Ffi.Message> wire, ChatMessage message)
    {
        var text = new StringBuilder();
        var calls = new List<Ffi.ToolCall>();
        foreach (AIContent content in message.Contents)
        {
            switch (content)
            {
                case TextContent t:
                    text.Append(t.Text);
                    break;
                case FunctionCallContent call:
                    calls.Add(new Ffi.ToolCall(
                        Id: call.CallId,
                        Name: call.Name,
                        Arguments: JsonSerializer.Serialize(call.Arguments ?? new Dictionary<string, object?>(), ArgumentsType)));
                    break;
                case FunctionResultContent result:
                    // One tool message per result, as the API wants them.
                    wire.Add(new Ffi.Message(Ffi.Role.Tool, Content: ResultText(result), ToolCallId: result.CallId));
                    break;
                case DataContent or UriContent:
                    throw new NotSupportedException(
                        $"The StoryCAD proxy takes text messages only; a {content.GetType().Name} cannot be sent.");
                default:
                    // Reasoning, usage and error contents of earlier answers carry nothing to send.
                    break;
            }
        }
        if (text.Length == 0 && calls.Count == 0)
        {
            return; // e.g. a tool message whose results were added above
        }
        wire.Add(new Ffi.Message(
            Role: ToRole(message.Role),
            Content: text.Length > 0 ? text.ToString() : null,
            Name: message.AuthorName,
            ToolCalls: calls.ToArray()));
    }

    private static Ffi.Role ToRole(ChatRole role)
    {
        if (role == ChatRole.System)
        {
            return Ffi.Role.System;
        }
        if (role == ChatRole.Assistant)
        {
            return Ffi.Role.Assistant;
        }
        if (role == ChatRole.Tool)
        {
            return Ffi.Role.Tool;
        }
        if (string.Equals(role.Value, "developer", StringComparison.OrdinalIgnoreCase))
        {
            return Ffi.Role.Developer;
        }
        return Ffi.Role.User;
    }

    private static string ResultText(FunctionResultContent result)
    {
        switch (result.Result)
        {
            case null:
                return "";
            case string s:
                return s;
            default:
                try
                {
                    return JsonSerializer.Serialize(result.Result, ResultType);
                }
                catch (NotSupportedException)
                {
                    return result.Result.ToString() ?? "";
                }
        }
    }

    private static Ffi.Tool ToTool(AIFunctionDeclaration function) => new(
        Name: function.Name,
        Description: string.IsNullOrEmpty(function.Description) ? null : function.Description,
        ParametersJson: function.JsonSchema.GetRawText());

    private static Ffi.ToolChoice? ToToolChoice(ChatToolMode? mode) => mode switch
    {
        null => (Ffi.ToolChoice?)null,
        NoneChatToolMode => new Ffi.ToolChoice.None(),
        RequiredChatToolMode { RequiredFunctionName: string name } => new Ffi.ToolChoice.Function(name),
        RequiredChatToolMode => new Ffi.ToolChoice.Required(),
        _ => new Ffi.ToolChoice.Auto(),
    };

    private static string? ToResponseFormatJson(ChatResponseFormat? format)
    {
        if (format is not ChatResponseFormatJson json)
        {
            return null; // text, the default
        }
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (json.Schema is JsonElement schema)
            {
                writer.WriteString("type", "json_schema");
                writer.WriteStartObject("json_schema");
                writer.WriteString("name", json.SchemaName ?? "response");
                if (json.SchemaDescription is string description)
                {
                    writer.WriteString("description", description);
                }
                writer.WritePropertyName("schema");
                schema.WriteTo(writer);
                writer.WriteEndObject();
            }
            else
            {
                writer.WriteString("type", "json_object");
            }
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>The Microsoft.Extensions.AI answer for the FFI's.</summary>
    public static ChatResponse ToResponse(Ffi.ChatResponse answer)
    {
        var contents = new List<AIContent>();
        ChatFinishReason? finish = null;
        if (answer.Choices.Length > 0)
        {
            Ffi.Choice choice = answer.Choices[0];
            if (choice.Content is string content)
            {
                contents.Add(new TextContent(content));
            }
            if (choice.Refusal is string refusal)
            {
                contents.Add(new ErrorContent(refusal) { ErrorCode = "Refusal" });
            }
            foreach (Ffi.ToolCall call in choice.ToolCalls)
            {
                contents.Add(ToFunctionCall(call.Id, call.Name, call.Arguments));
            }
            finish = ToFinishReason(choice.FinishReason);
        }
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, contents) { MessageId = answer.Id })
        {
            ResponseId = answer.Id,
            ModelId = answer.Model,
            CreatedAt = DateTimeOffset.FromUnixTimeSeconds(checked((long)answer.Created)),
            FinishReason = finish,
            Usage = answer.Usage is Ffi.Usage usage ? ToUsage(usage) : null,
            RawRepresentation = answer,
            AdditionalProperties = MetaProperties(answer.Meta),
        };
    }

    /// <summary>The answer's headers for <c>AdditionalProperties</c>: the request id (quote it
    /// when reporting a problem) and the whole <see cref="Ffi.ResponseMeta"/>.</summary>
    public static AdditionalPropertiesDictionary MetaProperties(Ffi.ResponseMeta meta) => new()
    {
        [CollaboratorChatClient.RequestIdKey] = meta.RequestId,
        [CollaboratorChatClient.MetaKey] = meta,
    };

    public static FunctionCallContent ToFunctionCall(string id, string name, string? arguments) =>
        FunctionCallContent.CreateFromParsedArguments(
            arguments ?? "",
            id,
            name,
            static json => string.IsNullOrWhiteSpace(json)
                ? null
                : (IDictionary<string, object?>?)JsonSerializer.Deserialize(json, ArgumentsType));

    public static UsageDetails ToUsage(Ffi.Usage usage) => new()
    {
        InputTokenCount = checked((long)usage.PromptTokens),
        OutputTokenCount = checked((long)usage.CompletionTokens),
        TotalTokenCount = checked((long)usage.TotalTokens),
    };

    public static ChatFinishReason? ToFinishReason(string? reason) => reason switch
    {
        null or "" => (ChatFinishReason?)null,
        "stop" => ChatFinishReason.Stop,
        "length" => ChatFinishReason.Length,
        "tool_calls" or "function_call" => ChatFinishReason.ToolCalls,
        "content_filter" => ChatFinishReason.ContentFilter,
        _ => string.IsNullOrWhiteSpace(reason) ? (ChatFinishReason?)null : new ChatFinishReason(reason),
    };
}

/// <summary>
/// Folds a stream's chunks into <see cref="ChatResponseUpdate"/>s: text as it comes, the usage
/// chunk as <see cref="UsageContent"/>, and tool calls (which arrive in pieces) as whole
/// <see cref="FunctionCallContent"/>s in one last update once the stream is complete.
/// </summary>
internal sealed class StreamedAnswer
{
    private readonly SortedDictionary<uint, (string? Id, string? Name, StringBuilder Arguments)> _calls = new();
    private readonly StringBuilder _refusal = new();
    private ChatFinishReason? _finish;
    private string? _id;
    private string? _model;
    private DateTimeOffset? _created;

    public ChatResponseUpdate Update(Ffi.ChatChunk chunk, Ffi.ResponseMeta? meta)
    {
        _id ??= chunk.Id;
        _model ??= chunk.Model;
        _created ??= DateTimeOffset.FromUnixTimeSeconds(checked((long)chunk.Created));
        var update = new ChatResponseUpdate
        {
            Role = ChatRole.Assistant,
            ResponseId = chunk.Id,
            MessageId = chunk.Id,
            ModelId = chunk.Model,
            CreatedAt = _created,
            RawRepresentation = chunk,
            AdditionalProperties = meta is null ? null : ChatConversion.MetaProperties(meta),
        };
        // The API streams one choice unless n is set, which this client never does.
        if (chunk.Choices.Length > 0)
        {
            Ffi.ChunkChoice choice = chunk.Choices[0];
            if (choice.Content is string text)
            {
                update.Contents.Add(new TextContent(text));
            }
            _refusal.Append(choice.Refusal);
            foreach (Ffi.ToolCallDelta delta in choice.ToolCalls)
            {
                if (!_calls.TryGetValue(delta.Index, out var call))
                {
                    call = (null, null, new StringBuilder());
                }
                call.Id ??= delta.Id;
                call.Name ??= delta.Name;
                call.Arguments.Append(delta.Arguments);
                _calls[delta.Index] = call;
            }
            _finish ??= ChatConversion.ToFinishReason(choice.FinishReason);
        }
        update.FinishReason = _finish;
        if (chunk.Usage is Ffi.Usage usage)
        {
            update.Contents.Add(new UsageContent(ChatConversion.ToUsage(usage)));
        }
        return update;
    }

    /// <summary>The tool calls and refusal gathered from the whole stream, if any.</summary>
    public ChatResponseUpdate? Final()
    {
        if (_calls.Count == 0 && _refusal.Length == 0)
        {
            return null;
        }
        var update = new ChatResponseUpdate
        {
            Role = ChatRole.Assistant,
            ResponseId = _id,
            MessageId = _id,
            ModelId = _model,
            CreatedAt = _created,
            FinishReason = _finish,
        };
        foreach ((string? id, string? name, StringBuilder arguments) in _calls.Values)
        {
            if (!string.IsNullOrEmpty(name))
            {
                update.Contents.Add(ChatConversion.ToFunctionCall(id ?? "", name, arguments.ToString()));
            }
        }
        if (_refusal.Length > 0)
        {
            update.Contents.Add(new ErrorContent(_refusal.ToString()) { ErrorCode = "Refusal" });
        }
        return update;
    }
}
