//! The Worker's proxy path end to end under workerd: answers through our client (JSON and
//! streams, OpenAI and Anthropic routes), what reaches the provider (our key, never the
//! caller's token or cookies), every provider fault as the caller sees it, and the request
//! checks (413, 400 naming the field, 404, 405).

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::{json, Value};
use storycad_client::{ChatRequest, Error, Message};
use storycad_e2e::{fake_provider::PROVIDER_COOKIE, tokens::Alg, workerd::LogLevel};
use storycad_protocol::{FinishReason, StreamOptions};
use support::{
    chat_body, drain, Suite, SuiteConfig, ANSWER_TIMEOUT, ANTHROPIC_ALIAS, ANTHROPIC_KEY,
    ANTHROPIC_MODEL, FALLBACK_ALIAS, MAX_BODY_BYTES, OPENAI_ALIAS, OPENAI_KEY, OPENAI_MODEL,
    UPSTREAM_TIMEOUT,
};

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_proxy",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: Vec::new(),
        },
        {
            let mut cases = cases![
                chat_through_the_client,
                stream_through_the_client,
                stream_wire_shape,
                usage_event_only_when_asked,
                stream_is_relayed_as_it_arrives,
                a_stream_longer_than_the_idle_limit_is_not_cut_while_it_flows,
                anthropic_chat_through_the_client,
                anthropic_stream_through_the_client,
                provider_key_attached_and_caller_credentials_not_forwarded,
                anthropic_gets_its_key_and_no_caller_credentials,
                provider_cookies_are_not_relayed,
                cut_stream_is_an_error_for_the_client,
                early_clean_end_is_stream_truncated,
                anthropic_cut_stream_is_an_error_for_the_client,
                upstream_error_event_is_an_error_for_the_client,
                anthropic_upstream_error_event_is_an_error_for_the_client,
                garbage_stream_ends_with_an_error_event,
                stalled_stream_ends_with_a_timeout_event,
                upstream_429_keeps_retry_after,
                upstream_429_without_retry_after,
                upstream_5xx_statuses,
                anthropic_upstream_5xx_statuses,
                provider_rejecting_our_key_is_not_a_401,
                anthropic_provider_rejecting_our_key_is_not_a_401,
                provider_400_is_passed_on_scrubbed,
                provider_redirect_is_not_followed,
                anthropic_provider_400_is_passed_on_scrubbed,
                reset_before_headers_is_502,
                invalid_json_from_upstream_is_502,
                hanging_upstream_is_504_after_the_timeout,
                body_over_the_limit_is_413,
                body_under_the_limit_passes,
                bad_json_is_400,
                invalid_fields_are_400_naming_the_field,
                unknown_model_is_404,
                unknown_routes_are_404,
                wrong_methods_are_405,
                request_ids_are_unique_and_logged,
                a_5xx_answer_is_logged_with_console_error,
                the_callers_ids_are_logged_and_reach_openai,
                parallel_streams,
                client_retries_what_the_worker_marks_retryable,
                fallback_moves_on_after_5xx_429_and_connection_errors,
                fallback_stream_moves_on_before_the_first_byte,
                no_fallback_after_the_provider_accepted_the_work,
                no_fallback_after_a_400,
                no_fallback_after_the_first_byte,
                every_route_failing_gives_the_last_failure,
            ];
            cases.push(
                support::Case::new(
                    "chunked_body_over_the_limit_is_413",
                    chunked_body_over_the_limit_is_413,
                )
                .serial(),
            );
            cases
        },
    )
}

