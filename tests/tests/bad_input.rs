//! Hostile and malformed input, end to end under workerd: one trial per bad input, each sent
//! to the real Worker with a valid token (unless the token is the bad part). Every one must
//! get a clean 4xx in OpenAI's error shape with a stable code, `content-type:
//! application/json`, an `x-request-id`, a log line carrying the code, and nothing may reach
//! the provider. The suite's own checks add: no panic in the Worker's log, no secret anywhere.
//!
//! This binary's Worker has `MAX_BODY_BYTES` = 4 MiB (the other binaries use 16 KiB), so the
//! large inputs (100,000 brackets, 10,000 messages, 2 MB strings) reach the parser and the
//! plan checks instead of stopping at the size cap; one case checks the cap still holds. Its
//! plans allow 250,000 tokens a day, so a 2 MB prompt (about 500,000 tokens) is more than a
//! whole day's budget.
//!
//! | input | status | code |
//! |---|---|---|
//! | 100,000 `[` (bare, and inside a field) | 400 | `invalid_json` |
//! | nesting 128 deep (serde_json takes 127) | 400 | `invalid_json` |
//! | 10,000 messages (2,049 too; 2,048 pass) | 400 | `invalid_value`, param `messages` |
//! | 10,000 messages, 5 MB | 413 | `body_too_large` |
//! | a 2 MB string as content | 413 | `prompt_too_large`, param `messages` |
//! | a 2 MB string as a field name | 400 | `invalid_value`: an unknown field, its name cut short |
//! | a 2 MB string as `model` | 404 | `model_not_found` (the name cut short) |
//! | a 2 MB string as a role | 400 | `invalid_value` |
//! | invalid UTF-8 inside a JSON string, raw, a lone surrogate | 400 | `invalid_json` |
//! | `text/plain`, `multipart/form-data`, `application/x-www-form-urlencoded` | 415 | `unsupported_media_type` |
//! | no `content-type` (JSON body) | 200 | accepted, like `application/json; charset=utf-8` |
//! | CR LF, `%0d%0a`, U+2028, U+2029, U+0085 in `model` | 404 | `model_not_found`, no header added |
//! | `//`, `%2f`, `%00`, `%0d%0a` in the path; `..` or `.` resolving off a route | 404 | `not_found` (405 where it resolves to a route with another method) |
//! | `..`, `.`, `%2e%2e` resolving to `/v1/chat/completions` | as that route | see below |
//! | PUT, DELETE, PATCH, OPTIONS, TRACE, PROPFIND, HEAD on the chat route | 405 | `method_not_allowed`, `allow: POST` (HEAD: no body) |
//! | OPTIONS, PROPFIND on `/v1/models` | 405 | `method_not_allowed`, `allow: GET, HEAD` |
//! | a signed 100 KB token | 401 | `invalid_token` |
//! | a signed 136 KB token (past workerd's ~128 KiB request head) | 431 | from the runtime, plain text; the Worker never runs |
//! | empty body | 400 | `invalid_json` |
//! | JSON that is not an object, `null` | 400 | `invalid_value` |
//!
//! Dot segments: workerd resolves `.`, `..` and their `%2e` spellings in the URL (as every
//! URL parser does, and as Cloudflare's edge does) before the Worker sees it, so
//! `/v1/../v1/chat/completions` *is* `/v1/chat/completions` to the Worker: it is served by that
//! route with all of its checks (no token: 401), and the provider gets only the configured URL.
//! Nothing of the caller's path ever reaches a provider, so there is nothing to traverse.
//!
//! There is no CORS: the callers are a desktop app and server-side SDKs, so OPTIONS is a 405
//! like any other method the route does not serve.

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc, time::Duration};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use storycad_e2e::tokens::{forge, Alg};
use support::{chat_body, Case, Seen, Suite, SuiteConfig, OPENAI_ALIAS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `MAX_BODY_BYTES` of this binary's Worker.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// `tokens_per_day` of this binary's plans.
const TOKENS_PER_DAY: u64 = 250_000;
/// The most messages a request may hold (OpenAI's own limit).
const MAX_MESSAGES: usize = 2048;
/// Two megabytes.
const TWO_MB: usize = 2 * 1000 * 1000;

/// Nonces of the cases whose valid request is meant to reach the provider.
const CONTROL_PREFIX: &str = "control-";

fn main() -> ExitCode {
    let mut cases = cases![
        nesting_just_past_serde_json_limit,
        one_past_the_message_limit,
        message_limit_itself_passes,
        invalid_utf8_inside_a_json_string,
        invalid_utf8_raw,
        lone_surrogate_escape,
        content_type_text_plain,
        content_type_multipart,
        content_type_form_urlencoded,
        content_type_missing_is_accepted,
        content_type_json_with_charset_is_accepted,
        header_injection_through_the_model,
        dot_dot_paths,
        dot_and_double_slash_paths,
        other_methods_on_the_chat_route,
        head_on_the_chat_route,
        other_methods_on_models,
        token_of_100_kb,
        empty_body,
        json_that_is_not_an_object,
        null_body,
    ];
    // The multi-megabyte inputs one at a time, after the parallel cases: several parsed at once
    // by the one isolate made wrangler dev restart the runtime mid-request (CI saw 503 "Your
    // worker restarted mid-request" on small cases running beside them).
    for heavy in cases![
        hundred_thousand_brackets,
        hundred_thousand_brackets_inside_a_field,
        ten_thousand_messages,
        ten_thousand_messages_over_the_body_limit,
        two_megabyte_content,
        two_megabyte_field_name,
        two_megabyte_model,
        two_megabyte_role,
    ] {
        cases.push(heavy.serial());
    }
    // Alone, after the parallel cases: workerd refuses the oversized head itself, and under
    // wrangler dev that can break the dev proxy's connection to the runtime, so requests in
    // flight at that moment got 503 "Your worker restarted mid-request" (seen once in CI).
    cases.push(
        Case::new(
            "token_past_the_runtime_header_limit",
            token_past_the_runtime_header_limit,
        )
        .serial(),
    );
    // After every other case: the provider got the control requests and nothing else.
    cases.push(
        Case::new(
            "provider_saw_only_the_valid_requests",
            provider_saw_only_the_valid_requests,
        )
        .serial(),
    );
    let plan = json!({
        "models": [OPENAI_ALIAS],
        "requests_per_minute": 100_000,
        "tokens_per_day": TOKENS_PER_DAY,
        "max_output_tokens": 256,
        "concurrent_streams": 64
    });
    support::run(
        SuiteConfig {
            name: "bad_input",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![
                ("MAX_BODY_BYTES".to_owned(), BODY_LIMIT.to_string()),
                (
                    "PLANS".to_owned(),
                    json!({"free": plan, "pro": plan}).to_string(),
                ),
            ],
        },
        cases,
    )
}

/// A valid token for a user of its own (each case has its own budget and window).
fn token(s: &Suite, case: &str) -> String {
    storycad_e2e::tokens::mint(s.keys.get(Alg::EdDSA), &s.claims(&format!("bad-{case}")))
}

/// POSTs `body` as is to the chat route with a valid token and `content-type`, if given.
async fn post_raw(s: &Suite, case: &str, content_type: Option<&str>, body: Vec<u8>) -> Seen {
    let mut rb = s
        .http
        .post(s.at("/v1/chat/completions"))
        .bearer_auth(token(s, case))
        .body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    s.send(rb).await
}

async fn post_json(s: &Suite, case: &str, body: Vec<u8>) -> Seen {
    post_raw(s, case, Some("application/json"), body).await
}

/// Everything every refusal must show: `status`, OpenAI's shape with `code`, JSON content
/// type, a request id, the log line with the code, and nothing at the provider for `nonce`.
async fn refused(s: &Suite, seen: &Seen, status: u16, code: &str, nonce: &str) -> Value {
    let e = seen.assert_error(status, code);
    assert_eq!(
        seen.header("content-type"),
        Some("application/json"),
        "{status} {code}"
    );
    logged(s, seen, status, code).await;
    nothing_upstream(s, nonce);
    assert!(
        seen.body.len() < 2048,
        "the error is {} bytes: the input is echoed",
        seen.body.len()
    );
    e
}

/// The Worker's log line for the answer carries its status and error code.
async fn logged(s: &Suite, seen: &Seen, status: u16, code: &str) {
    let id = seen.header("x-request-id").expect("x-request-id");
    let line = s.log_line(id).await;
    assert_eq!(line["status"], status, "{line}");
    assert_eq!(line["error"], code, "{line}");
}

fn nothing_upstream(s: &Suite, nonce: &str) {
    let sent = s.provider.requests_containing(nonce);
    assert!(
        sent.is_empty(),
        "{} request(s) reached the provider: {:?}",
        sent.len(),
        sent.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// A valid request whose user message is `nonce`, as bytes.
fn valid_body(nonce: &str) -> Vec<u8> {
    chat_body(OPENAI_ALIAS, nonce, false)
        .to_string()
        .into_bytes()
}

/// A control request was answered by the provider (exactly once).
fn proxied(s: &Suite, seen: &Seen, nonce: &str) {
    assert_eq!(seen.status, 200, "{}", shorten(&seen.text()));
    assert_eq!(s.provider.requests_containing(nonce).len(), 1);
}

fn shorten(t: &str) -> &str {
    let mut end = t.len().min(300);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    &t[..end]
}

/// `n` user messages, the first holding `nonce`, each about `size` bytes of content.
fn messages_body(nonce: &str, n: usize, size: usize) -> Vec<u8> {
    let filler = "m".repeat(size);
    let mut messages = vec![json!({"role": "user", "content": nonce})];
    messages.extend((1..n).map(|_| json!({"role": "user", "content": filler})));
    json!({"model": OPENAI_ALIAS, "messages": messages})
        .to_string()
        .into_bytes()
}

async fn hundred_thousand_brackets(s: Arc<Suite>) {
    let nonce = s.nonce();
    let mut body = "[".repeat(100_000).into_bytes();
    body.extend_from_slice(format!("\"{nonce}\"").as_bytes());
    body.extend("]".repeat(100_000).into_bytes());
    let seen = post_json(&s, "brackets", body).await;
    refused(&s, &seen, 400, "invalid_json", &nonce).await;
}

async fn hundred_thousand_brackets_inside_a_field(s: Arc<Suite>) {
    let nonce = s.nonce();
    let valid = chat_body(OPENAI_ALIAS, &nonce, false).to_string();
    // `{"metadata": [[[...]]], <the valid request's members>}`
    let body = format!(
        "{{\"metadata\":{}1{},{}",
        "[".repeat(100_000),
        "]".repeat(100_000),
        &valid[1..]
    );
    let seen = post_json(&s, "brackets-field", body.into_bytes()).await;
    refused(&s, &seen, 400, "invalid_json", &nonce).await;
}

async fn nesting_just_past_serde_json_limit(s: Arc<Suite>) {
    // serde_json takes 127 levels and refuses a 128th; the request object itself is one, so
    // 127 arrays make 128.
    let nonce = s.nonce();
    let valid = chat_body(OPENAI_ALIAS, &nonce, false).to_string();
    for depth in [127, 128, 200] {
        let body = format!(
            "{{\"metadata\":{}1{},{}",
            "[".repeat(depth),
            "]".repeat(depth),
            &valid[1..]
        );
        let seen = post_json(&s, "nesting", body.into_bytes()).await;
        let e = refused(&s, &seen, 400, "invalid_json", &nonce).await;
        assert!(
            e["message"].as_str().unwrap().contains("recursion limit"),
            "{depth}: {e}"
        );
    }
}

async fn ten_thousand_messages(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = post_json(&s, "10k", messages_body(&nonce, 10_000, 20)).await;
    let e = refused(&s, &seen, 400, "invalid_value", &nonce).await;
    assert_eq!(e["param"], "messages", "{e}");
}

async fn one_past_the_message_limit(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = post_json(&s, "2049", messages_body(&nonce, MAX_MESSAGES + 1, 2)).await;
    let e = refused(&s, &seen, 400, "invalid_value", &nonce).await;
    assert_eq!(e["param"], "messages", "{e}");
}

async fn message_limit_itself_passes(s: Arc<Suite>) {
    let nonce = format!("{CONTROL_PREFIX}{}", s.nonce());
    // The fake provider echoes the last user message: make it the nonce too.
    let mut body: Value = serde_json::from_slice(&messages_body(&nonce, MAX_MESSAGES, 2)).unwrap();
    body["messages"][MAX_MESSAGES - 1]["content"] = json!(nonce);
    let seen = post_json(&s, "2048", body.to_string().into_bytes()).await;
    proxied(&s, &seen, &nonce);
    let sent = s.provider.requests_containing(&nonce);
    assert_eq!(
        sent[0].json().unwrap()["messages"].as_array().map(Vec::len),
        Some(MAX_MESSAGES)
    );
}

async fn ten_thousand_messages_over_the_body_limit(s: Arc<Suite>) {
    let nonce = s.nonce();
    let body = messages_body(&nonce, 10_000, 500);
    assert!(body.len() > BODY_LIMIT);
    let seen = post_json(&s, "10k-big", body).await;
    refused(&s, &seen, 413, "body_too_large", &nonce).await;
}

async fn two_megabyte_content(s: Arc<Suite>) {
    // Valid JSON, a valid request, under the body limit: but its prompt alone (bytes / 4,
    // the plan's estimate) is twice the plan's daily budget, so it can never be served.
    let nonce = s.nonce();
    let text = format!("{nonce} {}", "w".repeat(TWO_MB));
    let seen = post_json(&s, "2mb-content", valid_body(&text)).await;
    let e = refused(&s, &seen, 413, "prompt_too_large", &nonce).await;
    assert_eq!(e["param"], "messages", "{e}");
}

async fn two_megabyte_field_name(s: Arc<Suite>) {
    // Only known fields go upstream: an unknown one is refused, its name cut short.
    let nonce = s.nonce();
    let mut body = chat_body(OPENAI_ALIAS, &nonce, false);
    body[format!("k{}", "k".repeat(TWO_MB))] = json!(1);
    let seen = post_json(&s, "2mb-key", body.to_string().into_bytes()).await;
    let e = refused(&s, &seen, 400, "invalid_value", &nonce).await;
    assert!(e["param"].as_str().is_some_and(|p| p.len() < 100), "{e}");
    assert!(seen.body.len() < 1_000, "{}", seen.body.len());
}

async fn two_megabyte_model(s: Arc<Suite>) {
    let nonce = s.nonce();
    let body = chat_body(&format!("m{}", "m".repeat(TWO_MB)), &nonce, false);
    let seen = post_json(&s, "2mb-model", body.to_string().into_bytes()).await;
    let e = refused(&s, &seen, 404, "model_not_found", &nonce).await;
    assert_eq!(e["param"], "model", "{e}");
}

async fn two_megabyte_role(s: Arc<Suite>) {
    let nonce = s.nonce();
    let body = json!({
        "model": OPENAI_ALIAS,
        "messages": [{"role": "r".repeat(TWO_MB), "content": nonce}]
    });
    let seen = post_json(&s, "2mb-role", body.to_string().into_bytes()).await;
    let e = refused(&s, &seen, 400, "invalid_value", &nonce).await;
    assert_eq!(e["param"], "messages[0].role", "{e}");
}

async fn invalid_utf8_inside_a_json_string(s: Arc<Suite>) {
    let nonce = s.nonce();
    for bad in [
        &b"\xff\xfe"[..],
        b"\xc3\x28",
        b"\xed\xa0\x80",     // a surrogate, encoded
        b"\xf4\x90\x80\x80", // past U+10FFFF
        b"\xc0\xaf",         // overlong
    ] {
        let mut body = format!(
            "{{\"model\":\"{OPENAI_ALIAS}\",\"messages\":[{{\"role\":\"user\",\"content\":\"{nonce} "
        )
        .into_bytes();
        body.extend_from_slice(bad);
        body.extend_from_slice(b"\"}]}");
        let seen = post_json(&s, "utf8-string", body).await;
        refused(&s, &seen, 400, "invalid_json", &nonce).await;
    }
}

async fn invalid_utf8_raw(s: Arc<Suite>) {
    let nonce = s.nonce();
    let mut body = b"\xff\xfe\x00{".to_vec();
    body.extend_from_slice(nonce.as_bytes());
    let seen = post_json(&s, "utf8-raw", body).await;
    refused(&s, &seen, 400, "invalid_json", &nonce).await;
}

async fn lone_surrogate_escape(s: Arc<Suite>) {
    let nonce = s.nonce();
    let body = format!(
        "{{\"model\":\"{OPENAI_ALIAS}\",\"messages\":[{{\"role\":\"user\",\"content\":\"{nonce} \\ud800\"}}]}}"
    );
    let seen = post_json(&s, "surrogate", body.into_bytes()).await;
    refused(&s, &seen, 400, "invalid_json", &nonce).await;
}

async fn wrong_content_type(s: &Suite, content_type: &str) {
    let nonce = s.nonce();
    // A body that would be a valid request, so only the content type can be the reason.
    let seen = post_raw(s, "ctype", Some(content_type), valid_body(&nonce)).await;
    let e = refused(s, &seen, 415, "unsupported_media_type", &nonce).await;
    assert!(
        e["message"].as_str().unwrap().contains("application/json"),
        "{e}"
    );
}

async fn content_type_text_plain(s: Arc<Suite>) {
    wrong_content_type(&s, "text/plain").await;
    wrong_content_type(&s, "text/plain; charset=utf-8").await;
}

async fn content_type_multipart(s: Arc<Suite>) {
    wrong_content_type(&s, "multipart/form-data; boundary=xyz").await;
}

async fn content_type_form_urlencoded(s: Arc<Suite>) {
    wrong_content_type(&s, "application/x-www-form-urlencoded").await;
}

async fn content_type_missing_is_accepted(s: Arc<Suite>) {
    // Many simple HTTP clients send JSON without saying so; the body decides.
    let nonce = format!("{CONTROL_PREFIX}{}", s.nonce());
    let seen = post_raw(&s, "ctype-none", None, valid_body(&nonce)).await;
    proxied(&s, &seen, &nonce);
}

async fn content_type_json_with_charset_is_accepted(s: Arc<Suite>) {
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let nonce = format!("{CONTROL_PREFIX}{}", s.nonce());
        let seen = post_raw(&s, "ctype-charset", Some(ct), valid_body(&nonce)).await;
        proxied(&s, &seen, &nonce);
    }
}

async fn header_injection_through_the_model(s: Arc<Suite>) {
    for model in [
        format!("{OPENAI_ALIAS}\r\nX-Injected: 1"),
        format!("{OPENAI_ALIAS}\nX-Injected: 1"),
        format!("{OPENAI_ALIAS}%0d%0aX-Injected:%201"),
        format!("{OPENAI_ALIAS}%0D%0AX-Injected: 1"),
        format!("{OPENAI_ALIAS}\u{2028}X-Injected: 1"),
        format!("{OPENAI_ALIAS}\u{2029}X-Injected: 1"),
        format!("{OPENAI_ALIAS}\u{0085}X-Injected: 1"),
        format!("\r\n\r\nX-Injected: 1\r\n\r\n{OPENAI_ALIAS}"),
    ] {
        let nonce = s.nonce();
        let body = chat_body(&model, &nonce, false);
        let seen = post_json(&s, "inject", body.to_string().into_bytes()).await;
        let e = refused(&s, &seen, 404, "model_not_found", &nonce).await;
        assert_eq!(e["param"], "model");
        assert!(seen.header("x-injected").is_none(), "{model:?}");
        assert!(seen.header("x-storycad-route").is_none(), "{model:?}");
        for (name, value) in &seen.headers {
            let v = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !name.as_str().contains("injected") && !v.contains("Injected"),
                "{model:?}: {name}: {v}"
            );
        }
        // The name is echoed in the message with no line break or separator left raw.
        let message = e["message"].as_str().unwrap();
        assert!(
            !message.contains(['\r', '\n', '\u{2028}', '\u{2029}', '\u{0085}']),
            "{message:?}"
        );
    }
}

/// One request written byte for byte (reqwest would resolve `..` and `.` itself), its answer
/// read to its end.
/// Whether `answer` holds a whole HTTP/1.1 response: its head, and the body its
/// `content-length` or chunked encoding declares (none for a HEAD request or a 204/304; with
/// no declaration the body runs to the end of the connection).
fn answer_complete(answer: &[u8], head_request: bool) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(answer) else {
        return false;
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if head_request || matches!(response.code, Some(204 | 304)) {
        return true;
    }
    let rest = &answer[head_len..];
    if header("transfer-encoding").as_deref() == Some("chunked") {
        return rest.ends_with(b"0\r\n\r\n");
    }
    match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => rest.len() >= len,
        None => false,
    }
}

