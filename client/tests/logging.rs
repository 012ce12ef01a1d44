//! Logging: one span per request, a debug event per retry decision, never a token's value.
//! Alone in its binary: tracing caches per-callsite interest process-wide, which races with
//! tests on other threads that run without a subscriber.

mod support;

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

use storycad_client::AccessToken;
use support::{bounded, request, Action, TestServer};

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn retry_decisions_are_logged_and_tokens_never_are() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    bounded(async {
        let server = TestServer::start(vec![
            Action::error(500, "internal_error", &[]),
            Action::error(401, "invalid_token", &[]),
            Action::error(400, "invalid_value", &[]),
        ])
        .await;
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let client = server
            .builder()
            .token_fn(move || {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok(AccessToken::new(format!("sekrit-{n}"))) }
            })
            .build()
            .expect("client");
        let _ = client.chat(&request()).await.expect_err("400 at the end");
        assert_eq!(server.hits(), 3);
        let sent: Vec<String> = server
            .requests()
            .iter()
            .map(|r| r.header("authorization").unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            sent,
            ["Bearer sekrit-1", "Bearer sekrit-1", "Bearer sekrit-2"]
        );
    })
    .await;
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(text.contains("storycad_request"), "{text}");
    assert!(
        text.contains("model=\"storycad-fast\"") || text.contains("model=storycad-fast"),
        "{text}"
    );
    assert!(text.contains("attempt{n=3}"), "{text}");
    assert_eq!(text.matches("client: retrying").count(), 1, "{text}");
    assert!(text.contains("401: refreshing the access token"), "{text}");
    assert!(text.contains("not retrying: not retryable"), "{text}");
    assert!(
        !text.contains("sekrit"),
        "a token value was logged:\n{text}"
    );
}
