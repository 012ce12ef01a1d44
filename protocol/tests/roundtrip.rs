//! Serde round trips over fixtures shaped like what the providers really send.
#![allow(clippy::unwrap_used)] // test helpers, like the tests, fail by panicking

use serde_json::{json, Value};
use storycad_protocol::*;

fn fixture(path: &str) -> String {
    let full = format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Removes nulls recursively: serializing skips `None`, which the provider spells `null`.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Parses `text` as T, writes it back, and checks nothing but nulls was lost.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(
    text: &str,
) -> T {
    let typed: T = serde_json::from_str(text).unwrap();
    let written = serde_json::to_value(&typed).unwrap();
    let original: Value = serde_json::from_str(text).unwrap();
    assert_eq!(strip_nulls(written.clone()), strip_nulls(original));
    let again: T = serde_json::from_value(written).unwrap();
    assert_eq!(again, typed);
    typed
}

fn sse_data(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .collect()
}

#[test]
fn chat_completion_round_trips() {
    let r: ChatResponse = round_trip(&fixture("openai/chat_completion.json"));
    assert_eq!(r.object, "chat.completion");
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    assert!(!r.text().is_empty());
    assert!(r.usage.as_ref().unwrap().total_tokens > 0);
}

#[test]
fn tool_call_completion_round_trips() {
    let r: ChatResponse = round_trip(&fixture("openai/chat_completion_tool_calls.json"));
    let calls = r.choices[0].message.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.name, "GetWeatherArgs");
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    let usage = r.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (76, 24, 100)
    );
    // Unknown usage sub-fields are kept.
    assert_eq!(
        usage.completion_tokens_details.unwrap()["reasoning_tokens"],
        0
    );
}

#[test]
fn every_recorded_stream_chunk_round_trips() {
    for name in [
        "chat_stream_text.sse",
        "chat_stream_text_usage.sse",
        "chat_stream_tool_call_usage.sse",
        "chat_stream_parallel_tool_calls_usage.sse",
        "chat_stream_refusal_usage.sse",
    ] {
        let text = fixture(&format!("openai/{name}"));
        let chunks: Vec<ChatChunk> = sse_data(&text).into_iter().map(round_trip).collect();
        assert!(chunks.len() > 2, "{name}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{name}");
        assert_eq!(
            chunks[0].choices[0].delta.role,
            Some(Role::Assistant),
            "{name}"
        );
    }
}

#[test]
fn stream_usage_chunk_has_no_choices() {
    let text = fixture("openai/chat_stream_text_usage.sse");
    let last: ChatChunk = serde_json::from_str(sse_data(&text).last().unwrap()).unwrap();
    assert!(last.choices.is_empty());
    assert!(last.usage.unwrap().completion_tokens > 0);
}

#[test]
fn parallel_tool_call_fragments_carry_index_id_and_name() {
    let text = fixture("openai/chat_stream_parallel_tool_calls_usage.sse");
    let mut names = std::collections::BTreeMap::new();
    let mut args = std::collections::BTreeMap::<u32, String>::new();
    for data in sse_data(&text) {
        let chunk: ChatChunk = serde_json::from_str(data).unwrap();
        for choice in &chunk.choices {
            for tc in choice.delta.tool_calls.iter().flatten() {
                if let Some(f) = &tc.function {
                    if let Some(n) = &f.name {
                        assert!(tc.id.is_some());
                        names.insert(tc.index, n.clone());
                    }
                    args.entry(tc.index)
                        .or_default()
                        .push_str(f.arguments.as_deref().unwrap_or(""));
                }
            }
        }
    }
    assert_eq!(names.len(), 2);
    for a in args.values() {
        serde_json::from_str::<Value>(a).expect("merged arguments are JSON");
    }
}

#[test]
fn refusal_deltas_are_kept() {
    let text = fixture("openai/chat_stream_refusal_usage.sse");
    let refusal: String = sse_data(&text)
        .into_iter()
        .filter_map(|d| serde_json::from_str::<ChatChunk>(d).ok())
        .filter_map(|c| c.choices.first().and_then(|ch| ch.delta.refusal.clone()))
        .collect();
    assert!(!refusal.is_empty());
}

