//! Anthropic Messages SSE events -> OpenAI chat completion chunks.
//!
//! The caller splits the upstream bytes into events (SSE framing is not this module's job) and
//! hands each one to [`StreamTranslator::on_event`], then calls [`StreamTranslator::finish`] when
//! the upstream body ends. The translator appends OpenAI SSE lines to `out`:
//!
//! | Anthropic event | OpenAI output |
//! |---|---|
//! | `message_start` | first chunk, `delta: {"role":"assistant","content":""}`; id and input usage kept |
//! | `content_block_start` text | nothing |
//! | `content_block_start` tool_use | `tool_calls[{index, id, type:"function", function:{name, arguments:""}}]` |
//! | `content_block_delta` text_delta | `delta.content` |
//! | `content_block_delta` input_json_delta | `tool_calls[{index, function:{arguments: fragment}}]` |
//! | `content_block_stop`, `ping` | nothing |
//! | `message_delta` | the finish chunk (`delta: {}`, `finish_reason` mapped); output usage kept |
//! | `message_stop` | the usage chunk (`choices: []`) if `include_usage`, then `data: [DONE]` |
//! | `error` | `data: {"error":{..}}` (mapped as [`map_error`](super::map_error)); the stream is over |
//! | anything else (a future event type) | nothing |
//!
//! OpenAI's tool call `index` counts tool calls only (0, 1, ...), whatever Anthropic's block index.
//! Thinking and server-tool blocks are not part of an OpenAI answer and are left out.
//! Data that is not JSON, or content before `message_start`, ends the stream with an
//! `upstream_error` event; [`finish`](StreamTranslator::finish) before `message_stop` ends it with
//! `stream_truncated`. After `[DONE]` or an error event, further events are ignored.

use std::borrow::Cow;

use serde::{de::IgnoredAny, Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use storycad_protocol::{codes, ErrorBody, Usage};

use super::{
    map_stop_reason,
    response::{error_info, map_error_kind, openai_usage, AnthropicUsage},
};
use crate::json_read;

const CHUNK_OBJECT: &str = "chat.completion.chunk";
const DONE: &[u8] = b"data: [DONE]\n\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Done,
    Failed,
}

/// Translates one Anthropic stream into OpenAI SSE lines.
#[derive(Debug)]
pub struct StreamTranslator {
    alias: String,
    created: u64,
    include_usage: bool,
    id: String,
    started: bool,
    input_tokens: u64,
    cache_creation_tokens: u64,
    cache_read_tokens: u64,
    output_tokens: u64,
    /// `message_delta` carried the final output count.
    output_final: bool,
    /// Bytes of text and tool arguments relayed, for an estimate when the stream is cut.
    output_bytes: u64,
    /// (Anthropic block index, OpenAI tool call index) of each tool_use block.
    tool_blocks: Vec<(u64, u32)>,
    finish_sent: bool,
    state: State,
    error: Option<ErrorBody>,
}

impl StreamTranslator {
    /// A translator answering as model `alias`, with chunk timestamps `created` (seconds since the
    /// epoch; the glue passes now). `include_usage`: the caller's `stream_options.include_usage`.
    pub fn new(alias: &str, created: u64, include_usage: bool) -> Self {
        StreamTranslator {
            alias: alias.to_owned(),
            created,
            include_usage,
            id: String::new(),
            started: false,
            input_tokens: 0,
            cache_creation_tokens: 0,
            cache_read_tokens: 0,
            output_tokens: 0,
            output_final: false,
            output_bytes: 0,
            tool_blocks: Vec::new(),
            finish_sent: false,
            state: State::Open,
            error: None,
        }
    }

    /// Handle one parsed SSE event: `event` is its `event:` field (if any), `data` its data lines
    /// joined. Appends whatever OpenAI lines it produces to `out`.
    pub fn on_event(&mut self, event: Option<&str>, data: &str, out: &mut Vec<u8>) {
        if self.state != State::Open {
            return;
        }
        let peeked;
        let name = match event {
            Some(name) => name,
            None => {
                if data.trim().is_empty() {
                    return;
                }
                // Its `type` names it (rare: Anthropic names its events). Read as a Value: the
                // Worker has that reader anyway, where a struct would be one more.
                match serde_json::from_str::<Value>(data) {
                    Ok(Value::Object(mut fields)) => {
                        peeked = match fields.remove("type") {
                            Some(Value::String(kind)) => kind,
                            _ => return self.fail_invalid_json(out),
                        };
                        peeked.as_str()
                    }
                    _ => return self.fail_invalid_json(out),
                }
            }
        };
        match name {
            "ping" => {}
            "error" => self.on_error(data, out),
            "message_start" => self.on_message_start(data, out),
            "content_block_start" => self.on_block_start(data, out),
            "content_block_delta" => self.on_block_delta(data, out),
            "content_block_stop" => self.on_block_stop(data, out),
            "message_delta" => self.on_message_delta(data, out),
            "message_stop" => self.on_message_stop(data, out),
            // Forward compatible: an event type added later carries nothing we translate.
            _ => {}
        }
    }