fn user(text: &str) -> ChatRequest {
    ChatRequest::new(
        OPENAI_ALIAS,
        vec![Message::system("You are terse."), Message::user(text)],
    )
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The body of the one request carrying `nonce` the provider got, at `path`.
fn sent_once(s: &Suite, nonce: &str, path: &str) -> Value {
    let sent = s.provider.requests_containing(nonce);
    assert_eq!(sent.len(), 1, "requests carrying {nonce}");
    assert_eq!(sent[0].path, path);
    sent[0].json().unwrap()
}

/// A complete answer through `alias` and `route`: the fake's echo of `prompt`, ending with
/// `stop`, with the fake's documented counts (words of every message; 1 + words of the last).
fn assert_echo(answer: &storycad_client::Completion, alias: &str, route: &str, prompt: &str) {
    assert_eq!(answer.text(), format!("echo: {prompt}"));
    assert_eq!(answer.model, alias, "the caller sees the alias");
    assert_eq!(answer.choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = answer.usage.clone().unwrap();
    assert_eq!(usage.prompt_tokens, 3 + words(prompt));
    assert_eq!(usage.completion_tokens, 1 + words(prompt));
    assert_eq!(answer.meta.route.as_deref(), Some(route));
}

async fn chat_through_the_client(s: Arc<Suite>) {
    let nonce = s.nonce();
    let prompt = format!("{nonce} tell me a story");
    let answer = s.client().chat(&user(&prompt)).await.unwrap();
    assert_echo(
        &answer,
        OPENAI_ALIAS,
        &format!("openai:{OPENAI_MODEL}"),
        &prompt,
    );
    assert!(answer
        .meta
        .request_id
        .as_deref()
        .is_some_and(|id| !id.is_empty()));
    let body = sent_once(&s, &nonce, OPENAI_PATH);
    assert_eq!(
        body["model"], OPENAI_MODEL,
        "the alias becomes the provider's model"
    );
}

/// The caller's `x-request-id` and `traceparent` (sent through the client's
/// `RequestOptions`) are in the Worker's log line beside its own id; OpenAI gets the id as its
/// `x-client-request-id`, Anthropic (which has no such header) nothing; other per-request
/// headers work (`x-storycad-cache: off`).
async fn the_callers_ids_are_logged_and_reach_openai(s: Arc<Suite>) {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for (alias, stream) in [(OPENAI_ALIAS, false), (ANTHROPIC_ALIAS, true)] {
        let nonce = s.nonce();
        let mut req = user(&format!("{nonce} hello"));
        req.model = alias.to_owned();
        let options = storycad_client::RequestOptions::new()
            .request_id(format!("collab-{nonce}"))
            .traceparent(format!("00-{trace}-00f067aa0ba902b7-01"))
            .header("x-storycad-cache", "off");
        let client = s.client();
        let meta = if stream {
            let mut st = client.chat_stream_with(&req, &options).await.unwrap();
            while let Some(item) = st.next().await {
                item.unwrap();
            }
            st.meta().clone()
        } else {
            client.chat_with(&req, &options).await.unwrap().meta
        };
        assert_eq!(meta.cache.as_deref(), Some("BYPASS"), "{alias}");
        let worker_id = meta.request_id.unwrap();
        assert_ne!(
            worker_id,
            format!("collab-{nonce}"),
            "the answer keeps the Worker's id"
        );
        let line = s.log_line(&worker_id).await;
        assert_eq!(
            line["client_request_id"],
            format!("collab-{nonce}"),
            "{line}"
        );
        assert_eq!(line["trace_id"], trace, "{line}");
        let sent = s.provider.requests_containing(&nonce);
        assert_eq!(sent.len(), 1, "{alias}");
        let upstream_id = sent[0].header("x-client-request-id");
        if alias == OPENAI_ALIAS {
            assert_eq!(upstream_id, Some(format!("collab-{nonce}").as_str()));
        } else {
            assert_eq!(upstream_id, None);
        }
        assert!(
            sent[0].header("traceparent").is_none(),
            "caller headers are not copied"
        );
    }
}

async fn stream_through_the_client(s: Arc<Suite>) {
    let nonce = s.nonce();
    let prompt = format!("{nonce} one two three");
    let req = with_usage(user(&prompt));
    let stream = s.client().chat_stream(&req).await.unwrap();
    assert!(stream.meta().request_id.is_some());
    let chunks = echoed_stream(stream, OPENAI_ALIAS, &prompt).await;
    // role + 5 content + finish + usage.
    assert_eq!(chunks, 1 + (1 + words(&prompt)) + 1 + 1);
}

/// `req`, asking for the usage chunk at the end of its stream.
fn with_usage(mut req: ChatRequest) -> ChatRequest {
    req.stream_options = Some(StreamOptions::with_usage());
    req
}

/// Reads a stream whose request asked for usage and was routed through `alias`: every chunk
/// names the alias; the text is the fake's echo of `prompt`, ending with `stop`, and the usage
/// event has the fake's counts. Returns the number of chunks.
async fn echoed_stream(mut stream: storycad_client::ChatStream, alias: &str, prompt: &str) -> u64 {
    let mut text = String::new();
    let mut usage = None;
    let mut finish = None;
    let mut chunks = 0;
    while let Some(item) = stream.next().await {
        let chunk = item.unwrap();
        chunks += 1;
        assert_eq!(chunk.model, alias);
        text.push_str(chunk.text().unwrap_or(""));
        if let Some(f) = chunk.choices.first().and_then(|c| c.finish_reason.clone()) {
            finish = Some(f);
        }
        if chunk.usage.is_some() {
            usage = chunk.usage.clone();
        }
    }
    assert_eq!(text, format!("echo: {prompt}"));
    assert_eq!(finish, Some(FinishReason::Stop));
    let usage = usage.expect("the usage event, as asked");
    assert_eq!(usage.prompt_tokens, 3 + words(prompt));
    assert_eq!(usage.completion_tokens, 1 + words(prompt));
    chunks
}

async fn stream_wire_shape(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = s
        .chat(
            Some(&s.token(Alg::RS256)),
            &chat_body(OPENAI_ALIAS, &nonce, true),
        )
        .await;
    assert_eq!(seen.status, 200);
    assert!(seen
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream")));
    assert!(seen.header("x-request-id").is_some());
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(format!("openai:{OPENAI_MODEL}").as_str())
    );
    assert!(seen.text().ends_with("data: [DONE]\n\n"), "{}", seen.text());
    let data = seen.sse_data();
    for d in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], OPENAI_ALIAS);
    }
}

async fn usage_event_only_when_asked(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = s.ask(OPENAI_ALIAS, &nonce, true).await;
    assert_eq!(seen.status, 200);
    assert!(
        seen.sse_data().iter().all(|d| !d.contains("\"usage\"")),
        "usage event sent unasked: {}",
        seen.text()
    );
    // The Worker still asks the provider for it, to meter the tokens.
    let sent = s.provider.requests_containing(&nonce);
    assert_eq!(
        sent[0].json().unwrap()["stream_options"]["include_usage"],
        true,
        "the Worker must ask for usage to count tokens"
    );
}

