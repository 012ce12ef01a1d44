//! Non-streamed calls, error mapping and the retry policy, against the scripted server.

mod support;

use std::time::{Duration, Instant, SystemTime};

use storycad_client::{Completion, Error, RetryPolicy};
use support::{bounded, fixture, request, Action, TestServer};

const OK_JSON: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"storycad-fast","choices":[{"index":0,"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

fn ok() -> Action {
    Action::json(200, OK_JSON)
}

/// One chat with the default client against a server that answers `first`, then a success.
async fn chat_after(first: Action) -> (TestServer, storycad_client::Result<Completion>) {
    let server = TestServer::start(vec![first, ok()]).await;
    let outcome = server.client().chat(&request()).await;
    (server, outcome)
}

/// `first` is retried: the chat succeeds on the second attempt. The server, for its record.
async fn retried(first: Action) -> (TestServer, Completion) {
    let (server, outcome) = chat_after(first).await;
    let done = outcome.expect("retried to success");
    assert_eq!(done.meta.attempts, 2);
    assert_eq!(server.hits(), 2);
    (server, done)
}

/// `first` is retried after a wait: how long, between the two attempts' arrivals.
async fn wait_before_retry(first: Action) -> Duration {
    let (server, _) = retried(first).await;
    let reqs = server.requests();
    reqs[1].at - reqs[0].at
}

/// `first` is the chat's error, without a retry.
async fn not_retried(first: Action) -> Error {
    let (server, outcome) = chat_after(first).await;
    let err = outcome.expect_err("an error");
    assert_eq!(server.hits(), 1, "not retried: {err:?}");
    err
}

/// A server that answers `every` on every connection: the chat's error after 2 retries.
async fn fails_after_retries(every: Action) -> Error {
    let server = TestServer::start_with(vec![], Some(every)).await;
    let err = server
        .client()
        .chat(&request())
        .await
        .expect_err("an error");
    assert_eq!(server.hits(), 3, "1 attempt + 2 retries");
    err
}

#[tokio::test]
async fn json_success_returns_response_and_meta() {
    bounded(async {
        let server = TestServer::start(vec![Action::json_with(
            200,
            &[
                ("x-request-id", "req-123"),
                ("x-storycad-route", "openai:gpt-4o-mini"),
                ("x-storycad-cache", "MISS"),
            ],
            &fixture("chat_completion.json"),
        )])
        .await;
        let client = server.client();
        let mut req = request();
        req.stream = Some(true); // chat() must force it off
        let done = client.chat(&req).await.expect("chat");
        assert!(done
            .text()
            .starts_with("I'm unable to provide real-time weather"));
        assert_eq!(done.usage.as_ref().map(|u| u.total_tokens), Some(51));
        assert_eq!(done.meta.status, 200);
        assert_eq!(done.meta.request_id.as_deref(), Some("req-123"));
        assert_eq!(done.meta.route.as_deref(), Some("openai:gpt-4o-mini"));
        assert_eq!(done.meta.cache.as_deref(), Some("MISS"));
        assert_eq!(done.meta.attempts, 1);

        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer test-token"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["model"], "storycad-fast");
        assert!(body.get("stream").is_none(), "stream forced off: {body}");
    })
    .await;
}

#[tokio::test]
async fn models_and_usage_use_their_paths() {
    bounded(async {
        let server = TestServer::start(vec![
            Action::json(
                200,
                r#"{"object":"list","data":[{"id":"storycad-fast","object":"model","created":0,"owned_by":"storycad"}]}"#,
            ),
            Action::json(
                200,
                r#"{"object":"usage","plan":"free","models":["storycad-fast"],"max_output_tokens":512,
                   "requests":{"limit":20,"remaining":19,"reset_seconds":3},
                   "tokens":{"limit":1000,"remaining":900,"reset_seconds":100},
                   "streams":{"limit":2,"remaining":2,"reset_seconds":0}}"#,
            ),
        ])
        .await;
        let client = server.client();
        let models = client.models().await.expect("models");
        assert_eq!(models.data[0].id, "storycad-fast");
        let usage = client.usage().await.expect("usage");
        assert_eq!(usage.plan, "free");
        assert_eq!(usage.tokens.remaining, 900);
        let reqs = server.requests();
        assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("GET", "/v1/models"));
        assert_eq!((reqs[1].method.as_str(), reqs[1].path.as_str()), ("GET", "/v1/usage"));
    })
    .await;
}

