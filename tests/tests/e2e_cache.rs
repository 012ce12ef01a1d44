//! The KV cache under workerd, per-user scope (the default), with `CACHE_TTL_SECONDS=1`: KV's
//! minimum TTL is 60 s, so the Worker clamps it up and entries outlive the configured second.
//!
//! Each case uses its own nonce in the prompt, so its requests are its own at the shared fake
//! provider, and its cache entries are its own. Entries are written in `ctx.wait_until`, after
//! the answer: a case waits a moment before asking again.

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc, time::Duration};

use serde_json::{json, Value};
use storycad_e2e::tokens::{self, Alg};
use support::{Seen, Suite, SuiteConfig, ANTHROPIC_ALIAS, OPENAI_ALIAS};

/// Long enough for the background KV write of the previous answer to land.
const SETTLE: Duration = Duration::from_millis(1500);

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_cache",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("CACHE_TTL_SECONDS".into(), "1".into())],
        },
        cases![
            miss_then_hit_as_json,
            hit_replayed_as_sse,
            stream_answer_stored_and_served_as_json,
            anthropic_stream_stored_and_replayed,
            bypass_with_the_header_off,
            warm_temperature_cached_only_with_the_header_on,
            one_users_entry_is_never_served_to_another,
            cut_stream_is_not_cached,
            error_is_not_cached,
            tool_call_stream_cached_and_replayed,
        ],
    )
}

fn body(alias: &str, text: &str, stream: bool, temperature: f64) -> Value {
    json!({
        "model": alias,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text}
        ],
        "temperature": temperature,
        "max_tokens": 64,
        "stream": stream
    })
}

async fn ask_as(s: &Suite, sub: &str, body: &Value, cache: Option<&str>) -> Seen {
    let token = tokens::mint(s.keys.get(Alg::EdDSA), &s.claims(sub));
    let mut rb = s
        .http
        .post(s.at("/v1/chat/completions"))
        .bearer_auth(token)
        .json(body);
    if let Some(c) = cache {
        rb = rb.header("x-storycad-cache", c);
    }
    s.send(rb).await
}

async fn ask(s: &Suite, body: &Value, cache: Option<&str>) -> Seen {
    ask_as(s, "e2e-user", body, cache).await
}

fn cache_of(seen: &Seen) -> &str {
    seen.header("x-storycad-cache").unwrap_or("(none)")
}

/// The streamed text of an SSE answer.
fn sse_text(seen: &Seen) -> String {
    seen.sse_data()
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn miss_then_hit_as_json(s: Arc<Suite>) {
    let nonce = unique(&s);
    let b = body(OPENAI_ALIAS, &format!("{nonce} remember me"), false, 0.0);
    let first = ask(&s, &b, None).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(cache_of(&first), "MISS");
    // Longer than CACHE_TTL_SECONDS=1: the entry lives on because the TTL is clamped to 60 s.
    tokio::time::sleep(SETTLE + Duration::from_secs(1)).await;
    let second = ask(&s, &b, None).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(cache_of(&second), "HIT");
    assert_eq!(
        second.json(),
        first.json(),
        "the same answer, byte for byte"
    );
    assert_eq!(
        second.header("x-storycad-route"),
        first.header("x-storycad-route")
    );
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
    let line = s.log_line(second.header("x-request-id").unwrap()).await;
    assert_eq!(line["cache"], "HIT", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(line.get("attempts").is_none(), "no provider tried: {line}");
    let line = s.log_line(first.header("x-request-id").unwrap()).await;
    assert_eq!(line["cache"], "MISS", "{line}");
}

async fn hit_replayed_as_sse(s: Arc<Suite>) {
    let nonce = unique(&s);
    let text = format!("{nonce} one two three four five");
    let first = ask(&s, &body(OPENAI_ALIAS, &text, false, 0.0), None).await;
    assert_eq!(cache_of(&first), "MISS");
    let answer = first.json();
    tokio::time::sleep(SETTLE).await;
    // The same request streamed (stream and stream_options are not part of the key).
    let mut streamed = body(OPENAI_ALIAS, &text, true, 0.0);
    streamed["stream_options"] = json!({"include_usage": true});
    let seen = ask(&s, &streamed, None).await;
    assert_eq!(seen.status, 200);
    assert_eq!(cache_of(&seen), "HIT");
    assert!(seen
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream")));
    let data = seen.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(sse_text(&seen), answer["choices"][0]["message"]["content"]);
    let content_chunks = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(content_chunks >= 2, "content in a few pieces: {data:?}");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]), "the usage chunk, as asked");
    assert_eq!(usage["usage"], answer["usage"]);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], OPENAI_ALIAS);
        assert_eq!(c["id"], answer["id"]);
    }
    // And through the client, which must see a normal stream.
    let client_text = {
        use futures_util::StreamExt;
        let mut req = storycad_client::ChatRequest::new(
            OPENAI_ALIAS,
            vec![
                storycad_client::Message::system("You are terse."),
                storycad_client::Message::user(text.clone()),
            ],
        );
        req.temperature = Some(0.0);
        req.max_tokens = Some(64);
        let mut stream = s.client().chat_stream(&req).await.unwrap();
        let mut t = String::new();
        while let Some(item) = stream.next().await {
            t.push_str(item.unwrap().text().unwrap_or(""));
        }
        t
    };
    assert_eq!(client_text, format!("echo: {text}"));
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
}

