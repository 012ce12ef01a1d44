//! Resumable streams: a stream cut anywhere picks itself up with `Last-Event-ID`, within the
//! retry policy, and the caller reads one uninterrupted answer (or the error of the break).

mod support;

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt as _;
use storycad_client::{
    protocol::headers, AccessToken, ChatStream, Error, RequestOptions, RetryPolicy, TimeoutPhase,
    Timeouts,
};
use support::{bounded, chunk, request, text_event, Action, Step, TestServer};

const STREAM_ID: &str = "18f2a-00ab_cd";
const WORDS: [&str; 5] = ["Once", " upon", " a", " time", "."];
/// The id of `[DONE]`, after the five chunks.
const DONE: usize = WORDS.len() + 1;
const RESUME_PATH: &str = "/v1/chat/completions/streams/18f2a-00ab_cd";

/// Event `n` of the answer (1 to 5 chunks, 6 `[DONE]`) with its id.
fn event(n: usize) -> String {
    if n == DONE {
        format!("id: {n}\ndata: [DONE]\n\n")
    } else {
        format!("id: {n}\n{}", text_event(WORDS[n - 1]))
    }
}

/// Events `from..=to`.
fn events(from: usize, to: usize) -> String {
    (from..=to).map(event).collect()
}

fn whole_text() -> String {
    WORDS.concat()
}

/// A resumable answer: the stream id header, then `body`, then the connection closes.
fn resumable(body: impl Into<Vec<u8>>) -> Action {
    Action::sse_steps(
        &[(headers::STREAM_ID, STREAM_ID)],
        vec![Step::Write(body.into())],
    )
}

/// Reads the whole stream: its text, the error that ended it, and the resumptions counted.
async fn drain(mut s: ChatStream) -> (String, Option<Error>, u32) {
    let mut text = String::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(c) => text.push_str(c.text().unwrap_or("")),
            Err(e) => {
                assert!(s.next().await.is_none(), "nothing after an error");
                return (text, Some(e), s.meta().resumptions);
            }
        }
    }
    (text, None, s.meta().resumptions)
}

async fn open(server: &TestServer) -> ChatStream {
    server
        .client()
        .chat_stream(&request())
        .await
        .expect("stream")
}

/// The ways a connection breaks after `k` whole events.
fn cuts(k: usize) -> Vec<(&'static str, Action)> {
    let whole = events(1, k);
    let next = event(k + 1);
    let half = &next[..next.len() / 2];
    let mut chunked = Vec::new();
    if k > 0 {
        chunked.extend(chunk(whole.as_bytes()));
    }
    // Chunked encoding closed without its last chunk: a transport error, not a clean end.
    chunked.extend(chunk(half.as_bytes()));
    vec![
        ("end of body", resumable(whole.clone())),
        ("mid-event", resumable(format!("{whole}{half}"))),
        (
            "transport error",
            Action::sse_steps(
                &[
                    (headers::STREAM_ID, STREAM_ID),
                    ("transfer-encoding", "chunked"),
                ],
                vec![Step::Write(chunked)],
            ),
        ),
    ]
}

#[tokio::test]
async fn a_stream_cut_anywhere_resumes_into_the_whole_answer() {
    bounded(async {
        // After the headers, after some events, right before [DONE].
        for k in [0, 1, 3, WORDS.len()] {
            for (how, cut) in cuts(k) {
                let server = TestServer::start(vec![cut, Action::sse(events(k + 1, DONE))]).await;
                let options = RequestOptions::new().request_id("chapter-7");
                let stream = server
                    .client()
                    .chat_stream_with(&request(), &options)
                    .await
                    .expect("stream");
                assert_eq!(stream.meta().stream_id.as_deref(), Some(STREAM_ID));
                assert_eq!(stream.meta().resumptions, 0);
                let (text, err, resumptions) = drain(stream).await;
                assert!(err.is_none(), "k={k}, {how}: {err:?}");
                assert_eq!(text, whole_text(), "k={k}, {how}");
                assert_eq!(resumptions, 1, "k={k}, {how}");

                let sent = server.requests();
                assert_eq!(sent.len(), 2, "k={k}, {how}");
                let resume = &sent[1];
                assert_eq!(resume.method, "GET");
                assert_eq!(resume.path, RESUME_PATH);
                let last = k.to_string();
                assert_eq!(resume.header("last-event-id"), Some(last.as_str()), "{how}");
                assert_eq!(resume.header("authorization"), Some("Bearer test-token"));
                assert_eq!(resume.header("accept"), Some("text/event-stream"));
                assert_eq!(resume.header("x-request-id"), Some("chapter-7"));
                assert!(resume.body.is_empty());
            }
        }
    })
    .await;
}