#[tokio::test]
async fn bad_json_body_keeps_raw_body_in_error() {
    bounded(async {
        let server = TestServer::start(vec![Action::json_with(
            200,
            &[("x-request-id", "req-bad")],
            "{\"id\": \"c1\", \"choices\": [trunc",
        )])
        .await;
        let err = server
            .client()
            .chat(&request())
            .await
            .expect_err("bad json");
        match &err {
            Error::InvalidResponse {
                status,
                body,
                reason,
                request_id,
            } => {
                assert_eq!(*status, 200);
                assert_eq!(body, "{\"id\": \"c1\", \"choices\": [trunc");
                assert!(!reason.is_empty());
                assert_eq!(request_id.as_deref(), Some("req-bad"));
            }
            other => panic!("expected InvalidResponse, got {other:?}"),
        }
        assert_eq!(server.hits(), 1, "a bad body is not retried");
    })
    .await;
}

#[tokio::test]
async fn non_json_error_body_is_kept() {
    bounded(async {
        let server = TestServer::start(vec![Action::respond(
            403,
            &[("content-type", "text/html")],
            "<html>forbidden by a proxy</html>",
        )])
        .await;
        let err = server.client().chat(&request()).await.expect_err("403");
        let d = err.http_details().expect("http details");
        assert_eq!(d.status, 403);
        assert_eq!(d.body.as_deref(), Some("<html>forbidden by a proxy</html>"));
        assert_eq!(d.message, "<html>forbidden by a proxy</html>");
        assert!(matches!(err, Error::Api(_)));
    })
    .await;
}

