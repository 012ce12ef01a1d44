//! Anthropic SSE streams (recorded) -> OpenAI SSE, checked by reading every emitted chunk back.

use serde_json::{json, Value};
use storycad_protocol::{ChatChunk, ErrorBody, FinishReason, Role};
use storycad_worker::providers::anthropic::StreamTranslator;

const CREATED: u64 = 1_764_000_000;
const ALIAS: &str = "storycad-fast";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Test-only SSE framing, as the spec has it: an event is dispatched at its blank line (an
/// unterminated event at the end of the body is not); `data:` lines are joined with `\n`; one
/// space after the colon is dropped; comments are skipped.
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    let mut name: Option<String> = None;
    let mut data: Option<String> = None;
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push((name.take(), d));
            }
            name = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    events
}

/// Feed every event, then end the body.
fn run(tr: &mut StreamTranslator, events: &[(Option<String>, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in events {
        tr.on_event(name.as_deref(), data, &mut out);
    }
    tr.finish(&mut out);
    out
}

/// What the OpenAI stream said, read back with the protocol's types.
#[derive(Debug, Default)]
struct Folded {
    chunks: Vec<ChatChunk>,
    content: String,
    role_first: bool,
    /// (id, name, arguments) by tool call index.
    tool_calls: Vec<(String, String, String)>,
    finish: Vec<FinishReason>,
    usage_chunks: Vec<ChatChunk>,
    done: usize,
    done_last: bool,
    error: Option<ErrorBody>,
    error_last: bool,
}

fn fold(out: &[u8]) -> Folded {
    let text = std::str::from_utf8(out).expect("UTF-8");
    assert!(text.ends_with("\n\n"), "every event ends with a blank line");
    let events: Vec<&str> = text[..text.len() - 2].split("\n\n").collect();
    let mut f = Folded::default();
    for (n, event) in events.iter().enumerate() {
        let last = n + 1 == events.len();
        let data = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not a data line: {event:?}"));
        assert!(!data.contains('\n'), "one line per event");
        if data == "[DONE]" {
            f.done += 1;
            f.done_last = last;
            continue;
        }
        let value: Value = serde_json::from_str(data).expect("JSON");
        if value.get("error").is_some() {
            f.error = Some(serde_json::from_value(value).expect("an ErrorBody"));
            f.error_last = last;
            continue;
        }
        let chunk: ChatChunk = serde_json::from_value(value).expect("a ChatChunk");
        if chunk.choices.is_empty() {
            f.usage_chunks.push(chunk);
            continue;
        }
        let choice = &chunk.choices[0];
        assert_eq!(choice.index, 0);
        if f.chunks.is_empty() {
            f.role_first = choice.delta.role == Some(Role::Assistant);
        } else {
            assert_eq!(choice.delta.role, None, "role only on the first chunk");
        }
        if let Some(c) = &choice.delta.content {
            f.content.push_str(c);
        }
        for call in choice.delta.tool_calls.iter().flatten() {
            let i = call.index as usize;
            if call.id.is_some() {
                assert_eq!(i, f.tool_calls.len(), "tool call indexes count 0, 1, ...");
                assert_eq!(call.kind.as_deref(), Some("function"));
                f.tool_calls.push((
                    call.id.clone().expect("id"),
                    call.function
                        .as_ref()
                        .and_then(|x| x.name.clone())
                        .expect("name on the first piece"),
                    String::new(),
                ));
            }
            let args = call.function.as_ref().and_then(|x| x.arguments.as_deref());
            f.tool_calls[i].2.push_str(args.unwrap_or(""));
        }
        if let Some(r) = &choice.finish_reason {
            f.finish.push(r.clone());
        }
        f.chunks.push(chunk);
    }
    f
}

fn assert_envelope(f: &Folded, id: &str) {
    for c in f.chunks.iter().chain(&f.usage_chunks) {
        assert_eq!(c.id, id);
        assert_eq!(c.object, "chat.completion.chunk");
        assert_eq!(c.created, CREATED);
        assert_eq!(c.model, ALIAS);
    }
}

#[test]
fn basic_stream_gives_the_exact_openai_bytes() {
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let out = run(
        &mut tr,
        &sse_events(&format!(
            "{}\n\n",
            fixture("messages_stream_basic_fixture.sse")
        )),
    );
    let head = r#"{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","object":"chat.completion.chunk","created":1764000000,"model":"storycad-fast","choices":"#;
    let expected = [
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":"Hello"}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":" there"}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{"content":"!"}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        format!(
            r#"data: {head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#
        ),
        format!(
            r#"data: {head}[],"usage":{{"prompt_tokens":11,"completion_tokens":6,"total_tokens":17,"prompt_tokens_details":{{"cached_tokens":0}}}}}}"#
        ),
        "data: [DONE]".to_owned(),
    ];
    let expected = expected.join("\n\n") + "\n\n";
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert!(tr.is_done());
    assert!(tr.error().is_none());
}

#[test]
fn recorded_text_stream_with_padded_json() {
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let out = run(&mut tr, &sse_events(&fixture("messages_stream_text.sse")));
    let f = fold(&out);
    assert_envelope(&f, "msg_013nnniYDrJDocdy5nrMU7cH");
    assert!(f.role_first);
    assert_eq!(f.content, "[12345,67890]");
    assert!(f.tool_calls.is_empty());
    assert_eq!(f.finish, [FinishReason::Stop]);
    assert_eq!(f.usage_chunks.len(), 1);
    let usage = f.usage_chunks[0].usage.as_ref().expect("usage");
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (135, 10, 145)
    );
    assert_eq!((f.done, f.done_last), (1, true));
    assert!(f.error.is_none());
    let u = tr.usage().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (135, 10));
}

