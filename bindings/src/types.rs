//! Records for the wire types, and their conversions to and from the client's types.
//!
//! Flatter than the JSON (a choice's message fields sit on the choice, a tool's function on the
//! tool) because records in C# and Python read better that way; JSON documents that the API
//! leaves free-form (tool parameters, `response_format`) cross as JSON text.

use std::time::Duration;

use storycad_client::{protocol as p, Completion};

use crate::error::CollaboratorError;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Role {
    /// System instructions.
    System,
    /// Developer instructions (the newer name for system).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

impl From<Role> for p::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::System => p::Role::System,
            Role::Developer => p::Role::Developer,
            Role::User => p::Role::User,
            Role::Assistant => p::Role::Assistant,
            Role::Tool => p::Role::Tool,
        }
    }
}

impl From<p::Role> for Role {
    fn from(r: p::Role) -> Self {
        match r {
            p::Role::System => Role::System,
            p::Role::Developer => Role::Developer,
            p::Role::User => Role::User,
            p::Role::Assistant => Role::Assistant,
            p::Role::Tool => Role::Tool,
            // A role storycad-protocol learns before this enum does: only answers carry a
            // role across, and an answer is the assistant's.
            _ => Role::Assistant,
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text; absent on an assistant message that only calls tools.
    #[uniffi(default = None)]
    pub content: Option<String>,
    /// Optional participant name.
    #[uniffi(default = None)]
    pub name: Option<String>,
    /// Tool calls made by the assistant (on assistant messages sent back as history).
    #[uniffi(default = [])]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the call it answers.
    #[uniffi(default = None)]
    pub tool_call_id: Option<String>,
}

impl From<Message> for p::Message {
    fn from(m: Message) -> Self {
        let mut message = p::Message::with_content(m.role.into(), m.content.map(p::Content::Text));
        message.name = m.name;
        message.tool_calls =
            (!m.tool_calls.is_empty()).then(|| m.tool_calls.into_iter().map(Into::into).collect());
        message.tool_call_id = m.tool_call_id;
        message
    }
}

/// A complete tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ToolCall {
    /// The call's id, echoed by the tool message that answers it.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON document as text.
    pub arguments: String,
}

impl From<ToolCall> for p::ToolCall {
    fn from(c: ToolCall) -> Self {
        p::ToolCall::function(c.id, p::FunctionCall::new(c.name, c.arguments))
    }
}

impl From<p::ToolCall> for ToolCall {
    fn from(c: p::ToolCall) -> Self {
        ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[uniffi(default = None)]
    pub description: Option<String>,
    /// The JSON Schema of its arguments, as JSON text.
    #[uniffi(default = None)]
    pub parameters_json: Option<String>,
    /// Structured-outputs strictness.
    #[uniffi(default = None)]
    pub strict: Option<bool>,
}

/// Which tool the model must (or must not) call.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ToolChoice {
    /// Never call a tool.
    None,
    /// The model decides.
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Function {
        /// The function's name.
        name: String,
    },
}

impl From<ToolChoice> for p::ToolChoice {
    fn from(c: ToolChoice) -> Self {
        match c {
            ToolChoice::None => p::ToolChoice::Mode("none".to_owned()),
            ToolChoice::Auto => p::ToolChoice::Mode("auto".to_owned()),
            ToolChoice::Required => p::ToolChoice::Mode("required".to_owned()),
            ToolChoice::Function { name } => p::ToolChoice::function(name),
        }
    }
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChatRequest {
    /// The model alias (one of `models()`).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    #[uniffi(default = None)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[uniffi(default = None)]
    pub top_p: Option<f64>,
    /// Maximum output tokens.
    #[uniffi(default = None)]
    pub max_completion_tokens: Option<u32>,
    /// Stop sequences.
    #[uniffi(default = [])]
    pub stop: Vec<String>,
    /// Tools the model may call.
    #[uniffi(default = [])]
    pub tools: Vec<Tool>,
    /// Which tool the model must (or must not) call.
    #[uniffi(default = None)]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn.
    #[uniffi(default = None)]
    pub parallel_tool_calls: Option<bool>,
    /// `response_format` as JSON text, e.g. `{"type":"json_object"}`.
    #[uniffi(default = None)]
    pub response_format_json: Option<String>,
    /// Seed for best-effort deterministic sampling.
    #[uniffi(default = None)]
    pub seed: Option<i64>,
    /// End-user id passed to the provider.
    #[uniffi(default = None)]
    pub user: Option<String>,
    /// Streams only: ask for a last chunk carrying the token usage.
    #[uniffi(default = false)]
    pub include_usage: bool,
}

fn json_arg(what: &str, text: &str) -> Result<serde_json::Value, CollaboratorError> {
    serde_json::from_str(text)
        .map_err(|e| CollaboratorError::invalid_argument(format!("{what} is not valid JSON: {e}")))
}

impl ChatRequest {
    /// The client's request; `stream` says which call it is for (`stream_options` is only
    /// allowed on streams).
    pub(crate) fn into_protocol(self, stream: bool) -> Result<p::ChatRequest, CollaboratorError> {
        let tools = self
            .tools
            .into_iter()
            .map(|t| {
                let parameters = t
                    .parameters_json
                    .as_deref()
                    .map(|s| json_arg(&format!("the parameters of tool {:?}", t.name), s))
                    .transpose()?;
                let mut function = p::FunctionDef::new(t.name);
                function.description = t.description;
                function.parameters = parameters;
                function.strict = t.strict;
                Ok(p::Tool::new(function))
            })
            .collect::<Result<Vec<_>, CollaboratorError>>()?;
        let response_format = self
            .response_format_json
            .as_deref()
            .map(|s| json_arg("response_format_json", s))
            .transpose()?;
        let mut req = p::ChatRequest::new(
            self.model,
            self.messages.into_iter().map(Into::into).collect(),
        );
        req.temperature = self.temperature;
        req.top_p = self.top_p;
        req.max_completion_tokens = self.max_completion_tokens;
        req.stop = (!self.stop.is_empty()).then_some(p::Stop::Many(self.stop));
        req.tools = (!tools.is_empty()).then_some(tools);
        req.tool_choice = self.tool_choice.map(Into::into);
        req.parallel_tool_calls = self.parallel_tool_calls;
        req.response_format = response_format;
        req.seed = self.seed;
        req.user = self.user;
        if stream && self.include_usage {
            req.stream_options = Some(p::StreamOptions::with_usage());
        }
        Ok(req)
    }
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, uniffi::Record)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

impl From<p::Usage> for Usage {
    fn from(u: p::Usage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

/// OpenAI's `x-ratelimit-*` headers; each is `None` when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, uniffi::Record)]
pub struct RateLimitInfo {
    /// Requests allowed in the window.
    pub limit_requests: Option<u64>,
    /// Tokens allowed in the window.
    pub limit_tokens: Option<u64>,
    /// Requests left.
    pub remaining_requests: Option<u64>,
    /// Tokens left.
    pub remaining_tokens: Option<u64>,
    /// Milliseconds until the request window resets.
    pub reset_requests_ms: Option<u64>,
    /// Milliseconds until the token window resets.
    pub reset_tokens_ms: Option<u64>,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<&p::ratelimit::RateLimitInfo> for RateLimitInfo {
    fn from(r: &p::ratelimit::RateLimitInfo) -> Self {
        RateLimitInfo {
            limit_requests: r.limit_requests,
            limit_tokens: r.limit_tokens,
            remaining_requests: r.remaining_requests,
            remaining_tokens: r.remaining_tokens,
            reset_requests_ms: ms(r.reset_requests),
            reset_tokens_ms: ms(r.reset_tokens),
        }
    }
}

/// The headers of an answer that matter to a caller.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ResponseMeta {
    /// The HTTP status.
    pub status: u16,
    /// `x-request-id`: quote it when reporting a problem.
    pub request_id: Option<String>,
    /// The `x-ratelimit-*` headers.
    pub rate_limit: RateLimitInfo,
    /// `x-storycad-route`: the `provider:model` that answered.
    pub route: Option<String>,
    /// `x-storycad-cache`: `HIT`, `MISS` or `BYPASS`.
    pub cache: Option<String>,
    /// How many HTTP attempts the answer took (1 when nothing was retried).
    pub attempts: u32,
    /// `x-storycad-stream-id`: the id a broken stream is resumed by, when the server keeps it.
    pub stream_id: Option<String>,
    /// How many times the stream resumed after its connection broke (0 for other answers).
    pub resumptions: u32,
}

impl From<&storycad_client::ResponseMeta> for ResponseMeta {
    fn from(m: &storycad_client::ResponseMeta) -> Self {
        ResponseMeta {
            status: m.status,
            request_id: m.request_id.clone(),
            rate_limit: (&m.rate_limit).into(),
            route: m.route.clone(),
            cache: m.cache.clone(),
            attempts: m.attempts,
            stream_id: m.stream_id.clone(),
            resumptions: m.resumptions,
        }
    }
}

/// One choice of a complete answer: the assistant's message and why it stopped.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Choice {
    /// Its position.
    pub index: u32,
    /// The text.
    pub content: Option<String>,
    /// A refusal, instead of content.
    pub refusal: Option<String>,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `length`, `tool_calls`, `content_filter`, ...
    pub finish_reason: Option<String>,
}

/// A complete chat answer.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChatResponse {
    /// The completion's id.
    pub id: String,
    /// The model alias.
    pub model: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// The choices (one unless `n` was set).
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Option<Usage>,
    /// The first choice's text, or `""`.
    pub text: String,
    /// The answer's headers.
    pub meta: ResponseMeta,
}

impl From<Completion> for ChatResponse {
    fn from(c: Completion) -> Self {
        let meta = (&c.meta).into();
        let text = c.response.text().to_owned();
        let r = c.response;
        ChatResponse {
            id: r.id,
            model: r.model,
            created: r.created,
            choices: r
                .choices
                .into_iter()
                .map(|c| Choice {
                    index: c.index,
                    content: c.message.content,
                    refusal: c.message.refusal,
                    tool_calls: c
                        .message
                        .tool_calls
                        .unwrap_or_default()
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                    finish_reason: c.finish_reason.map(String::from),
                })
                .collect(),
            usage: r.usage.map(Into::into),
            text,
            meta,
        }
    }
}

/// A piece of a tool call; pieces with the same `index` make one call.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ToolCallDelta {
    /// Which call this extends.
    pub index: u32,
    /// The call's id (first piece only).
    pub id: Option<String>,
    /// The function's name (first piece only).
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text.
    pub arguments: Option<String>,
}

/// What one streamed chunk adds to a choice.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChunkChoice {
    /// Which choice this extends.
    pub index: u32,
    /// Set on the first chunk.
    pub role: Option<Role>,
    /// A piece of text.
    pub content: Option<String>,
    /// A piece of a refusal.
    pub refusal: Option<String>,
    /// Pieces of tool calls.
    pub tool_calls: Vec<ToolCallDelta>,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<String>,
}

