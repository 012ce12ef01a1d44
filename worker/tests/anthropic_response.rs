//! Anthropic complete answers and error answers -> OpenAI shapes, on recorded bodies.

use serde_json::{json, Value};
use storycad_protocol::{ChatResponse, FinishReason, Role};
use storycad_worker::providers::anthropic::{from_messages_response, map_error};

const CREATED: u64 = 1_764_000_000;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn text_answer_translates() {
    let resp = from_messages_response(&fixture("messages_response.json"), "storycad-fast", CREATED)
        .expect("a valid answer");
    assert_eq!(resp.id, "msg_01T4jd6NyD9xGGtTPDC4ogy5");
    assert_eq!(resp.object, "chat.completion");
    assert_eq!(resp.created, CREATED);
    assert_eq!(resp.model, "storycad-fast");
    assert_eq!(resp.choices.len(), 1);
    let choice = &resp.choices[0];
    assert_eq!(choice.index, 0);
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(
        choice.message.content.as_deref(),
        Some(
            "{\"items\":[{\"product_name\":\"Green Tea\",\"price\":5.50,\"quantity\":2},\
             {\"product_name\":\"Coffee\",\"price\":3.00,\"quantity\":1}],\"total\":14.0}"
        )
    );
    assert_eq!(choice.message.tool_calls, None);
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    let usage = resp.usage.as_ref().expect("usage");
    assert_eq!(usage.prompt_tokens, 406);
    assert_eq!(usage.completion_tokens, 50);
    assert_eq!(usage.total_tokens, 456);
    assert_eq!(
        usage.prompt_tokens_details,
        Some(json!({"cached_tokens": 0}))
    );

    // What goes on the wire reads back as the same OpenAI answer.
    let wire = serde_json::to_vec(&resp).unwrap();
    assert_eq!(serde_json::from_slice::<ChatResponse>(&wire).unwrap(), resp);
}

#[test]
fn tool_use_answer_translates_to_tool_calls() {
    let resp = from_messages_response(
        &fixture("messages_response_tool_use.json"),
        "storycad-fast",
        CREATED,
    )
    .expect("a valid answer");
    assert_eq!(resp.id, "msg_01M4x4hiFuUdHzu44ih9eCGh");
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        choice.message.content, None,
        "only tool calls: content null"
    );
    let calls = choice.message.tool_calls.as_ref().expect("tool calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "toolu_013DU6hV4C1M8dJ32ybQFAFi");
    assert_eq!(calls[0].kind, "function");
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(
        calls[0].function.arguments, r#"{"location":"SF","units":"c"}"#,
        "compact JSON of input"
    );
    let usage = resp.usage.as_ref().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (597, 71));
    assert_eq!(usage.total_tokens, 668);

    let wire: Value = serde_json::to_value(&resp).unwrap();
    assert_eq!(wire["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(wire["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn text_blocks_join_and_cache_tokens_count_as_prompt() {
    let body = json!({
        "id": "msg_x", "type": "message", "role": "assistant", "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "The answer "},
            {"type": "text", "text": "is 42.", "citations": []},
            {"type": "tool_use", "id": "toolu_1", "name": "log", "input": {"n": [1, 2]}}
        ],
        "stop_reason": "max_tokens", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 100,
                  "cache_read_input_tokens": 1000, "output_tokens": 5}
    });
    let resp =
        from_messages_response(body.to_string().as_bytes(), "alias", CREATED).expect("valid");
    let choice = &resp.choices[0];
    assert_eq!(choice.message.content.as_deref(), Some("The answer is 42."));
    assert_eq!(
        choice.message.tool_calls.as_ref().unwrap()[0]
            .function
            .arguments,
        r#"{"n":[1,2]}"#
    );
    assert_eq!(choice.finish_reason, Some(FinishReason::Length));
    let usage = resp.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 1110);
    assert_eq!(usage.completion_tokens, 5);
    assert_eq!(usage.total_tokens, 1115);
    assert_eq!(
        usage.prompt_tokens_details,
        Some(json!({"cached_tokens": 1000, "cache_write_tokens": 100}))
    );
}