#[test]
fn without_include_usage_there_is_no_usage_chunk_but_usage_is_kept() {
    let mut tr = StreamTranslator::new(ALIAS, CREATED, false);
    let out = run(&mut tr, &sse_events(&fixture("messages_stream_text.sse")));
    let f = fold(&out);
    assert!(f.usage_chunks.is_empty());
    assert!(f.chunks.iter().all(|c| c.usage.is_none()));
    assert_eq!((f.done, f.done_last), (1, true));
    let u = tr.usage().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (135, 10));
}

#[test]
fn recorded_tool_use_stream() {
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let out = run(
        &mut tr,
        &sse_events(&fixture("messages_stream_tool_use.sse")),
    );
    let f = fold(&out);
    assert_envelope(&f, "msg_01AusY9WEbCaj3N7Tv5J4YjH");
    assert!(f.role_first);
    assert_eq!(f.content, "");
    assert_eq!(f.tool_calls.len(), 1);
    let (id, name, args) = &f.tool_calls[0];
    assert_eq!(id, "toolu_018acGYLtfR52q9yDbWaEdQZ");
    assert_eq!(name, "get_weather");
    let args: Value = serde_json::from_str(args).expect("merged arguments are JSON");
    assert_eq!(args, json!({"location": "San Francisco, CA", "units": "f"}));
    assert_eq!(f.finish, [FinishReason::ToolCalls]);
    let usage = f.usage_chunks[0].usage.as_ref().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (656, 74));
    assert_eq!((f.done, f.done_last), (1, true));
}