/// One streamed event.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChatChunk {
    /// The completion's id (the same on every chunk).
    pub id: String,
    /// The model alias.
    pub model: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Deltas; empty on the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Token counts, on the last chunk when `include_usage` was set.
    pub usage: Option<Usage>,
}

impl From<p::ChatChunk> for ChatChunk {
    fn from(c: p::ChatChunk) -> Self {
        ChatChunk {
            id: c.id,
            model: c.model,
            created: c.created,
            choices: c
                .choices
                .into_iter()
                .map(|c| ChunkChoice {
                    index: c.index,
                    role: c.delta.role.map(Into::into),
                    content: c.delta.content,
                    refusal: c.delta.refusal,
                    tool_calls: c
                        .delta
                        .tool_calls
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| {
                            let (name, arguments) =
                                t.function.map_or((None, None), |f| (f.name, f.arguments));
                            ToolCallDelta {
                                index: t.index,
                                id: t.id,
                                name,
                                arguments,
                            }
                        })
                        .collect(),
                    finish_reason: c.finish_reason.map(String::from),
                })
                .collect(),
            usage: c.usage.map(Into::into),
        }
    }
}

/// A model the user's plan allows.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ModelInfo {
    /// The name to put in `ChatRequest.model`.
    pub id: String,
    /// Who serves it.
    pub owned_by: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

