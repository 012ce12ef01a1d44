//! Anthropic complete answers and error answers -> OpenAI shapes.

use serde_json::{json, Value};
use storycad_protocol::{
    codes, ChatResponse, Choice, ErrorBody, FunctionCall, ResponseMessage, ToolCall, Usage,
};

use super::map_stop_reason;
use crate::json_read::{invalid, Fields, FromJson};

/// The `code` of an overloaded upstream (retryable, like a 503).
pub(crate) const OVERLOADED_CODE: &str = "overloaded";
/// OpenAI's code for a prompt longer than the model's context.
const CONTEXT_LENGTH_EXCEEDED: &str = "context_length_exceeded";

/// Anthropic's `usage` object (in answers, `message_start` and `message_delta`), read by field
/// ([`FromJson`]): each count may be missing or `null`.
#[derive(Debug, Default)]
pub(crate) struct AnthropicUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

/// OpenAI usage from Anthropic counts.
///
/// Anthropic's `input_tokens` excludes cached input, so `prompt_tokens` adds the cache writes and
/// cache reads back: it is everything the model read, as OpenAI counts it. The cache reads are also
/// `prompt_tokens_details.cached_tokens`, as OpenAI reports its own cache hits; the cache writes,
/// which Anthropic bills above the input price, are `prompt_tokens_details.cache_write_tokens`
/// (the name OpenRouter gives them) when there are any.
pub(crate) fn openai_usage(input: u64, cache_creation: u64, cache_read: u64, output: u64) -> Usage {
    let prompt = input
        .saturating_add(cache_creation)
        .saturating_add(cache_read);
    let mut usage = Usage::new(prompt, output);
    usage.total_tokens = prompt.saturating_add(output);
    usage.prompt_tokens_details = Some(if cache_creation > 0 {
        json!({ "cached_tokens": cache_read, "cache_write_tokens": cache_creation })
    } else {
        json!({ "cached_tokens": cache_read })
    });
    usage
}

/// Translate a complete Anthropic answer (HTTP 200 body) into an OpenAI chat completion.
///
/// - `id`: Anthropic's message id as sent (`msg_...`), so it matches Anthropic's logs.
/// - `object` `chat.completion`, `created` as passed (the glue passes now), `model` = `alias`.
/// - Text blocks are concatenated (Anthropic splits one answer into several blocks, e.g. around
///   citations) into `content`; `tool_use` blocks become `tool_calls` with `arguments` the compact
///   JSON of `input`. `content` is `null` when the answer is only tool calls, as OpenAI sends it.
///   Other block types (thinking, server tools) are not part of an OpenAI answer and are left out.
/// - `finish_reason`: see [`map_stop_reason`](super::map_stop_reason). Usage: `prompt_tokens` =
///   `input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens` (Anthropic's
///   `input_tokens` leaves cached input out; OpenAI counts everything the model read), with the
///   cache reads also in `prompt_tokens_details.cached_tokens`; `completion_tokens` =
///   `output_tokens`.
///
/// A body that is not a Messages answer is `Err((502, upstream_error))`; an error body sent with
/// 200 is mapped as by [`map_error`].
// The error is as large as the success (an ErrorBody): boxing would buy nothing on a path taken
// once per request.
#[allow(clippy::result_large_err)]
pub fn from_messages_response(
    body: &[u8],
    alias: &str,
    created: u64,
) -> Result<ChatResponse, (u16, ErrorBody)> {
    let parsed: Value = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(garbage)?;
    let answer = read_answer(&parsed).map_err(|_| garbage())?;
    if answer.kind == Some("error") {
        return Err(map_error(502, body));
    }
    if answer.kind != Some("message") {
        return Err(garbage());
    }
    let Answer {
        id,
        text,
        tool_calls,
        stop_reason,
        usage: u,
        ..
    } = answer;
    let usage = openai_usage(
        u.input_tokens.unwrap_or(0),
        u.cache_creation_input_tokens.unwrap_or(0),
        u.cache_read_input_tokens.unwrap_or(0),
        u.output_tokens.unwrap_or(0),
    );
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };

    let mut message = ResponseMessage::assistant(content);
    message.tool_calls = (!tool_calls.is_empty()).then_some(tool_calls);
    let mut choice = Choice::new(0, message);
    choice.finish_reason = Some(map_stop_reason(stop_reason.unwrap_or("end_turn")));
    let mut response = ChatResponse::default();
    response.id = id.to_owned();
    response.object = "chat.completion".to_owned();
    response.created = created;
    response.model = alias.to_owned();
    response.choices = vec![choice];
    response.usage = Some(usage);
    Ok(response)
}