#[test]
fn stop_reasons_map_in_complete_answers() {
    for (reason, expected) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("a_future_reason", "stop"),
    ] {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "x"}], "stop_reason": reason,
            "usage": {"input_tokens": 1, "output_tokens": 1}});
        let resp = from_messages_response(body.to_string().as_bytes(), "a", 0).unwrap();
        let wire = serde_json::to_value(&resp).unwrap();
        assert_eq!(wire["choices"][0]["finish_reason"], expected, "{reason}");
    }
}

#[test]
fn a_body_that_is_not_an_answer_is_502() {
    // Not JSON, not a message, or a message with a field of the wrong type.
    let message = |fields: &str| format!(r#"{{"type":"message","id":"msg_1",{fields}}}"#);
    let mistyped = [
        message(r#""content":"hi""#),
        message(r#""content":[{"text":"no type"}]"#),
        message(r#""content":[{"type":"text","text":5}]"#),
        message(r#""content":[],"usage":null"#),
        message(r#""content":[],"usage":{"output_tokens":-1}"#),
        message(r#""content":[],"stop_reason":1"#),
        r#"{"type":"message","id":5}"#.to_owned(),
        r#"{"type":7}"#.to_owned(),
        "[]".to_owned(),
    ];
    let bodies = [&b"<html>bad gateway</html>"[..], b"{\"hello\":1}", b""]
        .into_iter()
        .chain(mistyped.iter().map(|b| b.as_bytes()));
    for body in bodies {
        let (status, err) = from_messages_response(body, "a", 0).expect_err("not an answer");
        assert_eq!(status, 502);
        assert_eq!(err.error.code.as_deref(), Some("upstream_error"));
        assert!(!err.error.message.contains("html"));
    }
    // Unknown fields and a null stop reason are fine.
    let body = json!({"type": "message", "id": "msg_2", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "ok", "citations": null}, {"type": "thinking"}],
        "stop_reason": null, "usage": {"input_tokens": 3, "output_tokens": 1, "server": {}}});
    let answer = from_messages_response(body.to_string().as_bytes(), "a", 0).unwrap();
    assert_eq!(answer.id, "msg_2");
    assert_eq!(answer.choices[0].message.content.as_deref(), Some("ok"));
    assert_eq!(answer.usage.as_ref().map(|u| u.total_tokens), Some(4));
    // An error body sent with 200 is still an error.
    let (status, err) =
        from_messages_response(&fixture("error_529_overloaded_error.json"), "a", 0).unwrap_err();
    assert_eq!(status, 503);
    assert_eq!(err.error.code.as_deref(), Some("overloaded"));
}

#[test]
fn invalid_request_error_is_400_with_anthropics_message() {
    let (status, body) = map_error(400, &fixture("error_400_invalid_request_error.json"));
    assert_eq!(status, 400);
    assert_eq!(body.error.kind.as_deref(), Some("invalid_request_error"));
    assert_eq!(body.error.code.as_deref(), Some("invalid_value"));
    assert!(
        body.error
            .message
            .contains("unexpected `tool_use_id` found in `tool_result` blocks"),
        "{}",
        body.error.message
    );
}

#[test]
fn prompt_too_long_is_400_context_length_exceeded() {
    let (status, body) = map_error(400, &fixture("error_400_prompt_too_long.json"));
    assert_eq!(status, 400);
    assert_eq!(body.error.code.as_deref(), Some("context_length_exceeded"));
    assert!(body
        .error
        .message
        .contains("205351 tokens > 200000 maximum"));
}

#[test]
fn authentication_error_is_502_and_says_nothing_of_the_key() {
    let (status, body) = map_error(401, &fixture("error_401_authentication_error.json"));
    assert_eq!(status, 502);
    assert_eq!(body.error.kind.as_deref(), Some("server_error"));
    assert_eq!(body.error.code.as_deref(), Some("upstream_error"));
    assert!(!body.error.message.contains("x-api-key"));
    let (status, _) = map_error(
        403,
        br#"{"type":"error","error":{"type":"permission_error","message":"Your API key sk-ant-abc does not have permission"}}"#,
    );
    assert_eq!(status, 502);
}

#[test]
fn rate_limit_error_is_429_and_hides_the_organization() {
    let (status, body) = map_error(429, &fixture("error_429_rate_limit_error.json"));
    assert_eq!(status, 429);
    assert_eq!(body.error.kind.as_deref(), Some("rate_limit_error"));
    assert_eq!(body.error.code.as_deref(), Some("rate_limit_exceeded"));
    assert!(
        !body.error.message.contains("5576611f"),
        "{}",
        body.error.message
    );
}

#[test]
fn overloaded_error_is_503_overloaded() {
    let (status, body) = map_error(529, &fixture("error_529_overloaded_error.json"));
    assert_eq!(status, 503);
    assert_eq!(body.error.kind.as_deref(), Some("overloaded_error"));
    assert_eq!(body.error.code.as_deref(), Some("overloaded"));
    assert!(body.error.message.contains("retry"));
}

#[test]
fn other_error_types_and_garbage_bodies_map_by_type_then_status() {
    let e = |status: u16, kind: &str| {
        let body = json!({"type": "error", "error": {"type": kind, "message": "m"}});
        let (s, b) = map_error(status, body.to_string().as_bytes());
        (s, b.error.code.unwrap_or_default())
    };
    assert_eq!(e(500, "api_error"), (502, "upstream_error".into()));
    // An unavailable service is unavailable whatever type its body names.
    assert_eq!(e(503, "api_error"), (503, "overloaded".into()));
    assert_eq!(e(529, "api_error"), (503, "overloaded".into()));
    assert_eq!(e(404, "not_found_error"), (502, "upstream_error".into()));
    assert_eq!(e(413, "request_too_large"), (413, "body_too_large".into()));
    assert_eq!(e(402, "billing_error"), (502, "upstream_error".into()));
    assert_eq!(e(504, "timeout_error"), (504, "upstream_timeout".into()));
    assert_eq!(e(400, "brand_new_error"), (400, "invalid_value".into()));
    assert_eq!(e(418, "brand_new_error"), (502, "upstream_error".into()));

    // Not JSON (a proxy's HTML page): classified by status, never echoed.
    let html = b"<html><body>upstream connect error</body></html>";
    let (s, b) = map_error(529, html);
    assert_eq!((s, b.error.code.as_deref()), (503, Some("overloaded")));
    let (s, b) = map_error(500, html);
    assert_eq!((s, b.error.code.as_deref()), (502, Some("upstream_error")));
    assert!(!b.error.message.contains("html"));
    let (s, _) = map_error(429, b"");
    assert_eq!(s, 429);
    // An error object of another shape says nothing: the status decides.
    for body in [
        json!({"error": {"type": 5, "message": "m"}}),
        json!({"error": "overloaded_error"}),
        json!({"error": null}),
        json!(["overloaded_error"]),
    ] {
        let (s, b) = map_error(500, body.to_string().as_bytes());
        assert_eq!(
            (s, b.error.code.as_deref()),
            (502, Some("upstream_error")),
            "{body}"
        );
        let (s, _) = map_error(529, body.to_string().as_bytes());
        assert_eq!(s, 503, "{body}");
    }
}

#[test]
fn long_or_url_bearing_messages_are_cut_and_blanked() {
    let long = "x".repeat(5000);
    let body = json!({"type": "error", "error": {"type": "invalid_request_error",
        "message": format!("see https://internal.example/path key sk-ant-secret {long}")}});
    let (_, b) = map_error(400, body.to_string().as_bytes());
    assert!(b.error.message.len() < 400, "{}", b.error.message.len());
    assert!(!b.error.message.contains("internal.example"));
    assert!(!b.error.message.contains("sk-ant-secret"));
}
