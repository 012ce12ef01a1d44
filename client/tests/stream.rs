//! Streaming: SSE parsing, termination rules, idle timeout, cancellation, accumulation.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use storycad_client::{
    protocol::{ChatChunk, FinishReason},
    ChatStream, Error, ResponseAccumulator, TimeoutPhase, Timeouts,
};
use support::{bounded, chunk, fixture, request, text_event, Action, Step, TestServer};

/// Reads the whole stream: the chunks' text and the error that ended it, if any.
async fn drain(mut s: ChatStream) -> (String, Vec<ChatChunk>, Option<Error>) {
    let mut text = String::new();
    let mut chunks = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(c) => {
                text.push_str(c.text().unwrap_or(""));
                chunks.push(c);
            }
            Err(e) => {
                assert!(s.next().await.is_none(), "nothing after an error");
                return (text, chunks, Some(e));
            }
        }
    }
    (text, chunks, None)
}

/// Opens a stream with the default client.
async fn open(server: &TestServer) -> ChatStream {
    server
        .client()
        .chat_stream(&request())
        .await
        .expect("stream")
}

/// Serves `answer`, opens a stream with the default client and reads it to its end.
async fn read(answer: Action) -> (String, Vec<ChatChunk>, Option<Error>) {
    let server = TestServer::start(vec![answer]).await;
    drain(open(&server).await).await
}

