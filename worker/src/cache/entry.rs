//! The stored entry of a cached answer, and its replay.
//!
//! `{"v":1,"route":"provider:model","answer":<the complete OpenAI answer, model = alias>}`,
//! written with `expiration_ttl` = `CACHE_TTL_SECONDS`, clamped up to KV's minimum of 60 s.
//! Only a successful answer is stored: a complete answer that passed, or a stream that ended
//! with `[DONE]` with every choice finished (no error event, not cut). A hit replays the answer
//! as JSON, or as SSE when the caller streams: per choice a role chunk, the content in a few
//! pieces, the refusal, the tool calls, the finish chunk; then the usage chunk if asked for,
//! then `[DONE]`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use storycad_protocol::{
    ChatChunk, ChatResponse, ChunkChoice, Delta, FinishReason, FunctionCallDelta, Role,
    ToolCallDelta, Usage,
};

/// Largest entry written (KV's value limit is 25 MiB).
pub const MAX_ENTRY_BYTES: usize = 20 * 1024 * 1024;

/// Content pieces a replayed stream sends per choice (at most).
const REPLAY_PIECES: usize = 4;

/// A stored entry.
#[derive(Debug, Deserialize)]
pub struct Cached {
    /// The entry's format: 1 (another is a miss).
    v: u32,
    /// The route that produced the answer (`x-storycad-route` of a hit).
    pub route: String,
    /// The complete OpenAI answer, as sent the first time.
    pub answer: Box<RawValue>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    v: u32,
    route: &'a str,
    answer: &'a RawValue,
}

/// The entry to store for `answer` (a complete OpenAI answer, JSON) produced by `route`;
/// `None` when the answer is not a JSON object or the entry would be too large.
pub fn entry(route: &str, answer: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(answer).ok()?;
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    if !raw.get().trim_start().starts_with('{') {
        return None;
    }
    let out = serde_json::to_string(&EntryOut {
        v: 1,
        route,
        answer: raw,
    })
    .ok()?;
    (out.len() <= MAX_ENTRY_BYTES).then_some(out)
}

/// Reads a stored entry; `None` for anything unreadable (treated as a miss).
pub fn parse_entry(text: &str) -> Option<Cached> {
    // One read for the version and the rest: an entry of another version is a miss, whatever
    // its shape.
    let cached: Cached = serde_json::from_str(text).ok()?;
    if cached.v != 1 {
        return None;
    }
    // Replays need it to be an answer.
    serde_json::from_str::<ChatResponse>(cached.answer.get()).ok()?;
    Some(cached)
}

impl Cached {
    /// The answer as a JSON body.
    pub fn json_body(&self) -> Vec<u8> {
        self.answer.get().as_bytes().to_vec()
    }

    /// The answer replayed as an event stream.
    pub fn sse_body(&self, include_usage: bool) -> Option<Vec<u8>> {
        let answer: ChatResponse = serde_json::from_str(self.answer.get()).ok()?;
        Some(replay_sse(&answer, include_usage))
    }
}

