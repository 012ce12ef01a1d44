//! The fold of a relayed stream into the complete answer to store.

use storycad_protocol::{ChatChunk, FinishReason, ResponseAccumulator, Usage};

/// Largest stream folded into an entry; a longer one is relayed but not cached.
pub const MAX_FOLD_BYTES: usize = 8 * 1024 * 1024;

/// Folds the OpenAI event stream sent to the caller back into one complete answer, to store it.
///
/// It reads what the relays emit (whole `data: ...\n\n` events and keep-alive comments), so it
/// works the same for every provider; the chunks are folded by the protocol's
/// [`ResponseAccumulator`], as the client folds them.
#[derive(Default)]
pub struct StreamFold {
    buf: Vec<u8>,
    seen: usize,
    answer: ResponseAccumulator,
    done: bool,
    broken: bool,
}

impl StreamFold {
    /// An empty fold.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes sent to the caller.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.broken || self.done {
            return;
        }
        self.seen += bytes.len();
        if self.seen > MAX_FOLD_BYTES {
            self.broken = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            self.on_event(&event[..end]);
            if self.broken || self.done {
                return;
            }
        }
    }

    fn on_event(&mut self, event: &[u8]) {
        let Ok(text) = std::str::from_utf8(event) else {
            self.broken = true;
            return;
        };
        let Some(payload) = text.strip_prefix("data:") else {
            // A keep-alive comment.
            return;
        };
        let payload = payload.trim();
        if payload == "[DONE]" {
            self.done = true;
            return;
        }
        match serde_json::from_str::<ChatChunk>(payload) {
            // An error event ({"error":...}: every chunk field has a default, so it parses) is
            // not cacheable, nor is anything that is not a chunk.
            Ok(chunk) if !chunk.extra.contains_key("error") => self.answer.push(&chunk),
            _ => self.broken = true,
        }
    }

    /// The complete answer (JSON, `model` = `alias`), when the stream ended with `[DONE]`, had
    /// no error and every choice finished (not with `error`); `None` otherwise. `usage`: what
    /// the provider reported (the caller may not have asked for the usage chunk).
    pub fn finish(self, alias: &str, usage: Option<Usage>) -> Option<Vec<u8>> {
        if !self.done || self.broken {
            return None;
        }
        let mut answer = self.answer.finish();
        let finished = |f: &Option<FinishReason>| f.as_ref().is_some_and(|f| f.as_str() != "error");
        if answer.choices.is_empty() || !answer.choices.iter().all(|c| finished(&c.finish_reason)) {
            return None;
        }
        answer.model = alias.to_owned();
        answer.usage = usage.or(answer.usage);
        serde_json::to_vec(&answer).ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use storycad_protocol::ChatResponse;

    use super::*;
    use crate::config::ProviderKind;
    use crate::fixture;
    use crate::providers::Relay;

    /// Runs a recorded upstream stream through the provider's relay and folds what the caller
    /// would receive.
    fn relay_and_fold(kind: ProviderKind, path: &str, cut: Option<usize>) -> Option<ChatResponse> {
        let input = fixture(path);
        let input = &input[..cut.unwrap_or(input.len())];
        let mut relay = Relay::new(kind, "fast", false, vec![], 1_700_000_000);
        let mut fold = StreamFold::new();
        for piece in input.chunks(11) {
            fold.feed(&relay.feed(piece));
        }
        fold.feed(&relay.finish());
        fold.finish("fast", relay.usage())
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn folds_relayed_openai_streams() {
        let a = relay_and_fold(
            ProviderKind::OpenAiCompatible,
            "openai/chat_stream_text_usage.sse",
            None,
        )
        .unwrap();
        assert_eq!(a.model, "fast");
        assert_eq!(a.object, "chat.completion");
        assert!(!a.text().is_empty());
        assert_eq!(a.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(a.usage.unwrap().completion_tokens, 30);
        let t = relay_and_fold(
            ProviderKind::OpenAiCompatible,
            "openai/chat_stream_parallel_tool_calls_usage.sse",
            None,
        )
        .unwrap();
        let calls = t.choices[0].message.tool_calls.clone().unwrap();
        assert!(calls.len() >= 2, "{calls:?}");
        for c in &calls {
            assert!(!c.id.is_empty() && !c.function.name.is_empty());
            serde_json::from_str::<Value>(&c.function.arguments).unwrap();
        }
        assert_eq!(t.choices[0].message.content, None);
    }

    #[test]
    fn folds_relayed_anthropic_streams() {
        let a = relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_text.sse",
            None,
        )
        .unwrap();
        assert!(!a.text().is_empty());
        assert!(a.usage.is_some());
        let t = relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_tool_use.sse",
            None,
        )
        .unwrap();
        let calls = t.choices[0].message.tool_calls.clone().unwrap();
        assert_eq!(calls.len(), 1);
        serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap();
        assert_eq!(t.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn cut_and_failed_streams_are_not_folded() {
        let full = fixture("openai/chat_stream_text_usage.sse").len();
        for cut in [0, 10, full / 2, full - 16] {
            assert!(
                relay_and_fold(
                    ProviderKind::OpenAiCompatible,
                    "openai/chat_stream_text_usage.sse",
                    Some(cut)
                )
                .is_none(),
                "cut at {cut}"
            );
        }
        let full = fixture("anthropic/messages_stream_text.sse").len();
        assert!(relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_text.sse",
            Some(full / 2)
        )
        .is_none());
        assert!(relay_and_fold(
            ProviderKind::Anthropic,
            "anthropic/messages_stream_error_overloaded.sse",
            None
        )
        .is_none());
        // An error event after content, then [DONE] (not what a relay sends, but never cached).
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\n");
        f.feed(b"data: {\"error\":{\"message\":\"x\",\"code\":\"upstream_error\"}}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
        // No finish reason, or finish_reason "error".
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
        // Keep-alive comments are fine.
        let mut f = StreamFold::new();
        f.feed(b": ping\n\ndata: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_some());
    }

    #[test]
    fn a_tool_call_answer_has_no_content_despite_the_role_chunk() {
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n");
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n");
        let a: ChatResponse = serde_json::from_slice(&f.finish("m", None).unwrap()).unwrap();
        assert_eq!(a.choices[0].message.content, None);
        assert_eq!(
            a.choices[0].message.tool_calls.as_ref().unwrap()[0].id,
            "c1"
        );
        // Text stays text, even empty.
        let mut f = StreamFold::new();
        f.feed(b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        let a: ChatResponse = serde_json::from_slice(&f.finish("m", None).unwrap()).unwrap();
        assert_eq!(a.choices[0].message.content.as_deref(), Some(""));
    }

    #[test]
    fn oversized_streams_are_not_folded() {
        let mut f = StreamFold::new();
        let big = vec![b'x'; MAX_FOLD_BYTES + 1];
        f.feed(&big);
        f.feed(b"\n\ndata: [DONE]\n\n");
        assert!(f.finish("m", None).is_none());
    }
}
