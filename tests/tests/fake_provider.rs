//! The fake provider on its own: shapes against the recorded transcripts, every fault, the
//! request log. Over plain HTTP with reqwest.

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use storycad_e2e::fake_provider::{FakeProvider, FakeProviderOptions, PROVIDER_COOKIE};
use storycad_protocol::{ChatChunk, ChatResponse, FinishReason};

const OPENAI_RECORDED: &str = include_str!("../../fixtures/openai/chat_stream_text_usage.sse");
const ANTHROPIC_RECORDED: &str = include_str!("../../fixtures/anthropic/messages_stream_text.sse");

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn openai(p: &FakeProvider, body: Value) -> reqwest::Response {
    http()
        .post(format!("{}/chat/completions", p.openai_base_url()))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn anthropic(p: &FakeProvider, body: Value) -> reqwest::Response {
    http()
        .post(format!("{}/v1/messages", p.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn oai_body(text: &str, stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
        "stream": stream,
        "stream_options": {"include_usage": true}
    })
}

fn ant_body(text: &str, stream: bool) -> Value {
    json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "stream": stream
    })
}

/// The `data:` payloads of an SSE text, and the `event:` names.
fn sse(text: &str) -> (Vec<String>, Vec<String>) {
    let mut data = Vec::new();
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        for line in block.lines() {
            if let Some(d) = line.strip_prefix("data: ") {
                data.push(d.to_owned());
            } else if let Some(e) = line.strip_prefix("event: ") {
                events.push(e.to_owned());
            }
        }
    }
    (data, events)
}

/// The member names of an object (none for anything else).
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

#[tokio::test]
async fn openai_json_answer_echoes_with_documented_usage() {
    let p = FakeProvider::start().unwrap();
    let r = openai(&p, oai_body("hello   brave new world", false)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains(PROVIDER_COOKIE));
    let v: Value = r.json().await.unwrap();
    let recorded: Value =
        serde_json::from_str(include_str!("../../fixtures/openai/chat_completion.json")).unwrap();
    assert_eq!(keys(&v), keys(&recorded));
    let resp: ChatResponse = serde_json::from_value(v).unwrap();
    assert_eq!(resp.text(), "echo: hello brave new world");
    let usage = resp.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 2 + 4);
    assert_eq!(usage.completion_tokens, 5);
    assert_eq!(usage.total_tokens, 11);
    assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop));
}

