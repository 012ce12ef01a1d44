//! Routing with fallback under workerd: a provider that fails without doing work (500, 429,
//! connection refused) hands the request to the next route of the alias's chain; a caller
//! error (4xx) or anything after the provider's 2xx does not; every route failing is one clean
//! error; the log line lists every attempt. Plus the Anthropic wiring's request refusals.
//!
//! Providers: the suite's fake provider (OpenAI and Anthropic on one port) as `openai` and
//! `anthropic`; a second fake started with `fail_all: 500` as the `PROVIDERS` entry `failing`;
//! a closed port as the `PROVIDERS` entry `closed`; a third fake that checks the suite's OpenAI
//! key, as the `PROVIDERS` entry `padded`, whose key secret holds that key with a trailing
//! newline.

#![allow(clippy::unwrap_used)]

mod support;

use std::{net::TcpListener, process::ExitCode, sync::Arc, sync::OnceLock};

use serde_json::{json, Value};
use storycad_e2e::fake_provider::{FakeProvider, FakeProviderOptions};
use storycad_e2e::tokens::Alg;
use support::{
    chat_body, Seen, Suite, SuiteConfig, ANTHROPIC_ALIAS, ANTHROPIC_MODEL, OPENAI_ALIAS,
    OPENAI_KEY, OPENAI_MODEL,
};

/// `failing:gpt-4o-mini` (500) then `anthropic:claude-haiku-4-5`.
const FALLBACK: &str = "e2e-fallback";
/// `closed:gpt-4o-mini` (connection refused) then `openai:gpt-4o-mini`.
const CONN_FALLBACK: &str = "e2e-conn-fallback";
/// `openai:gpt-4o-mini` then `anthropic:claude-haiku-4-5`: the same fake behind both, so a
/// fault marker makes both fail alike.
const CHAIN: &str = "e2e-chain";
/// `closed:gpt-4o-mini` then `failing:gpt-4o-mini`: nothing answers.
const DEAD: &str = "e2e-dead";
/// `anthropic:claude-haiku-4-5` then `openai:gpt-4o-mini` (the same fake behind both).
const ANTHROPIC_FIRST: &str = "e2e-anthropic-first";

/// `padded:gpt-4o-mini`: its key secret is the OpenAI key with a trailing newline.
const PADDED: &str = "e2e-padded";

static FAILING: OnceLock<FakeProvider> = OnceLock::new();
static KEYED: OnceLock<FakeProvider> = OnceLock::new();

fn failing() -> &'static FakeProvider {
    FAILING.get().unwrap()
}