/// What a Messages answer says, read from its JSON by field (the rules of serde's derive:
/// unknown fields ignored, a field of the wrong type makes the whole answer unreadable).
struct Answer<'a> {
    kind: Option<&'a str>,
    id: &'a str,
    /// The text blocks, concatenated (Anthropic splits one answer into several blocks, e.g.
    /// around citations).
    text: String,
    tool_calls: Vec<ToolCall>,
    stop_reason: Option<&'a str>,
    usage: AnthropicUsage,
}

fn read_answer(value: &Value) -> Result<Answer<'_>, String> {
    let f = Fields::of(value, "a Messages answer")?;
    let blocks: &[Value] = match f.get("content") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(blocks)) => blocks,
        Some(v) => return Err(invalid(v, "an array (field `content`)")),
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        // A content block, flat: only the fields we use, whatever its type.
        let b = Fields::of(block, "a content block")?;
        let (kind, block_text, id, name) = (
            b.str("type")?,
            b.str_or_none("text")?,
            b.str_or_none("id")?,
            b.str_or_none("name")?,
        );
        match kind {
            "text" => text.push_str(block_text.unwrap_or("")),
            "tool_use" => tool_calls.push(ToolCall::function(
                id.unwrap_or_default().to_owned(),
                FunctionCall::new(
                    name.unwrap_or_default().to_owned(),
                    match b.get("input") {
                        None | Some(Value::Null) => "{}".to_owned(),
                        Some(input) => input.to_string(),
                    },
                ),
            )),
            _ => {}
        }
    }
    Ok(Answer {
        kind: f.str_or_none("type")?,
        id: f.str_or_none("id")?.unwrap_or_default(),
        text,
        tool_calls,
        stop_reason: f.str_or_none("stop_reason")?,
        usage: f.or_default("usage")?,
    })
}

impl FromJson for AnthropicUsage {
    fn from_json(value: &Value) -> Result<AnthropicUsage, String> {
        let f = Fields::of(value, "Anthropic's usage")?;
        Ok(AnthropicUsage {
            input_tokens: f.or_default("input_tokens")?,
            output_tokens: f.or_default("output_tokens")?,
            cache_creation_input_tokens: f.or_default("cache_creation_input_tokens")?,
            cache_read_input_tokens: f.or_default("cache_read_input_tokens")?,
        })
    }
}

fn garbage() -> (u16, ErrorBody) {
    (
        502,
        ErrorBody::new(
            codes::SERVER,
            codes::UPSTREAM_ERROR,
            "Anthropic answered with a body that is not a Messages response",
        ),
    )
}

/// An error answer's `{"error": {"type", "message"}}`; anything else (a field of another type
/// included) says nothing, and the status decides.
fn read_error(value: &Value) -> Result<(Option<&str>, Option<&str>), String> {
    let envelope = Fields::of(value, "an error answer")?;
    match envelope.get("error") {
        None | Some(Value::Null) => Ok((None, None)),
        Some(error) => error_info(error),
    }
}

/// An error object's `type` and `message` (each may be missing or null; another type makes
/// it unreadable).
pub(crate) fn error_info(error: &Value) -> Result<(Option<&str>, Option<&str>), String> {
    let error = Fields::of(error, "an error")?;
    Ok((error.str_or_none("type")?, error.str_or_none("message")?))
}

