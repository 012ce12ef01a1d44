//! OpenAI's `POST /v1/chat/completions`, shaped like the recorded answers
//! (the workspace's `fixtures/openai`, from openai-python's recordings).

use serde_json::{json, Value};

use super::{
    answer::{self, Answer, Finish},
    fault::Fault,
    prompt_cache, Events, Parsed, Reply,
};

const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";

pub(crate) fn parse(body: &[u8]) -> Result<Parsed, Reply> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
             but what was sent was not valid JSON.",
            None,
        ));
    };
    let Some(model) = v.get("model").and_then(Value::as_str) else {
        return Err(invalid("you must provide a model parameter", None));
    };
    let Some(messages) = v.get("messages").and_then(Value::as_array) else {
        return Err(invalid(
            "Missing required parameter: 'messages'.",
            Some("messages"),
        ));
    };
    let max_tokens = v
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| v.get("max_tokens").and_then(Value::as_u64));
    Ok(Parsed {
        model: model.to_owned(),
        last_user: answer::last_user_text(messages),
        prompt_tokens: answer::message_words(messages),
        max_tokens,
        stream: v.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true),
        first_tool: v
            .pointer("/tools/0/function/name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        cache: prompt_cache::openai_query(&v),
    })
}

pub(crate) fn check_auth(header: Option<&str>, expected: Option<&str>) -> Result<(), Reply> {
    let key = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match (key, expected) {
        (None, _) => Err(Reply::json(
            401,
            json!({"error": {
                "message": "You didn't provide an API key. You need to provide your API key in an \
                            Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), \
                            or as the password field (with blank username) if you're accessing the API \
                            from your browser and are prompted for a username. You can obtain an API key \
                            from https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": null, "code": null}})
            .to_string()
            .into_bytes(),
        )),
        (Some(k), Some(want)) if k != want => Err(fault_reply(&Fault::Unauthorized)),
        _ => Ok(()),
    }
}

pub(crate) fn invalid(message: &str, param: Option<&str>) -> Reply {
    Reply::json(
        400,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}})
            .to_string()
            .into_bytes(),
    )
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCall => "tool_calls",
    }
}

fn usage(a: &Answer) -> Value {
    let c = a.completion_tokens();
    json!({
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": c,
        "total_tokens": a.prompt_tokens + c,
        // As the API has sent it since its prompt caching (October 2024): `prompt_tokens`
        // includes the cached part.
        "prompt_tokens_details": {"cached_tokens": a.cache.read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

pub(crate) fn json_body(a: &Answer) -> Vec<u8> {
    let message = match &a.tool {
        None => json!({"role": "assistant", "content": a.text(), "refusal": null}),
        Some(t) => json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": a.text()}}
        ]}),
    };
    json!({
        "id": a.id,
        "object": "chat.completion",
        "created": a.created,
        "model": a.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(a.finish)
        }],
        "usage": usage(a),
        "system_fingerprint": "fp_fake"
    })
    .to_string()
    .into_bytes()
}

fn chunk(a: &Answer, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": a.id,
        "object": "chat.completion.chunk",
        "created": a.created,
        "model": a.model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    })
}

fn data(v: &Value) -> Vec<u8> {
    format!("data: {v}\n\n").into_bytes()
}

/// The stream, as the recorded one: a role event, one event per content piece, the finish
/// event, the usage event (when asked for), `data: [DONE]`.
pub(crate) fn events(a: &Answer, include_usage: bool) -> Events {
    let head = vec![data(&chunk(
        a,
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    ))];
    let content = a
        .chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let delta = match &a.tool {
                None => json!({ "content": c }),
                // The first piece names the call, as OpenAI streams it.
                Some(t) if i == 0 => json!({"tool_calls": [{"index": 0, "id": t.id,
                    "type": "function", "function": {"name": t.name, "arguments": c}}]}),
                Some(_) => json!({"tool_calls": [{"index": 0, "function": {"arguments": c}}]}),
            };
            data(&chunk(a, delta, None))
        })
        .collect();
    let mut tail = vec![data(&chunk(a, json!({}), Some(finish_reason(a.finish))))];
    if include_usage {
        let mut u = chunk(a, json!({}), None);
        u["choices"] = json!([]);
        u["usage"] = usage(a);
        tail.push(data(&u));
    }
    tail.push(b"data: [DONE]\n\n".to_vec());
    Events {
        content_type: SSE,
        head,
        content,
        tail,
    }
}

/// The mid-stream error line openai-python raises on: `data: {"error":{...}}`.
pub(crate) fn stream_error_event() -> Vec<u8> {
    data(&json!({"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": null, "code": null}}))
}

pub(crate) fn bad_sse(a: &Answer) -> Vec<Vec<u8>> {
    vec![
        data(&chunk(a, json!({"role": "assistant", "content": ""}), None)),
        b"this is not an event stream\n".to_vec(),
        b"data: {\"id\":\"chatcmpl-broken\",\"choices\":[{\"delta\":\n\n".to_vec(),
        b"\x00\xff garbage \x01\n\n".to_vec(),
        b"data: [DONE]\n\n".to_vec(),
    ]
}

pub(crate) fn bad_json() -> Vec<u8> {
    b"{\"id\":\"chatcmpl-broken\",\"object\":\"chat.completion\",\"choices\":[{\"message\":"
        .to_vec()
}

pub(crate) fn json_content_type() -> &'static str {
    JSON
}

/// The error answer for a status fault, with OpenAI's bodies and headers.
pub(crate) fn fault_reply(fault: &Fault) -> Reply {
    let fixture = |name: &str| -> Vec<u8> {
        match name {
            "429" => include_bytes!("../../../fixtures/openai/error_429_rate_limit_exceeded.json")
                .to_vec(),
            "500" => {
                include_bytes!("../../../fixtures/openai/error_500_server_error.json").to_vec()
            }
            _ => include_bytes!("../../../fixtures/openai/error_401_invalid_api_key.json").to_vec(),
        }
    };
    let simple = |status: u16, message: &str, kind: &str| {
        Reply::json(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
                .to_string()
                .into_bytes(),
        )
    };
    match fault {
        Fault::RateLimited { retry_after_secs } => Reply::json(429, fixture("429"))
            .header("retry-after", retry_after_secs.to_string())
            .header("retry-after-ms", (retry_after_secs * 1000).to_string())
            .header("x-ratelimit-limit-requests", "500".into())
            .header("x-ratelimit-remaining-requests", "0".into())
            .header("x-ratelimit-reset-requests", format!("{retry_after_secs}s")),
        Fault::RateLimitedNoRetryAfter => Reply::json(429, fixture("429")),
        Fault::BadRequest => invalid(
            "Invalid value for 'temperature': fault injected.",
            Some("temperature"),
        ),
        Fault::Unauthorized => Reply::json(401, fixture("401")),
        Fault::ServerError => Reply::json(500, fixture("500")),
        Fault::Unavailable => simple(503, "Service Unavailable.", "server_error"),
        Fault::Overloaded => simple(
            503,
            "The engine is currently overloaded, please try again later.",
            "server_error",
        ),
        other => simple(
            400,
            &format!("fake provider: unknown fault {other:?}"),
            "invalid_request_error",
        ),
    }
}