fn main() -> ExitCode {
    let failing = FakeProvider::start_with(FakeProviderOptions {
        fail_all: Some(500),
        ..Default::default()
    })
    .expect("the failing provider");
    let failing_url = failing.openai_base_url();
    let _ = FAILING.set(failing);
    let keyed = FakeProvider::start_with(FakeProviderOptions {
        openai_key: Some(OPENAI_KEY.into()),
        ..Default::default()
    })
    .expect("the key-checking provider");
    let keyed_url = keyed.openai_base_url();
    let _ = KEYED.set(keyed);
    // A port nothing listens on: bound, then released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let providers = json!({
        "failing": {"base_url": failing_url, "key_secret": "OPENAI_API_KEY"},
        "closed": {"base_url": format!("http://127.0.0.1:{closed}/v1"), "key_secret": "OPENAI_API_KEY"},
        "padded": {"base_url": keyed_url, "key_secret": "PADDED_API_KEY"},
    });
    let openai = format!("openai:{OPENAI_MODEL}");
    let anthropic = format!("anthropic:{ANTHROPIC_MODEL}");
    let routes = json!({
        OPENAI_ALIAS: [openai],
        ANTHROPIC_ALIAS: [anthropic],
        FALLBACK: [format!("failing:{OPENAI_MODEL}"), anthropic],
        CONN_FALLBACK: [format!("closed:{OPENAI_MODEL}"), openai],
        CHAIN: [openai, anthropic],
        DEAD: [format!("closed:{OPENAI_MODEL}"), format!("failing:{OPENAI_MODEL}")],
        ANTHROPIC_FIRST: [anthropic, openai],
        PADDED: [format!("padded:{OPENAI_MODEL}")],
    });
    let mut plans = support::plans();
    let aliases = json!([
        OPENAI_ALIAS,
        ANTHROPIC_ALIAS,
        FALLBACK,
        CONN_FALLBACK,
        CHAIN,
        DEAD,
        ANTHROPIC_FIRST,
        PADDED
    ]);
    for plan in plans.as_object_mut().unwrap().values_mut() {
        plan["models"] = aliases.clone();
    }
    support::run(
        SuiteConfig {
            name: "e2e_routing",
            edit_glue: None,
            jwks_url: false,
            // As an operator may store it: `echo $KEY | wrangler secret put`.
            extra_secrets: vec![("PADDED_API_KEY".into(), format!("{OPENAI_KEY}\n"))],
            extra_vars: vec![
                ("PROVIDERS".into(), providers.to_string()),
                ("ROUTES".into(), routes.to_string()),
                ("PLANS".into(), plans.to_string()),
            ],
        },
        cases![
            fail_all_option_fails_every_request,
            first_provider_500_answer_from_the_second,
            first_provider_500_stream_from_the_second,
            connection_error_moves_to_the_next,
            rate_limits_move_on_and_the_last_error_is_answered,
            server_errors_everywhere_are_one_clean_error,
            all_routes_down_is_one_clean_error,
            caller_errors_do_not_fall_back,
            no_switch_after_the_first_byte,
            a_stream_failing_after_its_headers_does_not_move_on,
            anthropic_untranslatable_request_is_400,
            anthropic_tool_use_stream,
            anthropic_tool_use_answer,
            a_key_stored_with_a_trailing_newline_is_sent_without_it,
        ],
    )
}

async fn ask(s: &Suite, alias: &str, text: &str, stream: bool) -> Seen {
    let mut body = chat_body(alias, text, stream);
    body["max_tokens"] = json!(64);
    s.chat(Some(&s.token(Alg::EdDSA)), &body).await
}

/// The log line's `attempts` as (route, status) pairs.
async fn attempts(s: &Suite, seen: &Seen) -> Vec<(String, Option<u64>)> {
    let line = s.log_line(seen.header("x-request-id").unwrap()).await;
    line["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts in {line}"))
        .iter()
        .map(|a| {
            (
                a["route"].as_str().unwrap().to_owned(),
                a["status"].as_u64(),
            )
        })
        .collect()
}

fn pair(route: &str, status: Option<u64>) -> (String, Option<u64>) {
    (route.to_owned(), status)
}

fn anthropic_route() -> String {
    format!("anthropic:{ANTHROPIC_MODEL}")
}

async fn fail_all_option_fails_every_request(_s: Arc<Suite>) {
    // The fake provider's `fail_all` itself: both dialects, any text, the provider's bodies.
    let http = reqwest::Client::new();
    let p = failing();
    let before = p.request_count();
    let r = http
        .post(format!("{}/chat/completions", p.openai_base_url()))
        .bearer_auth("k")
        .json(&chat_body("m", "hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    let r = http
        .post(format!("{}/v1/messages", p.anthropic_base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    assert!(p.request_count() >= before + 2);
}

async fn first_provider_500_answer_from_the_second(s: Arc<Suite>) {
    let nonce = unique(&s);
    let seen = ask(&s, FALLBACK, &format!("{nonce} hello there"), false).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let v = seen.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        format!("echo: {nonce} hello there")
    );
    assert_eq!(v["model"], FALLBACK);
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(anthropic_route().as_str())
    );
    assert_eq!(failing().requests_containing(&nonce).len(), 1);
    let second = s.provider.requests_containing(&nonce);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].path, "/v1/messages");
    assert_eq!(
        attempts(&s, &seen).await,
        [
            pair(&format!("failing:{OPENAI_MODEL}"), Some(500)),
            pair(&anthropic_route(), Some(200)),
        ]
    );
    let line = s.log_line(seen.header("x-request-id").unwrap()).await;
    assert_eq!(line["route"], anthropic_route());
    assert_eq!(line["status"], 200);
}

