//! Resumable streams, for the suites that test them (`e2e_resume`, `e2e_resume_stored`):
//! requests on connections of their own (so a relay cuts the one meant), SSE bodies read into
//! events, users and their tokens, what they were charged.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use storycad_e2e::tokens::{self, Alg};
use storycad_protocol::headers::{LAST_EVENT_ID, STREAM_ID};

use super::{chat_body, Suite};

/// A token for user `sub`.
pub fn token_for(s: &Suite, sub: &str) -> String {
    tokens::mint(s.keys.get(Alg::EdDSA), &s.claims(sub))
}

/// A user no other case has.
pub fn user(s: &Suite, what: &str) -> String {
    format!("resume-{what}-{}", s.nonce())
}

/// What came of one request: status, stream id, the bytes until the end or the cut.
pub struct Got {
    pub status: u16,
    pub stream_id: Option<String>,
    pub body: String,
}

/// The complete events of an SSE body: `(id, data)`.
pub fn events(body: &str) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.find("\n\n") {
        let block = &rest[..end];
        rest = &rest[end + 2..];
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v.to_owned());
            }
        }
        if let Some(data) = data {
            out.push((id, data));
        }
    }
    out
}

/// The text of the content deltas among `events`.
pub fn text_of(events: &[(Option<u64>, String)]) -> String {
    events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The usage an answer's events reported.
pub fn usage_of(events: &[(Option<u64>, String)]) -> u64 {
    events
        .iter()
        .rev()
        .filter(|(_, d)| d.contains("\"usage\""))
        .filter_map(|(_, d)| {
            let v: Value = serde_json::from_str(d).ok()?;
            Some(v["usage"]["prompt_tokens"].as_u64()? + v["usage"]["completion_tokens"].as_u64()?)
        })
        .next()
        .expect("a usage chunk")
}

/// Reads an answer to its end or its cut (60 s at most).
pub async fn read(response: reqwest::Response) -> Got {
    let status = response.status().as_u16();
    let stream_id = response
        .headers()
        .get(STREAM_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    let mut bytes = response.bytes_stream();
    let read = async {
        while let Some(Ok(piece)) = bytes.next().await {
            body.extend_from_slice(&piece);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the answer within 60 s");
    Got {
        status,
        stream_id,
        body: String::from_utf8(body).unwrap(),
    }
}

pub fn streamed(alias: &str, prompt: &str) -> Value {
    let mut body = chat_body(alias, prompt, true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// An HTTP client that opens a connection per request: the relay cuts the next connection,
/// which must be the next request's.
pub fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

pub async fn ask(base: &str, token: &str, body: &Value) -> Got {
    let response = unpooled()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    read(response).await
}

pub async fn resume(base: &str, token: &str, id: &str, last: Option<&str>) -> Got {
    let mut request = unpooled()
        .get(format!("{base}/v1/chat/completions/streams/{id}"))
        .bearer_auth(token);
    if let Some(last) = last {
        request = request.header(LAST_EVENT_ID, last);
    }
    read(request.send().await.unwrap()).await
}

pub async fn remaining(s: &Suite, token: &str) -> u64 {
    let seen = s
        .send(s.http.get(s.at("/v1/usage")).bearer_auth(token))
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    seen.json()["tokens"]["remaining"].as_u64().unwrap()
}

/// Waits (10 s at most) for the user's remaining tokens to reach `expected`.
pub async fn charged_down_to(s: &Suite, token: &str, expected: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = remaining(s, token).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} tokens left, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The prompt of a slow answer: a content event every `ms`.
pub fn slow_prompt(s: &Suite, ms: u64) -> String {
    format!(
        "fault:slow={ms} {} alpha beta gamma delta epsilon zeta eta theta",
        s.nonce()
    )
}