async fn stream_is_relayed_as_it_arrives(s: Arc<Suite>) {
    // The provider sends one content event every 400 ms; each must reach the caller when sent,
    // not when the stream ends.
    let started = Instant::now();
    let mut stream = s
        .client()
        .chat_stream(&user("fault:slow=400 b c"))
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    while let Some(item) = stream.next().await {
        if item.unwrap().text().is_some_and(|t| !t.is_empty()) {
            arrivals.push(started.elapsed());
        }
    }
    assert_eq!(arrivals.len(), 4, "{arrivals:?}");
    let spread = arrivals[3] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(900),
        "events arrived together (buffered): {arrivals:?}"
    );
}

/// The idle limit is silence, not length: a stream whose events keep coming (every 400 ms) for
/// longer than `UPSTREAM_TIMEOUT` (2.5 s) runs to its end. (The Worker keeps one idle timer per
/// stream and sets it again when it fires while events still arrive.)
async fn a_stream_longer_than_the_idle_limit_is_not_cut_while_it_flows(s: Arc<Suite>) {
    let started = Instant::now();
    let mut stream = s
        .client()
        .chat_stream(&user("fault:slow=400 a b c d e f g h"))
        .await
        .unwrap();
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        text.push_str(item.unwrap().text().unwrap_or(""));
    }
    assert!(text.ends_with("g h"), "{text}");
    assert!(
        started.elapsed() > UPSTREAM_TIMEOUT,
        "the stream must outlast the idle limit to test it: {:?}",
        started.elapsed()
    );
}

fn anthropic_req(text: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        ANTHROPIC_ALIAS,
        vec![Message::system("You are terse."), Message::user(text)],
    );
    r.max_tokens = Some(200);
    r
}

async fn anthropic_chat_through_the_client(s: Arc<Suite>) {
    let nonce = s.nonce();
    let prompt = format!("{nonce} hello claude");
    let answer = s.client().chat(&anthropic_req(&prompt)).await.unwrap();
    let route = format!("anthropic:{ANTHROPIC_MODEL}");
    assert_echo(&answer, ANTHROPIC_ALIAS, &route, &prompt);
    let body = sent_once(&s, &nonce, ANTHROPIC_PATH);
    assert_eq!(body["model"], ANTHROPIC_MODEL);
    assert_eq!(body["max_tokens"], 200);
    assert!(
        body["system"].to_string().contains("You are terse."),
        "{body}"
    );
}

async fn anthropic_stream_through_the_client(s: Arc<Suite>) {
    let nonce = s.nonce();
    let prompt = format!("{nonce} stream please");
    let req = with_usage(anthropic_req(&prompt));
    let stream = s.client().chat_stream(&req).await.unwrap();
    echoed_stream(stream, ANTHROPIC_ALIAS, &prompt).await;
}