async fn first_provider_500_stream_from_the_second(s: Arc<Suite>) {
    let nonce = unique(&s);
    let seen = ask(&s, FALLBACK, &format!("{nonce} streamed"), true).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert!(seen.text().ends_with("data: [DONE]\n\n"), "{}", seen.text());
    let text: String = seen
        .sse_data()
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, format!("echo: {nonce} streamed"));
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(anthropic_route().as_str())
    );
    assert_eq!(failing().requests_containing(&nonce).len(), 1);
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
    assert_eq!(
        attempts(&s, &seen).await,
        [
            pair(&format!("failing:{OPENAI_MODEL}"), Some(500)),
            pair(&anthropic_route(), Some(200)),
        ]
    );
}

async fn a_key_stored_with_a_trailing_newline_is_sent_without_it(s: Arc<Suite>) {
    // The runtime's `Headers` trims a value's surrounding whitespace; the Worker must not refuse
    // such a key before it gets there. The fake answers 401 to any other key.
    let keyed = KEYED.get().unwrap();
    for stream in [false, true] {
        let nonce = unique(&s);
        let seen = ask(&s, PADDED, &nonce, stream).await;
        assert_eq!(seen.status, 200, "stream={stream}: {}", seen.text());
        assert_eq!(
            keyed.requests_containing(&nonce).len(),
            1,
            "stream={stream}"
        );
    }
}

async fn connection_error_moves_to_the_next(s: Arc<Suite>) {
    let nonce = unique(&s);
    let seen = ask(&s, CONN_FALLBACK, &format!("{nonce} anyone there"), false).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(format!("openai:{OPENAI_MODEL}").as_str())
    );
    let line = s.log_line(seen.header("x-request-id").unwrap()).await;
    let list = line["attempts"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{line}");
    assert_eq!(list[0]["route"], format!("closed:{OPENAI_MODEL}"));
    assert!(
        list[0].get("status").is_none(),
        "no answer, no status: {line}"
    );
    assert_eq!(list[0]["error"], "upstream_error", "{line}");
    assert_eq!(list[1]["status"], 200, "{line}");
}

async fn rate_limits_move_on_and_the_last_error_is_answered(s: Arc<Suite>) {
    // Both routes of the chain see the marker: OpenAI answers 429, then Anthropic 429.
    let nonce = unique(&s);
    let seen = ask(&s, CHAIN, &format!("fault:429=2 {nonce}"), false).await;
    seen.assert_error(429, "rate_limit_exceeded");
    assert_eq!(seen.header("retry-after"), Some("2"));
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(anthropic_route().as_str()),
        "the last route tried"
    );
    let paths: Vec<String> = s
        .provider
        .requests_containing(&nonce)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/messages"]);
    assert_eq!(
        attempts(&s, &seen).await,
        [
            pair(&format!("openai:{OPENAI_MODEL}"), Some(429)),
            pair(&anthropic_route(), Some(429)),
        ]
    );
}

async fn server_errors_everywhere_are_one_clean_error(s: Arc<Suite>) {
    for (marker, status, statuses) in [
        ("fault:500", 502, [500, 500]),
        // OpenAI's overload is a 503; Anthropic's a 529.
        ("fault:529", 503, [503, 529]),
    ] {
        for stream in [false, true] {
            let nonce = unique(&s);
            let seen = ask(&s, CHAIN, &format!("{marker} {nonce}"), stream).await;
            let e = seen.assert_error(status, "upstream_error");
            let message = e["message"].as_str().unwrap();
            assert!(!message.contains("127.0.0.1"), "{message}");
            assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
            let got = attempts(&s, &seen).await;
            assert_eq!(
                got.iter().map(|(_, st)| *st).collect::<Vec<_>>(),
                statuses.map(Some),
                "{marker}"
            );
        }
    }
}