#[tokio::test]
async fn several_breaks_resume_each_time_and_the_count_is_live() {
    bounded(async {
        let server = TestServer::start(vec![
            resumable(events(1, 2)),
            Action::sse(events(3, 4)),
            Action::sse(events(5, DONE)),
        ])
        .await;
        let mut stream = open(&server).await;
        let mut seen = Vec::new();
        while let Some(item) = stream.next().await {
            item.expect("a chunk");
            seen.push(stream.meta().resumptions);
        }
        // Counted as each resume happens: before the chunks it brought.
        assert_eq!(seen, [0, 0, 1, 1, 2]);
        let sent = server.requests();
        assert_eq!(sent[1].header("last-event-id"), Some("2"));
        assert_eq!(sent[2].header("last-event-id"), Some("4"));
    })
    .await;
}

#[tokio::test]
async fn events_replayed_from_an_earlier_id_are_skipped() {
    bounded(async {
        // Cut after 3; the server replays from event 1, with comments between.
        let replay = format!(": resumed\n\n{}", events(1, DONE));
        let server = TestServer::start(vec![resumable(events(1, 3)), Action::sse(replay)]).await;
        let (text, err, resumptions) = drain(open(&server).await).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, whole_text());
        assert_eq!(resumptions, 1);
    })
    .await;
}