/// The end-user id the provider got: `u-` and 32 hex digits, the same for one user, never the
/// user's id or what the caller put in `user`.
fn end_user_id(id: Option<&Value>, sub: &str) -> String {
    let id = id.and_then(Value::as_str).unwrap_or_default().to_owned();
    assert!(
        id.len() == 34 && id.starts_with("u-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "end-user id {id:?}"
    );
    assert!(!id.contains(sub) && !id.contains("caller-user"), "{id}");
    id
}

async fn provider_key_attached_and_caller_credentials_not_forwarded(s: Arc<Suite>) {
    let nonce = s.nonce();
    let token = s.token(Alg::ES256);
    let mut body = chat_body(OPENAI_ALIAS, &nonce, false);
    body["user"] = json!("caller-user");
    let seen = s
        .send(
            s.http
                .post(s.at("/v1/chat/completions"))
                .bearer_auth(&token)
                .header("cookie", "session=caller-cookie-secret; theme=dark")
                .header("x-api-key", "caller-x-api-key")
                .header("openai-organization", "org-caller")
                .json(&body),
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let sent = s.provider.requests_containing(&nonce);
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert!(
        r.header("cookie").is_none(),
        "cookies forwarded: {:?}",
        r.headers
    );
    for (name, value) in &r.headers {
        assert!(
            !value.contains(&token),
            "the caller's JWT reached the provider in {name}"
        );
        assert!(
            !value.contains("caller-cookie-secret"),
            "cookie forwarded in {name}"
        );
        assert!(
            !value.contains("caller-x-api-key"),
            "caller header forwarded in {name}"
        );
        assert!(
            !value.contains("org-caller"),
            "caller header forwarded in {name}"
        );
    }
    assert!(!r.body_text().contains(&token));
    // The provider's end-user field is the Worker's keyed hash of the user, not the caller's.
    let sent = r.json().unwrap();
    assert!(sent.get("user").is_none(), "{sent}");
    let id = end_user_id(sent.get("safety_identifier"), "e2e-user");
    // The same user gets the same id on the next request, and on the Anthropic route.
    let nonce = s.nonce();
    s.chat(Some(&token), &chat_body(OPENAI_ALIAS, &nonce, false))
        .await;
    let again = s.provider.requests_containing(&nonce)[0].json().unwrap();
    assert_eq!(again["safety_identifier"], id.as_str());
}

async fn anthropic_gets_its_key_and_no_caller_credentials(s: Arc<Suite>) {
    let nonce = s.nonce();
    let token = s.token(Alg::RS256);
    let mut body = chat_body(ANTHROPIC_ALIAS, &nonce, true);
    body["max_tokens"] = json!(50);
    let seen = s
        .send(
            s.http
                .post(s.at("/v1/chat/completions"))
                .bearer_auth(&token)
                .header("cookie", "session=caller-cookie-secret")
                .json(&body),
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let sent = s.provider.requests_containing(&nonce);
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert!(r.header("anthropic-version").is_some());
    assert!(r.header("authorization").is_none(), "{:?}", r.headers);
    assert!(r.header("cookie").is_none());
    for (name, value) in &r.headers {
        assert!(
            !value.contains(&token),
            "the caller's JWT reached the provider in {name}"
        );
    }
    // Anthropic's end-user field: metadata.user_id.
    let sent = r.json().unwrap();
    end_user_id(sent["metadata"].get("user_id"), "e2e-user");
}

async fn provider_cookies_are_not_relayed(s: Arc<Suite>) {
    for stream in [false, true] {
        let seen = s.ask(OPENAI_ALIAS, &s.nonce(), stream).await;
        assert_eq!(seen.status, 200);
        for value in seen.headers.get_all("set-cookie") {
            assert!(
                !value.to_str().unwrap_or("").contains(PROVIDER_COOKIE),
                "the provider's cookie reached the caller"
            );
        }
    }
}

/// Opens a stream of `req` with the suite's client and reads it to its end: the text and
/// the error that ended it, if any.
async fn stream_text(s: &Suite, req: &ChatRequest) -> (String, Option<Error>) {
    drain(s.client().chat_stream(req).await.unwrap()).await
}

fn assert_stream_failed(s: &Suite, err: Option<Error>) -> Error {
    let err = err.expect("the stream must end with an error, not as a success");
    assert!(
        matches!(err, Error::StreamTruncated { .. } | Error::Stream { .. }),
        "{err:?}"
    );
    s.assert_no_secret("stream error", &format!("{err} {err:?}"));
    err
}

async fn cut_stream_is_an_error_for_the_client(s: Arc<Suite>) {
    let (text, err) = stream_text(&s, &user("fault:cut alpha beta gamma delta")).await;
    assert_eq!(
        text, "echo: fault:cut",
        "the two events sent before the cut"
    );
    assert_stream_failed(&s, err);
    // On the wire: an error event, no [DONE].
    let e = s
        .ask(OPENAI_ALIAS, "fault:cut alpha beta", true)
        .await
        .stream_error();
    // The connection broke mid-body: a truncation or an upstream failure, as an event.
    let code = e["code"].as_str().unwrap_or("");
    assert!(
        ["stream_truncated", "upstream_error"].contains(&code),
        "{e}"
    );
}

async fn early_clean_end_is_stream_truncated(s: Arc<Suite>) {
    // The upstream ends its body properly but before its last events.
    let seen = s
        .ask(OPENAI_ALIAS, "fault:cut-clean alpha beta", true)
        .await;
    assert_eq!(seen.stream_error()["code"], "stream_truncated");
    let (_, err) = stream_text(&s, &user("fault:cut-clean alpha beta")).await;
    assert_stream_failed(&s, err);
}

async fn anthropic_cut_stream_is_an_error_for_the_client(s: Arc<Suite>) {
    let (_, err) = stream_text(&s, &anthropic_req("fault:cut alpha beta gamma")).await;
    assert_stream_failed(&s, err);
}

async fn upstream_error_event_is_an_error_for_the_client(s: Arc<Suite>) {
    upstream_error_event(&s, user("fault:stream-error a b c")).await;
}

async fn anthropic_upstream_error_event_is_an_error_for_the_client(s: Arc<Suite>) {
    upstream_error_event(&s, anthropic_req("fault:stream-error a b c")).await;
}

async fn upstream_error_event(s: &Suite, req: ChatRequest) {
    let (text, err) = stream_text(s, &req).await;
    assert!(text.starts_with("echo:"), "{text}");
    let err = assert_stream_failed(s, err);
    assert!(matches!(err, Error::Stream { .. }), "{err:?}");
}

async fn garbage_stream_ends_with_an_error_event(s: Arc<Suite>) {
    s.ask(OPENAI_ALIAS, "fault:bad-sse", true)
        .await
        .stream_error();
    let (_, err) = stream_text(&s, &user("fault:bad-sse")).await;
    assert_stream_failed(&s, err);
}

async fn stalled_stream_ends_with_a_timeout_event(s: Arc<Suite>) {
    let started = Instant::now();
    let seen = s.ask(OPENAI_ALIAS, "fault:stall", true).await;
    assert_eq!(seen.stream_error()["code"], "upstream_timeout");
    let took = started.elapsed();
    assert!(took >= UPSTREAM_TIMEOUT, "{took:?}");
    assert!(took < UPSTREAM_TIMEOUT * 4, "{took:?}");
}

async fn upstream_429_keeps_retry_after(s: Arc<Suite>) {
    let seen = s.ask(OPENAI_ALIAS, "fault:429=3", false).await;
    seen.assert_error(429, "rate_limit_exceeded");
    assert_eq!(seen.header("retry-after"), Some("3"));
    match s.client().chat(&user("fault:429=3")).await {
        Err(Error::RateLimited(d)) => {
            assert_eq!(d.status, 429);
            assert_eq!(d.retry_after, Some(Duration::from_secs(3)));
            assert!(d.request_id.is_some());
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // A stream's 429 comes from the call itself, not as a first item.
    let err = s.client().chat_stream(&user("fault:429=3")).await.err();
    assert!(matches!(err, Some(Error::RateLimited(_))), "{err:?}");
}

async fn upstream_429_without_retry_after(s: Arc<Suite>) {
    let seen = s.ask(OPENAI_ALIAS, "fault:429-no-retry-after", true).await;
    seen.assert_error(429, "rate_limit_exceeded");
    assert!(seen.header("retry-after").is_none());
}

async fn upstream_5xx_statuses(s: Arc<Suite>) {
    upstream_5xx(
        &s,
        &[
            (OPENAI_ALIAS, "fault:500", 502, "upstream_error"),
            (OPENAI_ALIAS, "fault:503", 503, "upstream_error"),
            (OPENAI_ALIAS, "fault:529", 503, "upstream_error"),
        ],
    )
    .await;
    match s.client().chat(&user("fault:503")).await {
        Err(Error::Api(d)) => assert_eq!(d.status, 503),
        other => panic!("expected Api 503, got {other:?}"),
    }
}

async fn anthropic_upstream_5xx_statuses(s: Arc<Suite>) {
    upstream_5xx(
        &s,
        &[
            (ANTHROPIC_ALIAS, "fault:500", 502, "upstream_error"),
            (ANTHROPIC_ALIAS, "fault:529", 503, "upstream_error"),
        ],
    )
    .await;
    match s.client().chat(&anthropic_req("fault:529")).await {
        Err(Error::Api(d)) => assert_eq!(d.status, 503),
        other => panic!("expected Api 503, got {other:?}"),
    }
}

async fn upstream_5xx(s: &Suite, cases: &[(&str, &str, u16, &str)]) {
    let token = s.token(Alg::EdDSA);
    for &(alias, marker, status, code) in cases {
        for stream in [false, true] {
            let mut body = chat_body(alias, marker, stream);
            body["max_tokens"] = json!(64);
            let seen = s.chat(Some(&token), &body).await;
            seen.assert_error(status, code);
        }
    }
}

async fn provider_rejecting_our_key_is_not_a_401(s: Arc<Suite>) {
    rejected_key(&s, OPENAI_ALIAS).await;
}

async fn anthropic_provider_rejecting_our_key_is_not_a_401(s: Arc<Suite>) {
    rejected_key(&s, ANTHROPIC_ALIAS).await;
}

async fn rejected_key(s: &Suite, alias: &str) {
    // The caller's token is fine; a 401 would make the client refresh it for nothing.
    {
        let mut body = chat_body(alias, "fault:401", false);
        body["max_tokens"] = json!(64);
        let seen = s.chat(Some(&s.token(Alg::EdDSA)), &body).await;
        seen.assert_error(502, "upstream_error");
        assert!(seen.header("www-authenticate").is_none());
    }
}

async fn provider_400_is_passed_on_scrubbed(s: Arc<Suite>) {
    let seen = s.ask(OPENAI_ALIAS, "fault:400", false).await;
    let e = seen.assert_error(400, "invalid_value");
    assert_eq!(e["param"], "temperature");
    leaky_400(&s, OPENAI_ALIAS).await;
}

async fn anthropic_provider_400_is_passed_on_scrubbed(s: Arc<Suite>) {
    let mut body = chat_body(ANTHROPIC_ALIAS, "fault:400", false);
    body["max_tokens"] = json!(64);
    let seen = s.chat(Some(&s.token(Alg::EdDSA)), &body).await;
    seen.assert_error(400, "invalid_value");
    leaky_400(&s, ANTHROPIC_ALIAS).await;
}

async fn provider_redirect_is_not_followed(s: Arc<Suite>) {
    let token = s.token(Alg::EdDSA);
    for alias in [OPENAI_ALIAS, ANTHROPIC_ALIAS] {
        for stream in [false, true] {
            let nonce = s.nonce();
            let mut body = chat_body(alias, &format!("fault:redirect {nonce}"), stream);
            body["max_tokens"] = json!(64);
            let seen = s.chat(Some(&token), &body).await;
            seen.assert_error(502, "upstream_error");
            assert!(seen.header("location").is_none(), "{:?}", seen.headers);
            // Followed, the 307 would have sent the request, and the key, once more.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sent = s.provider.requests_containing(&nonce).len();
            assert_eq!(
                sent, 1,
                "{alias} stream={stream}: the redirect was followed"
            );
        }
    }
}

async fn leaky_400(s: &Suite, alias: &str) {
    // This provider message quotes the key it got and its own URL.
    {
        let mut body = chat_body(alias, "fault:400-leaky", false);
        body["max_tokens"] = json!(64);
        let seen = s.chat(Some(&s.token(Alg::EdDSA)), &body).await;
        let e = seen.assert_error(400, "invalid_value");
        let message = e["message"].as_str().unwrap();
        s.assert_no_secret("a provider 400's message", message);
        assert!(
            !message.contains(&s.provider.addr().to_string()),
            "the provider's address leaked: {message}"
        );
    }
}

async fn reset_before_headers_is_502(s: Arc<Suite>) {
    for stream in [false, true] {
        let seen = s.ask(OPENAI_ALIAS, "fault:reset", stream).await;
        seen.assert_error(502, "upstream_error");
    }
}

async fn invalid_json_from_upstream_is_502(s: Arc<Suite>) {
    let seen = s.ask(OPENAI_ALIAS, "fault:bad-json", false).await;
    seen.assert_error(502, "upstream_error");
    let err = s.client().chat(&user("fault:bad-json")).await.unwrap_err();
    assert_eq!(err.status(), Some(502), "{err:?}");
}

async fn hanging_upstream_is_504_after_the_timeout(s: Arc<Suite>) {
    // A complete answer waits UPSTREAM_ANSWER_TIMEOUT_MS for its headers, a stream
    // UPSTREAM_TIMEOUT_MS; either way the provider had the request: not worth a retry.
    for (stream, limit) in [(false, ANSWER_TIMEOUT), (true, UPSTREAM_TIMEOUT)] {
        let started = Instant::now();
        let seen = s.ask(OPENAI_ALIAS, "fault:hang", stream).await;
        seen.assert_error(504, "upstream_timeout");
        assert_eq!(seen.header("x-should-retry"), Some("false"));
        let took = started.elapsed();
        assert!(took >= limit, "{took:?}");
        assert!(took < limit * 4, "{took:?}");
    }
}

async fn body_over_the_limit_is_413(s: Arc<Suite>) {
    let nonce = s.nonce();
    let big = format!("{nonce} {}", "x".repeat(MAX_BODY_BYTES + 100));
    let seen = s.ask(OPENAI_ALIAS, &big, false).await;
    seen.assert_error(413, "body_too_large");
    assert!(s.provider.requests_containing(&nonce).is_empty());
}

async fn chunked_body_over_the_limit_is_413(s: Arc<Suite>) {
    // No content-length: the Worker must count while reading.
    let nonce = s.nonce();
    let body = chat_body(
        OPENAI_ALIAS,
        &format!("{nonce} {}", "y".repeat(MAX_BODY_BYTES * 2)),
        false,
    )
    .to_string()
    .into_bytes();
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let seen = s
        .send(
            s.http
                .post(s.at("/v1/chat/completions"))
                .bearer_auth(s.token(Alg::EdDSA))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    pieces,
                ))),
        )
        .await;
    seen.assert_error(413, "body_too_large");
    assert!(s.provider.requests_containing(&nonce).is_empty());
    // Under `wrangler dev`, the next request after an answer given before the upload ended
    // has been seen to get wrangler's own 503 ("Your worker restarted mid-request"), once.
    // The Worker must be answering again by the second.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let after = s.ask(OPENAI_ALIAS, "after", false).await;
        statuses.push(after.status);
        if after.status == 200 {
            break;
        }
        assert!(
            after.text().contains("restarted mid-request"),
            "{}: {}",
            after.status,
            after.text()
        );
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    if statuses.len() > 1 {
        eprintln!(
            "note: the request after the early 413 got wrangler's 503 \"worker restarted \
             mid-request\" (statuses {statuses:?})"
        );
    }
}

async fn body_under_the_limit_passes(s: Arc<Suite>) {
    let nonce = s.nonce();
    let text = format!("{nonce} {}", "z".repeat(MAX_BODY_BYTES - 600));
    let seen = s.ask(OPENAI_ALIAS, &text, false).await;
    assert_eq!(
        seen.status,
        200,
        "{}",
        &seen.text()[..200.min(seen.text().len())]
    );
}

async fn bad_json_is_400(s: Arc<Suite>) {
    for body in ["{\"model\":", "not json", "", "[1,2"] {
        let seen = s
            .send(
                s.http
                    .post(s.at("/v1/chat/completions"))
                    .bearer_auth(s.token(Alg::EdDSA))
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        seen.assert_error(400, "invalid_json");
    }
}

async fn invalid_fields_are_400_naming_the_field(s: Arc<Suite>) {
    let nonce = s.nonce();
    let cases = [
        (
            json!({"model": OPENAI_ALIAS, "messages": nonce}),
            "messages",
        ),
        (
            json!({"model": OPENAI_ALIAS, "messages": [{"role": "wizard", "content": nonce}]}),
            "messages[0].role",
        ),
        (
            json!({"model": OPENAI_ALIAS, "messages": [{"role": "user", "content": nonce}], "temperature": "hot"}),
            "temperature",
        ),
        (json!({"model": OPENAI_ALIAS, "messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": nonce}]}),
            "model",
        ),
    ];
    for (body, param) in cases {
        let seen = s.chat(Some(&s.token(Alg::EdDSA)), &body).await;
        let e = seen.assert_error(400, "invalid_value");
        // A missing field may be named in the message rather than in `param`.
        let named = e["param"] == param
            || (e["param"].is_null()
                && e["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("`{param}`")));
        assert!(named, "{body}: {e}");
    }
    assert!(s.provider.requests_containing(&nonce).is_empty());
}

async fn unknown_model_is_404(s: Arc<Suite>) {
    let seen = s.ask("no-such-model", &s.nonce(), false).await;
    let e = seen.assert_error(404, "model_not_found");
    assert_eq!(e["param"], "model");
    match s
        .client()
        .chat(&ChatRequest::new("no-such-model", vec![Message::user("x")]))
        .await
    {
        Err(e) => {
            assert_eq!(e.status(), Some(404));
            assert_eq!(e.code(), Some("model_not_found"));
        }
        Ok(r) => panic!("unknown model answered: {r:?}"),
    }
}

async fn unknown_routes_are_404(s: Arc<Suite>) {
    let token = s.token(Alg::EdDSA);
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v1"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions/extra"),
        ("GET", "/v1/nothing"),
        ("POST", "/v1/messages"),
    ] {
        let rb = s
            .http
            .request(method.parse().unwrap(), s.at(path))
            .bearer_auth(&token);
        let seen = s.send(rb).await;
        seen.assert_error(404, "not_found");
    }
}

async fn wrong_methods_are_405(s: Arc<Suite>) {
    let token = s.token(Alg::EdDSA);
    for (method, path, allow) in [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/healthz", "GET"),
    ] {
        let rb = s
            .http
            .request(method.parse().unwrap(), s.at(path))
            .bearer_auth(&token);
        let seen = s.send(rb).await;
        seen.assert_error(405, "method_not_allowed");
        assert!(
            seen.header("allow").is_some_and(|a| a.contains(allow)),
            "{method} {path}: allow = {:?}",
            seen.header("allow")
        );
    }
}

/// A 5xx answer ends the invocation `ok` all the same, so its one log line goes out with
/// `console.error` (the level `wrangler tail` and Workers Logs filter on); other answers' lines
/// with `console.log`.
async fn a_5xx_answer_is_logged_with_console_error(s: Arc<Suite>) {
    let mut cases = Vec::new();
    for stream in [false, true] {
        let failed = s
            .ask(OPENAI_ALIAS, &format!("fault:500 {}", s.nonce()), stream)
            .await;
        cases.push((failed, 502, LogLevel::Error));
        let answered = s.ask(OPENAI_ALIAS, &s.nonce(), stream).await;
        cases.push((answered, 200, LogLevel::Log));
    }
    let refused = s
        .chat(None, &chat_body(OPENAI_ALIAS, &s.nonce(), false))
        .await;
    cases.push((refused, 401, LogLevel::Log));
    for (seen, status, level) in cases {
        assert_eq!(seen.status, status, "{}", seen.text());
        let id = seen.header("x-request-id").unwrap();
        let entry = s.log_entry(id).await;
        assert_eq!(entry.value["status"], status, "{}", entry.value);
        assert_eq!(entry.level, level, "{}", entry.value);
        // One line per request, whatever its level.
        let lines = s
            .worker_log()
            .lines()
            .filter_map(storycad_e2e::workerd::parse_log_line)
            .filter(|e| e.value["request_id"] == id && e.value.get("event").is_none())
            .count();
        assert_eq!(lines, 1, "log lines of {id}");
    }
}

async fn request_ids_are_unique_and_logged(s: Arc<Suite>) {
    let token = s.token(Alg::EdDSA);
    let a = s
        .chat(Some(&token), &chat_body(OPENAI_ALIAS, &s.nonce(), false))
        .await;
    let b = s
        .chat(Some(&token), &chat_body(OPENAI_ALIAS, &s.nonce(), true))
        .await;
    let c = s
        .chat(None, &chat_body(OPENAI_ALIAS, &s.nonce(), false))
        .await;
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|x| x.header("x-request-id").unwrap().to_owned())
        .collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    // One JSON log line per request, under the same id.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = s.worker_log();
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| {
                l.find('{')
                    .and_then(|i| serde_json::from_str::<Value>(&l[i..]).ok())
            })
            .collect();
        let per_id: Vec<usize> = ids
            .iter()
            .map(|id| {
                lines
                    .iter()
                    .filter(|v| v["request_id"] == id.as_str())
                    .count()
            })
            .collect();
        if per_id == [1, 1, 1] {
            let line = lines
                .iter()
                .find(|v| v["request_id"] == ids[0].as_str())
                .unwrap();
            assert_eq!(line["status"], 200, "{line}");
            assert_eq!(line["route"], format!("openai:{OPENAI_MODEL}"), "{line}");
            let line = lines
                .iter()
                .find(|v| v["request_id"] == ids[2].as_str())
                .unwrap();
            assert_eq!(line["status"], 401, "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log lines per request id: {per_id:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn client_retries_what_the_worker_marks_retryable(s: Arc<Suite>) {
    let client = s.client_with(
        storycad_client::RetryPolicy::default()
            .max_retries(2)
            .initial_backoff(Duration::from_millis(50)),
    );
    // (marker, attempts the provider must see, the status the caller ends with)
    for (marker, attempts, status) in [
        ("fault:429=1", 3, 429),
        ("fault:503", 3, 503),
        ("fault:400", 1, 400),
    ] {
        let nonce = s.nonce();
        let started = Instant::now();
        let err = client
            .chat(&user(&format!("{marker} {nonce}")))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(status), "{marker}: {err:?}");
        assert_eq!(
            s.provider.requests_containing(&nonce).len(),
            attempts,
            "{marker}"
        );
        if marker.starts_with("fault:429") {
            // retry-after: 1 s, passed on by the Worker and honoured twice.
            assert!(
                started.elapsed() >= Duration::from_millis(1900),
                "{:?}",
                started.elapsed()
            );
        }
    }
}

