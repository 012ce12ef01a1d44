//! OpenAI request -> Anthropic Messages request: every rule, and every 400.

use serde_json::{json, Value};
use storycad_protocol::ChatRequest;
use storycad_worker::providers::anthropic::{
    to_messages_body, to_messages_request, TranslateError,
};

const MODEL: &str = "claude-haiku-4-5";

fn req(v: Value) -> ChatRequest {
    serde_json::from_value(v).expect("a valid OpenAI request")
}

/// The Anthropic body for an OpenAI request, as JSON.
fn translate(v: Value) -> Value {
    let r = req(v);
    let out = to_messages_request(&r, MODEL, 1024).expect("translates");
    let value = serde_json::to_value(&out).expect("serializes");
    // The bytes the glue sends are the same document.
    let bytes = to_messages_body(&r, MODEL, 1024).expect("serializes");
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).expect("valid JSON"),
        value
    );
    value
}

fn translate_err(v: Value) -> TranslateError {
    let r = req(v);
    let err = to_messages_request(&r, MODEL, 1024).expect_err("must be refused");
    assert_eq!(err.status(), 400);
    let body = err.to_error_body();
    assert_eq!(body.error.kind.as_deref(), Some("invalid_request_error"));
    assert_eq!(body.error.param.as_deref(), Some(err.param.as_str()));
    err
}

#[test]
fn typical_request_translates_to_the_exact_body() {
    let body = translate(json!({
        "model": "storycad-fast",
        "messages": [
            {"role": "system", "content": "You help writers."},
            {"role": "user", "content": "Name a character."}
        ],
        "temperature": 0.7,
        "max_tokens": 200,
        "stream": true,
        "user": "user-42"
    }));
    assert_eq!(
        body,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 200,
            "system": "You help writers.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Name a character."}]}
            ],
            "temperature": 0.7,
            "stream": true,
            "metadata": {"user_id": "user-42"}
        })
    );
}

#[test]
fn system_and_developer_messages_join_into_top_level_system_in_order() {
    let body = translate(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "First rule."},
            {"role": "developer", "content": [{"type": "text", "text": "Second rule."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "system", "content": "Late rule."},
            {"role": "user", "content": "Again"}
        ]
    }));
    assert_eq!(body["system"], "First rule.\n\nSecond rule.\n\nLate rule.");
    // The late system message is gone from the turns, so they still alternate.
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
}

#[test]
fn no_system_field_without_system_messages() {
    let body = translate(json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}));
    assert!(body.get("system").is_none());
    assert!(body.get("stream").is_none(), "stream left out unless true");
    assert!(body.get("tool_choice").is_none());
    assert!(body.get("tools").is_none());
}

#[test]
fn image_part_in_system_message_is_400() {
    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "system", "content": [
            {"type": "text", "text": "Rules"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]},
        {"role": "user", "content": "Hi"}
    ]}));
    assert_eq!(err.param, "messages[0].content[1]");
    assert!(err.message.contains("image_url"), "{}", err.message);
}

#[test]
fn consecutive_same_role_messages_are_merged() {
    let body = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": "One."},
        {"role": "user", "content": [{"type": "text", "text": "Two."}]},
        {"role": "assistant", "content": "A."},
        {"role": "assistant", "content": "B."},
        {"role": "user", "content": "Three."}
    ]}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "A."}, {"type": "text", "text": "B."}]},
            {"role": "user", "content": [{"type": "text", "text": "Three."}]}
        ])
    );
}

#[test]
fn tool_calls_and_tool_results_translate_and_merge() {
    let body = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\",\"units\":\"c\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "Which is warmer?"}
    ]}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather",
                 "input": {"location": "Rome", "units": "c"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2",
                 "content": [{"type": "text", "text": "21C"}]},
                {"type": "text", "text": "Which is warmer?"}
            ]}
        ])
    );
}

#[test]
fn assistant_text_comes_before_its_tool_use_and_empty_arguments_are_an_empty_object() {
    let body = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "now", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_9", "content": ""}
    ]}));
    assert_eq!(
        body["messages"][1]["content"],
        json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_9", "name": "now", "input": {}}
        ])
    );
    // A tool that answered nothing: a tool_result without content.
    assert_eq!(
        body["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "call_9"}])
    );
}

#[test]
fn user_text_before_tool_results_is_moved_after_them() {
    // Anthropic requires tool_result blocks first in a user message.
    let body = translate(json!({"model": "m", "messages": [
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "note"},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}
    ]}));
    assert_eq!(
        body["messages"][1]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "c1", "content": "done"},
            {"type": "text", "text": "note"}
        ])
    );
}