    /// The upstream body ended. If the stream is not over (no `message_stop`, no error event),
    /// appends a `stream_truncated` error event: a cut stream never looks like a complete one.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state == State::Open {
            self.fail(
                out,
                ErrorBody::new(
                    codes::SERVER,
                    codes::STREAM_TRUNCATED,
                    "the Anthropic stream ended before the answer was complete",
                ),
            );
        }
    }

    /// The upstream failed outside the events (a read error, a stall, broken framing): ends the
    /// stream with `error` as its last event, unless it had already ended.
    pub fn fail_with(&mut self, error: ErrorBody, out: &mut Vec<u8>) {
        if self.state == State::Open {
            self.fail(out, error);
        }
    }

    /// Whether the stream is over: `[DONE]` or an error event was written.
    pub fn is_done(&self) -> bool {
        self.state != State::Open
    }

    /// The error event that ended the stream, if one did.
    pub fn error(&self) -> Option<&ErrorBody> {
        self.error.as_ref()
    }

    /// Tokens used so far, for settling the caller's budget; `None` before `message_start`.
    ///
    /// Prompt tokens as in complete answers (input + cache writes + cache reads). Completion
    /// tokens: Anthropic's count from `message_delta` once it came; before that (a cut or failed
    /// stream) the larger of Anthropic's running count and an estimate of one token per 4 bytes
    /// relayed, so a cut stream is not charged less than it delivered.
    pub fn usage(&self) -> Option<Usage> {
        if !self.started {
            return None;
        }
        let output = if self.output_final {
            self.output_tokens
        } else {
            self.output_tokens.max(self.output_bytes.div_ceil(4))
        };
        Some(openai_usage(
            self.input_tokens,
            self.cache_creation_tokens,
            self.cache_read_tokens,
            output,
        ))
    }

    /// Whether [`StreamTranslator::usage`] is Anthropic's final count (`message_delta` came),
    /// not a running count or an estimate.
    pub fn usage_is_final(&self) -> bool {
        self.output_final
    }

    /// The upstream message id (`msg_...`), once `message_start` came; the chunks carry it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn take_usage(&mut self, usage: &AnthropicUsage) {
        if let Some(n) = usage.input_tokens {
            self.input_tokens = n;
        }
        if let Some(n) = usage.cache_creation_input_tokens {
            self.cache_creation_tokens = n;
        }
        if let Some(n) = usage.cache_read_input_tokens {
            self.cache_read_tokens = n;
        }
        if let Some(n) = usage.output_tokens {
            self.output_tokens = n;
        }
    }

    fn parse<'d, T: Deserialize<'d>>(&mut self, data: &'d str, out: &mut Vec<u8>) -> Option<T> {
        match serde_json::from_str(data) {
            Ok(v) => Some(v),
            Err(_) => {
                self.fail_invalid_json(out);
                None
            }
        }
    }

    /// `data` parsed as the event `event`, which may only come after `message_start`; `None`
    /// when the stream has failed instead.
    fn parse_started<'d, T: Deserialize<'d>>(
        &mut self,
        event: &str,
        data: &'d str,
        out: &mut Vec<u8>,
    ) -> Option<T> {
        let parsed = self.parse(data, out)?;
        self.require_started(event, out).then_some(parsed)
    }

    /// Content before `message_start` has no id to carry: the upstream broke the protocol.
    fn require_started(&mut self, event: &str, out: &mut Vec<u8>) -> bool {
        if !self.started {
            self.fail(
                out,
                ErrorBody::new(
                    codes::SERVER,
                    codes::UPSTREAM_ERROR,
                    format!("the Anthropic stream sent `{event}` before `message_start`"),
                ),
            );
        }
        self.started
    }

    /// `field` of an event, which the event must have: `None` when it does not, and the stream
    /// has failed instead (as for an event that is not JSON).
    fn need<T>(&mut self, field: Option<T>, out: &mut Vec<u8>) -> Option<T> {
        if field.is_none() {
            self.fail_invalid_json(out);
        }
        field
    }

    /// An event's `usage` object, read (twice a stream: no serde reader of its own, see
    /// [`AnthropicUsage`]'s); `None` when it is unreadable, and the stream has failed instead.
    fn usage_of(
        &mut self,
        raw: Option<&RawValue>,
        out: &mut Vec<u8>,
    ) -> Option<Option<AnthropicUsage>> {
        match raw.map(|raw| json_read::from_str::<AnthropicUsage>(raw.get())) {
            None => Some(None),
            Some(Ok(usage)) => Some(Some(usage)),
            Some(Err(_)) => {
                self.fail_invalid_json(out);
                None
            }
        }
    }

    fn on_message_start(&mut self, data: &str, out: &mut Vec<u8>) {
        let Some(ev) = self.parse::<Event<'_>>(data, out) else {
            return;
        };
        let Some(message) = self.need(ev.message, out) else {
            return;
        };
        let Some(usage) = self.usage_of(message.usage.0, out) else {
            return;
        };
        if self.started {
            return;
        }
        self.started = true;
        self.id = message.id.into_owned();
        self.take_usage(&usage.unwrap_or_default());
        self.emit(
            out,
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                tool_calls: None,
            },
            None,
        );
    }

    fn on_block_start(&mut self, data: &str, out: &mut Vec<u8>) {
        let Some(ev) = self.parse::<Event<'_>>(data, out) else {
            return;
        };
        let Some(block) = self.need(ev.content_block, out) else {
            return;
        };
        if !self.require_started("content_block_start", out) || block.kind != "tool_use" {
            return;
        }
        let index = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
        self.tool_blocks.push((ev.index, index));
        let id = block.id.as_deref().unwrap_or("");
        let name = block.name.as_deref().unwrap_or("");
        self.output_bytes += (id.len() + name.len()) as u64;
        self.emit(
            out,
            DeltaOut {
                role: None,
                content: None,
                tool_calls: Some([ToolDeltaOut {
                    index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDeltaOut {
                        name: Some(name),
                        arguments: "",
                    },
                }]),
            },
            None,
        );
    }

    fn on_block_delta(&mut self, data: &str, out: &mut Vec<u8>) {
        let Some(ev) = self.parse::<Event<'_>>(data, out) else {
            return;
        };
        let Some(delta) = self.need(ev.delta, out) else {
            return;
        };
        // A content delta names its type.
        let Some(kind) = self.need(delta.kind.as_deref(), out) else {
            return;
        };
        if !self.require_started("content_block_delta", out) {
            return;
        }
        match kind {
            "text_delta" if !delta.text.is_empty() => {
                self.output_bytes += delta.text.len() as u64;
                self.emit(
                    out,
                    DeltaOut {
                        role: None,
                        content: Some(&delta.text),
                        tool_calls: None,
                    },
                    None,
                );
            }
            "input_json_delta" if !delta.partial_json.is_empty() => {
                let Some(&(_, index)) = self
                    .tool_blocks
                    .iter()
                    .rev()
                    .find(|(block, _)| *block == ev.index)
                else {
                    return;
                };
                self.output_bytes += delta.partial_json.len() as u64;
                self.emit(
                    out,
                    DeltaOut {
                        role: None,
                        content: None,
                        tool_calls: Some([ToolDeltaOut {
                            index,
                            id: None,
                            kind: None,
                            function: FunctionDeltaOut {
                                name: None,
                                arguments: &delta.partial_json,
                            },
                        }]),
                    },
                    None,
                );
            }
            // Thinking, signatures, citations: not part of an OpenAI answer.
            _ => {}
        }
    }

    fn on_block_stop(&mut self, data: &str, out: &mut Vec<u8>) {
        // Nothing to send; only a malformed or early event matters (it ends the stream).
        let _ = self.parse_started::<IgnoredAny>("content_block_stop", data, out);
    }

    fn on_message_delta(&mut self, data: &str, out: &mut Vec<u8>) {
        let Some(ev) = self.parse::<Event<'_>>(data, out) else {
            return;
        };
        let Some(delta) = self.need(ev.delta, out) else {
            return;
        };
        let Some(usage) = self.usage_of(ev.usage, out) else {
            return;
        };
        if !self.require_started("message_delta", out) {
            return;
        }
        if let Some(usage) = &usage {
            self.take_usage(usage);
            if usage.output_tokens.is_some() {
                self.output_final = true;
            }
        }
        if !self.finish_sent {
            let reason = delta.stop_reason.as_deref().unwrap_or("end_turn");
            self.emit_finish(out, reason);
        }
    }

    fn on_message_stop(&mut self, data: &str, out: &mut Vec<u8>) {
        if self
            .parse_started::<IgnoredAny>("message_stop", data, out)
            .is_none()
        {
            return;
        }
        if !self.finish_sent {
            self.emit_finish(out, "end_turn");
        }
        if self.include_usage {
            if let Some(usage) = self.usage() {
                let chunk = ChunkOut {
                    id: &self.id,
                    object: CHUNK_OBJECT,
                    created: self.created,
                    model: &self.alias,
                    choices: &[],
                    usage: Some(&usage),
                };
                if !write_data(out, &chunk) {
                    return self.fail_internal(out);
                }
            }
        }
        if self.state == State::Open {
            out.extend_from_slice(DONE);
            self.state = State::Done;
        }
    }

    fn on_error(&mut self, data: &str, out: &mut Vec<u8>) {
        let Some(ev) = self.parse::<Event<'_>>(data, out) else {
            return;
        };
        // `{"type", "message"}`, read as a Value (a once-a-stream event: no reader of its own).
        let error: Option<Value> = match ev.error.map(|raw| serde_json::from_str(raw.get())) {
            None => None,
            Some(Ok(error)) => Some(error),
            Some(Err(_)) => return self.fail_invalid_json(out),
        };
        let (kind, message) = match error.as_ref().map(error_info) {
            None => (None, None),
            Some(Ok(info)) => info,
            Some(Err(_)) => return self.fail_invalid_json(out),
        };
        // No HTTP status mid-stream: 502 makes an unknown type an upstream_error.
        let (_, body) = map_error_kind(502, kind.or(Some("api_error")), message);
        self.fail(out, body);
    }

    fn emit_finish(&mut self, out: &mut Vec<u8>, stop_reason: &str) {
        self.finish_sent = true;
        let reason = map_stop_reason(stop_reason);
        self.emit(
            out,
            DeltaOut {
                role: None,
                content: None,
                tool_calls: None,
            },
            Some(reason.as_str()),
        );
    }

    fn emit(&mut self, out: &mut Vec<u8>, delta: DeltaOut<'_>, finish_reason: Option<&str>) {
        let choices = [ChoiceOut {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        let chunk = ChunkOut {
            id: &self.id,
            object: CHUNK_OBJECT,
            created: self.created,
            model: &self.alias,
            choices: &choices,
            usage: None,
        };
        if !write_data(out, &chunk) {
            self.fail_internal(out);
        }
    }

    fn fail_invalid_json(&mut self, out: &mut Vec<u8>) {
        self.fail(
            out,
            ErrorBody::new(
                codes::SERVER,
                codes::UPSTREAM_ERROR,
                "the Anthropic stream sent an event that is not valid JSON",
            ),
        );
    }

    fn fail_internal(&mut self, out: &mut Vec<u8>) {
        self.fail(
            out,
            ErrorBody::new(
                codes::SERVER,
                codes::INTERNAL,
                "the stream could not be translated",
            ),
        );
    }

    /// Write `body` as the stream's last event.
    fn fail(&mut self, out: &mut Vec<u8>, body: ErrorBody) {
        self.state = State::Failed;
        if !write_data(out, &body) {
            out.extend_from_slice(
                br#"data: {"error":{"message":"the stream could not be translated","type":"server_error","code":"internal_error","param":null}}"#,
            );
            out.extend_from_slice(b"\n\n");
        }
        self.error = Some(body);
    }
}

/// `data: <json>\n\n`; on a serialization failure (not expected) `out` is left as it was.
fn write_data<T: Serialize>(out: &mut Vec<u8>, value: &T) -> bool {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        return false;
    }
    out.extend_from_slice(b"\n\n");
    true
}