async fn parallel_streams(s: Arc<Suite>) {
    let client = Arc::new(s.client());
    let nonce = s.nonce();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        let prompt = format!("{nonce} p{i} x y");
        tasks.push(tokio::spawn(async move {
            let (text, err) = drain(client.chat_stream(&user(&prompt)).await.unwrap()).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(text, format!("echo: {prompt}"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 16);
}

/// The paths the provider got for requests carrying `nonce`, in order.
fn paths(s: &Suite, nonce: &str) -> Vec<String> {
    s.provider
        .requests_containing(nonce)
        .into_iter()
        .map(|r| r.path)
        .collect()
}

const OPENAI_PATH: &str = "/v1/chat/completions";
const ANTHROPIC_PATH: &str = "/v1/messages";

async fn fallback_moves_on_after_5xx_429_and_connection_errors(s: Arc<Suite>) {
    for fault in ["503", "500", "429", "reset"] {
        let nonce = s.nonce();
        let prompt = format!("fault@{OPENAI_MODEL}:{fault} {nonce}");
        let seen = s.ask(FALLBACK_ALIAS, &prompt, false).await;
        assert_eq!(seen.status, 200, "{fault}: {}", seen.text());
        assert_eq!(
            seen.json()["choices"][0]["message"]["content"],
            format!("echo: {prompt}")
        );
        assert_eq!(
            seen.header("x-storycad-route"),
            Some(format!("anthropic:{ANTHROPIC_MODEL}").as_str()),
            "{fault}"
        );
        assert_eq!(paths(&s, &nonce), [OPENAI_PATH, ANTHROPIC_PATH], "{fault}");
        let line = s.log_line(seen.header("x-request-id").unwrap()).await;
        let tried: Vec<&str> = line["attempts"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["route"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            tried,
            [
                format!("openai:{OPENAI_MODEL}"),
                format!("anthropic:{ANTHROPIC_MODEL}")
            ],
            "{line}"
        );
    }
}

async fn no_fallback_after_the_provider_accepted_the_work(s: Arc<Suite>) {
    // A 2xx whose body is cut or not JSON: the provider did the work; the caller's error,
    // never a silent rerun on the next route, and not worth a retry either.
    for fault in ["bad-json", "cut"] {
        let nonce = s.nonce();
        let prompt = format!("fault@{OPENAI_MODEL}:{fault} {nonce}");
        let seen = s.ask(FALLBACK_ALIAS, &prompt, false).await;
        seen.assert_error(502, "upstream_error");
        assert_eq!(seen.header("x-should-retry"), Some("false"), "{fault}");
        assert_eq!(
            seen.header("x-storycad-route"),
            Some(format!("openai:{OPENAI_MODEL}").as_str()),
            "{fault}"
        );
        assert_eq!(paths(&s, &nonce), [OPENAI_PATH], "{fault}");
    }
}

async fn fallback_stream_moves_on_before_the_first_byte(s: Arc<Suite>) {
    let nonce = s.nonce();
    let prompt = format!("fault@{OPENAI_MODEL}:503 {nonce}");
    let mut req = ChatRequest::new(FALLBACK_ALIAS, vec![Message::user(prompt.as_str())]);
    req.stream = Some(true);
    let stream = s.client().chat_stream(&req).await.unwrap();
    assert_eq!(
        stream.meta().route.as_deref(),
        Some(format!("anthropic:{ANTHROPIC_MODEL}").as_str())
    );
    let (text, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, format!("echo: {prompt}"));
    assert_eq!(paths(&s, &nonce), [OPENAI_PATH, ANTHROPIC_PATH]);
}

async fn no_fallback_after_a_400(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = s
        .ask(
            FALLBACK_ALIAS,
            &format!("fault@{OPENAI_MODEL}:400 {nonce}"),
            false,
        )
        .await;
    seen.assert_error(400, "invalid_value");
    assert_eq!(paths(&s, &nonce), [OPENAI_PATH]);
}

async fn no_fallback_after_the_first_byte(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = s
        .ask(
            FALLBACK_ALIAS,
            &format!("fault@{OPENAI_MODEL}:cut {nonce} a b"),
            true,
        )
        .await;
    seen.stream_error();
    assert_eq!(
        paths(&s, &nonce),
        [OPENAI_PATH],
        "the caller already had part of an answer"
    );
}

async fn every_route_failing_gives_the_last_failure(s: Arc<Suite>) {
    let nonce = s.nonce();
    let seen = s
        .ask(FALLBACK_ALIAS, &format!("fault:500 {nonce}"), false)
        .await;
    seen.assert_error(502, "upstream_error");
    assert_eq!(
        seen.header("x-storycad-route"),
        Some(format!("anthropic:{ANTHROPIC_MODEL}").as_str())
    );
    assert_eq!(paths(&s, &nonce), [OPENAI_PATH, ANTHROPIC_PATH]);
}