#[test]
fn openai_error_bodies_parse() {
    let e: ErrorBody = round_trip(&fixture("openai/error_429_rate_limit_exceeded.json"));
    assert_eq!(e.error.code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(e.error.kind.as_deref(), Some("tokens"));
    let e: ErrorBody = round_trip(&fixture("openai/error_429_insufficient_quota.json"));
    assert_eq!(e.error.code.as_deref(), Some("insufficient_quota"));
    assert!(!codes::is_retryable_429(e.error.code.as_deref()));
    for f in [
        "openai/error_401_invalid_api_key.json",
        "openai/error_500_server_error.json",
    ] {
        let e: ErrorBody = serde_json::from_str(&fixture(f)).unwrap();
        assert!(!e.error.message.is_empty(), "{f}");
    }
}

#[test]
fn numeric_error_code_becomes_text() {
    let e: ErrorBody =
        serde_json::from_str(r#"{"error":{"message":"m","type":"t","code":429}}"#).unwrap();
    assert_eq!(e.error.code.as_deref(), Some("429"));
}

#[test]
fn request_with_every_modelled_field_round_trips() {
    let text = r#"{
        "model": "storycad-fast",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}
        ],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 200,
        "stop": ["\n\n", "END"], "stream": true, "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "d",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_object"}, "seed": 7, "user": "u-1",
        "presence_penalty": 0.5, "frequency_penalty": -0.5, "n": 1,
        "logit_bias": {"50256": -100}, "reasoning_effort": "low"
    }"#;
    let r: ChatRequest = round_trip(text);
    assert_eq!(r.messages.len(), 5);
    assert_eq!(r.messages[1].role, Role::Developer);
    let Some(Content::Parts(parts)) = &r.messages[2].content else {
        panic!("parts")
    };
    assert_eq!(
        parts.iter().map(ContentPart::kind).collect::<Vec<_>>(),
        ["text", "image_url", "input_audio"]
    );
    assert!(matches!(parts[2], ContentPart::Other(_)));
    assert_eq!(r.stop, Some(Stop::Many(vec!["\n\n".into(), "END".into()])));
    assert!(r.is_stream());
    assert_eq!(r.output_cap(), Some(200));
    // Unmodelled fields are kept and sent on.
    assert_eq!(r.extra["reasoning_effort"], "low");
    assert!(r.extra.contains_key("logit_bias"));
    assert!(matches!(r.tool_choice, Some(ToolChoice::Named(_))));
}

#[test]
fn request_variants_parse() {
    let r: ChatRequest = round_trip(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"END","tool_choice":"auto"}"#,
    );
    assert_eq!(r.stop, Some(Stop::One("END".into())));
    assert_eq!(r.tool_choice, Some(ToolChoice::Mode("auto".into())));
    assert_eq!(r.messages[0].text(), "hi");
}

#[test]
fn unknown_role_is_an_error_naming_it() {
    let err = serde_json::from_str::<ChatRequest>(
        r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("wizard"), "{err}");
}

#[test]
fn models_list_and_usage_report_round_trip() {
    let list = ModelList::new(vec![Model::new("storycad-fast", "storycad")]);
    let text = serde_json::to_string(&list).unwrap();
    let back: ModelList = round_trip(&text);
    assert_eq!(back.object, "list");
    assert_eq!(back.data[0].object, "model");
    let mut report = UsageReport::new(
        "free",
        LimitStatus::new(10, 9, 42.0),
        LimitStatus::new(100_000, 99_000, 3600.0),
        LimitStatus::new(2, 2, 0.0),
    );
    report.models = vec!["storycad-fast".into()];
    report.max_output_tokens = 1024;
    let back: UsageReport = round_trip(&serde_json::to_string(&report).unwrap());
    assert_eq!(back, report);
}