fn data(out: &mut Vec<u8>, chunk: &ChatChunk) {
    out.extend_from_slice(b"data: ");
    // Plain data: serialising cannot fail.
    out.extend_from_slice(&serde_json::to_vec(chunk).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

/// `text` cut into at most `n` non-empty pieces of about equal size, at character boundaries.
fn pieces(text: &str, n: usize) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let size = text.len().div_ceil(n.max(1));
    let mut out = Vec::with_capacity(n);
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// A complete answer as the event stream a provider would have sent (see the module docs).
pub fn replay_sse(answer: &ChatResponse, include_usage: bool) -> Vec<u8> {
    let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
        let mut c = ChatChunk::default();
        c.id.clone_from(&answer.id);
        c.object = "chat.completion.chunk".to_owned();
        c.created = answer.created;
        c.model.clone_from(&answer.model);
        c.choices = choices;
        c.usage = usage;
        c.system_fingerprint.clone_from(&answer.system_fingerprint);
        c
    };
    let one = |index: u32, delta: Delta, finish: Option<FinishReason>| {
        let mut choice = ChunkChoice::new(index, delta);
        choice.finish_reason = finish;
        chunk(vec![choice], None)
    };
    let mut out = Vec::new();
    for choice in &answer.choices {
        let m = &choice.message;
        let mut first = Delta::default();
        first.role = Some(Role::Assistant);
        first.content = Some(String::new());
        data(&mut out, &one(choice.index, first, None));
        for piece in pieces(m.content.as_deref().unwrap_or(""), REPLAY_PIECES) {
            let mut delta = Delta::default();
            delta.content = Some(piece.to_owned());
            data(&mut out, &one(choice.index, delta, None));
        }
        if let Some(refusal) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
            let mut delta = Delta::default();
            delta.refusal = Some(refusal.to_owned());
            data(&mut out, &one(choice.index, delta, None));
        }
        for (i, call) in m.tool_calls.iter().flatten().enumerate() {
            let mut function = FunctionCallDelta::default();
            function.name = Some(call.function.name.clone());
            function.arguments = Some(call.function.arguments.clone());
            let mut piece = ToolCallDelta::new(u32::try_from(i).unwrap_or(u32::MAX));
            piece.id = Some(call.id.clone());
            piece.kind = Some(call.kind.clone());
            piece.function = Some(function);
            let mut delta = Delta::default();
            delta.tool_calls = Some(vec![piece]);
            data(&mut out, &one(choice.index, delta, None));
        }
        data(
            &mut out,
            &one(
                choice.index,
                Delta::default(),
                Some(choice.finish_reason.clone().unwrap_or(FinishReason::Stop)),
            ),
        );
    }
    if include_usage {
        if let Some(usage) = &answer.usage {
            data(&mut out, &chunk(Vec::new(), Some(usage.clone())));
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::cache::StreamFold;
    use crate::fixture;

    fn fold_all(sse: &[u8], alias: &str, usage: Option<Usage>) -> Option<ChatResponse> {
        let mut f = StreamFold::new();
        // Any chunking.
        for piece in sse.chunks(7) {
            f.feed(piece);
        }
        f.finish(alias, usage)
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn entries_round_trip() {
        let answer = fixture("openai/chat_completion.json");
        let text = entry("openai:gpt-4o-mini", &answer).unwrap();
        let cached = parse_entry(&text).unwrap();
        assert_eq!(cached.route, "openai:gpt-4o-mini");
        let a: Value = serde_json::from_slice(&cached.json_body()).unwrap();
        let b: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(a, b);
        assert!(entry("r", b"[1]").is_none());
        assert!(entry("r", b"{broken").is_none());
        for bad in [
            "",
            "{}",
            r#"{"v":2,"route":"r","answer":{}}"#,
            r#"{"v":2,"key":"k"}"#,
            r#"{"route":"r","answer":{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[]}}"#,
            r#"{"v":1,"route":"r","answer":[1]}"#,
            r#"{"v":1,"route":"r"}"#,
        ] {
            assert!(parse_entry(bad).is_none(), "{bad}");
        }
    }

    fn events(sse: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(sse).unwrap();
        assert!(text.ends_with("\n\n"));
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }

    #[test]
    fn replay_of_a_text_answer() {
        let answer: ChatResponse =
            serde_json::from_slice(&fixture("openai/chat_completion.json")).unwrap();
        for include_usage in [false, true] {
            let sse = replay_sse(&answer, include_usage);
            let ev = events(&sse);
            assert_eq!(ev.last().unwrap(), "[DONE]");
            let chunks: Vec<ChatChunk> = ev[..ev.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
            let text: String = chunks.iter().filter_map(|c| c.text()).collect();
            assert_eq!(text, answer.text());
            let content_chunks = chunks
                .iter()
                .filter(|c| c.text().is_some_and(|t| !t.is_empty()))
                .count();
            assert!(
                (2..=REPLAY_PIECES).contains(&content_chunks),
                "{content_chunks}"
            );
            let usage_chunks: Vec<_> = chunks.iter().filter(|c| c.usage.is_some()).collect();
            assert_eq!(usage_chunks.len(), usize::from(include_usage));
            if include_usage {
                assert!(usage_chunks[0].choices.is_empty());
            }
            assert!(chunks
                .iter()
                .all(|c| c.object == "chat.completion.chunk" && c.id == answer.id));
            // Folding the replay gives the answer back.
            let back = fold_all(&sse, &answer.model, answer.usage.clone()).unwrap();
            assert_eq!(back.choices, answer.choices);
            assert_eq!(back.usage, answer.usage);
        }
    }

    #[test]
    fn replay_of_tool_calls() {
        let answer: ChatResponse =
            serde_json::from_slice(&fixture("openai/chat_completion_tool_calls.json")).unwrap();
        let sse = replay_sse(&answer, false);
        let back = fold_all(&sse, &answer.model, None).unwrap();
        assert_eq!(
            back.choices[0].message.tool_calls,
            answer.choices[0].message.tool_calls
        );
        assert_eq!(back.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn pieces_respect_characters() {
        assert_eq!(pieces("", 4), Vec::<&str>::new());
        assert_eq!(pieces("ab", 4), ["a", "b"]);
        let text = "héllo wörld ✓ done";
        let p = pieces(text, 4);
        assert!(p.len() <= 4 && p.iter().all(|s| !s.is_empty()));
        assert_eq!(p.concat(), text);
    }
}