async fn stream_answer_stored_and_served_as_json(s: Arc<Suite>) {
    let nonce = unique(&s);
    let text = format!("{nonce} streamed first");
    let first = ask(&s, &body(OPENAI_ALIAS, &text, true, 0.0), None).await;
    assert_eq!(cache_of(&first), "MISS");
    assert!(first.text().ends_with("data: [DONE]\n\n"));
    tokio::time::sleep(SETTLE).await;
    let second = ask(&s, &body(OPENAI_ALIAS, &text, false, 0.0), None).await;
    assert_eq!(cache_of(&second), "HIT", "{}", second.text());
    let v = second.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], OPENAI_ALIAS);
    assert_eq!(v["choices"][0]["message"]["content"], sse_text(&first));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // The usage the provider reported, though the first caller did not ask for it.
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
}

async fn anthropic_stream_stored_and_replayed(s: Arc<Suite>) {
    let nonce = unique(&s);
    let text = format!("{nonce} from claude");
    let first = ask(&s, &body(ANTHROPIC_ALIAS, &text, true, 0.0), None).await;
    assert_eq!(cache_of(&first), "MISS");
    assert!(
        first.text().ends_with("data: [DONE]\n\n"),
        "{}",
        first.text()
    );
    tokio::time::sleep(SETTLE).await;
    let second = ask(&s, &body(ANTHROPIC_ALIAS, &text, true, 0.0), None).await;
    assert_eq!(cache_of(&second), "HIT");
    assert_eq!(sse_text(&second), format!("echo: {text}"));
    assert_eq!(second.sse_data().last().unwrap(), "[DONE]");
    let third = ask(&s, &body(ANTHROPIC_ALIAS, &text, false, 0.0), None).await;
    assert_eq!(cache_of(&third), "HIT");
    assert_eq!(
        third.json()["choices"][0]["message"]["content"],
        format!("echo: {text}")
    );
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
}