impl From<p::Model> for ModelInfo {
    fn from(m: p::Model) -> Self {
        ModelInfo {
            id: m.id,
            owned_by: m.owned_by,
            created: m.created,
        }
    }
}

/// One limit of the plan: its size, what is left, when it resets.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LimitStatus {
    /// The limit.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Seconds until it resets fully (0 when full).
    pub reset_seconds: f64,
}

impl From<p::LimitStatus> for LimitStatus {
    fn from(l: p::LimitStatus) -> Self {
        LimitStatus {
            limit: l.limit,
            remaining: l.remaining,
            reset_seconds: l.reset_seconds,
        }
    }
}

/// The user's plan, its limits and what is left now (`GET /v1/usage`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct UsageReport {
    /// The plan's name.
    pub plan: String,
    /// The model aliases the plan allows.
    pub models: Vec<String>,
    /// The output-token cap applied to each request.
    pub max_output_tokens: u32,
    /// Requests in the current minute.
    pub requests: LimitStatus,
    /// Tokens in the current day (UTC).
    pub tokens: LimitStatus,
    /// Streams open at once.
    pub streams: LimitStatus,
}

impl From<p::UsageReport> for UsageReport {
    fn from(u: p::UsageReport) -> Self {
        UsageReport {
            plan: u.plan,
            models: u.models,
            max_output_tokens: u.max_output_tokens,
            requests: u.requests.into(),
            tokens: u.tokens.into(),
            streams: u.streams.into(),
        }
    }
}

