//! The stream relay: upstream SSE bytes in, caller SSE bytes out, one event at a time.
//!
//! A pure state machine, so it is tested on the host at every chunk boundary. Each event goes
//! out as soon as its blank line arrives; nothing waits for the end of the stream. On the way:
//! `model` becomes the caller's alias, `usage` is captured for metering, the usage-only chunk is
//! dropped unless the caller asked for it, and the stream always ends with `data: [DONE]` or an
//! error event, never silently.

use storycad_protocol::{codes, ErrorBody, Usage};

use super::rewrite::RawObject;
use crate::error::{scrub_message, shorten, UpstreamError};
pub use crate::providers::sse::MAX_EVENT_BYTES;
use crate::providers::sse::{Frame, SseFramer};
use crate::providers::Outcome;

/// The relay for one stream.
#[derive(Debug)]
pub struct OpenAiStream {
    alias: String,
    forward_usage: bool,
    scrub: Vec<String>,
    framer: SseFramer,
    outcome: Outcome,
    usage: Option<Usage>,
    chunks: u64,
}

impl OpenAiStream {
    /// A relay answering as `alias`. `forward_usage`: whether the caller asked for the usage
    /// chunk. `scrub`: strings that must never reach the caller (the key, the base URL).
    pub fn new(alias: &str, forward_usage: bool, scrub: Vec<String>) -> Self {
        OpenAiStream {
            alias: alias.to_owned(),
            forward_usage,
            scrub,
            // No BOM handling: OpenAI sends none, and the relay has always framed bytes as sent.
            framer: SseFramer::new(false, MAX_EVENT_BYTES),
            outcome: Outcome::Open,
            usage: None,
            chunks: 0,
        }
    }