async fn all_routes_down_is_one_clean_error(s: Arc<Suite>) {
    let nonce = unique(&s);
    let before = failing().requests_containing(&nonce).len();
    let seen = ask(&s, DEAD, &format!("{nonce} hello"), false).await;
    let e = seen.assert_error(502, "upstream_error");
    let text = seen.text();
    assert!(
        !text.contains("127.0.0.1"),
        "an internal URL leaked: {text}"
    );
    assert!(!e["message"].as_str().unwrap().contains("http"), "{e}");
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(format!("failing:{OPENAI_MODEL}").as_str())
    );
    assert_eq!(failing().requests_containing(&nonce).len(), before + 1);
    let got = attempts(&s, &seen).await;
    assert_eq!(
        got,
        [
            pair(&format!("closed:{OPENAI_MODEL}"), None),
            pair(&format!("failing:{OPENAI_MODEL}"), Some(500)),
        ]
    );
    let line = s.log_line(seen.header("x-request-id").unwrap()).await;
    assert_eq!(line["status"], 502);
    assert_eq!(line["error"], "upstream_error");
}

async fn caller_errors_do_not_fall_back(s: Arc<Suite>) {
    for marker in ["fault:400", "fault:401"] {
        let nonce = unique(&s);
        let seen = ask(&s, CHAIN, &format!("{marker} {nonce}"), false).await;
        assert!(
            seen.status == 400 || seen.status == 502,
            "{marker}: {}",
            seen.text()
        );
        let sent = s.provider.requests_containing(&nonce);
        assert_eq!(sent.len(), 1, "{marker}: the next route was tried");
        assert_eq!(sent[0].path, "/v1/chat/completions");
        assert_eq!(
            seen.header("x-storycad-route"),
            Some(format!("openai:{OPENAI_MODEL}").as_str())
        );
        let got = attempts(&s, &seen).await;
        assert_eq!(got.len(), 1, "{got:?}");
    }
}

async fn no_switch_after_the_first_byte(s: Arc<Suite>) {
    // The first route's stream starts, then fails: the caller gets the error event, and the
    // next route is never asked.
    for marker in ["fault:stream-error", "fault:cut-clean"] {
        let nonce = unique(&s);
        let seen = ask(&s, CHAIN, &format!("{marker} {nonce} a b c"), true).await;
        assert_eq!(seen.status, 200);
        let data = seen.sse_data();
        assert!(!data.iter().any(|d| d == "[DONE]"), "{}", seen.text());
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(last["error"]["code"].is_string(), "{last}");
        let sent = s.provider.requests_containing(&nonce);
        assert_eq!(sent.len(), 1, "{marker}: switched after bytes were sent");
        assert_eq!(
            seen.header("x-storycad-route"),
            Some(format!("openai:{OPENAI_MODEL}").as_str())
        );
    }
}

async fn anthropic_untranslatable_request_is_400(s: Arc<Suite>) {
    let nonce = unique(&s);
    let token = s.token(Alg::EdDSA);
    let mut body = chat_body(ANTHROPIC_ALIAS, &nonce, false);
    body["n"] = json!(2);
    let seen = s.chat(Some(&token), &body).await;
    let e = seen.assert_error(400, "invalid_value");
    assert_eq!(e["param"], "n", "{e}");
    let audio = json!({
        "model": ANTHROPIC_ALIAS,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": nonce},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
        ]}]
    });
    let seen = s.chat(Some(&token), &audio).await;
    let e = seen.assert_error(400, "invalid_value");
    assert!(
        e["param"]
            .as_str()
            .is_some_and(|p| p.starts_with("messages[0].content[1]")),
        "{e}"
    );
    assert!(
        s.provider.requests_containing(&nonce).is_empty(),
        "an untranslatable request reached Anthropic"
    );
}

