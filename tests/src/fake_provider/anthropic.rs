//! Anthropic's `POST /v1/messages`, shaped like the recorded answers
//! (the workspace's `fixtures/anthropic`, from anthropic-sdk-python's recordings): `event:` lines,
//! `message_start` ... `message_stop`, a ping, and each `data:` JSON padded with spaces before
//! its closing brace, as the real API does.

use serde_json::{json, Value};

use super::{
    answer::{self, Answer, Finish},
    fault::Fault,
    prompt_cache, Events, Parsed, Reply,
};

const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";

fn error_body(kind: &str, message: &str) -> Vec<u8> {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"})
        .to_string()
        .into_bytes()
}

pub(crate) fn invalid(message: &str) -> Reply {
    Reply::json(400, error_body("invalid_request_error", message))
}

pub(crate) fn parse(body: &[u8]) -> Result<Parsed, Reply> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid(
            "There was an issue with your request body: not valid JSON",
        ));
    };
    let Some(model) = v.get("model").and_then(Value::as_str) else {
        return Err(invalid("model: Field required"));
    };
    let Some(messages) = v.get("messages").and_then(Value::as_array) else {
        return Err(invalid("messages: Field required"));
    };
    let Some(max_tokens) = v.get("max_tokens").and_then(Value::as_u64) else {
        return Err(invalid("max_tokens: Field required"));
    };
    if messages.iter().any(|m| {
        !matches!(
            m.get("role").and_then(Value::as_str),
            Some("user" | "assistant")
        )
    }) {
        return Err(invalid(
            "messages: roles must be 'user' or 'assistant' (system goes in the top-level `system`)",
        ));
    }
    let cache = prompt_cache::anthropic_query(&v);
    let breakpoints = cache.breakpoints();
    if breakpoints > 4 {
        return Err(invalid(&format!(
            "A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}."
        )));
    }
    let system_words = v
        .get("system")
        .map(|s| answer::words(&answer::content_text(s)))
        .unwrap_or(0);
    Ok(Parsed {
        model: model.to_owned(),
        last_user: answer::last_user_text(messages),
        prompt_tokens: system_words + answer::message_words(messages),
        max_tokens: Some(max_tokens),
        stream: v.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: true,
        first_tool: v
            .pointer("/tools/0/name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        cache,
    })
}

pub(crate) fn check_auth(
    key: Option<&str>,
    version: Option<&str>,
    expected: Option<&str>,
) -> Result<(), Reply> {
    match (key.filter(|k| !k.is_empty()), expected) {
        (None, _) => {
            return Err(Reply::json(
                401,
                error_body("authentication_error", "x-api-key header is required"),
            ))
        }
        (Some(k), Some(want)) if k != want => return Err(fault_reply(&Fault::Unauthorized)),
        _ => {}
    }
    if version.is_none() {
        return Err(invalid("anthropic-version: header is required"));
    }
    Ok(())
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCall => "tool_use",
    }
}