#[tokio::test]
async fn rate_limit_headers_exposed_on_success() {
    bounded(async {
        let server = TestServer::start(vec![Action::json_with(
            200,
            &[
                ("x-ratelimit-limit-requests", "500"),
                ("x-ratelimit-remaining-requests", "499"),
                ("x-ratelimit-limit-tokens", "30000"),
                ("x-ratelimit-remaining-tokens", "29000"),
                ("x-ratelimit-reset-requests", "120ms"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ],
            OK_JSON,
        )])
        .await;
        let done = server.client().chat(&request()).await.expect("chat");
        let rl = done.meta.rate_limit;
        assert_eq!(rl.limit_requests, Some(500));
        assert_eq!(rl.remaining_requests, Some(499));
        assert_eq!(rl.limit_tokens, Some(30000));
        assert_eq!(rl.remaining_tokens, Some(29000));
        assert_eq!(rl.reset_requests, Some(Duration::from_millis(120)));
        assert_eq!(rl.reset_tokens, Some(Duration::from_secs(360)));
    })
    .await;
}

#[tokio::test]
async fn rate_limit_headers_exposed_on_429() {
    bounded(async {
        let server = TestServer::start(vec![Action::error(
            429,
            "rate_limit_exceeded",
            &[
                ("retry-after", "120"),
                ("x-request-id", "req-429"),
                ("x-ratelimit-limit-requests", "20"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1m59s"),
            ],
        )])
        .await;
        // 120 s is above max_server_delay (60 s): returned at once, not slept.
        let err = server.client().chat(&request()).await.expect_err("429");
        assert!(matches!(err, Error::RateLimited(_)), "{err:?}");
        let rl = err.rate_limit().expect("rate limit info");
        assert_eq!(rl.limit_requests, Some(20));
        assert_eq!(rl.remaining_requests, Some(0));
        assert_eq!(rl.reset_requests, Some(Duration::from_secs(119)));
        assert_eq!(err.request_id(), Some("req-429"));
        assert_eq!(err.code(), Some("rate_limit_exceeded"));
        assert_eq!(err.to_string(), "rate limited: try again in 120 s");
    })
    .await;
}

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    bounded(async {
        let gap = wait_before_retry(Action::error(
            429,
            "rate_limit_exceeded",
            &[("retry-after", "1")],
        ))
        .await;
        assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
        assert!(gap < Duration::from_secs(3), "waited {gap:?}");
    })
    .await;
}

#[tokio::test]
async fn retry_after_ms_is_honoured_before_retry_after() {
    bounded(async {
        let gap = wait_before_retry(Action::error(
            429,
            "rate_limit_exceeded",
            &[("retry-after-ms", "300"), ("retry-after", "30")],
        ))
        .await;
        assert!(
            gap >= Duration::from_millis(280) && gap < Duration::from_secs(2),
            "gap {gap:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    bounded(async {
        // HTTP dates have whole seconds: 2 s ahead means a wait of 1 to 2 s.
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
        let gap = wait_before_retry(Action::error(
            503,
            "upstream_error",
            &[("retry-after", &date)],
        ))
        .await;
        assert!(
            gap >= Duration::from_millis(900) && gap < Duration::from_millis(2600),
            "gap {gap:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn x_should_retry_false_forbids_retry() {
    bounded(async {
        let err = not_retried(Action::error(
            503,
            "upstream_error",
            &[("x-should-retry", "false")],
        ))
        .await;
        assert_eq!(err.status(), Some(503));
        // The error keeps the advice, so an app's own retry loop sees it too.
        assert!(!err.is_retryable(), "{err:?}");
        match &err {
            storycad_client::Error::Api(d) => assert_eq!(d.should_retry, Some(false)),
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn x_should_retry_true_forces_retry_of_400() {
    bounded(async {
        retried(Action::error(
            400,
            "invalid_value",
            &[("x-should-retry", "true")],
        ))
        .await;
    })
    .await;
}

#[tokio::test]
async fn status_500_then_success_is_retried() {
    bounded(async {
        let (_, done) = retried(Action::error(500, "internal_error", &[])).await;
        assert_eq!(done.text(), "hi there");
    })
    .await;
}

#[tokio::test]
async fn retries_stop_after_max_retries() {
    bounded(async {
        let err = fails_after_retries(Action::error(502, "upstream_error", &[])).await;
        assert_eq!(err.status(), Some(502));
        assert!(matches!(err, Error::Api(_)));
        assert!(err.is_retryable());
    })
    .await;
}

#[tokio::test]
async fn status_400_is_not_retried() {
    bounded(async {
        let err = not_retried(Action::error(
            400,
            "invalid_value",
            &[("x-request-id", "req-400")],
        ))
        .await;
        assert!(matches!(err, Error::Api(_)));
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.code(), Some("invalid_value"));
        assert_eq!(err.request_id(), Some("req-400"));
        assert!(!err.is_retryable());
    })
    .await;
}

#[tokio::test]
async fn budget_exhausted_429_is_not_retried() {
    bounded(async {
        let err = not_retried(Action::error(
            429,
            "budget_exhausted",
            &[("retry-after", "3600")],
        ))
        .await;
        assert!(matches!(err, Error::BudgetExhausted(_)), "{err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
        assert!(!err.is_retryable());
        assert_eq!(err.to_string(), "budget exhausted: try again in 3600 s");
    })
    .await;
}

#[tokio::test]
async fn insufficient_quota_429_is_not_retried() {
    bounded(async {
        let err = not_retried(Action::json(
            429,
            &fixture("error_429_insufficient_quota.json"),
        ))
        .await;
        assert!(matches!(err, Error::BudgetExhausted(_)), "{err:?}");
        assert_eq!(err.code(), Some("insufficient_quota"));
    })
    .await;
}

#[tokio::test]
async fn server_delay_above_max_is_returned_not_slept() {
    bounded(async {
        let started = Instant::now();
        let err = not_retried(Action::error(
            503,
            "upstream_error",
            &[("retry-after", "90")],
        ))
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(90)));

        // The limit is the policy's: 1 s allows a 2 s wait no more.
        let server = TestServer::start(vec![
            Action::error(429, "rate_limit_exceeded", &[("retry-after-ms", "2000")]),
            ok(),
        ])
        .await;
        let client = server
            .builder()
            .retry_policy(support::fast_retries().max_server_delay(Duration::from_secs(1)))
            .build()
            .expect("client");
        let started = Instant::now();
        let err = client.chat(&request()).await.expect_err("429");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(err, Error::RateLimited(_)));
        assert_eq!(server.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn reset_before_headers_then_success() {
    bounded(async {
        retried(Action::reset()).await;
    })
    .await;
}

#[tokio::test]
async fn reset_every_time_is_a_network_error() {
    bounded(async {
        let err = fails_after_retries(Action::reset()).await;
        assert!(matches!(err, Error::Network { .. }), "{err:?}");
        assert!(err.is_retryable());
    })
    .await;
}

#[tokio::test]
async fn connection_refused_is_a_connect_error_after_retries() {
    bounded(async {
        // Bind then drop: nothing listens on the port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let client = storycad_client::Client::builder()
            .base_url(format!("http://127.0.0.1:{port}/v1"))
            .token("t")
            .retry_policy(support::fast_retries())
            .build()
            .expect("client");
        let err = client.chat(&request()).await.expect_err("refused");
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn same_idempotency_key_across_retries() {
    bounded(async {
        let server = TestServer::start(vec![
            Action::error(500, "internal_error", &[]),
            Action::reset(),
            ok(),
            ok(),
        ])
        .await;
        let client = server.client();
        client.chat(&request()).await.expect("chat");
        client.chat(&request()).await.expect("second chat");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 4);
        let keys: Vec<&str> = reqs
            .iter()
            .map(|r| r.header("idempotency-key").expect("key sent"))
            .collect();
        assert_eq!(keys[0], keys[1]);
        assert_eq!(keys[1], keys[2]);
        assert_ne!(keys[2], keys[3], "a new logical request gets a new key");
        assert!(keys[0].len() >= 16);
    })
    .await;
}

#[tokio::test]
async fn retry_budget_stops_retrying() {
    bounded(async {
        let server =
            TestServer::start_with(vec![], Some(Action::error(503, "upstream_error", &[]))).await;
        // Room for 3 retries in total, shared by every request of the client.
        let client = server
            .builder()
            .retry_policy(support::fast_retries().max_retries(5).budget(15, 5, 1))
            .build()
            .expect("client");
        let _ = client.chat(&request()).await.expect_err("first");
        assert_eq!(server.hits(), 4, "1 attempt + 3 retries paid by the budget");
        let _ = client.clone().chat(&request()).await.expect_err("second");
        assert_eq!(server.hits(), 5, "budget spent: no retry at all");
    })
    .await;
}

#[tokio::test]
async fn retry_policy_none_does_not_retry() {
    bounded(async {
        let server = TestServer::start(vec![Action::error(500, "internal_error", &[]), ok()]).await;
        let client = server
            .builder()
            .retry_policy(RetryPolicy::none())
            .build()
            .expect("client");
        let err = client.chat(&request()).await.expect_err("500");
        assert_eq!(err.status(), Some(500));
        assert_eq!(server.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn response_headers_timeout() {
    bounded(async {
        let server = TestServer::start(vec![Action {
            steps: vec![support::Step::Sleep(Duration::from_secs(3))],
        }])
        .await;
        let client = server
            .builder()
            .timeouts(
                storycad_client::Timeouts::default()
                    .with_response_headers(Duration::from_millis(300)),
            )
            .build()
            .expect("client");
        let started = Instant::now();
        let err = client.chat(&request()).await.expect_err("timeout");
        assert!(
            matches!(
                err,
                Error::Timeout {
                    phase: storycad_client::TimeoutPhase::ResponseHeaders,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(server.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn builder_rejects_bad_config() {
    let err = storycad_client::Client::builder()
        .token("t")
        .build()
        .expect_err("no url");
    assert!(matches!(err, Error::Config(_)));
    let err = storycad_client::Client::builder()
        .base_url("ftp://x/v1")
        .token("t")
        .build()
        .expect_err("bad scheme");
    assert!(matches!(err, Error::Config(_)));
    let err = storycad_client::Client::builder()
        .base_url("http://127.0.0.1:1/v1")
        .build()
        .expect_err("no token");
    assert!(matches!(err, Error::Config(_)));
}

#[tokio::test]
async fn request_options_reach_every_attempt_and_bad_ones_send_nothing() {
    bounded(async {
        let server = TestServer::start(vec![Action::error(503, "server_error", &[]), ok()]).await;
        let client = server.client();
        let options = storycad_client::RequestOptions::new()
            .request_id("collab-7")
            .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .header("x-storycad-cache", "off");
        let done = client
            .chat_with(&request(), &options)
            .await
            .expect("retried");
        assert_eq!(done.meta.attempts, 2);
        for r in server.requests() {
            assert_eq!(r.header("x-request-id"), Some("collab-7"));
            assert_eq!(r.header("x-storycad-cache"), Some("off"));
            assert!(r.header("traceparent").is_some());
            assert_eq!(r.header("authorization"), Some("Bearer test-token"));
        }
        let stream = client
            .chat_stream_with(
                &request(),
                &storycad_client::RequestOptions::new().header("authorization", "Bearer x"),
            )
            .await;
        assert!(matches!(stream, Err(Error::Config(_))));
        assert_eq!(server.hits(), 2, "nothing sent for a bad option");
    })
    .await;
}
