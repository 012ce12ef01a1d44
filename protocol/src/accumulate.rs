//! Turns the chunks of a stream back into one [`ChatResponse`].

use std::collections::BTreeMap;

use crate::{
    ChatChunk, ChatResponse, Choice, Extra, FinishReason, FunctionCall, ResponseMessage, Role,
    ToolCall, Usage,
};

/// Folds [`ChatChunk`]s into the [`ChatResponse`] a non-streamed call would have returned:
/// text and refusals concatenated per choice, tool-call pieces merged by their `index`, the
/// last `finish_reason`, and the usage chunk. A choice's `content` is its text; `null` when it
/// has no text but tool calls (a role chunk's `"content": ""` does not make a tool call a text
/// answer), or no content at all. The client (a stream's `collect`) and the Worker's cache (a
/// relayed stream stored as one answer) both fold with it.
#[derive(Debug, Default, Clone)]
pub struct ResponseAccumulator {
    id: String,
    created: u64,
    model: String,
    system_fingerprint: Option<String>,
    usage: Option<Usage>,
    choices: BTreeMap<u32, ChoiceState>,
}

#[derive(Debug, Default, Clone)]
struct ChoiceState {
    role: Option<Role>,
    content: Option<String>,
    /// Whether some content was not empty.
    has_text: bool,
    refusal: Option<String>,
    tool_calls: BTreeMap<u32, ToolCall>,
    finish_reason: Option<FinishReason>,
}

impl ResponseAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
        }
        if self.created == 0 {
            self.created = chunk.created;
        }
        if self.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        if chunk.system_fingerprint.is_some() {
            self.system_fingerprint
                .clone_from(&chunk.system_fingerprint);
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        for c in &chunk.choices {
            let state = self.choices.entry(c.index).or_default();
            let d = &c.delta;
            if d.role.is_some() {
                state.role = d.role;
            }
            if let Some(text) = &d.content {
                state.has_text |= !text.is_empty();
                state.content.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(text) = &d.refusal {
                state.refusal.get_or_insert_with(String::new).push_str(text);
            }
            for piece in d.tool_calls.iter().flatten() {
                let call = state
                    .tool_calls
                    .entry(piece.index)
                    .or_insert_with(|| ToolCall {
                        id: String::new(),
                        kind: "function".to_owned(),
                        function: FunctionCall::default(),
                    });
                if let Some(id) = &piece.id {
                    call.id.clone_from(id);
                }
                if let Some(kind) = &piece.kind {
                    call.kind.clone_from(kind);
                }
                if let Some(f) = &piece.function {
                    if let Some(name) = &f.name {
                        call.function.name.push_str(name);
                    }
                    if let Some(args) = &f.arguments {
                        call.function.arguments.push_str(args);
                    }
                }
            }
            if c.finish_reason.is_some() {
                state.finish_reason.clone_from(&c.finish_reason);
            }
        }
    }

    /// The whole answer.
    pub fn finish(self) -> ChatResponse {
        let choices = self
            .choices
            .into_iter()
            .map(|(index, s)| Choice {
                index,
                message: ResponseMessage {
                    role: s.role.unwrap_or(Role::Assistant),
                    content: s.content.filter(|_| s.has_text || s.tool_calls.is_empty()),
                    refusal: s.refusal,
                    tool_calls: (!s.tool_calls.is_empty())
                        .then(|| s.tool_calls.into_values().collect()),
                    extra: Extra::new(),
                },
                finish_reason: s.finish_reason,
                logprobs: None,
                extra: Extra::new(),
            })
            .collect();
        ChatResponse {
            id: self.id,
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            system_fingerprint: self.system_fingerprint,
            extra: Extra::new(),
        }
    }
}