/// The usage of a JSON answer and of `message_start`, as recorded: `input_tokens` is the
/// prompt neither read from nor written to the cache; every cache write lasts 5 minutes.
fn usage(a: &Answer, output_tokens: u64) -> Value {
    json!({
        "input_tokens": a.fresh_prompt_tokens(),
        "cache_creation_input_tokens": a.cache.write,
        "cache_read_input_tokens": a.cache.read,
        "cache_creation": {"ephemeral_5m_input_tokens": a.cache.write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

pub(crate) fn json_body(a: &Answer) -> Vec<u8> {
    json!({
        "model": a.model,
        "id": a.id,
        "type": "message",
        "role": "assistant",
        "content": match &a.tool {
            None => json!([{"type": "text", "text": a.text()}]),
            Some(t) => json!([{"type": "tool_use", "id": t.id, "name": t.name,
                "input": serde_json::from_str::<Value>(&a.text()).unwrap_or(Value::Null)}]),
        },
        "stop_reason": stop_reason(a.finish),
        "stop_sequence": null,
        "usage": usage(a, a.completion_tokens())
    })
    .to_string()
    .into_bytes()
}

/// `event: <name>\ndata: <json>` with the real API's run of spaces before the closing brace
/// (deterministic here: 1 to 14 spaces by event position).
fn event(name: &str, v: &Value, position: usize) -> Vec<u8> {
    let text = v.to_string();
    let body = text.strip_suffix('}').unwrap_or(&text);
    let pad = " ".repeat(1 + (position * 5 + 3) % 14);
    format!("event: {name}\ndata: {body}{pad}}}\n\n").into_bytes()
}

pub(crate) fn events(a: &Answer) -> Events {
    let mut pos = 0usize;
    let mut next = |name: &str, v: Value| {
        pos += 1;
        event(name, &v, pos)
    };
    let head = vec![
        next(
            "message_start",
            json!({"type": "message_start", "message": {
                "model": a.model, "id": a.id, "type": "message", "role": "assistant",
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(a, 1)}}),
        ),
        next(
            "content_block_start",
            match &a.tool {
                None => json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                Some(t) => json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": t.id, "name": t.name, "input": {}}}),
            },
        ),
        // The real ping is not padded and has spaces after its colon.
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n".to_vec(),
    ];
    let content = a
        .chunks
        .iter()
        .map(|c| {
            let delta = match &a.tool {
                None => json!({"type": "text_delta", "text": c}),
                Some(_) => json!({"type": "input_json_delta", "partial_json": c}),
            };
            next(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            )
        })
        .collect();
    let tail = vec![
        next(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        next(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(a.finish), "stop_sequence": null},
                   "usage": {"input_tokens": a.fresh_prompt_tokens(),
                             "cache_creation_input_tokens": a.cache.write,
                             "cache_read_input_tokens": a.cache.read,
                             "output_tokens": a.completion_tokens()}}),
        ),
        next("message_stop", json!({"type": "message_stop"})),
    ];
    Events {
        content_type: SSE,
        head,
        content,
        tail,
    }
}

/// The error event the streaming docs show (and the SDK's tests use).
pub(crate) fn stream_error_event() -> Vec<u8> {
    b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n".to_vec()
}

pub(crate) fn bad_sse(_a: &Answer) -> Vec<Vec<u8>> {
    vec![
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\n\n"
            .to_vec(),
        b"this is not an event stream\n".to_vec(),
        b"event: content_block_delta\ndata: not json at all\n\n".to_vec(),
        b"\x00\xff garbage \x01\n\n".to_vec(),
    ]
}

pub(crate) fn bad_json() -> Vec<u8> {
    b"{\"model\":\"claude\",\"id\":\"msg_broken\",\"type\":\"message\",\"content\":[{\"type\":"
        .to_vec()
}

pub(crate) fn json_content_type() -> &'static str {
    JSON
}

/// The error answer for a status fault, with Anthropic's bodies and headers.
pub(crate) fn fault_reply(fault: &Fault) -> Reply {
    match fault {
        Fault::RateLimited { retry_after_secs } => Reply::json(
            429,
            include_bytes!("../../../fixtures/anthropic/error_429_rate_limit_error.json").to_vec(),
        )
        .header("retry-after", retry_after_secs.to_string())
        .header("x-should-retry", "true".into()),
        Fault::RateLimitedNoRetryAfter => Reply::json(
            429,
            include_bytes!("../../../fixtures/anthropic/error_429_rate_limit_error.json").to_vec(),
        ),
        Fault::BadRequest => Reply::json(
            400,
            include_bytes!("../../../fixtures/anthropic/error_400_invalid_request_error.json")
                .to_vec(),
        ),
        Fault::Unauthorized => Reply::json(
            401,
            include_bytes!("../../../fixtures/anthropic/error_401_authentication_error.json")
                .to_vec(),
        ),
        Fault::ServerError => Reply::json(500, error_body("api_error", "Internal server error")),
        Fault::Unavailable => Reply::json(503, error_body("api_error", "Service unavailable")),
        Fault::Overloaded => Reply::json(
            529,
            include_bytes!("../../../fixtures/anthropic/error_529_overloaded_error.json").to_vec(),
        )
        .header("x-should-retry", "true".into()),
        other => invalid(&format!("fake provider: unknown fault {other:?}")),
    }
}