async fn bypass_with_the_header_off(s: Arc<Suite>) {
    let nonce = unique(&s);
    let b = body(OPENAI_ALIAS, &format!("{nonce} fresh please"), false, 0.0);
    for _ in 0..2 {
        let seen = ask(&s, &b, Some("off")).await;
        assert_eq!(seen.status, 200);
        assert_eq!(cache_of(&seen), "BYPASS");
        tokio::time::sleep(SETTLE).await;
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
    // Nothing was stored by those: the first cacheable ask is a miss.
    let seen = ask(&s, &b, None).await;
    assert_eq!(cache_of(&seen), "MISS");
}

async fn warm_temperature_cached_only_with_the_header_on(s: Arc<Suite>) {
    let nonce = unique(&s);
    let b = body(OPENAI_ALIAS, &format!("{nonce} be creative"), false, 0.7);
    for _ in 0..2 {
        let seen = ask(&s, &b, None).await;
        assert_eq!(cache_of(&seen), "BYPASS");
        tokio::time::sleep(SETTLE).await;
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
    let first = ask(&s, &b, Some("on")).await;
    assert_eq!(cache_of(&first), "MISS");
    tokio::time::sleep(SETTLE).await;
    let second = ask(&s, &b, Some("on")).await;
    assert_eq!(cache_of(&second), "HIT");
    assert_eq!(second.json(), first.json());
    assert_eq!(s.provider.requests_containing(&nonce).len(), 3);
}

async fn one_users_entry_is_never_served_to_another(s: Arc<Suite>) {
    let nonce = unique(&s);
    let b = body(OPENAI_ALIAS, &format!("{nonce} my secret plot"), false, 0.0);
    let a1 = ask_as(&s, "user-a", &b, None).await;
    assert_eq!(cache_of(&a1), "MISS");
    tokio::time::sleep(SETTLE).await;
    let b1 = ask_as(&s, "user-b", &b, None).await;
    assert_eq!(cache_of(&b1), "MISS", "user A's entry served to user B");
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
    let a2 = ask_as(&s, "user-a", &b, None).await;
    assert_eq!(cache_of(&a2), "HIT");
    assert_eq!(a2.json(), a1.json());
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
}

async fn cut_stream_is_not_cached(s: Arc<Suite>) {
    let nonce = unique(&s);
    let b = body(
        OPENAI_ALIAS,
        &format!("fault:cut-clean {nonce} a b c"),
        true,
        0.0,
    );
    for _ in 0..2 {
        let seen = ask(&s, &b, None).await;
        assert_eq!(seen.status, 200);
        assert_eq!(cache_of(&seen), "MISS");
        let last: Value = serde_json::from_str(seen.sse_data().last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "stream_truncated", "{last}");
        tokio::time::sleep(SETTLE).await;
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
    // An error event mid-stream is not cached either.
    let nonce = unique(&s);
    let b = body(
        OPENAI_ALIAS,
        &format!("fault:stream-error {nonce} a b"),
        true,
        0.0,
    );
    for _ in 0..2 {
        let seen = ask(&s, &b, None).await;
        assert_eq!(cache_of(&seen), "MISS");
        tokio::time::sleep(SETTLE).await;
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
}

async fn error_is_not_cached(s: Arc<Suite>) {
    let nonce = unique(&s);
    let b = body(OPENAI_ALIAS, &format!("fault:500 {nonce}"), false, 0.0);
    for _ in 0..2 {
        let seen = ask(&s, &b, None).await;
        seen.assert_error(502, "upstream_error");
        assert_eq!(cache_of(&seen), "MISS");
        tokio::time::sleep(SETTLE).await;
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
    // A complete answer the Worker could not read (bad JSON) is not cached either.
    let nonce = unique(&s);
    let b = body(OPENAI_ALIAS, &format!("fault:bad-json {nonce}"), false, 0.0);
    for _ in 0..2 {
        let seen = ask(&s, &b, None).await;
        seen.assert_error(502, "upstream_error");
        tokio::time::sleep(SETTLE).await;
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
}

async fn tool_call_stream_cached_and_replayed(s: Arc<Suite>) {
    let nonce = unique(&s);
    let mut b = body(
        OPENAI_ALIAS,
        &format!("fault:tool-call {nonce} chapter one"),
        true,
        0.0,
    );
    b["tools"] = json!([{"type": "function", "function": {"name": "save_scene",
        "parameters": {"type": "object"}}}]);
    let first = ask(&s, &b, None).await;
    assert_eq!(cache_of(&first), "MISS");
    assert_eq!(first.sse_data().last().unwrap(), "[DONE]");
    tokio::time::sleep(SETTLE).await;
    let second = ask(&s, &b, None).await;
    assert_eq!(cache_of(&second), "HIT", "{}", second.text());
    let mut arguments = String::new();
    let mut names = Vec::new();
    let mut finish = None;
    for d in second.sse_data().iter().filter(|d| *d != "[DONE]") {
        let c: Value = serde_json::from_str(d).unwrap();
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = call["function"]["name"].as_str() {
                names.push(n.to_owned());
            }
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(names, ["save_scene"]);
    let args: Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(args, json!({"text": format!("{nonce} chapter one")}));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    b["stream"] = json!(false);
    let third = ask(&s, &b, None).await;
    assert_eq!(cache_of(&third), "HIT");
    let v = third.json();
    assert!(v["choices"][0]["message"]["content"].is_null(), "{v}");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "save_scene"
    );
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
}

/// A word only this case's prompt holds. The suite's nonces end in a counter (`...x1`), which
/// `requests_containing` would also find inside `...x10`: a closing letter keeps them apart.
fn unique(s: &Suite) -> String {
    format!("{}z", s.nonce())
}