#[test]
fn recorded_text_then_tool_use_stream() {
    let body = fixture("messages_stream_text_then_tool_use.sse");
    assert!(
        !body.ends_with("\n\n"),
        "the recording lacks the final blank line"
    );
    // The real API ends every event with a blank line (the fake upstream adds it too).
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let out = run(&mut tr, &sse_events(&format!("{body}\n\n")));
    let f = fold(&out);
    assert_envelope(&f, "msg_019Q1hrJbZG26Fb9BQhrkHEr");
    assert_eq!(
        f.content,
        "I'll check the current weather in Paris for you."
    );
    // Anthropic's block index is 1; OpenAI's tool call index counts tool calls only.
    assert_eq!(f.tool_calls.len(), 1);
    assert_eq!(f.tool_calls[0].0, "toolu_01NRLabsLyVHZPKxbKvkfSMn");
    let args: Value = serde_json::from_str(&f.tool_calls[0].2).unwrap();
    assert_eq!(args, json!({"location": "Paris"}));
    assert_eq!(f.finish, [FinishReason::ToolCalls]);
    let usage = f.usage_chunks[0].usage.as_ref().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (377, 65));
    assert_eq!((f.done, f.done_last), (1, true));
}

#[test]
fn body_ending_before_message_stop_is_terminated_is_truncated() {
    // As recorded: the final `message_stop` has no blank line, so a spec framer never
    // dispatches it, and the stream must not pass for complete.
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let out = run(
        &mut tr,
        &sse_events(&fixture("messages_stream_text_then_tool_use.sse")),
    );
    let f = fold(&out);
    assert_eq!(f.done, 0);
    assert_eq!(
        f.finish,
        [FinishReason::ToolCalls],
        "the finish chunk had come"
    );
    assert!(f.usage_chunks.is_empty());
    let err = f.error.expect("an error event");
    assert!(f.error_last);
    assert_eq!(err.error.code.as_deref(), Some("stream_truncated"));
    assert!(tr.is_done());
    let u = tr.usage().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (377, 65));
}

#[test]
fn recorded_mid_stream_overloaded_error() {
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let out = run(
        &mut tr,
        &sse_events(&fixture("messages_stream_error_overloaded.sse")),
    );
    let f = fold(&out);
    assert_envelope(&f, "msg_013nnniYDrJDocdy5nrMU7cH");
    assert_eq!(f.content, "[12");
    assert!(f.finish.is_empty());
    assert_eq!(f.done, 0, "no [DONE] after an error");
    assert!(f.error_last, "the error event is last");
    let err = f.error.expect("an error event").error;
    assert_eq!(err.kind.as_deref(), Some("overloaded_error"));
    assert_eq!(err.code.as_deref(), Some("overloaded"));
    assert!(err.message.contains("retry"));
    assert!(tr.is_done());
    assert_eq!(
        tr.error().unwrap().error.code.as_deref(),
        Some("overloaded")
    );
    // Charged for what came: the input, and at least the 1 output token reported so far.
    let u = tr.usage().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (135, 1));
}

#[test]
fn event_names_are_optional() {
    // A framer that drops `event:` lines gives the same output: the data's `type` decides.
    let events = sse_events(&fixture("messages_stream_tool_use.sse"));
    let unnamed: Vec<_> = events.iter().map(|(_, d)| (None, d.clone())).collect();
    let mut a = StreamTranslator::new(ALIAS, CREATED, true);
    let mut b = StreamTranslator::new(ALIAS, CREATED, true);
    assert_eq!(run(&mut a, &events), run(&mut b, &unnamed));
}

fn ev(name: &str, data: Value) -> (Option<String>, String) {
    (Some(name.to_owned()), data.to_string())
}

fn start(id: &str) -> (Option<String>, String) {
    ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message",
            "role": "assistant", "content": [], "model": "claude", "stop_reason": null,
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 5,
                      "cache_read_input_tokens": 100, "output_tokens": 1}}}),
    )
}

fn tool_start(index: u32, id: &str, name: &str) -> (Option<String>, String) {
    ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    )
}

fn json_delta(index: u32, part: &str) -> (Option<String>, String) {
    ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": part}}),
    )
}

