//! OpenAI Chat Completions request -> Anthropic Messages request.
//!
//! The output borrows every string from the input (base64 images are never copied) and serializes
//! straight to the body bytes.
//!
//! Rules, in the order Anthropic's API forces them:
//! - `system` and `developer` messages, wherever they stand, become the top-level `system` string
//!   (their texts joined with a blank line, in order). Anthropic has no mid-conversation system
//!   turn, so a late system message moves to the top.
//! - Consecutive messages of the same Anthropic role are merged into one (Anthropic requires
//!   alternation). `tool` messages are user-role `tool_result` blocks, so they merge with the user
//!   text around them; in a merged user message the `tool_result` blocks go first, as Anthropic
//!   requires.
//! - Empty text is left out (Anthropic rejects empty text blocks). A message left with no content
//!   is a 400, except a final empty assistant message, which is dropped (it asks for nothing).
//! - Things Anthropic cannot do and that would change the answer are a 400 naming the field,
//!   never silently dropped: content parts other than text and images (`input_audio`, `file`,
//!   ...), images that are neither `data:` nor `http(s):` URLs, `n` > 1, `response_format`
//!   `json_object`/`json_schema`, `logprobs`/`top_logprobs`, a non-empty `logit_bias`, audio output
//!   (`modalities`, `audio`), `web_search_options`, the legacy `functions`/`function_call`.
//! - Ignored because they cannot change what the caller gets back in a way it relies on: `seed`
//!   (best effort at OpenAI too), `presence_penalty`, `frequency_penalty`, `logprobs: false`,
//!   `store`, `metadata`, `service_tier`, `reasoning_effort`, `prediction`, a message's `name`, an
//!   image's `detail`, a tool's `strict`, `stream_options` (the stream translator reads
//!   `include_usage`), and any other field this module does not know.
//! - `temperature`: OpenAI allows 0..=2, Anthropic 0..=1. Values above 1 are clamped to 1 (the
//!   most random Anthropic allows); scaling would make every ordinary value (0.7) colder than
//!   asked. Outside 0..=2 is a 400, as OpenAI would answer.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};
use storycad_protocol::{CacheControl, ChatRequest, Content, ContentPart, Role, ToolChoice};

use super::TranslateError;

/// An Anthropic `POST /v1/messages` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesRequest<'a> {
    /// The provider's model name (from the route, not the caller's alias).
    pub model: &'a str,
    /// Always set: Anthropic requires it.
    pub max_tokens: u32,
    /// The system and developer messages, joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    /// Alternating user and assistant turns.
    pub messages: Vec<InputMessage<'a>>,
    /// Clamped to 0..=1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// As asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// OpenAI's `stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<&'a str>>,
    /// `Some(true)` for a streamed answer, else left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// The function tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef<'a>>>,
    /// Set only when there are tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    /// OpenAI's `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata<'a>>,
}

/// The system prompt: the system and developer messages' texts, joined. With a breakpoint it
/// is sent as one text block carrying `cache_control`, else as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPrompt {
    /// The text.
    pub text: String,
    /// Whether the prefix up to its end is a cache breakpoint.
    pub breakpoint: bool,
}

impl Serialize for SystemPrompt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Block<'t> {
            #[serde(rename = "type")]
            kind: &'static str,
            text: &'t str,
            cache_control: Ephemeral,
        }
        if self.breakpoint {
            [Block {
                kind: "text",
                text: &self.text,
                cache_control: Ephemeral::BREAKPOINT,
            }]
            .serialize(s)
        } else {
            self.text.serialize(s)
        }
    }
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputMessage<'a> {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// Never empty.
    pub content: Vec<InputBlock<'a>>,
}

/// A content block of a request message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputBlock<'a> {
    /// `{"type":"text","text":..}`
    Text {
        /// Never empty.
        text: &'a str,
        /// The caller's prompt-cache breakpoint on this part, or the Worker's.
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Ephemeral>,
    },
    /// `{"type":"image","source":..}`
    Image {
        /// Inline bytes or a URL.
        source: ImageSource<'a>,
        /// A prompt-cache breakpoint of the Worker's.
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Ephemeral>,
    },
    /// An assistant's tool call.
    ToolUse {
        /// The call id (OpenAI's `tool_calls[].id`).
        id: &'a str,
        /// The function name.
        name: &'a str,
        /// The arguments, parsed.
        input: Value,
        /// A prompt-cache breakpoint of the Worker's.
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Ephemeral>,
    },
    /// A tool's answer (OpenAI's `tool` message).
    ToolResult {
        /// The call it answers.
        tool_use_id: &'a str,
        /// Left out when the tool answered nothing.
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent<'a>>,
        /// A prompt-cache breakpoint of the Worker's.
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Ephemeral>,
    },
}