#[test]
fn invalid_tool_call_arguments_are_400_naming_the_param() {
    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": "}}]}
    ]}));
    assert_eq!(err.param, "messages[3].tool_calls[0].function.arguments");
    assert!(err.message.contains("not valid JSON"), "{}", err.message);

    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "user", "content": "u"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "[1,2]"}}]}
    ]}));
    assert_eq!(err.param, "messages[1].tool_calls[1].function.arguments");
    assert!(err.message.contains("JSON object"), "{}", err.message);
}

#[test]
fn tool_message_without_tool_call_id_is_400() {
    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "user", "content": "u"},
        {"role": "tool", "content": "result"}
    ]}));
    assert_eq!(err.param, "messages[1].tool_call_id");
}

#[test]
fn image_parts_become_base64_or_url_sources() {
    let body = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "image_url", "image_url": {"url": "http://example.com/dog.gif"}},
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}}
        ]}
    ]}));
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "text", "text": "Compare these."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            {"type": "image", "source": {"type": "url", "url": "http://example.com/dog.gif"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}
        ])
    );
}

#[test]
fn image_urls_anthropic_cannot_take_are_400() {
    let cases = [
        ("ftp://example.com/a.png", "data: URL or an http(s): URL"),
        ("file:///etc/passwd", "data: URL or an http(s): URL"),
        ("data:image/png,rawbytes", "base64"),
        ("data:image/tiff;base64,AAAA", "image/tiff"),
        ("data:image/png;base64", "malformed"),
        ("data:image/png;base64,", "empty"),
    ];
    for (url, expect) in cases {
        let err = translate_err(json!({"model": "m", "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": url}}]}
        ]}));
        assert_eq!(err.param, "messages[0].content[1].image_url.url", "{url}");
        assert!(err.message.contains(expect), "{url}: {}", err.message);
    }
}

#[test]
fn untranslatable_content_parts_are_400_never_dropped() {
    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "system", "content": "s"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": [
            {"type": "text", "text": "Listen"},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}
    ]}));
    assert_eq!(
        err,
        TranslateError {
            param: "messages[2].content[1]".into(),
            message: "content part type `input_audio` is not supported by Anthropic models".into(),
        }
    );

    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}
    ]}));
    assert_eq!(err.param, "messages[0].content[0]");
    assert!(err.message.contains("`file`"), "{}", err.message);

    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "hologram", "x": 1}]}
    ]}));
    assert!(err.message.contains("`hologram`"), "{}", err.message);

    // A known type in a shape that is not OpenAI's.
    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": "https://example.com/a.png"}]}
    ]}));
    assert_eq!(err.param, "messages[0].content[0]");
    assert_eq!(err.message, "malformed `image_url` content part");

    // An image in an assistant message: Anthropic takes none.
    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
    ]}));
    assert_eq!(err.param, "messages[1].content[0]");
}

#[test]
fn assistant_refusal_part_is_kept_as_text() {
    let body = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
        {"role": "user", "content": "ok"}
    ]}));
    assert_eq!(
        body["messages"][1]["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
}

#[test]
fn empty_messages_are_400_except_a_final_empty_assistant_which_is_dropped() {
    let err = translate_err(json!({"model": "m", "messages": [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "a"}
    ]}));
    assert_eq!(err.param, "messages[0].content");

    let body = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": ""}
    ]}));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "u"}]}])
    );
}

#[test]
fn tools_become_anthropic_tool_definitions() {
    let body = translate(
        json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
             "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]}, "strict": true}},
            {"type": "function", "function": {"name": "ping"}}
        ]}),
    );
    assert_eq!(
        body["tools"],
        json!([
            {"name": "get_weather", "description": "Weather now",
             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"]}},
            {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    // auto with parallel calls is Anthropic's default: nothing sent.
    assert!(body.get("tool_choice").is_none());
}

#[test]
fn non_function_tool_is_400() {
    let err = translate_err(
        json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
        "tools": [{"type": "function", "function": {"name": "a"}},
                  {"type": "custom", "function": {"name": "b"}}]}),
    );
    assert_eq!(err.param, "tools[1].type");
}

fn with_tools(extra: Value) -> Value {
    let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
    for (k, val) in extra.as_object().expect("an object") {
        v[k] = val.clone();
    }
    v
}

#[test]
fn tool_choice_maps_to_anthropic_tool_choice() {
    let cases = [
        (json!({"tool_choice": "auto"}), json!({"type": "auto"})),
        (json!({"tool_choice": "required"}), json!({"type": "any"})),
        (json!({"tool_choice": "none"}), json!({"type": "none"})),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
            json!({"type": "tool", "name": "get_weather"}),
        ),
        (
            json!({"parallel_tool_calls": false}),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (
            json!({"tool_choice": "required", "parallel_tool_calls": false}),
            json!({"type": "any", "disable_parallel_tool_use": true}),
        ),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                   "parallel_tool_calls": false}),
            json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}),
        ),
        (
            json!({"tool_choice": "auto", "parallel_tool_calls": true}),
            json!({"type": "auto"}),
        ),
    ];
    for (extra, expected) in cases {
        let body = translate(with_tools(extra.clone()));
        assert_eq!(body["tool_choice"], expected, "{extra}");
    }
}