#[test]
fn finish_reasons_keep_unknown_values() {
    let c: ChunkChoice =
        serde_json::from_str(r#"{"index":0,"delta":{},"finish_reason":"weird"}"#).unwrap();
    assert_eq!(c.finish_reason, Some(FinishReason::Other("weird".into())));
    assert_eq!(serde_json::to_value(&c).unwrap()["finish_reason"], "weird");
}

/// The error `text` gives as a `ChatRequest`.
fn request_error(text: &str) -> String {
    serde_json::from_str::<ChatRequest>(text)
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_fields_are_kept_and_known_ones_checked() {
    let text = r#"{"model":"m","messages":[{"role":"user","content":"x","audio":{"id":"a"}}],
        "metadata":{"k":"v"},"stream_options":{"include_usage":true,"include_obfuscation":false}}"#;
    let req: ChatRequest = serde_json::from_str(text).unwrap();
    assert_eq!(req.extra["metadata"], json!({"k": "v"}));
    assert_eq!(req.messages[0].extra["audio"], json!({"id": "a"}));
    let options = req.stream_options.as_ref().unwrap();
    assert_eq!(options.include_usage, Some(true));
    assert_eq!(options.extra["include_obfuscation"], json!(false));
    // An escaped key is a key like any other.
    let req: ChatRequest =
        serde_json::from_str(r#"{"model":"m","messages":[],"\u0073eed":7,"x\ny":1}"#).unwrap();
    assert_eq!(req.seed, Some(7));
    assert_eq!(req.extra["x\ny"], json!(1));

    assert!(request_error(r#"{"messages":[]}"#).contains("missing field `model`"));
    let twice = request_error(r#"{"model":"m","model":"n","messages":[]}"#);
    assert!(twice.contains("duplicate field `model`"), "{twice}");
    let wrong = request_error(r#"{"model":"m","messages":[],"n":"two"}"#);
    assert!(
        wrong.contains("invalid type: string \"two\", expected u32"),
        "{wrong}"
    );
    assert!(request_error(r#"[]"#).contains("expected struct ChatRequest"));
    assert!(request_error(r#"{"model":"m","messages":[{}]}"#).contains("missing field `role`"));
    // Absent and null are both "not given" for the optional fields.
    let req: ChatRequest =
        serde_json::from_str(r#"{"model":"m","messages":[],"stop":null,"tools":null}"#).unwrap();
    assert_eq!((req.stop, req.tools), (None, None));
}

#[test]
fn stop_content_and_tool_choice_take_either_shape() {
    let req: ChatRequest = serde_json::from_str(
        r#"{"model":"m","stop":"END","tool_choice":"auto",
            "messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#,
    )
    .unwrap();
    assert_eq!(req.stop, Some(Stop::One("END".into())));
    assert_eq!(req.tool_choice, Some(ToolChoice::Mode("auto".into())));
    assert_eq!(
        req.messages[0].content,
        Some(Content::Parts(vec![ContentPart::text("a")]))
    );
    let req: ChatRequest = serde_json::from_str(
        r#"{"model":"m","stop":["a","b"],"messages":[],
            "tool_choice":{"type":"function","function":{"name":"f"}}}"#,
    )
    .unwrap();
    assert_eq!(req.stop, Some(Stop::Many(vec!["a".into(), "b".into()])));
    assert_eq!(req.tool_choice, Some(ToolChoice::function("f")));

    let stop = request_error(r#"{"model":"m","messages":[],"stop":["a",5]}"#);
    assert!(
        stop.contains("invalid type: integer `5`, expected a string"),
        "{stop}"
    );
    let stop = request_error(r#"{"model":"m","messages":[],"stop":5}"#);
    assert!(
        stop.contains("expected a string or an array of strings"),
        "{stop}"
    );
    let content = request_error(r#"{"model":"m","messages":[{"role":"user","content":{}}]}"#);
    assert!(
        content.contains("expected a string or an array of content parts"),
        "{content}"
    );
    let choice = request_error(r#"{"model":"m","messages":[],"tool_choice":{"type":"function"}}"#);
    assert!(choice.contains("missing field `function`"), "{choice}");
    let choice = request_error(r#"{"model":"m","messages":[],"tool_choice":true}"#);
    assert!(choice.contains("a named function"), "{choice}");
}

#[test]
fn content_parts_that_do_not_fit_their_type_are_kept_whole() {
    let parts = |text: &str| -> Vec<ContentPart> {
        match serde_json::from_str::<Content>(text).unwrap() {
            Content::Parts(parts) => parts,
            other => panic!("{other:?}"),
        }
    };
    let known = parts(
        r#"[{"type":"text","text":"a","cache_control":{"type":"ephemeral","ttl":"1h"},"x":1},
            {"type":"text","text":"b","cache_control":null},
            {"type":"image_url","image_url":{"url":"https://i","detail":null}},
            {"type":"image_url","image_url":{"url":"data:,","detail":"low"}},
            {"type":"refusal","refusal":"no"}]"#,
    );
    let mut cached = ContentPart::text("a");
    if let ContentPart::Text { cache_control, .. } = &mut cached {
        let mut control = CacheControl::ephemeral();
        control.ttl = Some("1h".into());
        *cache_control = Some(control);
    }
    let mut low = ImageUrl::new("data:,");
    low.detail = Some("low".into());
    assert_eq!(
        known,
        vec![
            cached,
            ContentPart::text("b"),
            ContentPart::ImageUrl {
                image_url: ImageUrl::new("https://i")
            },
            ContentPart::ImageUrl { image_url: low },
            ContentPart::Refusal {
                refusal: "no".into()
            },
        ]
    );
    // What is not one of those, or does not fit it, is passed on as it came.
    let odd = [
        json!({"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}),
        json!({"type": "text"}),
        json!({"type": "text", "text": 5}),
        json!({"type": "text", "text": "a", "cache_control": {"ttl": "5m"}}),
        json!({"type": "text", "text": "a", "cache_control": "ephemeral"}),
        json!({"type": "image_url", "image_url": "https://i"}),
        json!({"type": "image_url", "image_url": {"url": "https://i", "detail": 1}}),
        json!({"type": "refusal"}),
        json!({"text": "no type"}),
        json!({"type": 1}),
        json!("a string"),
        json!(null),
    ];
    let kept = parts(&Value::Array(odd.to_vec()).to_string());
    assert_eq!(
        kept,
        odd.into_iter().map(ContentPart::Other).collect::<Vec<_>>()
    );
}