impl InputBlock<'_> {
    fn cache_control(&mut self) -> &mut Option<Ephemeral> {
        match self {
            InputBlock::Text { cache_control, .. }
            | InputBlock::Image { cache_control, .. }
            | InputBlock::ToolUse { cache_control, .. }
            | InputBlock::ToolResult { cache_control, .. } => cache_control,
        }
    }

    /// Whether the block is a breakpoint (the caller's, or the Worker's).
    fn has_breakpoint(&self) -> bool {
        match self {
            InputBlock::Text { cache_control, .. }
            | InputBlock::Image { cache_control, .. }
            | InputBlock::ToolUse { cache_control, .. }
            | InputBlock::ToolResult { cache_control, .. } => cache_control.is_some(),
        }
    }

    /// Its size in bytes as sent, roughly: the texts and arguments it holds (an image counts
    /// as nothing, so a prefix of images is not thought long enough to cache).
    fn approx_bytes(&self) -> usize {
        match self {
            InputBlock::Text { text, .. } => text.len(),
            InputBlock::Image { .. } => 0,
            InputBlock::ToolUse {
                id, name, input, ..
            } => id.len() + name.len() + serde_json::to_vec(input).map_or(0, |v| v.len()),
            InputBlock::ToolResult {
                tool_use_id,
                content,
                ..
            } => {
                tool_use_id.len()
                    + match content {
                        None => 0,
                        Some(ToolResultContent::Text(t)) => t.len(),
                        Some(ToolResultContent::Blocks(b)) => {
                            b.iter().map(InputBlock::approx_bytes).sum()
                        }
                    }
            }
        }
    }
}

/// A `cache_control` breakpoint: `{"type":"ephemeral"}`, Anthropic's 5-minute cache. A
/// caller's breakpoint is sent as this whatever it asked: a one-hour `ttl` costs twice the input
/// price to write, which the ledger does not price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ephemeral {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl Ephemeral {
    /// The breakpoint.
    pub const BREAKPOINT: Ephemeral = Ephemeral { kind: "ephemeral" };
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource<'a> {
    /// From a `data:<media type>;base64,<data>` URL.
    Base64 {
        /// `image/jpeg`, `image/png`, `image/gif` or `image/webp`.
        media_type: &'static str,
        /// The base64 text, as sent.
        data: &'a str,
    },
    /// An `http(s):` URL Anthropic fetches.
    Url {
        /// The URL, as sent.
        url: &'a str,
    },
}