#[tokio::test]
async fn sse_success_yields_chunks_until_done() {
    bounded(async {
        let server = TestServer::start(vec![Action::sse_steps(
            &[
                ("x-request-id", "req-s1"),
                ("x-ratelimit-remaining-tokens", "777"),
            ],
            vec![Step::Write(
                fixture("chat_stream_text_usage.sse").into_bytes(),
            )],
        )])
        .await;
        let stream = open(&server).await;
        assert_eq!(stream.meta().status, 200);
        assert_eq!(stream.meta().request_id.as_deref(), Some("req-s1"));
        assert_eq!(stream.meta().rate_limit.remaining_tokens, Some(777));
        let (text, chunks, err) = drain(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert!(
            text.starts_with("I'm unable to provide real-time"),
            "{text}"
        );
        assert!(chunks.last().and_then(|c| c.usage.as_ref()).is_some());

        let r = &server.requests()[0];
        assert_eq!(r.json()["stream"], true, "chat_stream forces stream on");
        assert_eq!(r.header("accept"), Some("text/event-stream"));
    })
    .await;
}

#[tokio::test]
async fn comments_and_keep_alives_are_skipped() {
    bounded(async {
        let body = format!(
            ": connected\n\n{}: keep-alive\n\n:\n\nevent: ping\ndata:\n\n{}data: [DONE]\n\n",
            text_event("Hello"),
            text_event(", world")
        );
        let (text, chunks, err) = read(Action::sse(body)).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "Hello, world");
        assert_eq!(chunks.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn stream_delivered_one_byte_per_write() {
    bounded(async {
        // Multi-byte characters split across writes must survive too.
        let body = format!(
            "{}{}\r\n{}data: [DONE]\n\n",
            text_event("Grüße, "),
            ": note",
            text_event("café ☕")
        );
        let (text, _, err) = read(Action::sse_steps(
            &[],
            vec![Step::WriteBytewise(body.into_bytes())],
        ))
        .await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "Grüße, café ☕");
    })
    .await;
}

#[tokio::test]
async fn final_event_without_trailing_blank_line_is_not_lost() {
    bounded(async {
        // `[DONE]` with no newline at all, right before the end of the body.
        let body = format!("{}{}data: [DONE]", text_event("a"), text_event("b"));
        let (text, _, err) = read(Action::sse(body)).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "ab");

        // A last chunk ended by a single newline is delivered; the missing [DONE] is reported.
        let last = text_event("c");
        let body = format!("{}{}", text_event("a"), last.trim_end_matches('\n'));
        let (text, _, err) = read(Action::sse(format!("{body}\n"))).await;
        assert_eq!(text, "ac");
        assert!(
            matches!(err, Some(Error::StreamTruncated { .. })),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn end_of_body_without_done_is_stream_truncated() {
    bounded(async {
        let body = format!("{}{}", text_event("partial "), text_event("answer"));
        let (text, _, err) = read(Action::sse_steps(
            &[("x-request-id", "req-cut")],
            vec![Step::Write(body.into_bytes())],
        ))
        .await;
        assert_eq!(text, "partial answer");
        let err = err.expect("an error, not a silent end");
        assert!(matches!(err, Error::StreamTruncated { .. }), "{err:?}");
        assert_eq!(err.request_id(), Some("req-cut"));
        assert!(err.is_retryable());
    })
    .await;
}

#[tokio::test]
async fn cut_mid_event_is_stream_truncated() {
    bounded(async {
        let full = text_event("second");
        let body = format!("{}{}", text_event("first"), &full[..full.len() / 2]);
        let (text, _, err) = read(Action::sse(body)).await;
        assert_eq!(text, "first");
        assert!(
            matches!(err, Some(Error::StreamTruncated { .. })),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn chunked_body_cut_mid_stream_is_stream_truncated() {
    bounded(async {
        // Chunked encoding closed without its last chunk: a transport error, not a clean end.
        let mut body = chunk(text_event("first").as_bytes());
        body.extend(chunk(b"data: {\"id\":\"c1\",\"choi"));
        let (text, _, err) = read(Action::sse_steps(
            &[("transfer-encoding", "chunked")],
            vec![Step::Write(body)],
        ))
        .await;
        assert_eq!(text, "first");
        match err {
            Some(Error::StreamTruncated { source, .. }) => {
                assert!(source.is_some(), "the transport error is kept")
            }
            other => panic!("expected StreamTruncated, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn error_event_mid_stream_is_a_typed_error() {
    bounded(async {
        let body = format!(
            "{}data: {{\"error\":{{\"message\":\"upstream went away\",\"type\":\"server_error\",\"code\":\"upstream_error\",\"param\":null}}}}\n\n",
            text_event("Once upon")
        );
        let (text, _, err) = read(Action::sse_steps(
            &[("x-request-id", "req-ev")],
            vec![Step::Write(body.into_bytes())],
        )).await;
        assert_eq!(text, "Once upon");
        match err {
            Some(Error::Stream {
                code,
                kind,
                message,
                request_id,
            }) => {
                assert_eq!(code.as_deref(), Some("upstream_error"));
                assert_eq!(kind.as_deref(), Some("server_error"));
                assert_eq!(message, "upstream went away");
                assert_eq!(request_id.as_deref(), Some("req-ev"));
            }
            other => panic!("expected Error::Stream, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn an_error_not_in_the_usual_shape_is_still_a_stream_error_with_its_text() {
    bounded(async {
        // An `error` event whose data is not an error body, and a chunk whose `error` is a
        // bare string: the text is kept as the message, without code or type.
        for (event, message) in [
            (
                "event: error\ndata: the provider gave up\n\n",
                "the provider gave up",
            ),
            ("data: {\"error\":\"overloaded\"}\n\n", "\"overloaded\""),
        ] {
            let body = format!("{}{event}", text_event("Once upon"));
            let (text, _, err) = read(Action::sse_steps(
                &[("x-request-id", "req-odd")],
                vec![Step::Write(body.into_bytes())],
            ))
            .await;
            assert_eq!(text, "Once upon");
            match err {
                Some(Error::Stream {
                    code: None,
                    kind: None,
                    message: m,
                    request_id,
                }) => {
                    assert_eq!(m, message);
                    assert_eq!(request_id.as_deref(), Some("req-odd"));
                }
                other => panic!("{event:?}: expected Error::Stream, got {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn stall_gives_idle_timeout_error() {
    bounded(async {
        let server = TestServer::start(vec![Action::sse_steps(
            &[],
            vec![
                Step::Write(text_event("before the stall").into_bytes()),
                // Keep-alive comments count as activity: this wait stays under the limit.
                Step::Sleep(Duration::from_millis(250)),
                Step::Write(b": keep-alive\n\n".to_vec()),
                Step::Sleep(Duration::from_millis(250)),
                Step::Write(b": keep-alive\n\n".to_vec()),
                Step::Sleep(Duration::from_millis(250)),
                Step::Write(text_event(" and after").into_bytes()),
                Step::Sleep(Duration::from_secs(5)),
            ],
        )])
        .await;
        let client = server
            .builder()
            .timeouts(Timeouts::default().with_stream_idle(Duration::from_millis(400)))
            .build()
            .expect("client");
        let stream = client.chat_stream(&request()).await.expect("stream");
        let started = Instant::now();
        let (text, _, err) = drain(stream).await;
        assert_eq!(text, "before the stall and after");
        match err {
            Some(Error::Timeout { phase, after }) => {
                assert_eq!(phase, TimeoutPhase::StreamIdle);
                assert_eq!(after, Duration::from_millis(400));
            }
            other => panic!("expected an idle timeout, got {other:?}"),
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1100) && took < Duration::from_secs(3),
            "{took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    bounded(async {
        let server = TestServer::start(vec![Action::sse_steps(
            &[],
            vec![
                Step::Write(text_event("first").into_bytes()),
                Step::WaitClientClose,
            ],
        )])
        .await;
        let mut stream = open(&server).await;
        let first = stream.next().await.expect("an item").expect("a chunk");
        assert_eq!(first.text(), Some("first"));
        assert!(
            !server.wait_client_closed(Duration::from_millis(200)).await,
            "still open while the stream lives"
        );
        drop(stream);
        assert!(
            server.wait_client_closed(Duration::from_secs(3)).await,
            "the server saw the connection close"
        );
    })
    .await;
}

#[tokio::test]
async fn http_errors_come_from_chat_stream_itself_after_retries() {
    bounded(async {
        let server = TestServer::start(vec![
            Action::error(503, "upstream_error", &[]),
            Action::reset(),
            Action::sse(format!("{}data: [DONE]\n\n", text_event("ok"))),
            Action::error(403, "model_not_allowed", &[]),
        ])
        .await;
        let client = server.client();
        let stream = client
            .chat_stream(&request())
            .await
            .expect("retried to success");
        assert_eq!(stream.meta().attempts, 3);
        let (text, _, err) = drain(stream).await;
        assert!(err.is_none());
        assert_eq!(text, "ok");

        let err = client.chat_stream(&request()).await.expect_err("403");
        assert_eq!(err.status(), Some(403));
        assert_eq!(err.code(), Some("model_not_allowed"));
        assert_eq!(server.hits(), 4);
    })
    .await;
}

#[tokio::test]
async fn truncated_stream_is_not_retried_once_returned() {
    bounded(async {
        let server = TestServer::start(vec![
            Action::sse(text_event("half")),
            Action::sse(format!("{}data: [DONE]\n\n", text_event("whole"))),
        ])
        .await;
        let stream = open(&server).await;
        let (_, _, err) = drain(stream).await;
        assert!(matches!(err, Some(Error::StreamTruncated { .. })));
        assert_eq!(server.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn accumulator_merges_tool_calls_by_index() {
    bounded(async {
        let server = TestServer::start(vec![Action::sse(fixture(
            "chat_stream_parallel_tool_calls_usage.sse",
        ))])
        .await;
        let stream = open(&server).await;
        let response = stream.collect_response().await.expect("whole stream");
        assert_eq!(response.id, "chatcmpl-ABfwAwrNePHUgBBezonVC6MX3zd63");
        assert_eq!(response.object, "chat.completion");
        assert_eq!(response.model, "gpt-4o-2024-08-06");
        let choice = &response.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        let calls = choice.message.tool_calls.as_ref().expect("tool calls");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_JMW1whyEaYG438VE1OIflxA2");
        assert_eq!(calls[0].function.name, "GetWeatherArgs");
        let args: serde_json::Value =
            serde_json::from_str(&calls[0].function.arguments).expect("args are JSON");
        assert_eq!(
            args,
            serde_json::json!({"city": "Edinburgh", "country": "GB", "units": "c"})
        );
        assert_eq!(calls[1].id, "call_DNYTawLBoN8fj3KN6qU9N1Ou");
        assert_eq!(calls[1].function.name, "get_stock_price");
        let args: serde_json::Value =
            serde_json::from_str(&calls[1].function.arguments).expect("args are JSON");
        assert_eq!(
            args,
            serde_json::json!({"ticker": "AAPL", "exchange": "NASDAQ"})
        );
        let usage = response.usage.expect("usage");
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (149, 60, 209)
        );
        assert_eq!(choice.message.content, None);
    })
    .await;
}

#[test]
fn accumulator_concatenates_text_per_choice() {
    let mut acc = ResponseAccumulator::new();
    for line in fixture("chat_stream_text_usage.sse").lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        acc.push(&serde_json::from_str(data).expect("chunk"));
    }
    let r = acc.finish();
    assert!(r.text().starts_with("I'm unable to provide real-time"));
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    assert!(r.usage.is_some());
}
