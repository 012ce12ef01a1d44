//! `STREAM_COALESCE_MS`: a stream's events that come within the window of the Worker's last
//! write wait and go out together; events further apart each go out at once. Here the window is
//! 200 ms (the default is 10), so the difference shows on a loaded machine: a burst arrives whole
//! and in order through both providers, and events the provider spaces wider than the window
//! are not held back to travel with the next one. Requests go to the runtime's own port: wrangler's
//! dev proxy would buffer the answer and blur the timing.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use storycad_e2e::tokens::Alg;
use support::{chat_body, Suite, SuiteConfig, ANTHROPIC_ALIAS, OPENAI_ALIAS};

const WINDOW_MS: u64 = 200;

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_stream_coalesce",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("STREAM_COALESCE_MS".into(), WINDOW_MS.to_string())],
        },
        cases![
            a_burst_arrives_whole_and_in_order,
            spaced_events_are_not_held_for_the_next,
        ],
    )
}

/// One streamed answer read off the runtime's port: each event's `data:` with the time it
/// arrived (since the request was sent).
async fn timed_events(s: &Suite, alias: &str, prompt: &str) -> Vec<(Duration, String)> {
    let url = format!("http://{}/v1/chat/completions", s.runtime_addr());
    let started = Instant::now();
    let mut resp = s
        .http
        .post(url)
        .bearer_auth(s.token(Alg::EdDSA))
        .json(&chat_body(alias, prompt, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut buffer = String::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            let at = started.elapsed();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                // Each event is its `id:` line and its `data:` line.
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    events.push((at, data.to_owned()));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the stream within 60 s");
    assert!(buffer.is_empty(), "a cut event: {buffer:?}");
    events
}

/// The content pieces of the chunks among `events`, in order.
fn contents(events: &[(Duration, String)]) -> Vec<(Duration, String)> {
    events
        .iter()
        .filter(|(_, d)| d.as_str() != "[DONE]")
        .filter_map(|(at, d)| {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            let text = v["choices"][0]["delta"]["content"].as_str()?.to_owned();
            Some((*at, text))
        })
        .collect()
}

async fn a_burst_arrives_whole_and_in_order(s: Arc<Suite>) {
    let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let prompt = format!("{} {}", s.nonce(), words.join(" "));
    for alias in [OPENAI_ALIAS, ANTHROPIC_ALIAS] {
        let events = timed_events(&s, alias, &prompt).await;
        assert_eq!(events.last().unwrap().1, "[DONE]", "{alias}: the end");
        let text: String = contents(&events).into_iter().map(|(_, t)| t).collect();
        assert_eq!(text, format!("echo: {prompt}"), "{alias}: the answer");
        let model = serde_json::from_str::<serde_json::Value>(&events[0].1).unwrap();
        assert_eq!(model["model"], alias, "{alias}: the alias as model");
    }
}

async fn spaced_events_are_not_held_for_the_next(s: Arc<Suite>) {
    // The provider sends a content event every 600 ms: three times the window.
    let prompt = format!("fault:slow=600 a b {}", s.nonce());
    for alias in [OPENAI_ALIAS, ANTHROPIC_ALIAS] {
        let pieces = contents(&timed_events(&s, alias, &prompt).await);
        let text: String = pieces.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(text, format!("echo: {prompt}"), "{alias}: the answer");
        // Each word arrives on its own: held until the next one, two would arrive together.
        let words: Vec<&(Duration, String)> =
            pieces.iter().filter(|(_, t)| t.starts_with(' ')).collect();
        assert_eq!(words.len(), 4, "{alias}: {pieces:?}");
        for pair in words.windows(2) {
            let gap = pair[1].0.saturating_sub(pair[0].0);
            assert!(
                gap >= Duration::from_millis(300),
                "{alias}: {:?} and {:?} arrived {gap:?} apart: {pieces:?}",
                pair[0].1,
                pair[1].1
            );
        }
    }
}