// ---- Anthropic events (only the fields we read; padding and unknown fields are fine) ----

/// Every event's fields, flat: each handler takes those of its event, and requires the ones
/// it must have ([`StreamTranslator::need`]). One serde reader for every event type: the wasm
/// has a copy of serde_json's struct reader per type (~2 KB each), and an event is read once.
#[derive(Deserialize)]
struct Event<'a> {
    /// `content_block_*`: the block's index.
    #[serde(default)]
    index: u64,
    /// `message_start`.
    #[serde(borrow, default)]
    message: Option<StartMessage<'a>>,
    /// `content_block_start`.
    #[serde(borrow, default)]
    content_block: Option<BlockStartBody<'a>>,
    /// `content_block_delta` (`type`, `text`, `partial_json`) and `message_delta`
    /// (`stop_reason`).
    #[serde(borrow, default)]
    delta: Option<DeltaBody<'a>>,
    /// `message_delta` (`null`: none).
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    /// `error`.
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    /// Missing: none; `null` is not a usage object.
    #[serde(borrow, default)]
    usage: PresentRaw<'a>,
}

/// A field's raw JSON when the field is there, `null` included (serde reads a `null` `Option`
/// as `None`).
#[derive(Default)]
struct PresentRaw<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for PresentRaw<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| PresentRaw(Some(raw)))
    }
}

#[derive(Deserialize)]
struct BlockStartBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(borrow, default)]
    partial_json: Cow<'a, str>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

// ---- OpenAI chunks, serialized straight into `out` ----

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Usage>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolDeltaOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}