/// A `tool_result`'s content: the tool message's string, or its parts as blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ToolResultContent<'a> {
    /// A plain string.
    Text(&'a str),
    /// Text and image blocks.
    Blocks(Vec<InputBlock<'a>>),
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDef<'a> {
    /// The function name.
    pub name: &'a str,
    /// The function description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// OpenAI's `parameters`, or an empty object schema.
    pub input_schema: Cow<'a, Value>,
}

/// Anthropic's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoiceOut<'a> {
    /// OpenAI `"auto"` (or no `tool_choice` with `parallel_tool_calls: false`).
    Auto {
        /// OpenAI `parallel_tool_calls: false`.
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// OpenAI `"required"`.
    Any {
        /// OpenAI `parallel_tool_calls: false`.
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// OpenAI's named function.
    Tool {
        /// The function to call.
        name: &'a str,
        /// OpenAI `parallel_tool_calls: false`.
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// OpenAI `"none"`.
    None,
}

/// Anthropic's `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata<'a> {
    /// OpenAI's `user`.
    pub user_id: &'a str,
}

/// Translate `req` for Anthropic's `upstream_model`.
///
/// `max_tokens` is always set: the caller's `max_completion_tokens`, else its `max_tokens`, else
/// `default_max_tokens` (the glue applies the plan's cap to the request before calling this).
/// Errors are 400s naming the field (see the module docs for what is refused and what ignored).
pub fn to_messages_request<'a>(
    req: &'a ChatRequest,
    upstream_model: &'a str,
    default_max_tokens: u32,
) -> Result<MessagesRequest<'a>, TranslateError> {
    check_unsupported(req)?;

    let temperature = match req.temperature {
        Some(t) if !(0.0..=2.0).contains(&t) => {
            return Err(TranslateError::new(
                "temperature",
                "temperature must be between 0 and 2",
            ))
        }
        Some(t) => Some(t.min(1.0)),
        None => None,
    };

    let (system, messages) = translate_messages(req)?;
    let tools = translate_tools(req)?;
    let tool_choice = translate_tool_choice(req, tools.is_some())?;

    Ok(MessagesRequest {
        model: upstream_model,
        max_tokens: req.output_cap().unwrap_or(default_max_tokens),
        system,
        messages,
        temperature,
        top_p: req.top_p,
        stop_sequences: req.stop.as_ref().map(|stop| match stop {
            storycad_protocol::Stop::One(s) => vec![s.as_str()],
            storycad_protocol::Stop::Many(v) => v.iter().map(String::as_str).collect(),
        }),
        stream: req.is_stream().then_some(true),
        tools,
        tool_choice,
        metadata: req.user.as_deref().map(|user_id| Metadata { user_id }),
    })
}

impl MessagesRequest<'_> {
    /// Places the Worker's prompt-cache breakpoints: after the system prompt, and after the
    /// last block of the message before the newest user turn, where the prefix up to each
    /// (tools, system, messages: Anthropic's order; estimated as bytes / 4) is at least
    /// `min_tokens`; keeps the caller's and never exceeds
    /// [`MAX_BREAKPOINTS`](crate::providers::prompt_cache::MAX_BREAKPOINTS) in all. Returns how
    /// many it placed.
    pub fn place_breakpoints(&mut self, min_tokens: u64) -> usize {
        let callers = self
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .filter(|b| b.has_breakpoint())
            .count()
            + usize::from(self.system.as_ref().is_some_and(|s| s.breakpoint));
        let mut room = crate::providers::prompt_cache::MAX_BREAKPOINTS.saturating_sub(callers);
        let mut placed = 0;
        let tokens = |bytes: usize| bytes as u64 / 4;

        let mut prefix = self
            .tools
            .as_ref()
            .map_or(0, |t| serde_json::to_vec(t).map_or(0, |v| v.len()));
        if let Some(system) = &mut self.system {
            prefix += system.text.len();
            if !system.breakpoint && room > 0 && tokens(prefix) >= min_tokens {
                system.breakpoint = true;
                room -= 1;
                placed += 1;
            }
        }

        // The conversation before the newest user turn: everything but the last message.
        let n = self.messages.len();
        if n < 2 || room == 0 || self.messages[n - 1].role != "user" {
            return placed;
        }
        prefix += self.messages[..n - 1]
            .iter()
            .flat_map(|m| &m.content)
            .map(InputBlock::approx_bytes)
            .sum::<usize>();
        if tokens(prefix) < min_tokens {
            return placed;
        }
        if let Some(last) = self.messages[n - 2].content.last_mut() {
            let mark = last.cache_control();
            if mark.is_none() {
                *mark = Some(Ephemeral::BREAKPOINT);
                placed += 1;
            }
        }
        placed
    }
}

/// [`to_messages_request`] serialized: the bytes to send.
pub fn to_messages_body(
    req: &ChatRequest,
    upstream_model: &str,
    default_max_tokens: u32,
) -> Result<Vec<u8>, TranslateError> {
    let out = to_messages_request(req, upstream_model, default_max_tokens)?;
    // Cannot fail (string keys only), but never panic in the Worker.
    serde_json::to_vec(&out)
        .map_err(|_| TranslateError::new("messages", "the request could not be serialized"))
}

fn unsupported(param: &str, what: &str) -> TranslateError {
    TranslateError::new(
        param,
        format!("{what} is not supported by Anthropic models"),
    )
}