#[test]
fn tool_choice_without_tools() {
    // Meaningless without tools: left out (Anthropic refuses tool_choice without tools).
    for choice in ["auto", "none"] {
        let body = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
            "tool_choice": choice, "parallel_tool_calls": false}),
        );
        assert!(body.get("tool_choice").is_none(), "{choice}");
    }
    // Demands a call that cannot happen: 400.
    let err = translate_err(
        json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
        "tool_choice": "required"}),
    );
    assert_eq!(err.param, "tool_choice");
    let err = translate_err(with_tools(json!({"tool_choice": "sometimes"})));
    assert_eq!(err.param, "tool_choice");
}

#[test]
fn stop_becomes_stop_sequences() {
    let body = translate(
        json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
        "stop": "END"}),
    );
    assert_eq!(body["stop_sequences"], json!(["END"]));
    let body = translate(
        json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
        "stop": ["\n\n", "THE END"]}),
    );
    assert_eq!(body["stop_sequences"], json!(["\n\n", "THE END"]));
}

#[test]
fn temperature_is_clamped_to_anthropic_range_and_top_p_passes() {
    let t = |v: Value| {
        translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
            "temperature": v, "top_p": 0.9}),
        )
    };
    assert_eq!(t(json!(0))["temperature"], json!(0.0));
    assert_eq!(t(json!(0.4))["temperature"], json!(0.4));
    assert_eq!(t(json!(1.0))["temperature"], json!(1.0));
    assert_eq!(t(json!(1.5))["temperature"], json!(1.0));
    assert_eq!(t(json!(2))["temperature"], json!(1.0));
    assert_eq!(t(json!(0.4))["top_p"], json!(0.9));

    for bad in [json!(-0.1), json!(2.5)] {
        let err = translate_err(
            json!({"model": "m", "messages": [{"role": "user", "content": "u"}],
            "temperature": bad}),
        );
        assert_eq!(err.param, "temperature");
    }
}

#[test]
fn max_tokens_is_always_set() {
    let base = || json!({"model": "m", "messages": [{"role": "user", "content": "u"}]});
    assert_eq!(translate(base())["max_tokens"], 1024, "default");
    let mut v = base();
    v["max_tokens"] = json!(300);
    assert_eq!(translate(v.clone())["max_tokens"], 300);
    v["max_completion_tokens"] = json!(77);
    assert_eq!(translate(v)["max_tokens"], 77, "the newer name wins");
}

#[test]
fn parameters_anthropic_cannot_honour_are_400() {
    let cases = [
        (json!({"n": 2}), "n"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_schema",
                   "json_schema": {"name": "x", "schema": {"type": "object"}}}}),
            "response_format",
        ),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (
            json!({"audio": {"voice": "alloy", "format": "wav"}}),
            "audio",
        ),
        (json!({"web_search_options": {}}), "web_search_options"),
        (json!({"functions": [{"name": "f"}]}), "functions"),
        (json!({"function_call": "auto"}), "function_call"),
    ];
    for (extra, param) in cases {
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "u"}]});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        let err = translate_err(v);
        assert_eq!(err.param, param, "{extra}");
        assert!(
            err.message.contains("not supported by Anthropic models"),
            "{extra}: {}",
            err.message
        );
    }
}

#[test]
fn harmless_parameters_are_ignored() {
    let body = translate(json!({"model": "m", "messages": [
            {"role": "user", "content": "u", "name": "alice"}],
        "n": 1, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.2,
        "logprobs": false, "response_format": {"type": "text"}, "store": true,
        "metadata": {"k": "v"}, "service_tier": "auto", "reasoning_effort": "low",
        "modalities": ["text"], "logit_bias": {},
        "stream_options": {"include_usage": true}}));
    assert_eq!(
        body,
        json!({
            "model": MODEL,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "u"}]}]
        })
    );
}