    /// Feeds bytes from the upstream; returns the bytes to send to the caller now (possibly
    /// none: an incomplete event waits for its end).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        // The framer is moved out while it calls back into `self` (no allocation: an empty
        // framer owns nothing), then put back.
        let mut framer = std::mem::take(&mut self.framer);
        framer.feed(bytes, |frame| self.on_frame(frame, &mut out));
        self.framer = framer;
        out
    }

    /// The upstream body ended. Returns the last bytes for the caller: the rest of a final event
    /// that lacked its blank line, and a `stream_truncated` error event unless `[DONE]` came
    /// (`upstream_error` instead when the body was not an event stream at all, e.g. JSON).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        let mut framer = std::mem::take(&mut self.framer);
        framer.finish(|frame| self.on_frame(frame, &mut out));
        let garbage = framer.not_an_event_stream();
        self.framer = framer;
        if !self.is_closed() && garbage {
            self.close_with(&UpstreamError::BadResponse.body(), &mut out);
        }
        if !self.is_closed() {
            let body = ErrorBody::new(
                codes::SERVER,
                codes::STREAM_TRUNCATED,
                "The upstream stream ended before it was complete.",
            );
            self.close_with(&body, &mut out);
            self.outcome = Outcome::Truncated;
        }
        out
    }

    /// The upstream failed while streaming (a read error, a stall): ends the stream with an
    /// error event for `error`.
    pub fn fail(&mut self, error: &UpstreamError) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.is_closed() {
            self.close_with(&error.body(), &mut out);
        }
        out
    }

    /// Whether the stream has ended (nothing more will be sent).
    pub fn is_closed(&self) -> bool {
        self.outcome != Outcome::Open
    }

    /// How it ended.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// The usage the upstream reported, once its usage chunk has passed.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// How many chunks were relayed to the caller.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// One frame from the upstream; returns whether the stream is still open.
    fn on_frame(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) -> bool {
        match frame {
            // The event name is ignored: OpenAI sends none.
            Frame::Event {
                data, terminated, ..
            } => {
                // Be lenient with a last event that lacks its blank line, but only when it is
                // whole: a cut-off JSON object is truncation, not a malformed upstream.
                if terminated || data == "[DONE]" || RawObject::parse(data).is_ok() {
                    self.dispatch(data, out);
                }
            }
            Frame::Comment(comment) => {
                let Ok(comment) = std::str::from_utf8(comment) else {
                    self.close_with(&UpstreamError::BadResponse.body(), out);
                    return false;
                };
                // Keep-alives: pass them on so the caller's connection stays warm too. Whole
                // events are all that has been sent so far, so a comment cannot split one.
                out.push(b':');
                out.extend_from_slice(comment.as_bytes());
                out.extend_from_slice(b"\n\n");
            }
            Frame::NotUtf8 | Frame::TooLarge => {
                self.close_with(&UpstreamError::BadResponse.body(), out);
            }
        }
        !self.is_closed()
    }

    fn dispatch(&mut self, data: &str, out: &mut Vec<u8>) {
        if data.trim() == "[DONE]" {
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.outcome = Outcome::Done;
            return;
        }
        let Ok(object) = RawObject::parse(data) else {
            self.close_with(&UpstreamError::BadResponse.body(), out);
            return;
        };
        if object.has("error") {
            let body = self.upstream_error_body(&object);
            self.close_with(&body, out);
            return;
        }
        if let Some(usage) = object.usage() {
            self.usage = Some(usage);
            if object.has_no_choices() && !self.forward_usage {
                return;
            }
        }
        let mut json = object.to_json_with_model(&self.alias);
        // Data lines are joined with "\n", so a value may hold one (JSON whitespace: a string
        // cannot). Sent as is, it would end the event's one `data:` line early.
        if json.contains('\n') {
            json = json.replace('\n', " ");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(b"\n\n");
        self.chunks += 1;
    }

    /// The upstream's own error event, passed on with its type and code, its message scrubbed.
    fn upstream_error_body(&self, object: &RawObject<'_>) -> ErrorBody {
        let error: serde_json::Value = object
            .get("error")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default();
        let text = |key: &str| {
            error
                .get(key)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let scrub: Vec<&str> = self.scrub.iter().map(String::as_str).collect();
        let message = text("message")
            .map(|m| scrub_message(m, &scrub))
            .unwrap_or_else(|| "The upstream provider failed during the stream.".to_owned());
        let kind = text("type").map_or(codes::SERVER.to_owned(), |t| shorten(t, 64));
        let code = text("code").map_or(codes::UPSTREAM_ERROR.to_owned(), |c| shorten(c, 64));
        ErrorBody::new(&kind, &code, message)
    }

    fn close_with(&mut self, body: &ErrorBody, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        // ErrorBody is plain strings: it always serialises.
        out.extend_from_slice(&serde_json::to_vec(body).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        self.outcome = Outcome::Failed(
            body.error
                .code
                .clone()
                .unwrap_or_else(|| codes::UPSTREAM_ERROR.to_owned()),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const ALIAS: &str = "storycad-fast";

    fn fixture(name: &str) -> Vec<u8> {
        crate::fixture(&format!("openai/{name}"))
    }

    fn relay(forward_usage: bool) -> OpenAiStream {
        OpenAiStream::new(ALIAS, forward_usage, vec!["sk-secret-key".into()])
    }

    /// Feeds `input` in pieces cut at `cuts`, then ends it.
    fn run_cut(r: &mut OpenAiStream, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts {
            out.extend(r.feed(&input[start..c]));
            start = c;
        }
        out.extend(r.feed(&input[start..]));
        out.extend(r.finish());
        out
    }

    fn run(r: &mut OpenAiStream, input: &[u8]) -> Vec<u8> {
        run_cut(r, input, &[])
    }

    /// The `data:` payloads of an SSE text.
    fn events(out: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(
            text.is_empty() || text.ends_with("\n\n"),
            "unterminated: {text:?}"
        );
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap_or(e).to_owned())
            .collect()
    }

    fn json(e: &str) -> Value {
        serde_json::from_str(e).unwrap()
    }

    /// What the relay should send for a recorded stream: each event with the alias as model.
    fn expected(input: &[u8], keep_usage: bool) -> Vec<u8> {
        let text = std::str::from_utf8(input).unwrap();
        let mut out = String::new();
        for e in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
            let data = e.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                out.push_str("data: [DONE]\n\n");
                continue;
            }
            let v = json(data);
            if v["choices"].as_array().unwrap().is_empty() && !keep_usage {
                continue;
            }
            let model = format!("\"model\":{}", serde_json::to_string(&v["model"]).unwrap());
            out.push_str(&format!(
                "data: {}\n\n",
                data.replace(&model, &format!("\"model\":\"{ALIAS}\""))
            ));
        }
        out.into_bytes()
    }

    #[test]
    fn recorded_streams_pass_with_the_alias() {
        for name in [
            "chat_stream_text_usage.sse",
            "chat_stream_tool_call_usage.sse",
            "chat_stream_parallel_tool_calls_usage.sse",
            "chat_stream_refusal_usage.sse",
        ] {
            let input = fixture(name);
            for keep in [true, false] {
                let mut r = relay(keep);
                let out = run(&mut r, &input);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(expected(&input, keep)).unwrap(),
                    "{name} keep_usage={keep}"
                );
                assert_eq!(r.outcome(), &Outcome::Done);
                assert!(r.usage().is_some(), "{name}");
            }
        }
    }

    #[test]
    fn usage_chunk_kept_only_when_asked() {
        let input = fixture("chat_stream_text_usage.sse");
        let mut kept = relay(true);
        let with = events(&run(&mut kept, &input));
        let mut dropped = relay(false);
        let without = events(&run(&mut dropped, &input));
        assert_eq!(with.len(), without.len() + 1);
        let usage_event = json(&with[with.len() - 2]);
        assert_eq!(usage_event["usage"]["completion_tokens"], 30);
        assert_eq!(usage_event["model"], ALIAS);
        assert!(without.iter().all(|e| !e.contains("\"usage\"")));
        // Metered either way.
        for r in [&kept, &dropped] {
            let u = r.usage().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.total_tokens),
                (14, 30, 44)
            );
        }
        assert_eq!(without.last().unwrap(), "[DONE]");
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let input = fixture("chat_stream_tool_call_usage.sse");
        let mut whole = relay(false);
        let reference = run(&mut whole, &input);
        for cut in 0..=input.len() {
            let mut r = relay(false);
            assert_eq!(run_cut(&mut r, &input, &[cut]), reference, "cut at {cut}");
        }
        // And one byte at a time.
        let mut r = relay(false);
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(run_cut(&mut r, &input, &cuts), reference);
        assert_eq!(r.outcome(), &Outcome::Done);
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let lf = fixture("chat_stream_text_usage.sse");
        let mut r = relay(true);
        let reference = run(&mut r, &lf);
        let text = String::from_utf8(lf).unwrap();
        for ending in ["\r\n", "\r"] {
            let input = text.replace('\n', ending).into_bytes();
            for cut in 0..=input.len() {
                let mut r = relay(true);
                assert_eq!(
                    run_cut(&mut r, &input, &[cut]),
                    reference,
                    "{ending:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn each_event_is_relayed_as_soon_as_it_completes() {
        let mut r = relay(false);
        let first = b"data: {\"id\":\"a\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n";
        assert!(r.feed(first).is_empty(), "no blank line yet");
        let out = r.feed(b"\n");
        assert_eq!(events(&out).len(), 1);
        assert_eq!(json(&events(&out)[0])["model"], ALIAS);
        assert_eq!(r.chunks(), 1);
        assert!(!r.is_closed());
    }

    #[test]
    fn missing_done_is_a_truncation_error() {
        let input = fixture("chat_stream_text.sse");
        let text = std::str::from_utf8(&input).unwrap();
        let cut = text.rfind("data: [DONE]").unwrap();
        let mut r = relay(false);
        let out = run(&mut r, &input[..cut]);
        let ev = events(&out);
        let last = json(ev.last().unwrap());
        assert_eq!(last["error"]["code"], "stream_truncated");
        assert_eq!(last["error"]["type"], "server_error");
        assert_eq!(r.outcome(), &Outcome::Truncated);
        assert!(!out.ends_with(b"data: [DONE]\n\n"));

        // Cut in the middle of an event: that event is not sent, the error is.
        let mid = text.find("\"content\":\" unable\"").unwrap();
        let mut r = relay(false);
        let ev = events(&run(&mut r, &input[..mid]));
        assert_eq!(ev.len(), 3, "two whole chunks, then the error: {ev:?}");
        assert_eq!(json(&ev[2])["error"]["code"], "stream_truncated");

        // An empty upstream body.
        let mut r = relay(false);
        let ev = events(&run(&mut r, b""));
        assert_eq!(json(&ev[0])["error"]["code"], "stream_truncated");
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        for tail in ["data: [DONE]", "data: [DONE]\n", "data: [DONE]\r\n"] {
            let mut r = relay(false);
            let ev = events(&run(&mut r, tail.as_bytes()));
            assert_eq!(ev, ["[DONE]"], "{tail:?}");
            assert_eq!(r.outcome(), &Outcome::Done);
        }
    }

    #[test]
    fn upstream_error_event_is_forwarded_scrubbed() {
        let input = b"data: {\"id\":\"a\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n\
data: {\"error\":{\"message\":\"overloaded; key sk-secret-key at https://api.example/v1\",\"type\":\"server_error\",\"code\":\"overloaded\"}}\n\n\
data: {\"id\":\"a\",\"model\":\"m\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        let mut r = relay(false);
        let out = run(&mut r, input);
        let ev = events(&out);
        assert_eq!(ev.len(), 2, "nothing after the error: {ev:?}");
        let err = json(&ev[1]);
        assert_eq!(err["error"]["code"], "overloaded");
        assert_eq!(err["error"]["type"], "server_error");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("sk-secret-key"));
        assert!(!text.contains("api.example"));
        assert_eq!(r.outcome(), &Outcome::Failed("overloaded".into()));
    }

    #[test]
    fn failure_mid_stream_ends_with_its_error() {
        let mut r = relay(false);
        let first = r.feed(b"data: {\"model\":\"m\",\"choices\":[]}\n\ndata: {\"mod");
        assert_eq!(events(&first).len(), 1);
        let out = r.fail(&UpstreamError::Timeout);
        assert_eq!(json(&events(&out)[0])["error"]["code"], "upstream_timeout");
        assert!(r.feed(b"el\":1}\n\n").is_empty());
        assert!(r.finish().is_empty());
        assert!(r.fail(&UpstreamError::Network).is_empty());
    }

    #[test]
    fn malformed_upstream_data_is_an_error_not_a_silent_drop() {
        for bad in [
            &b"data: {not json}\n\n"[..],
            b"data: [1,2]\n\n",
            b"data: \xff\n\n",
        ] {
            let mut r = relay(false);
            let ev = events(&run(&mut r, bad));
            assert_eq!(ev.len(), 1);
            assert_eq!(json(&ev[0])["error"]["code"], "upstream_error");
        }
    }

    #[test]
    fn an_endless_line_is_cut_off() {
        let mut r = relay(false);
        let mut out = r.feed(b"data: {\"x\":\"");
        let block = vec![b'a'; 1024 * 1024];
        for _ in 0..5 {
            out.extend(r.feed(&block));
        }
        let ev = events(&out);
        assert_eq!(json(&ev[0])["error"]["code"], "upstream_error");
        assert!(r.is_closed());
    }

    #[test]
    fn keep_alive_comments_pass_and_other_fields_are_ignored() {
        let input = b": keep-alive\n\nevent: message\nid: 7\nretry: 100\n: ping\ndata: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{}}]}\n\ndata: [DONE]\n\n";
        let mut r = relay(false);
        let out = String::from_utf8(run(&mut r, input)).unwrap();
        assert_eq!(
            out,
            format!(": keep-alive\n\n: ping\n\ndata: {{\"model\":\"{ALIAS}\",\"choices\":[{{\"index\":0,\"delta\":{{}}}}]}}\n\ndata: [DONE]\n\n")
        );
    }

    #[test]
    fn multi_line_data_is_joined() {
        let input = b"data: {\"model\":\"m\",\ndata: \"choices\":[]}\n\ndata: [DONE]\n\n";
        let mut r = relay(true);
        let ev = events(&run(&mut r, input));
        assert_eq!(json(&ev[0])["model"], ALIAS);
        assert_eq!(ev[1], "[DONE]");
    }

    #[test]
    fn nothing_after_done() {
        let mut r = relay(false);
        let out = r.feed(b"data: [DONE]\n\ndata: {\"model\":\"m\",\"choices\":[]}\n\n");
        assert_eq!(events(&out), ["[DONE]"]);
        assert!(r.feed(b"data: [DONE]\n\n").is_empty());
        assert!(r.finish().is_empty());
    }
}