fn check_unsupported(req: &ChatRequest) -> Result<(), TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported("n", "n > 1 (several choices)"));
    }
    if let Some(format) = &req.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(kind) => {
                return Err(unsupported(
                    "response_format",
                    &format!("response_format `{kind}`"),
                ))
            }
            None => return Err(unsupported("response_format", "this response_format")),
        }
    }
    let extra = &req.extra;
    if extra.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("logprobs", "logprobs"));
    }
    if extra
        .get("top_logprobs")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 0)
    {
        return Err(unsupported("top_logprobs", "top_logprobs"));
    }
    if extra
        .get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(unsupported("logit_bias", "logit_bias"));
    }
    if let Some(modalities) = extra.get("modalities").and_then(Value::as_array) {
        if modalities.iter().any(|m| m.as_str() != Some("text")) {
            return Err(unsupported("modalities", "output other than text"));
        }
    }
    for key in ["audio", "web_search_options", "function_call"] {
        if extra.get(key).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(key, &format!("`{key}`")));
        }
    }
    if extra
        .get("functions")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
    {
        return Err(TranslateError::new(
            "functions",
            "the legacy `functions` parameter is not supported by Anthropic models; use `tools`",
        ));
    }
    Ok(())
}

/// An Anthropic message under construction, with the OpenAI message it started from.
struct Turn<'a> {
    first_source: usize,
    message: InputMessage<'a>,
}

fn translate_messages<'a>(
    req: &'a ChatRequest,
) -> Result<(Option<SystemPrompt>, Vec<InputMessage<'a>>), TranslateError> {
    let mut system = String::new();
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(req.messages.len());

    for (i, msg) in req.messages.iter().enumerate() {
        let (role, blocks) = match msg.role {
            Role::System | Role::Developer => {
                append_system(&mut system, msg.content.as_ref(), i)?;
                continue;
            }
            Role::User => ("user", user_blocks(msg.content.as_ref(), i)?),
            Role::Assistant => ("assistant", assistant_blocks(msg, i)?),
            Role::Tool => ("user", vec![tool_result(msg, i)?]),
            // A role storycad-protocol learns later: refused until it is mapped here.
            other => {
                return Err(unsupported(
                    &format!("messages[{i}].role"),
                    &format!("the role `{}`", other.as_str()),
                ))
            }
        };
        match turns.last_mut() {
            Some(last) if last.message.role == role => last.message.content.extend(blocks),
            _ => turns.push(Turn {
                first_source: i,
                message: InputMessage {
                    role,
                    content: blocks,
                },
            }),
        }
    }

    let count = turns.len();
    let mut messages = Vec::with_capacity(count);
    for (n, mut turn) in turns.into_iter().enumerate() {
        if turn.message.content.is_empty() {
            if n + 1 == count && turn.message.role == "assistant" {
                continue;
            }
            return Err(TranslateError::new(
                format!("messages[{}].content", turn.first_source),
                "message content must not be empty for Anthropic models",
            ));
        }
        if turn.message.role == "user" {
            tool_results_first(&mut turn.message.content);
        }
        messages.push(turn.message);
    }

    let system = (!system.is_empty()).then(|| SystemPrompt {
        text: system,
        // A system part of the caller's carried a breakpoint: the system prompt is one text
        // here, so it goes at its end.
        breakpoint: system_parts_marked(req),
    });
    Ok((system, messages))
}