#[tokio::test]
async fn openai_stream_has_the_recorded_shape() {
    let p = FakeProvider::start().unwrap();
    let r = openai(&p, oai_body("one two three", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let (data, events) = sse(&text);
    assert!(events.is_empty());
    let (recorded, _) = sse(OPENAI_RECORDED);
    // role event, content events, finish event, usage event, [DONE]: as recorded.
    assert_eq!(data.len(), 1 + 4 + 1 + 1 + 1);
    let parsed: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let rec: Vec<Value> = recorded[..recorded.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        parsed[0]["choices"][0]["delta"],
        rec[0]["choices"][0]["delta"]
    );
    for (mine, theirs) in [(0, 0), (1, 1), (5, rec.len() - 2), (6, rec.len() - 1)] {
        assert_eq!(keys(&parsed[mine]), keys(&rec[theirs]), "event {mine}");
        assert_eq!(
            keys(&parsed[mine]["choices"][0]),
            keys(&rec[theirs]["choices"][0]),
            "event {mine}'s choice"
        );
    }
    let chunks: Vec<ChatChunk> = parsed
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let content: String = chunks.iter().filter_map(|c| c.text()).collect();
    assert_eq!(content, "echo: one two three");
    assert_eq!(chunks[5].choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = chunks[6].usage.clone().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (2 + 3, 4));
    assert!(chunks[6].choices.is_empty());
}

#[tokio::test]
async fn openai_stream_without_include_usage_has_no_usage_event() {
    let p = FakeProvider::start().unwrap();
    let mut body = oai_body("a b", true);
    body.as_object_mut().unwrap().remove("stream_options");
    let text = openai(&p, body).await.text().await.unwrap();
    assert!(!text.contains("\"usage\""));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn max_tokens_cuts_the_answer() {
    let p = FakeProvider::start().unwrap();
    let mut body = oai_body("a b c d e", false);
    body["max_completion_tokens"] = json!(2);
    let resp: ChatResponse = openai(&p, body).await.json().await.unwrap();
    assert_eq!(resp.text(), "echo: a");
    assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Length));
    assert_eq!(resp.usage.unwrap().completion_tokens, 2);

    let mut body = ant_body("a b c d e", false);
    body["max_tokens"] = json!(3);
    let v: Value = anthropic(&p, body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "echo: a b");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn anthropic_stream_has_the_recorded_shape_and_padding() {
    let p = FakeProvider::start().unwrap();
    let r = anthropic(&p, ant_body("hi there", true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let (data, events) = sse(&text);
    let (rec_data, rec_events) = sse(ANTHROPIC_RECORDED);
    // The recorded stream has 4 deltas, ours 3: compare with the middle collapsed.
    let collapse = |e: &[String]| {
        let mut out: Vec<String> = Vec::new();
        for x in e {
            if out.last() != Some(x) {
                out.push(x.clone());
            }
        }
        out
    };
    assert_eq!(collapse(&events), collapse(&rec_events));
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "content_block_delta")
            .count(),
        3
    );
    for d in &data {
        let v: Value = serde_json::from_str(d).unwrap();
        if v["type"] != "ping" {
            assert!(d.ends_with(" }") || d.ends_with("  }"), "not padded: {d}");
        }
    }
    assert!(rec_data.iter().any(|d| d.ends_with("   }")));
    let parsed: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = parsed
        .iter()
        .filter(|v| v["type"] == "content_block_delta")
        .map(|v| v["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "echo: hi there");
    assert_eq!(parsed[0]["message"]["usage"]["input_tokens"], 2 + 2);
    let delta = parsed
        .iter()
        .find(|v| v["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 3);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(parsed.last().unwrap()["type"], "message_stop");
}

#[tokio::test]
async fn anthropic_json_answer() {
    let p = FakeProvider::start().unwrap();
    let v: Value = anthropic(&p, ant_body("x y", false))
        .await
        .json()
        .await
        .unwrap();
    let recorded: Value = serde_json::from_str(include_str!(
        "../../fixtures/anthropic/messages_response.json"
    ))
    .unwrap();
    assert_eq!(keys(&v), keys(&recorded));
    assert_eq!(v["content"][0]["text"], "echo: x y");
    assert_eq!(v["usage"]["input_tokens"], 4);
    assert_eq!(v["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn keys_and_anthropic_headers_are_checked() {
    let p = FakeProvider::start_with(FakeProviderOptions {
        openai_key: Some("sk-right".into()),
        anthropic_key: Some("ant-right".into()),
        ..Default::default()
    })
    .unwrap();
    let url = format!("{}/chat/completions", p.openai_base_url());
    let r = http()
        .post(&url)
        .json(&oai_body("a", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&oai_body("a", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );
    let r = http()
        .post(&url)
        .bearer_auth("sk-right")
        .json(&oai_body("a", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let url = format!("{}/v1/messages", p.anthropic_base_url());
    let r = http()
        .post(&url)
        .header("x-api-key", "ant-right")
        .json(&ant_body("a", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "anthropic-version is required");
    let r = http()
        .post(&url)
        .header("x-api-key", "ant-wrong")
        .header("anthropic-version", "2023-06-01")
        .json(&ant_body("a", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut body = ant_body("a", false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let r = http()
        .post(&url)
        .header("x-api-key", "ant-right")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "max_tokens is required");
}

#[tokio::test]
async fn status_faults() {
    let p = FakeProvider::start().unwrap();
    let r = openai(&p, oai_body("fault:429=3 x", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.headers()["retry-after-ms"], "3000");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limit_exceeded"
    );
    let r = openai(&p, oai_body("fault:429-no-retry-after", true)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert!(r.headers().get("retry-after-ms").is_none());
    for (marker, oai, ant) in [
        ("fault:500", 500, 500),
        ("fault:503", 503, 503),
        ("fault:529", 503, 529),
        ("fault:401", 401, 401),
        ("fault:400", 400, 400),
        ("fault:no-such-fault", 400, 400),
    ] {
        let r = openai(&p, oai_body(marker, true)).await;
        assert_eq!(r.status(), oai, "{marker}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{marker}: {v}");
        let r = anthropic(&p, ant_body(marker, true)).await;
        assert_eq!(r.status(), ant, "{marker}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error", "{marker}");
    }
    let r = anthropic(&p, ant_body("fault:529", false)).await;
    assert_eq!(r.headers()["x-should-retry"], "true");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );
    let r = anthropic(&p, ant_body("fault:429", false)).await;
    assert_eq!(r.headers()["retry-after"], "1");
}

#[tokio::test]
async fn reset_closes_without_an_answer() {
    let p = FakeProvider::start().unwrap();
    let err = http()
        .post(format!("{}/chat/completions", p.openai_base_url()))
        .bearer_auth("k")
        .json(&oai_body("fault:reset", false))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(err.status().is_none());
    assert_eq!(p.requests_containing("fault:reset").len(), 1);
}

async fn body_error(r: reqwest::Response) -> (String, bool) {
    let mut s = r.bytes_stream();
    let mut got = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[tokio::test]
async fn cut_ends_the_body_early() {
    let p = FakeProvider::start().unwrap();
    let r = openai(&p, oai_body("fault:cut a b c d", true)).await;
    assert_eq!(r.status(), 200);
    let (text, failed) = body_error(r).await;
    assert!(failed, "a cut chunked body is an error for the reader");
    assert!(!text.contains("[DONE]"));
    assert_eq!(sse(&text).0.len(), 3, "role + 2 content events: {text}");

    let r = anthropic(&p, ant_body("fault:cut a b c d", true)).await;
    let (text, failed) = body_error(r).await;
    assert!(failed);
    assert!(!text.contains("message_stop"));

    for (marker, failed) in [
        ("fault:cut a b c d", true),
        ("fault:cut-clean a b c d", false),
    ] {
        let r = openai(&p, oai_body(marker, true)).await;
        let (text, read_failed) = body_error(r).await;
        assert_eq!(read_failed, failed, "{marker}");
        assert!(!text.contains("[DONE]"), "{marker}");
        assert_eq!(sse(&text).0.len(), 3, "{marker}: {text}");
    }

    let r = openai(&p, oai_body("fault:cut a b c d", false)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "fewer bytes than content-length");
}

#[tokio::test]
async fn slow_drips_one_event_per_interval() {
    let p = FakeProvider::start().unwrap();
    let started = Instant::now();
    let r = openai(&p, oai_body("fault:slow=200 a b", true)).await;
    let mut s = r.bytes_stream();
    let mut arrivals = Vec::new();
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        if String::from_utf8_lossy(&b).contains("\"content\":\"") {
            arrivals.push(started.elapsed());
        }
    }
    // Three content events ("echo:", " a", " b"), 200 ms apart.
    assert!(arrivals.len() >= 2, "{arrivals:?}");
    let total = started.elapsed();
    assert!(total >= Duration::from_millis(600), "{total:?}");
    assert!(total < Duration::from_secs(5), "{total:?}");
}

#[tokio::test]
async fn bad_sse_and_bad_json_are_200_garbage() {
    let p = FakeProvider::start().unwrap();
    let r = openai(&p, oai_body("fault:bad-sse", true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("this is not an event stream"));
    let r = openai(&p, oai_body("fault:bad-json", false)).await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_err());
    let r = anthropic(&p, ant_body("fault:bad-json", false)).await;
    assert!(r.json::<Value>().await.is_err());
    let r = anthropic(&p, ant_body("fault:bad-sse", true)).await;
    let text = r.text().await.unwrap();
    assert!(text.contains("not json at all"));
}

#[tokio::test]
async fn stream_error_sends_the_providers_error_event() {
    let p = FakeProvider::start().unwrap();
    let text = openai(&p, oai_body("fault:stream-error a b c", true))
        .await
        .text()
        .await
        .unwrap();
    let (data, _) = sse(&text);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(!text.contains("[DONE]"));
    let text = anthropic(&p, ant_body("fault:stream-error a b c", true))
        .await
        .text()
        .await
        .unwrap();
    let (_, events) = sse(&text);
    assert_eq!(events.last().unwrap(), "error");
    assert!(!events.contains(&"message_stop".to_owned()));
}

#[tokio::test]
async fn hang_and_stall_hold_the_connection() {
    let p = FakeProvider::start_with(FakeProviderOptions {
        hang_limit: Duration::from_secs(30),
        ..Default::default()
    })
    .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client
        .post(format!("{}/chat/completions", p.openai_base_url()))
        .bearer_auth("k")
        .json(&oai_body("fault:hang", false))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let r = http()
        .post(format!("{}/chat/completions", p.openai_base_url()))
        .bearer_auth("k")
        .json(&oai_body("fault:stall", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let first = s.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    let next = tokio::time::timeout(Duration::from_millis(700), s.next()).await;
    assert!(next.is_err(), "nothing after the role event");
    // Shutting down ends the held connections at once.
    let started = Instant::now();
    p.shutdown();
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn records_requests_and_stops_on_drop() {
    let p = FakeProvider::start().unwrap();
    openai(&p, oai_body("needle-1234", false)).await;
    anthropic(&p, ant_body("other", false)).await;
    assert_eq!(p.request_count(), 2);
    let reqs = p.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(reqs[0].last_user_text(), "needle-1234");
    assert_eq!(reqs[1].header("x-api-key"), Some("sk-ant-test"));
    assert!(reqs[0].received_at <= reqs[1].received_at);
    assert_eq!(p.requests_containing("needle-1234").len(), 1);
    p.clear();
    assert_eq!(p.request_count(), 0);
    let r = http()
        .get(format!("{}/nothing", p.anthropic_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let addr = p.addr();
    drop(p);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn many_parallel_streams() {
    let p = std::sync::Arc::new(FakeProvider::start().unwrap());
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let text = openai(&p, oai_body(&format!("n{i} x"), true))
                    .await
                    .text()
                    .await
                    .unwrap();
                assert!(text.contains(&format!("\" n{i}\"")));
                assert!(text.ends_with("data: [DONE]\n\n"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(p.request_count(), 32);
}

/// `n` distinct words starting with `tag`.
fn words(tag: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{tag}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An Anthropic body whose system prompt (`system` words) carries a breakpoint.
fn ant_cached(model: &str, system: &str, user: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 100,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": user}],
        "stream": stream
    })
}

/// The usage of an Anthropic stream's `message_start` and `message_delta`.
async fn ant_stream_usages(p: &FakeProvider, body: Value) -> (Value, Value) {
    let text = anthropic(p, body).await.text().await.unwrap();
    let (data, _) = sse(&text);
    let parsed: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let start = parsed
        .iter()
        .find(|v| v["type"] == "message_start")
        .unwrap();
    let delta = parsed
        .iter()
        .find(|v| v["type"] == "message_delta")
        .unwrap();
    (start["message"]["usage"].clone(), delta["usage"].clone())
}

#[tokio::test]
async fn anthropic_prompt_cache_writes_reads_and_expires() {
    let p = FakeProvider::start_with(FakeProviderOptions {
        prompt_cache_ttl: Duration::from_millis(800),
        ..Default::default()
    })
    .unwrap();
    let system = words("s", 1500);
    // First: the system prefix is written.
    let v: Value = anthropic(&p, ant_cached("claude-sonnet-4-5", &system, "a b", false))
        .await
        .json()
        .await
        .unwrap();
    let recorded: Value = serde_json::from_str(include_str!(
        "../../fixtures/anthropic/messages_response.json"
    ))
    .unwrap();
    // The usage has the recorded members (but the recording's `inference_geo`).
    let mut want = keys(&recorded["usage"]);
    want.retain(|k| k != "inference_geo");
    assert_eq!(keys(&v["usage"]), want);
    assert_eq!(v["usage"]["input_tokens"], 2);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 1500);
    assert_eq!(
        v["usage"]["cache_creation"]["ephemeral_5m_input_tokens"],
        1500
    );
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
    let first = p.requests().last().unwrap().number;
    assert_eq!(
        p.cache_usage(first),
        Some(storycad_e2e::fake_provider::CacheUsage {
            read: 0,
            write: 1500
        })
    );
    // Then, streamed: read, in message_start and in message_delta.
    let (start, delta) =
        ant_stream_usages(&p, ant_cached("claude-sonnet-4-5", &system, "c d e", true)).await;
    for u in [&start, &delta] {
        assert_eq!(u["input_tokens"], 3, "{u}");
        assert_eq!(u["cache_read_input_tokens"], 1500, "{u}");
        assert_eq!(u["cache_creation_input_tokens"], 0, "{u}");
    }
    assert_eq!(delta["output_tokens"], 4);
    // Unused for longer than the TTL: gone, written again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (start, _) =
        ant_stream_usages(&p, ant_cached("claude-sonnet-4-5", &system, "f", true)).await;
    assert_eq!(start["cache_read_input_tokens"], 0);
    assert_eq!(start["cache_creation_input_tokens"], 1500);
    // Haiku's minimum is 2048: nothing cached.
    let v: Value = anthropic(&p, ant_cached("claude-haiku-4-5", &system, "a b", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(v["usage"]["input_tokens"], 1502);
}

#[tokio::test]
async fn anthropic_more_than_four_breakpoints_is_refused() {
    let p = FakeProvider::start().unwrap();
    let block = json!({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}});
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
        "system": [block, block, block],
        "messages": [{"role": "user", "content": [block, block]}]});
    let r = anthropic(&p, body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("A maximum of 4 blocks with cache_control"));
}

fn oai_cached(key: Option<&str>, system: &str, turns: &[&str], stream: bool) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (i, t) in turns.iter().enumerate() {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": t}));
    }
    let mut v = json!({"model": "gpt-4o", "messages": messages, "stream": stream,
        "stream_options": {"include_usage": true}});
    if let Some(k) = key {
        v["prompt_cache_key"] = json!(k);
    }
    v
}

#[tokio::test]
async fn openai_prompt_cache_by_key_in_json_and_streams() {
    let p = FakeProvider::start().unwrap();
    let system = words("s", 1300);
    let v: Value = openai(&p, oai_cached(Some("sc-a"), &system, &["one two"], false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 1302);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    // The next turn, same key: the shared 1302 tokens, in steps of 128.
    let turns = ["one two", "echo: one two", "three"];
    let v: Value = openai(&p, oai_cached(Some("sc-a"), &system, &turns, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 1306);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 1280);
    // Streamed, the usage chunk says the same.
    let text = openai(&p, oai_cached(Some("sc-a"), &system, &turns, true))
        .await
        .text()
        .await
        .unwrap();
    let (data, _) = sse(&text);
    let usage: Value = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("usage").is_some())
        .unwrap();
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"],
        1280
    );
    let chunk: ChatChunk = serde_json::from_value(usage).unwrap();
    assert_eq!(chunk.usage.unwrap().prompt_tokens, 1306);
    // Another key does not see it; nor does a request without one.
    for key in [Some("sc-b"), None] {
        let v: Value = openai(&p, oai_cached(key, &system, &turns, false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }
}