/// Translate an Anthropic error answer (`status`, body) into the status and OpenAI error body the
/// Worker sends.
///
/// | Anthropic `error.type` | status | OpenAI `type` / `code` |
/// |---|---|---|
/// | `invalid_request_error` | 400 | `invalid_request_error` / `invalid_value` (`context_length_exceeded` for "prompt is too long"), Anthropic's message kept |
/// | `request_too_large` | 413 | `invalid_request_error` / `body_too_large` |
/// | `authentication_error`, `permission_error`, `billing_error` | 502 | `server_error` / `upstream_error`: the proxy's key or account, not the caller's; Anthropic's message is not repeated |
/// | `not_found_error` | 502 | `server_error` / `upstream_error` (the route names a model Anthropic does not know) |
/// | `rate_limit_error` | 429 | `rate_limit_error` / `rate_limit_exceeded` (retryable; Anthropic's text names our organization, so it is replaced) |
/// | `api_error` | 502 | `server_error` / `upstream_error`; with HTTP 503 or 529, 503 as `overloaded_error` (the status says the service is unavailable, as it does for OpenAI routes) |
/// | `overloaded_error` | 503 | `overloaded_error` / `overloaded` (retryable) |
/// | `timeout_error` | 504 | `server_error` / `upstream_timeout` |
///
/// An unknown type, or a body that is not Anthropic's error JSON, is classified by `status`
/// (400 -> 400, 413 -> 413, 429 -> 429, 503/529 -> 503 overloaded, 504 -> 504, else 502) and the
/// body is never echoed.
pub fn map_error(status: u16, body: &[u8]) -> (u16, ErrorBody) {
    let parsed: Option<Value> = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok());
    let (kind, message) = parsed
        .as_ref()
        .and_then(|value| read_error(value).ok())
        .unwrap_or((None, None));
    map_error_kind(status, kind, message)
}

/// The mapping of [`map_error`], shared by the stream's `error` event (which has no status).
pub(crate) fn map_error_kind(
    status: u16,
    kind: Option<&str>,
    message: Option<&str>,
) -> (u16, ErrorBody) {
    let message = message.unwrap_or("").trim();
    let kind = kind.unwrap_or(match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    });
    match kind {
        "invalid_request_error" => {
            let code = if message.starts_with("prompt is too long") {
                CONTEXT_LENGTH_EXCEEDED
            } else {
                codes::INVALID_VALUE
            };
            let text = if message.is_empty() {
                "Anthropic rejected the request".to_owned()
            } else {
                format!("Anthropic rejected the request: {}", clip(message))
            };
            (400, ErrorBody::new(codes::INVALID_REQUEST, code, text))
        }
        "request_too_large" => (
            413,
            ErrorBody::new(
                codes::INVALID_REQUEST,
                codes::BODY_TOO_LARGE,
                "the request is too large for Anthropic",
            ),
        ),
        "authentication_error" | "permission_error" | "billing_error" => (
            502,
            ErrorBody::new(
                codes::SERVER,
                codes::UPSTREAM_ERROR,
                format!(
                    "the upstream provider refused the proxy's credentials (Anthropic {kind}); \
                     the proxy's configuration needs attention"
                ),
            ),
        ),
        "not_found_error" => (
            502,
            ErrorBody::new(
                codes::SERVER,
                codes::UPSTREAM_ERROR,
                if message.is_empty() {
                    "Anthropic does not know the routed model (not_found_error)".to_owned()
                } else {
                    format!(
                        "Anthropic does not know the routed model (not_found_error: {})",
                        clip(message)
                    )
                },
            ),
        ),
        "rate_limit_error" => (
            429,
            ErrorBody::new(
                codes::RATE_LIMIT,
                codes::RATE_LIMIT_EXCEEDED,
                "the upstream provider's rate limit was reached; retry later",
            ),
        ),
        "overloaded_error" => (503, overloaded()),
        "timeout_error" => (
            504,
            ErrorBody::new(
                codes::SERVER,
                codes::UPSTREAM_TIMEOUT,
                "Anthropic timed out; retry the request",
            ),
        ),
        "api_error" if matches!(status, 503 | 529) => (503, overloaded()),
        "api_error" => (
            502,
            ErrorBody::new(
                codes::SERVER,
                codes::UPSTREAM_ERROR,
                "Anthropic failed to answer (api_error); retry the request",
            ),
        ),
        // A type added after this was written: fall back on the status.
        unknown => match status {
            400 | 413 | 429 | 503 | 504 | 529 => map_error_kind(status, None, Some(message)),
            _ => (
                502,
                ErrorBody::new(
                    codes::SERVER,
                    codes::UPSTREAM_ERROR,
                    format!(
                        "Anthropic answered HTTP {status} ({})",
                        unknown.chars().take(64).collect::<String>()
                    ),
                ),
            ),
        },
    }
}

pub(crate) fn overloaded() -> ErrorBody {
    ErrorBody::new(
        codes::OVERLOADED,
        OVERLOADED_CODE,
        "Anthropic is overloaded; retry the request shortly",
    )
}

/// What we repeat of a provider's message: bounded, and with anything that looks like a URL or
/// a key (`sk-...`) blanked, in case a provider ever echoes one (the same rule as OpenAI's).
fn clip(message: &str) -> String {
    crate::error::scrub_message(message, &[])
}