fn stop_events(reason: &str, output: u64) -> Vec<(Option<String>, String)> {
    vec![
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
                "usage": {"output_tokens": output}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

#[test]
fn parallel_tool_calls_interleaved_with_thinking_get_their_own_indexes() {
    let mut events = vec![
        start("msg_par"),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "secret plan"}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": "abc"}}),
        ),
        tool_start(1, "toolu_a", "get_weather"),
        tool_start(2, "toolu_b", "get_time"),
        json_delta(2, "{\"tz\":"),
        json_delta(1, "{\"city\":\"Oslo\"}"),
        json_delta(2, "\"CET\"}"),
        ev(
            "some_future_event",
            json!({"type": "some_future_event", "x": 1}),
        ),
    ];
    events.extend(stop_events("tool_use", 42));
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let f = fold(&run(&mut tr, &events));
    assert_eq!(f.content, "", "thinking is not content");
    assert_eq!(f.tool_calls.len(), 2);
    assert_eq!(
        f.tool_calls[0],
        (
            "toolu_a".into(),
            "get_weather".into(),
            "{\"city\":\"Oslo\"}".into()
        )
    );
    assert_eq!(
        f.tool_calls[1],
        (
            "toolu_b".into(),
            "get_time".into(),
            "{\"tz\":\"CET\"}".into()
        )
    );
    assert_eq!(f.finish, [FinishReason::ToolCalls]);
    let usage = f.usage_chunks[0].usage.as_ref().unwrap();
    // Prompt = input + cache writes + cache reads; cache reads are the cached tokens, cache
    // writes the cache_write_tokens.
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (125, 42));
    assert_eq!(
        usage.prompt_tokens_details,
        Some(json!({"cached_tokens": 100, "cache_write_tokens": 5}))
    );
    assert_eq!((f.done, f.done_last), (1, true));
}

#[test]
fn stop_reasons_map_in_streams() {
    for (reason, expected) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Stop),
    ] {
        let mut events = vec![start("msg_s")];
        events.extend(stop_events(reason, 3));
        let mut tr = StreamTranslator::new(ALIAS, CREATED, false);
        let f = fold(&run(&mut tr, &events));
        assert_eq!(f.finish, [expected], "{reason}");
    }
}

#[test]
fn message_stop_without_message_delta_still_finishes() {
    let events = vec![
        start("msg_m"),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    let mut tr = StreamTranslator::new(ALIAS, CREATED, false);
    let f = fold(&run(&mut tr, &events));
    assert_eq!(f.finish, [FinishReason::Stop]);
    assert_eq!((f.done, f.done_last), (1, true));
}

#[test]
fn invalid_json_ends_the_stream_with_upstream_error() {
    let events = vec![
        start("msg_j"),
        (
            Some("content_block_delta".to_owned()),
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_de"
                .to_owned(),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let f = fold(&run(&mut tr, &events));
    assert_eq!(f.done, 0);
    assert!(f.error_last);
    assert_eq!(
        f.error.unwrap().error.code.as_deref(),
        Some("upstream_error")
    );
}

#[test]
fn an_event_without_what_it_must_carry_ends_the_stream_as_invalid() {
    let broken = [
        (None, ev("message_start", json!({"type": "message_start"}))),
        (
            Some(start("msg_k")),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0}),
            ),
        ),
        (
            Some(start("msg_k")),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0}),
            ),
        ),
        (
            Some(start("msg_k")),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"text": "hi"}}),
            ),
        ),
        (
            Some(start("msg_k")),
            ev(
                "message_delta",
                json!({"type": "message_delta", "usage": {"output_tokens": 1}}),
            ),
        ),
        (
            Some(start("msg_k")),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": 7}}),
            ),
        ),
        (
            Some(start("msg_k")),
            ev("error", json!({"type": "error", "error": {"type": 5}})),
        ),
        (
            None,
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_k", "usage": null}}),
            ),
        ),
        (
            None,
            ev(
                "message_start",
                json!({"type": "message_start",
                    "message": {"id": "msg_k", "usage": {"input_tokens": -1}}}),
            ),
        ),
        (
            Some(start("msg_k")),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": "5"}}),
            ),
        ),
        (
            Some(start("msg_k")),
            ev(
                "error",
                json!({"type": "error", "error": "overloaded_error"}),
            ),
        ),
    ];
    for (first, event) in broken {
        let what = event.1.clone();
        let events: Vec<_> = first
            .into_iter()
            .chain([event, ev("message_stop", json!({"type": "message_stop"}))])
            .collect();
        let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
        let f = fold(&run(&mut tr, &events));
        assert_eq!(f.done, 0, "{what}");
        assert!(f.error_last, "{what}");
        let error = f.error.unwrap().error;
        assert_eq!(error.code.as_deref(), Some("upstream_error"), "{what}");
        assert!(
            error.message.contains("not valid JSON"),
            "{what}: {}",
            error.message
        );
    }
}