/// Milliseconds as a duration (config fields).
pub(crate) fn from_ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            model: "storycad-fast".into(),
            messages: vec![Message {
                role: Role::User,
                content: Some("hi".into()),
                name: None,
                tool_calls: vec![],
                tool_call_id: None,
            }],
            temperature: None,
            top_p: None,
            max_completion_tokens: None,
            stop: vec![],
            tools: vec![],
            tool_choice: None,
            parallel_tool_calls: None,
            response_format_json: None,
            seed: None,
            user: None,
            include_usage: true,
        }
    }

    #[test]
    fn empty_lists_and_stream_options_stay_off_the_wire() {
        let chat = serde_json::to_value(request().into_protocol(false).unwrap()).unwrap();
        assert_eq!(
            chat,
            serde_json::json!({"model": "storycad-fast", "messages": [{"role": "user", "content": "hi"}]})
        );
        let stream = request().into_protocol(true).unwrap();
        assert_eq!(
            stream.stream_options.and_then(|o| o.include_usage),
            Some(true)
        );
    }

    #[test]
    fn tools_and_tool_choice_take_the_openai_shape() {
        let mut r = request();
        r.tools = vec![Tool {
            name: "find".into(),
            description: None,
            parameters_json: Some(r#"{"type":"object"}"#.into()),
            strict: Some(true),
        }];
        r.tool_choice = Some(ToolChoice::Function {
            name: "find".into(),
        });
        r.stop = vec!["END".into()];
        let v = serde_json::to_value(r.into_protocol(false).unwrap()).unwrap();
        assert_eq!(
            v["tools"],
            serde_json::json!([{"type": "function", "function": {"name": "find", "parameters": {"type": "object"}, "strict": true}}])
        );
        assert_eq!(
            v["tool_choice"],
            serde_json::json!({"type": "function", "function": {"name": "find"}})
        );
        assert_eq!(v["stop"], serde_json::json!(["END"]));
        let mut modes = request();
        modes.tool_choice = Some(ToolChoice::Required);
        let v = serde_json::to_value(modes.into_protocol(false).unwrap()).unwrap();
        assert_eq!(v["tool_choice"], "required");
    }

    #[test]
    fn bad_json_text_is_an_invalid_request() {
        let mut r = request();
        r.response_format_json = Some("{".into());
        match r.into_protocol(false) {
            Err(CollaboratorError::InvalidRequest {
                status: None,
                message,
                ..
            }) => assert!(message.contains("response_format_json"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunks_flatten_their_deltas() {
        let chunk: p::ChatChunk = serde_json::from_str(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"find","arguments":"{\"a\""}}]},"finish_reason":"tool_calls"}]}"#,
        )
        .unwrap();
        let c = ChatChunk::from(chunk);
        assert_eq!(c.choices[0].role, Some(Role::Assistant));
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            c.choices[0].tool_calls,
            vec![ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("find".into()),
                arguments: Some("{\"a\"".into()),
            }]
        );
    }
}
