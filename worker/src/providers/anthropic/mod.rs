//! Anthropic Messages API adapter: OpenAI Chat Completions in, OpenAI Chat Completions out.
//!
//! Pure translation, no I/O and no clock (the caller passes `created` timestamps), so it builds for
//! wasm32 and is unit-tested on the host:
//!
//! - [`to_messages_request`]: an OpenAI [`ChatRequest`](storycad_protocol::ChatRequest) becomes an
//!   Anthropic `POST /v1/messages` body ([`MessagesRequest`]), or a 400 ([`TranslateError`]) naming
//!   the field Anthropic cannot honour. Send it to [`messages_url`] with [`request_headers`].
//! - [`from_messages_response`]: a complete Anthropic answer becomes a
//!   [`ChatResponse`](storycad_protocol::ChatResponse).
//! - [`map_error`]: an Anthropic error answer becomes the status and OpenAI error body we send.
//! - [`StreamTranslator`]: parsed Anthropic SSE events become OpenAI `data:` lines, ending with
//!   `data: [DONE]` or an error event, never silently. [`AnthropicStream`] wraps it with the SSE
//!   framing: upstream bytes in (any chunking), caller bytes out.
//!
//! Mapping decisions that a caller can observe are documented on each function.

mod framing;
mod request;
mod response;
mod stream;

pub use framing::{AnthropicStream, MAX_EVENT_BYTES};
pub use request::{
    to_messages_body, to_messages_request, ImageSource, InputBlock, InputMessage, MessagesRequest,
    Metadata, ToolChoiceOut, ToolDef, ToolResultContent,
};
pub use response::{from_messages_response, map_error};
pub use stream::StreamTranslator;

use std::fmt;

use storycad_protocol::{codes, ErrorBody, FinishReason};

/// The `anthropic-version` header value this adapter speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The path appended to `ANTHROPIC_BASE_URL` (the Anthropic SDKs' convention).
pub const MESSAGES_PATH: &str = "/v1/messages";

/// `ANTHROPIC_BASE_URL` + `/v1/messages`, without doubling a trailing slash.
pub fn messages_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + MESSAGES_PATH.len());
    url.push_str(base);
    url.push_str(MESSAGES_PATH);
    url
}

/// The headers of every Messages request: `x-api-key`, `anthropic-version`, `content-type`.
///
/// The key goes only into this header; nothing in this module ever puts it in a body or an error.
pub fn request_headers(api_key: &str) -> [(&'static str, &str); 3] {
    [
        ("x-api-key", api_key),
        ("anthropic-version", ANTHROPIC_VERSION),
        ("content-type", "application/json"),
    ]
}

/// A request Anthropic cannot serve as asked: the Worker answers 400 with [`Self::to_error_body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    /// The request field at fault, OpenAI-style (`messages[2].content[1]`).
    pub param: String,
    /// What is wrong, for the caller.
    pub message: String,
}

impl TranslateError {
    pub(crate) fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError {
            param: param.into(),
            message: message.into(),
        }
    }

    /// Always 400: the caller must change the request.
    pub fn status(&self) -> u16 {
        400
    }

    /// `{"error":{"type":"invalid_request_error","code":"invalid_value","param":..,"message":..}}`.
    pub fn to_error_body(&self) -> ErrorBody {
        ErrorBody::new(
            codes::INVALID_REQUEST,
            codes::INVALID_VALUE,
            self.message.clone(),
        )
        .with_param(self.param.clone())
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

impl std::error::Error for TranslateError {}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
///
/// `end_turn` and `stop_sequence` -> `stop`; `max_tokens` and `model_context_window_exceeded` ->
/// `length`; `tool_use` -> `tool_calls`; `refusal` -> `content_filter`. `pause_turn` (a server
/// tool's long turn paused; we send no server tools) and any reason added later -> `stop`, the
/// answer a client handles as "the turn is over".
pub fn map_stop_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_appends_messages_path_once() {
        assert_eq!(
            messages_url("https://api.anthropic.com"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            messages_url("http://127.0.0.1:8787/"),
            "http://127.0.0.1:8787/v1/messages"
        );
    }

    #[test]
    fn headers_carry_key_version_and_type() {
        let h = request_headers("sk-ant-test");
        assert_eq!(h[0], ("x-api-key", "sk-ant-test"));
        assert_eq!(h[1], ("anthropic-version", "2023-06-01"));
        assert_eq!(h[2], ("content-type", "application/json"));
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        assert_eq!(map_stop_reason("end_turn"), FinishReason::Stop);
        assert_eq!(map_stop_reason("stop_sequence"), FinishReason::Stop);
        assert_eq!(map_stop_reason("max_tokens"), FinishReason::Length);
        assert_eq!(
            map_stop_reason("model_context_window_exceeded"),
            FinishReason::Length
        );
        assert_eq!(map_stop_reason("tool_use"), FinishReason::ToolCalls);
        assert_eq!(map_stop_reason("refusal"), FinishReason::ContentFilter);
        assert_eq!(map_stop_reason("pause_turn"), FinishReason::Stop);
        assert_eq!(map_stop_reason("something_new"), FinishReason::Stop);
    }

    #[test]
    fn translate_error_is_a_400_naming_the_param() {
        let e = TranslateError::new("messages[2].content[1]", "nope");
        assert_eq!(e.status(), 400);
        let body = e.to_error_body();
        assert_eq!(body.error.param.as_deref(), Some("messages[2].content[1]"));
        assert_eq!(body.error.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(body.error.message, "nope");
    }
}