/// Anthropic wants a user message's `tool_result` blocks before anything else in it.
fn tool_results_first(blocks: &mut [InputBlock<'_>]) {
    let is_result = |b: &InputBlock<'_>| matches!(b, InputBlock::ToolResult { .. });
    let misplaced = blocks
        .windows(2)
        .any(|w| !is_result(&w[0]) && is_result(&w[1]));
    if misplaced {
        // Stable: keeps the order within results and within the rest.
        blocks.sort_by_key(|b| !is_result(b));
    }
}

fn append_system(
    system: &mut String,
    content: Option<&Content>,
    i: usize,
) -> Result<(), TranslateError> {
    let mut push = |text: &str| {
        if !text.is_empty() {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(text);
        }
    };
    match content {
        None => {}
        Some(Content::Text(text)) => push(text),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text { text, .. } => push(text),
                    other => {
                        return Err(TranslateError::new(
                            format!("messages[{i}].content[{j}]"),
                            format!(
                                "content part type `{}` is not supported in system messages by Anthropic models",
                                other.kind()
                            ),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

fn text_block(text: &str) -> Option<InputBlock<'_>> {
    marked_text_block(text, None)
}

fn marked_text_block<'a>(
    text: &'a str,
    cache_control: Option<&CacheControl>,
) -> Option<InputBlock<'a>> {
    (!text.is_empty()).then_some(InputBlock::Text {
        text,
        cache_control: cache_control.map(|_| Ephemeral::BREAKPOINT),
    })
}

/// Whether a text part of a system or developer message carries a `cache_control`.
fn system_parts_marked(req: &ChatRequest) -> bool {
    req.messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .filter_map(|m| match &m.content {
            Some(Content::Parts(parts)) => Some(parts),
            _ => None,
        })
        .flatten()
        .any(|p| {
            matches!(
                p,
                ContentPart::Text {
                    cache_control: Some(_),
                    ..
                }
            )
        })
}

fn unsupported_part(i: usize, j: usize, part: &ContentPart) -> TranslateError {
    let kind = part.kind();
    let message = match (part, kind) {
        // A known type that did not parse as one (`image_url` as a bare string...).
        (ContentPart::Other(_), "text" | "image_url" | "refusal") => {
            format!("malformed `{kind}` content part")
        }
        _ => format!(
            "content part type `{}` is not supported by Anthropic models",
            kind.chars().take(64).collect::<String>()
        ),
    };
    TranslateError::new(format!("messages[{i}].content[{j}]"), message)
}

/// Text and image parts (user and tool messages).
fn user_blocks(content: Option<&Content>, i: usize) -> Result<Vec<InputBlock<'_>>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Content::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text {
                        text,
                        cache_control,
                        ..
                    } => blocks.extend(marked_text_block(text, cache_control.as_ref())),
                    ContentPart::ImageUrl { image_url } => {
                        blocks.push(image_block(&image_url.url, i, j)?)
                    }
                    other => return Err(unsupported_part(i, j, other)),
                }
            }
            Ok(blocks)
        }
    }
}

fn image_block(url: &str, i: usize, j: usize) -> Result<InputBlock<'_>, TranslateError> {
    let param = || format!("messages[{i}].content[{j}].image_url.url");
    if let Some(rest) = strip_prefix_ignore_case(url, "data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(TranslateError::new(param(), "malformed data: URL"));
        };
        let Some(media_type) = strip_suffix_ignore_case(meta, ";base64") else {
            return Err(TranslateError::new(
                param(),
                "a data: image URL must be base64-encoded (`data:image/png;base64,...`)",
            ));
        };
        let media_type = match media_type.to_ascii_lowercase().as_str() {
            "image/jpeg" | "image/jpg" => "image/jpeg",
            "image/png" => "image/png",
            "image/gif" => "image/gif",
            "image/webp" => "image/webp",
            _ => {
                return Err(TranslateError::new(
                    param(),
                    format!(
                    "image type `{}` is not supported by Anthropic models (jpeg, png, gif, webp)",
                    media_type.chars().take(64).collect::<String>()
                ),
                ))
            }
        };
        if data.is_empty() {
            return Err(TranslateError::new(param(), "the data: image URL is empty"));
        }
        return Ok(InputBlock::Image {
            source: ImageSource::Base64 { media_type, data },
            cache_control: None,
        });
    }
    if strip_prefix_ignore_case(url, "https://").is_some()
        || strip_prefix_ignore_case(url, "http://").is_some()
    {
        return Ok(InputBlock::Image {
            source: ImageSource::Url { url },
            cache_control: None,
        });
    }
    Err(TranslateError::new(
        param(),
        "an image URL must be a data: URL or an http(s): URL for Anthropic models",
    ))
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn strip_suffix_ignore_case<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &s[..cut])
}

