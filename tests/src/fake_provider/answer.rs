//! The deterministic answer: what the fake provider "generates" for a prompt.

use serde_json::Value;

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The whole echo was sent.
    Stop,
    /// The caller's output-token cap cut it.
    Length,
    /// The answer is a tool call (`fault:tool-call`).
    ToolCall,
}

/// The tool an answer calls (`fault:tool-call`); its arguments are the answer's chunks.
#[derive(Debug, Clone)]
pub(crate) struct ToolUse {
    pub id: String,
    pub name: String,
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub id: String,
    pub model: String,
    pub created: u64,
    /// The content pieces, one per streamed event (and one "token" each).
    pub chunks: Vec<String>,
    pub finish: Finish,
    pub prompt_tokens: u64,
    /// Set when the answer is a tool call; `chunks` are then its arguments' pieces.
    pub tool: Option<ToolUse>,
    /// The part of `prompt_tokens` read from and written to the prompt cache.
    pub cache: super::CacheUsage,
}

impl Answer {
    pub fn text(&self) -> String {
        self.chunks.concat()
    }

    pub fn completion_tokens(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// The prompt tokens neither read from nor written to the cache (Anthropic's
    /// `input_tokens`).
    pub fn fresh_prompt_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cache.read + self.cache.write)
    }
}

/// The echo of `last_user`, as content pieces: `"echo:"`, then `" <word>"` for each
/// whitespace-separated word.
pub fn echo_chunks(last_user: &str) -> Vec<String> {
    let mut chunks = vec!["echo:".to_owned()];
    chunks.extend(last_user.split_whitespace().map(|w| format!(" {w}")));
    chunks
}

/// Whitespace-separated words in a text.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The text of a message `content`: a string, or the `text` of each text part/block joined by
/// spaces (OpenAI content parts and Anthropic content blocks both use `{"type":"text","text"}`).
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text of the last message whose role is `user`.
pub(crate) fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// Words in every message's text.
pub(crate) fn message_words(messages: &[Value]) -> u64 {
    messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(|c| words(&content_text(c)))
        .sum()
}

/// Builds the answer, cutting it at `max_tokens` pieces when that is smaller.
pub(crate) fn build(
    id: String,
    model: String,
    last_user: &str,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
) -> Answer {
    let mut chunks = echo_chunks(last_user);
    let mut finish = Finish::Stop;
    if let Some(max) = max_tokens {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if max < chunks.len() {
            chunks.truncate(max);
            finish = Finish::Length;
        }
    }
    Answer {
        id,
        model,
        created: now_secs(),
        chunks,
        finish,
        prompt_tokens,
        tool: None,
        cache: super::CacheUsage::default(),
    }
}

/// The answer turned into a call of tool `name` with arguments `{"text":"<last_user after its
/// first word>"}`, in three pieces that join into that JSON.
pub(crate) fn tool_call(mut answer: Answer, id: String, name: String, last_user: &str) -> Answer {
    let rest: Vec<&str> = last_user.split_whitespace().skip(1).collect();
    let text = serde_json::to_string(&rest.join(" ")).unwrap_or_else(|_| "\"\"".to_owned());
    answer.chunks = vec!["{\"text\": ".to_owned(), text, "}".to_owned()];
    answer.finish = Finish::ToolCall;
    answer.tool = Some(ToolUse { id, name });
    answer
}

/// The answer turned into `bytes` of content in pieces of [`super::fault::BIG_PIECE`] bytes
/// (`fault:big`): each piece a token, the last one shorter if need be; never cut by
/// `max_tokens` (it exists to be large).
pub(crate) fn big(mut answer: Answer, bytes: u64) -> Answer {
    let piece = super::fault::BIG_PIECE;
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    answer.chunks = (0..bytes.div_ceil(piece))
        .map(|i| "x".repeat(piece.min(bytes - i * piece)))
        .collect();
    answer.finish = Finish::Stop;
    answer
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn echo_is_split_per_word() {
        assert_eq!(
            echo_chunks("hi  there\nyou"),
            ["echo:", " hi", " there", " you"]
        );
        assert_eq!(echo_chunks(""), ["echo:"]);
    }

    #[test]
    fn texts_and_words() {
        let messages = vec![
            json!({"role":"system","content":"be brief"}),
            json!({"role":"user","content":[{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"three"}]}),
            json!({"role":"assistant","content":"ok"}),
            json!({"role":"user","content":"last words here"}),
        ];
        assert_eq!(last_user_text(&messages), "last words here");
        assert_eq!(message_words(&messages), 2 + 3 + 1 + 3);
    }

    #[test]
    fn max_tokens_cuts() {
        let a = build("i".into(), "m".into(), "a b c d", 4, Some(2));
        assert_eq!(a.text(), "echo: a");
        assert_eq!(a.finish, Finish::Length);
        let a = build("i".into(), "m".into(), "a b", 2, Some(3));
        assert_eq!(a.text(), "echo: a b");
        assert_eq!(a.finish, Finish::Stop);
        assert_eq!(a.completion_tokens(), 3);
    }
}