async fn raw_request(s: &Suite, head: &str, body: &[u8]) -> Seen {
    let addr = s.url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    // The connection is kept alive and the answer read to its declared end: wrangler dev's
    // proxy (not the Worker, and not workerd) answers about one in ten POSTs sent with
    // `connection: close` beside others with its own 503 "Your worker restarted mid-request",
    // or "Cannot reconstruct a Request with a used body", without passing them on (measured
    // with a JavaScript Worker that answers 200: 38 of 400; none on kept-alive connections).
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut request = format!(
            "{head}\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        conn.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer_complete(&answer, head.starts_with("HEAD ")) {
                break;
            }
        }
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the Worker answers within 30 s");
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&answer).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("cut answer: {}", String::from_utf8_lossy(&answer)),
    };
    let mut map = HeaderMap::new();
    for h in response.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    let rest = &answer[head_len..];
    let chunked = map
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    Seen {
        status: response.code.unwrap(),
        body: if chunked {
            dechunk(rest)
        } else {
            rest.to_vec()
        },
        headers: map,
        body_error: None,
        took: started.elapsed(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

async fn raw_chat(s: &Suite, method: &str, path: &str, nonce: &str) -> Seen {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nauthorization: Bearer {}\r\ncontent-type: application/json",
        token(s, "raw")
    );
    let seen = raw_request(s, &head, &valid_body(nonce)).await;
    s.assert_no_secret("answer", &seen.text());
    seen
}

/// What a path gets, given a valid chat request.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The runtime resolves `.` and `..` segments (`%2e` too) before the Worker sees the URL,
    /// as any URL parser does: this is the chat route itself, with all its checks.
    ChatRoute,
    /// An error answer.
    Refused(u16, &'static str),
}

/// Sends a valid chat request to each path, raw, and checks what each gets.
async fn paths(s: &Suite, table: &[(&str, Expect)]) {
    for (path, expect) in table {
        match expect {
            Expect::ChatRoute => {
                let nonce = format!("{CONTROL_PREFIX}{}", s.nonce());
                let seen = raw_chat(s, "POST", path, &nonce).await;
                assert_eq!(seen.status, 200, "{path}: {}", shorten(&seen.text()));
                // The provider gets the configured URL: nothing of the caller's path.
                let sent = s.provider.requests_containing(&nonce);
                assert_eq!(sent.len(), 1, "{path}");
                assert_eq!(sent[0].path, "/v1/chat/completions", "{path}");
                let line = s.log_line(seen.header("x-request-id").unwrap()).await;
                assert_eq!(line["path"], "/v1/chat/completions", "{path}: {line}");
                // The route's checks all apply: no token, no answer.
                let nonce = s.nonce();
                let head = format!("POST {path} HTTP/1.1\r\ncontent-type: application/json");
                let seen = raw_request(s, &head, &valid_body(&nonce)).await;
                refused(s, &seen, 401, "invalid_token", &nonce).await;
            }
            Expect::Refused(status, code) => {
                let nonce = s.nonce();
                let seen = raw_chat(s, "POST", path, &nonce).await;
                assert_eq!(seen.status, *status, "{path}: {}", shorten(&seen.text()));
                refused(s, &seen, *status, code, &nonce).await;
            }
        }
    }
}

async fn dot_dot_paths(s: Arc<Suite>) {
    use Expect::*;
    const NOT_FOUND: Expect = Refused(404, "not_found");
    paths(
        &s,
        &[
            ("/v1/../v1/chat/completions", ChatRoute),
            ("/v1/chat/../chat/completions", ChatRoute),
            ("/v1/chat/completions/../completions", ChatRoute),
            ("/x/../v1/chat/completions", ChatRoute),
            ("/../v1/chat/completions", ChatRoute),
            ("/v1/%2e%2e/v1/chat/completions", ChatRoute),
            ("/v1/chat/%2E%2E/chat/completions", ChatRoute),
            // Resolves to `/v1/chat/`.
            ("/v1/chat/completions/..", NOT_FOUND),
            ("/v1/chat/completions/%2e%2e", NOT_FOUND),
            ("/v1/chat/completions/../../../models/x", NOT_FOUND),
            // Resolves to `POST /healthz`.
            (
                "/v1/chat/completions/../../../healthz",
                Refused(405, "method_not_allowed"),
            ),
        ],
    )
    .await;
}

async fn dot_and_double_slash_paths(s: Arc<Suite>) {
    use Expect::*;
    const NOT_FOUND: Expect = Refused(404, "not_found");
    paths(
        &s,
        &[
            ("//v1/chat/completions", NOT_FOUND),
            ("/v1//chat/completions", NOT_FOUND),
            ("/v1/chat//completions", NOT_FOUND),
            ("/v1/chat/completions//", NOT_FOUND),
            ("/v1/chat%2fcompletions", NOT_FOUND),
            ("/v1/chat/completions%00", NOT_FOUND),
            ("/v1/chat/completions%0d%0aX-Injected:%201", NOT_FOUND),
            // Resolves to `/v1/chat/completions/`.
            ("/v1/chat/completions/.", NOT_FOUND),
            ("/./v1/chat/completions", ChatRoute),
            ("/v1/./chat/completions", ChatRoute),
            ("/v1/%2e/chat/completions", ChatRoute),
            ("/v1/chat/completions?x=../..", ChatRoute),
        ],
    )
    .await;
}

/// A method the route does not serve: 405 with `allow`, and nothing upstream.
async fn not_allowed(s: &Suite, method: &str, path: &str, allow: &str) {
    let nonce = s.nonce();
    let seen = raw_chat(s, method, path, &nonce).await;
    assert_eq!(seen.status, 405, "{method} {path}: {}", seen.text());
    refused(s, &seen, 405, "method_not_allowed", &nonce).await;
    assert_eq!(seen.header("allow"), Some(allow), "{method} {path}");
}

async fn other_methods_on_the_chat_route(s: Arc<Suite>) {
    for method in [
        "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "GET",
    ] {
        not_allowed(&s, method, "/v1/chat/completions", "POST").await;
    }
}

async fn head_on_the_chat_route(s: Arc<Suite>) {
    // A HEAD answer has no body: the status, headers and log line must still say it.
    let nonce = s.nonce();
    let seen = s
        .send(
            s.http
                .head(s.at("/v1/chat/completions"))
                .bearer_auth(token(&s, "head"))
                .header("content-type", "application/json")
                .body(valid_body(&nonce)),
        )
        .await;
    assert_eq!(seen.status, 405);
    assert_eq!(seen.header("allow"), Some("POST"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert!(seen.body.is_empty());
    logged(&s, &seen, 405, "method_not_allowed").await;
    nothing_upstream(&s, &nonce);
}

async fn other_methods_on_models(s: Arc<Suite>) {
    for method in ["OPTIONS", "PROPFIND", "PUT", "TRACE"] {
        not_allowed(&s, method, "/v1/models", "GET, HEAD").await;
    }
}

/// A validly signed token (good claims, a trusted key) padded to about `bytes` long.
fn token_of(s: &Suite, bytes: usize) -> String {
    let claims = s.claims("bad-big-token");
    let base = storycad_e2e::tokens::mint(s.keys.get(Alg::EdDSA), &claims).len();
    // base64 turns 3 bytes of padding into 4 characters.
    forge::oversized(
        s.keys.get(Alg::EdDSA),
        &claims,
        bytes.saturating_sub(base) * 3 / 4,
    )
}

async fn post_with_token(s: &Suite, token: &str, nonce: &str) -> Seen {
    s.send(
        s.http
            .post(s.at("/v1/chat/completions"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(valid_body(nonce)),
    )
    .await
}

async fn token_of_100_kb(s: Arc<Suite>) {
    // Only its size is wrong: the Worker refuses tokens over 8 KiB before any signature work.
    let nonce = s.nonce();
    let big = token_of(&s, 100 * 1024);
    assert!(big.len().abs_diff(100 * 1024) < 64, "{}", big.len());
    let seen = post_with_token(&s, &big, &nonce).await;
    refused(&s, &seen, 401, "invalid_token", &nonce).await;
    assert_eq!(
        seen.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert!(!seen.text().contains(&big[..64]));
}

async fn token_past_the_runtime_header_limit(s: Arc<Suite>) {
    // workerd reads at most about 128 KiB of request head: past that it answers 431 itself
    // (plain text), before the Worker runs. Cloudflare's edge has its own such limit. Either
    // the runtime refuses it that way, or the Worker does, with the whole contract.
    let nonce = s.nonce();
    let seen = post_with_token(&s, &token_of(&s, 136 * 1024), &nonce).await;
    if seen.status == 431 {
        assert!(seen.header("x-request-id").is_none(), "the Worker ran");
        nothing_upstream(&s, &nonce);
    } else {
        refused(&s, &seen, 401, "invalid_token", &nonce).await;
    }
}

async fn empty_body(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = post_json(&s, "empty", Vec::new()).await;
    refused(&s, &seen, 400, "invalid_json", &nonce).await;
}

async fn json_that_is_not_an_object(s: Arc<Suite>) {
    let nonce = s.nonce();
    let valid = chat_body(OPENAI_ALIAS, &nonce, false);
    for body in [
        json!([valid]),
        json!([]),
        json!(nonce),
        json!(42),
        json!(true),
        json!([OPENAI_ALIAS, [{"role": "user", "content": nonce}]]),
    ] {
        let seen = post_json(&s, "not-object", body.to_string().into_bytes()).await;
        let e = refused(&s, &seen, 400, "invalid_value", &nonce).await;
        assert!(e["message"].as_str().unwrap().contains("object"), "{e}");
    }
}

async fn null_body(s: Arc<Suite>) {
    let nonce = s.nonce();
    for body in ["null", " null ", "null\n"] {
        let seen = post_json(&s, "null", body.as_bytes().to_vec()).await;
        refused(&s, &seen, 400, "invalid_value", &nonce).await;
    }
    // `null` with the nonce after it is not JSON at all.
    let seen = post_json(&s, "null", format!("null {nonce}").into_bytes()).await;
    refused(&s, &seen, 400, "invalid_json", &nonce).await;
}

async fn provider_saw_only_the_valid_requests(s: Arc<Suite>) {
    let requests = s.provider.requests();
    let strays: Vec<String> = requests
        .iter()
        .filter(|r| !r.body_text().contains(CONTROL_PREFIX))
        .map(|r| format!("{} {}: {}", r.method, r.path, shorten(&r.body_text())))
        .collect();
    assert!(
        strays.is_empty(),
        "requests from refused inputs: {strays:#?}"
    );
    // The control cases: 1 (2,048 messages) + 1 (no content type) + 2 (charset, case) + 11
    // (paths the runtime resolves to the chat route).
    eprintln!(
        "[bad_input] the provider got {} valid requests, nothing else",
        requests.len()
    );
}