fn assistant_blocks(
    msg: &storycad_protocol::Message,
    i: usize,
) -> Result<Vec<InputBlock<'_>>, TranslateError> {
    let mut blocks = Vec::new();
    match &msg.content {
        None => {}
        Some(Content::Text(text)) => blocks.extend(text_block(text)),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text {
                        text,
                        cache_control,
                        ..
                    } => blocks.extend(marked_text_block(text, cache_control.as_ref())),
                    // What the assistant said, even if it was a refusal.
                    ContentPart::Refusal { refusal } => blocks.extend(text_block(refusal)),
                    other => return Err(unsupported_part(i, j, other)),
                }
            }
        }
    }
    for (k, call) in msg.tool_calls.iter().flatten().enumerate() {
        if call.kind != "function" {
            return Err(TranslateError::new(
                format!("messages[{i}].tool_calls[{k}].type"),
                format!(
                    "tool call type `{}` is not supported by Anthropic models",
                    call.kind
                ),
            ));
        }
        blocks.push(InputBlock::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input: parse_arguments(&call.function.arguments, i, k)?,
            cache_control: None,
        });
    }
    Ok(blocks)
}

fn parse_arguments(arguments: &str, i: usize, k: usize) -> Result<Value, TranslateError> {
    let param = || format!("messages[{i}].tool_calls[{k}].function.arguments");
    // A call without arguments is sometimes sent as "".
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(TranslateError::new(
            param(),
            "function arguments must be a JSON object",
        )),
        Err(e) => Err(TranslateError::new(
            param(),
            format!("function arguments are not valid JSON: {e}"),
        )),
    }
}

fn tool_result(
    msg: &storycad_protocol::Message,
    i: usize,
) -> Result<InputBlock<'_>, TranslateError> {
    let Some(tool_use_id) = msg.tool_call_id.as_deref() else {
        return Err(TranslateError::new(
            format!("messages[{i}].tool_call_id"),
            "a tool message needs `tool_call_id`",
        ));
    };
    let content = match &msg.content {
        None => None,
        Some(Content::Text(text)) => (!text.is_empty()).then_some(ToolResultContent::Text(text)),
        Some(content @ Content::Parts(_)) => {
            let blocks = user_blocks(Some(content), i)?;
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    Ok(InputBlock::ToolResult {
        tool_use_id,
        content,
        cache_control: None,
    })
}

fn translate_tools(req: &ChatRequest) -> Result<Option<Vec<ToolDef<'_>>>, TranslateError> {
    let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(TranslateError::new(
                format!("tools[{i}].type"),
                format!(
                    "tool type `{}` is not supported by Anthropic models",
                    tool.kind
                ),
            ));
        }
        let f = &tool.function;
        out.push(ToolDef {
            name: &f.name,
            description: f.description.as_deref(),
            input_schema: match &f.parameters {
                Some(schema) => Cow::Borrowed(schema),
                None => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
            },
        });
    }
    Ok(Some(out))
}

fn translate_tool_choice(
    req: &ChatRequest,
    has_tools: bool,
) -> Result<Option<ToolChoiceOut<'_>>, TranslateError> {
    let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
    let choice = match &req.tool_choice {
        None => ToolChoiceOut::Auto {
            disable_parallel_tool_use: disable_parallel,
        },
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => ToolChoiceOut::Auto {
                disable_parallel_tool_use: disable_parallel,
            },
            "required" => ToolChoiceOut::Any {
                disable_parallel_tool_use: disable_parallel,
            },
            "none" => ToolChoiceOut::None,
            other => {
                return Err(TranslateError::new(
                    "tool_choice",
                    format!(
                        "tool_choice `{}` is not one of none, auto, required",
                        other.chars().take(64).collect::<String>()
                    ),
                ))
            }
        },
        Some(ToolChoice::Named(named)) => ToolChoiceOut::Tool {
            name: &named.function.name,
            disable_parallel_tool_use: disable_parallel,
        },
        // A tool choice storycad-protocol learns later: refused until it is mapped here.
        Some(_) => return Err(unsupported("tool_choice", "this form of tool_choice")),
    };
    if !has_tools {
        // Anthropic refuses a tool_choice without tools; "none" and "auto" mean nothing then.
        return match choice {
            ToolChoiceOut::Any { .. } | ToolChoiceOut::Tool { .. } => Err(TranslateError::new(
                "tool_choice",
                "tool_choice requires `tools`",
            )),
            _ => Ok(None),
        };
    }
    // The default (auto, parallel allowed) is Anthropic's default too: send nothing.
    if req.tool_choice.is_none() && disable_parallel.is_none() {
        return Ok(None);
    }
    Ok(Some(choice))
}