fn tool_request(alias: &str, text: &str, stream: bool) -> Value {
    json!({
        "model": alias,
        "messages": [{"role": "user", "content": text}],
        "tools": [{"type": "function", "function": {
            "name": "save_scene",
            "description": "Saves a scene.",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}
        }}],
        "tool_choice": "auto",
        "max_tokens": 100,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

async fn anthropic_tool_use_stream(s: Arc<Suite>) {
    let nonce = unique(&s);
    let seen = s
        .chat(
            Some(&s.token(Alg::EdDSA)),
            &tool_request(
                ANTHROPIC_ALIAS,
                &format!("fault:tool-call {nonce} the storm"),
                true,
            ),
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let data = seen.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]", "{}", seen.text());
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut id = None;
    let mut name = None;
    let mut arguments = String::new();
    let mut finish = None;
    for c in &chunks {
        assert_eq!(c["model"], ANTHROPIC_ALIAS);
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0, "{c}");
            if let Some(i) = call["id"].as_str() {
                id = Some(i.to_owned());
                name = call["function"]["name"].as_str().map(str::to_owned);
                assert_eq!(call["type"], "function");
            }
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert!(
        id.is_some_and(|i| i.starts_with("toolu_")),
        "{}",
        seen.text()
    );
    assert_eq!(name.as_deref(), Some("save_scene"));
    let args: Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(args, json!({"text": format!("{nonce} the storm")}));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    // What Anthropic got: the tool, translated.
    let sent = s.provider.requests_containing(&nonce);
    assert_eq!(sent.len(), 1);
    let body = sent[0].json().unwrap();
    assert_eq!(body["tools"][0]["name"], "save_scene");
    assert!(body["tools"][0]["input_schema"].is_object(), "{body}");
    assert_eq!(body["tool_choice"]["type"], "auto");
}

async fn anthropic_tool_use_answer(s: Arc<Suite>) {
    let nonce = unique(&s);
    let seen = s
        .chat(
            Some(&s.token(Alg::EdDSA)),
            &tool_request(ANTHROPIC_ALIAS, &format!("fault:tool-call {nonce}"), false),
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let v = seen.json();
    let message = &v["choices"][0]["message"];
    assert!(message["content"].is_null(), "{v}");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "save_scene");
    let args: Value = serde_json::from_str(
        message["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"text": nonce}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["model"], ANTHROPIC_ALIAS);
}

async fn a_stream_failing_after_its_headers_does_not_move_on(s: Arc<Suite>) {
    // Anthropic answers 200, then a stream that breaks before its first event is whole: the
    // provider had the request, so it is the caller's error (charged), not a silent rerun on
    // the next route; the caller gets 200 and the error event.
    let nonce = unique(&s);
    let marker = format!("fault@{ANTHROPIC_MODEL}:bad-sse");
    let seen = ask(&s, ANTHROPIC_FIRST, &format!("{marker} {nonce} x"), true).await;
    assert_eq!(seen.status, 200);
    let last: Value = serde_json::from_str(seen.sse_data().last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{}", seen.text());
    assert!(!seen.text().contains("[DONE]"), "{}", seen.text());
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(anthropic_route().as_str())
    );
    let paths: Vec<String> = s
        .provider
        .requests_containing(&nonce)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/v1/messages"]);
    let line = s.log_line(seen.header("x-request-id").unwrap()).await;
    let list = line["attempts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{line}");
    assert_eq!(list[0]["route"], anthropic_route());
    assert_eq!(list[0]["status"], 200, "{line}");
    assert_eq!(line["error"], "upstream_error", "{line}");
    // Charged the reservation: the prompt estimate and the 64 output tokens asked for.
    let mut body = chat_body(ANTHROPIC_FIRST, &format!("{marker} {nonce} x"), true);
    body["max_tokens"] = json!(64);
    let reservation = (serde_json::to_vec(&body).unwrap().len() as u64).div_ceil(4) + 64;
    assert_eq!(line["charged"], reservation, "{line}");
}

/// A word only this case's prompt holds. The suite's nonces end in a counter (`...x1`), which
/// `requests_containing` would also find inside `...x10`: a closing letter keeps them apart.
fn unique(s: &Suite) -> String {
    format!("{}z", s.nonce())
}