#[test]
fn usage_may_be_missing_or_null_where_anthropic_may_leave_it_out() {
    // No usage in message_start (nothing to count from it), a null one in message_delta.
    let events = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_u"}}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": null}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let f = fold(&run(&mut tr, &events));
    assert_eq!(f.done, 1);
    assert!(f.error.is_none());
    let usage = tr.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (0, 0));
    assert!(!tr.usage_is_final());
}

#[test]
fn content_before_message_start_is_upstream_error() {
    let events = vec![ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "hi"}}),
    )];
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let f = fold(&run(&mut tr, &events));
    assert!(f.chunks.is_empty());
    assert_eq!(
        f.error.unwrap().error.code.as_deref(),
        Some("upstream_error")
    );
    assert!(
        tr.usage().is_none(),
        "nothing to charge before message_start"
    );
}

#[test]
fn events_after_the_end_are_ignored_and_finish_is_idempotent() {
    let mut events = vec![start("msg_e")];
    events.extend(stop_events("end_turn", 2));
    let mut tr = StreamTranslator::new(ALIAS, CREATED, false);
    let mut out = run(&mut tr, &events);
    let len = out.len();
    tr.on_event(
        Some("error"),
        r#"{"type":"error","error":{"type":"api_error","message":"late"}}"#,
        &mut out,
    );
    tr.finish(&mut out);
    assert_eq!(out.len(), len, "nothing after [DONE]");
    assert!(tr.error().is_none());
}

#[test]
fn cut_stream_is_charged_at_least_an_estimate_of_what_was_relayed() {
    let text = "a".repeat(400);
    let events = vec![
        start("msg_c"),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        ),
    ];
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let f = fold(&run(&mut tr, &events));
    assert_eq!(
        f.error.unwrap().error.code.as_deref(),
        Some("stream_truncated")
    );
    let u = tr.usage().unwrap();
    // 400 bytes relayed, Anthropic had reported only 1 token so far.
    assert_eq!(u.completion_tokens, 100);
    assert_eq!(u.prompt_tokens, 125);
}

#[test]
fn unknown_error_type_mid_stream_is_upstream_error() {
    let events = vec![
        start("msg_u"),
        ev(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        ),
    ];
    let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
    let f = fold(&run(&mut tr, &events));
    let err = f.error.unwrap().error;
    assert_eq!(err.kind.as_deref(), Some("server_error"));
    assert_eq!(err.code.as_deref(), Some("upstream_error"));
    assert!(f.error_last);
}

#[test]
fn escaped_text_survives_the_round_trip() {
    let tricky = "line1\nline2 \"quoted\" \\ tab\t é 🚀 </script>";
    let mut events = vec![
        start("msg_t"),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": tricky}}),
        ),
    ];
    events.extend(stop_events("end_turn", 9));
    let mut tr = StreamTranslator::new(ALIAS, CREATED, false);
    let f = fold(&run(&mut tr, &events));
    assert_eq!(f.content, tricky);
}