#[tokio::test]
async fn a_resumed_stream_with_a_gap_is_refused() {
    bounded(async {
        // Cut after 2; the server goes on from event 4.
        let server =
            TestServer::start(vec![resumable(events(1, 2)), Action::sse(events(4, DONE))]).await;
        let (text, err, _) = drain(open(&server).await).await;
        assert_eq!(text, "Once upon", "nothing after the hole");
        match err {
            Some(Error::StreamTruncated {
                source: Some(source),
                ..
            }) => assert!(source.to_string().contains("after event 2 came event 4")),
            other => panic!("expected StreamTruncated with the gap, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn an_event_without_an_id_after_a_resume_is_refused() {
    bounded(async {
        for resumed in [
            // The first event of the new connection has none.
            format!("{}{}", text_event(" upon"), events(3, DONE)),
            // A later one has none (SSE would hand it the id before it).
            format!("{}{}{}", event(2), text_event(" a"), events(4, DONE)),
        ] {
            let server =
                TestServer::start(vec![resumable(events(1, 1)), Action::sse(resumed)]).await;
            let (_, err, _) = drain(open(&server).await).await;
            assert!(
                matches!(err, Some(Error::StreamTruncated { .. })),
                "{err:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn an_expired_stream_ends_with_the_break() {
    bounded(async {
        let server = TestServer::start(vec![
            resumable(events(1, 2)),
            Action::error(404, "stream_expired", &[]),
        ])
        .await;
        let (text, err, resumptions) = drain(open(&server).await).await;
        assert_eq!(text, "Once upon");
        assert!(
            matches!(err, Some(Error::StreamTruncated { .. })),
            "{err:?}"
        );
        assert_eq!(resumptions, 0);
        assert_eq!(server.hits(), 2, "a 404 is not retried");
    })
    .await;
}

#[tokio::test]
async fn a_failed_resume_request_is_retried_within_the_policy() {
    bounded(async {
        // Two retries: the resume, and its retry after a 503.
        let server = TestServer::start(vec![
            resumable(events(1, 2)),
            Action::error(503, "upstream_error", &[]),
            Action::sse(events(3, DONE)),
        ])
        .await;
        let (text, err, resumptions) = drain(open(&server).await).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, whole_text());
        assert_eq!(resumptions, 1);
        assert_eq!(server.hits(), 3);

        // With one retry in the policy, the resume itself is it: a 503 then ends the stream.
        let server = TestServer::start(vec![
            resumable(events(1, 2)),
            Action::error(503, "upstream_error", &[]),
            Action::sse(events(3, DONE)),
        ])
        .await;
        let client = server
            .builder()
            .retry_policy(support::fast_retries().max_retries(1))
            .build()
            .expect("client");
        let stream = client.chat_stream(&request()).await.expect("stream");
        let (_, err, _) = drain(stream).await;
        assert!(
            matches!(err, Some(Error::StreamTruncated { .. })),
            "{err:?}"
        );
        assert_eq!(server.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn the_retry_allowance_starts_again_once_a_resume_brings_events() {
    bounded(async {
        // One retry allowed: each break may be resumed once, as long as the stream moves on.
        let policy = support::fast_retries().max_retries(1);
        let server = TestServer::start(vec![
            resumable(events(1, 1)),
            Action::sse(events(2, 3)),
            Action::sse(events(4, DONE)),
        ])
        .await;
        let client = server
            .builder()
            .retry_policy(policy.clone())
            .build()
            .expect("client");
        let stream = client.chat_stream(&request()).await.expect("stream");
        let (text, err, resumptions) = drain(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, whole_text());
        assert_eq!(resumptions, 2);

        // A resume that brings nothing new does not renew it.
        let server = TestServer::start(vec![
            resumable(events(1, 1)),
            Action::sse(events(1, 1)),
            Action::sse(events(2, DONE)),
        ])
        .await;
        let client = server
            .builder()
            .retry_policy(policy)
            .build()
            .expect("client");
        let stream = client.chat_stream(&request()).await.expect("stream");
        let (text, err, resumptions) = drain(stream).await;
        assert_eq!(text, "Once");
        assert!(
            matches!(err, Some(Error::StreamTruncated { .. })),
            "{err:?}"
        );
        assert_eq!(resumptions, 1);
        assert_eq!(server.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn no_resume_when_off_without_retries_or_without_a_stream_id() {
    bounded(async {
        let off = |s: &TestServer| s.builder().resume_streams(false).build();
        let no_retries = |s: &TestServer| s.builder().retry_policy(RetryPolicy::none()).build();
        let plain = |s: &TestServer| s.builder().build();
        type Build = fn(&TestServer) -> storycad_client::Result<storycad_client::Client>;
        let cases: [(&str, Build, &str); 4] = [
            ("resume_streams(false)", off, STREAM_ID),
            ("RetryPolicy::none()", no_retries, STREAM_ID),
            ("no stream id", plain, ""),
            ("a stream id unfit for a URL", plain, "../models"),
        ];
        for (case, build, id) in cases {
            let mut head = vec![];
            if !id.is_empty() {
                head.push((headers::STREAM_ID, id));
            }
            let server = TestServer::start(vec![
                Action::sse_steps(&head, vec![Step::Write(events(1, 2).into_bytes())]),
                Action::sse(events(3, DONE)),
            ])
            .await;
            let stream = build(&server)
                .expect("client")
                .chat_stream(&request())
                .await
                .expect("stream");
            let (text, err, resumptions) = drain(stream).await;
            assert_eq!(text, "Once upon", "{case}");
            assert!(
                matches!(err, Some(Error::StreamTruncated { .. })),
                "{case}: {err:?}"
            );
            assert_eq!(resumptions, 0, "{case}");
            assert_eq!(server.hits(), 1, "{case}: no resume request");
        }
    })
    .await;
}

#[tokio::test]
async fn a_stalled_stream_resumes_and_one_that_cannot_ends_with_the_timeout() {
    bounded(async {
        let stall = || {
            Action::sse_steps(
                &[(headers::STREAM_ID, STREAM_ID)],
                vec![
                    Step::Write(events(1, 2).into_bytes()),
                    Step::Sleep(Duration::from_secs(5)),
                ],
            )
        };
        let idle = Timeouts::default().with_stream_idle(Duration::from_millis(300));
        let server = TestServer::start(vec![stall(), Action::sse(events(3, DONE))]).await;
        let client = server.builder().timeouts(idle).build().expect("client");
        let stream = client.chat_stream(&request()).await.expect("stream");
        let (text, err, resumptions) = drain(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, whole_text());
        assert_eq!(resumptions, 1);

        let server =
            TestServer::start(vec![stall(), Action::error(404, "stream_expired", &[])]).await;
        let client = server.builder().timeouts(idle).build().expect("client");
        let stream = client.chat_stream(&request()).await.expect("stream");
        let (_, err, _) = drain(stream).await;
        assert!(
            matches!(
                err,
                Some(Error::Timeout {
                    phase: TimeoutPhase::StreamIdle,
                    ..
                })
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_401_on_resume_refreshes_the_token_once() {
    bounded(async {
        let server = TestServer::start(vec![
            resumable(events(1, 2)),
            Action::error(401, "invalid_token", &[]),
            Action::sse(events(3, DONE)),
        ])
        .await;
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let client = server
            .builder()
            .token_fn(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok(AccessToken::new(format!("jwt-{n}"))) }
            })
            .build()
            .expect("client");
        let stream = client.chat_stream(&request()).await.expect("stream");
        let (text, err, _) = drain(stream).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, whole_text());
        let auth: Vec<_> = server
            .requests()
            .iter()
            .map(|r| r.header("authorization").unwrap_or("").to_owned())
            .collect();
        assert_eq!(auth, ["Bearer jwt-1", "Bearer jwt-1", "Bearer jwt-2"]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_stream_during_a_resume_closes_its_connection() {
    bounded(async {
        let server = TestServer::start(vec![
            resumable(events(1, 1)),
            // The resume request gets no answer until the client goes.
            Action {
                steps: vec![Step::WaitClientClose],
            },
        ])
        .await;
        let mut stream = open(&server).await;
        assert!(stream.next().await.is_some());
        let waiting = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
        assert!(
            waiting.is_err(),
            "still waiting for the resume: {waiting:?}"
        );
        assert_eq!(server.hits(), 2, "the resume request was sent");
        drop(stream);
        assert!(
            server.wait_client_closed(Duration::from_secs(3)).await,
            "the server saw the resume's connection close"
        );
    })
    .await;
}
