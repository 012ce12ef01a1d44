//! The request lifecycle end to end under workerd: every provider call is charged to the user
//! who asked for it, once, whatever the caller does.
//!
//! - A caller who hangs up 300 ms into a stream whose provider is silent for 2 s gets its
//!   stream slot back within 2 s of the provider finishing, and is charged; two such hang-ups on
//!   a two-slot plan leave the user able to stream again at once, not locked out.
//! - A 2xx answer cut half-way is charged its reservation and not rerun on the next route,
//!   however the caller asks (raw, or through the client with retries).
//! - `n` above the plan's `max_choices` is refused; a reservation counts every choice, and a
//!   reservation above what is left of the day is refused before anything goes upstream, the
//!   first request of the day included.
//! - Usage reports have a rate limit of their own (at least 120 a minute).
//! - A caller that reads nothing for 10 s while the provider has 10 MB to send leaves the Worker
//!   holding no more than its buffer: the provider can only write what the Worker reads; the
//!   caller then gets the whole answer.
//!
//! The Worker's `UPSTREAM_TIMEOUT_MS` is 15 s here, so the 10 s stall is not cut short.

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use storycad_client::{ChatRequest, Client, Error, Message, RetryPolicy};
use storycad_e2e::{
    tokens::{self, Alg},
    workerd::{tcp_sockets, TcpSocket},
};
use support::{chat_body, Suite, SuiteConfig, FALLBACK_ALIAS, OPENAI_ALIAS, OPENAI_MODEL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Output cap of every plan here: a reservation's output part per choice.
const CAP: u64 = 1000;
/// Tokens per day of the `small` plan.
const SMALL_DAY: u64 = 5000;
/// Tokens per day of the `tiny` plan: less than one request's default reservation.
const TINY_DAY: u64 = 500;
/// Choices allowed by the `choices` plan, and its day.
const CHOICES: u64 = 4;
const CHOICES_DAY: u64 = 3000;
/// The big stream: 10 MB of content.
const BIG: u64 = 10_000_000;
/// The Worker's stall limit here.
const IDLE: Duration = Duration::from_secs(15);

fn plan(tpd: u64, streams: u64, extra: Value) -> Value {
    let mut p = json!({
        "models": ["*"],
        "requests_per_minute": 10_000,
        "tokens_per_day": tpd,
        "max_output_tokens": CAP,
        "concurrent_streams": streams
    });
    if let (Value::Object(p), Value::Object(extra)) = (&mut p, extra) {
        p.extend(extra);
    }
    p
}

fn plans() -> Value {
    json!({
        "free": plan(1_000_000_000, 64, json!({})),
        "stop": plan(1_000_000_000, 2, json!({})),
        "small": plan(SMALL_DAY, 8, json!({})),
        "tiny": plan(TINY_DAY, 8, json!({})),
        "choices": plan(CHOICES_DAY, 8, json!({"max_choices": CHOICES})),
        "slow": plan(1_000_000, 8, json!({"requests_per_minute": 10})),
    })
}

fn main() -> ExitCode {
    let mut cases = cases![
        hang_ups_before_the_first_byte_are_settled_and_charged,
        a_cut_answer_is_charged_and_never_rerun,
        choices_above_the_plan_are_refused_and_each_is_reserved,
        a_reservation_above_what_is_left_is_refused,
        usage_reports_have_a_rate_limit_of_their_own,
    ];
    // Alone: it measures what the provider could write while the caller read nothing.
    cases.push(
        support::Case::new(
            "a_stalled_reader_holds_at_most_the_buffer",
            a_stalled_reader_holds_at_most_the_buffer,
        )
        .serial(),
    );
    support::run(
        SuiteConfig {
            name: "lifecycle",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![
                ("PLANS".into(), plans().to_string()),
                ("UPSTREAM_TIMEOUT_MS".into(), IDLE.as_millis().to_string()),
            ],
        },
        cases,
    )
}

/// A fresh user on `plan`: its `sub` and a token.
fn user(s: &Suite, name: &str, plan: &str) -> (String, String) {
    let sub = format!("lc-{name}-{}", s.nonce());
    let mut claims = s.claims(&sub);
    claims["plan"] = json!(plan);
    (sub.clone(), tokens::mint(s.keys.get(Alg::EdDSA), &claims))
}

async fn usage(s: &Suite, token: &str) -> Value {
    let seen = s
        .send(s.http.get(s.at("/v1/usage")).bearer_auth(token))
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    seen.json()
}

/// Tokens charged today.
fn spent(report: &Value) -> u64 {
    report["tokens"]["limit"].as_u64().unwrap() - report["tokens"]["remaining"].as_u64().unwrap()
}

/// Polls the usage report until `done` holds (at most `within`); the report and when it held.
async fn usage_until(
    s: &Suite,
    token: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Instant) {
    let deadline = Instant::now() + within;
    loop {
        let v = usage(s, token).await;
        if done(&v) {
            return (v, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a chat request to `addr` on a connection of its own and returns it, unread.
async fn open(
    addr: std::net::SocketAddr,
    token: &str,
    body: &Value,
    recv_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut conn = socket.connect(addr).await.unwrap();
    let body = serde_json::to_vec(body).unwrap();
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    conn.write_all(&request).await.unwrap();
    conn
}

/// The reservation of a request body on these plans: its prompt estimate (bytes / 4) and
/// `choices` outputs of `cap`.
fn reservation(body: &Value, cap: u64, choices: u64) -> u64 {
    (serde_json::to_vec(body).unwrap().len() as u64).div_ceil(4) + cap * choices
}

async fn hang_ups_before_the_first_byte_are_settled_and_charged(s: Arc<Suite>) {
    let (sub, token) = user(&s, "stop", "stop");
    let delay = Duration::from_secs(2);
    let nonce = s.nonce();
    // A writer presses Stop twice, 300 ms into two streams whose provider is silent for 2 s:
    // the plan has two stream slots.
    let bodies: Vec<Value> = (0..2)
        .map(|i| {
            chat_body(
                OPENAI_ALIAS,
                &format!("fault:delay={} {nonce} stop{i} a b", delay.as_millis()),
                true,
            )
        })
        .collect();
    // Straight to the runtime, as a caller on Cloudflare would reach the Worker.
    let runtime = s.runtime_addr();
    let started = Instant::now();
    let conns =
        futures_util::future::join_all(bodies.iter().map(|b| open(runtime, &token, b, None))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conns);
    // The provider got both, and finishes once its silence ends.
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.provider.requests_containing(&nonce).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the provider never got the requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finished = s
        .provider
        .requests_containing(&nonce)
        .iter()
        .map(|r| r.received_at)
        .max()
        .unwrap()
        + delay;
    // Both slots come back within 2 s of the provider finishing, both requests charged.
    let (report, at) = usage_until(
        &s,
        &token,
        delay + Duration::from_secs(4),
        "slots back",
        |v| v["streams"]["remaining"] == 2 && spent(v) > 0,
    )
    .await;
    let late = at.saturating_duration_since(finished);
    assert!(
        late <= Duration::from_secs(2),
        "slots back {late:?} after the provider finished"
    );
    // One log line each, each with its charge: what the provider reported, or the
    // reservation where the Worker cancelled it for the caller who left.
    let lines = s.chat_lines(&sub, 2).await;
    let charged: u64 = lines.iter().map(|l| l["charged"].as_u64().unwrap()).sum();
    assert_eq!(charged, spent(&report), "{lines:?}");
    for (line, body) in lines.iter().zip(&bodies) {
        let c = line["charged"].as_u64().unwrap();
        assert!(c > 0 && c <= reservation(body, CAP, 1), "{line}");
    }
    eprintln!(
        "[lifecycle] two hang-ups at 300 ms: slots back {:.2} s after the provider finished \
         ({:.2} s from the start), charged {charged} tokens ({:?})",
        late.as_secs_f64(),
        at.duration_since(started).as_secs_f64(),
        lines
            .iter()
            .map(|l| (l["error"].clone(), l["charged"].clone()))
            .collect::<Vec<_>>(),
    );
    // Not locked out: a new stream is admitted and answered at once.
    let seen = s
        .chat(
            Some(&token),
            &chat_body(OPENAI_ALIAS, &format!("{nonce} again"), true),
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.sse_data().last().map(String::as_str), Some("[DONE]"));
}

async fn a_cut_answer_is_charged_and_never_rerun(s: Arc<Suite>) {
    // The alias's first route answers 200 and half a JSON body; the second is healthy.
    let (_, token) = user(&s, "cut", "free");
    let nonce = s.nonce();
    let body = chat_body(
        FALLBACK_ALIAS,
        &format!("fault@{OPENAI_MODEL}:cut {nonce} a b c"),
        false,
    );
    let seen = s.chat(Some(&token), &body).await;
    seen.assert_error(502, "upstream_error");
    assert_eq!(seen.header("x-should-retry"), Some("false"));
    assert_eq!(
        s.provider.requests_containing(&nonce).len(),
        1,
        "rerun on the next route"
    );
    let (report, _) = usage_until(&s, &token, Duration::from_secs(5), "charged", |v| {
        spent(v) > 0
    })
    .await;
    assert_eq!(spent(&report), reservation(&body, CAP, 1));

    // Through the client with retries: one provider call, one charge, the typed error says so.
    let (_, token) = user(&s, "cut-client", "free");
    let client = Client::builder()
        .base_url(format!("{}/v1", s.url))
        .token(token.clone())
        .retry_policy(
            RetryPolicy::default()
                .max_retries(3)
                .initial_backoff(Duration::from_millis(20)),
        )
        .build()
        .unwrap();
    let nonce = s.nonce();
    let request = ChatRequest::new(
        FALLBACK_ALIAS,
        vec![Message::user(format!(
            "fault@{OPENAI_MODEL}:cut {nonce} a b c"
        ))],
    );
    let err = client.chat(&request).await.unwrap_err();
    assert!(matches!(&err, Error::Api(d) if d.status == 502), "{err:?}");
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
    let (report, _) = usage_until(&s, &token, Duration::from_secs(5), "charged", |v| {
        spent(v) > 0
    })
    .await;
    assert!(
        spent(&report) > CAP && spent(&report) < CAP + 200,
        "{report}"
    );
}

async fn choices_above_the_plan_are_refused_and_each_is_reserved(s: Arc<Suite>) {
    // The default is one choice.
    let (_, token) = user(&s, "n1", "free");
    let nonce = s.nonce();
    let mut body = chat_body(OPENAI_ALIAS, &format!("{nonce} a"), false);
    body["n"] = json!(2);
    let e = s
        .chat(Some(&token), &body)
        .await
        .assert_error(400, "invalid_value");
    assert_eq!(e["param"], "n", "{e}");
    // Up to the plan's max_choices; each is reserved: four choices of 1,000 tokens do not fit
    // a 3,000-token day, two do.
    let (_, token) = user(&s, "n4", "choices");
    body["n"] = json!(CHOICES + 1);
    s.chat(Some(&token), &body)
        .await
        .assert_error(400, "invalid_value");
    body["n"] = json!(CHOICES);
    let seen = s.chat(Some(&token), &body).await;
    let e = seen.assert_error(429, "budget_exhausted");
    let asked = reservation(&body, CAP, CHOICES);
    assert!(
        e["message"].as_str().unwrap().contains(&asked.to_string()),
        "{e}"
    );
    assert_eq!(seen.header("x-should-retry"), Some("false"));
    body["n"] = json!(2);
    let seen = s.chat(Some(&token), &body).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(
        s.provider.requests_containing(&nonce).len(),
        1,
        "only the one that fitted"
    );
}

async fn a_reservation_above_what_is_left_is_refused(s: Arc<Suite>) {
    // The first request of the day: a 1,000-token cap does not fit a 500-token day.
    let (_, token) = user(&s, "tiny", "tiny");
    let nonce = s.nonce();
    let mut body = chat_body(OPENAI_ALIAS, &format!("{nonce} first"), false);
    let seen = s.chat(Some(&token), &body).await;
    let e = seen.assert_error(429, "budget_exhausted");
    assert!(e["message"].as_str().unwrap().contains("500"), "{e}");
    assert!(seen.header("retry-after").is_some());
    body["max_tokens"] = json!(100);
    let seen = s.chat(Some(&token), &body).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);

    // Later in a day: two large prompts (with small answers) spend most of it; then a large
    // prompt with the default cap no longer fits what is left, while a small request does.
    let (_, token) = user(&s, "small", "small");
    let words = "w ".repeat(1900);
    for _ in 0..2 {
        let mut body = chat_body(OPENAI_ALIAS, &format!("{} {words}", s.nonce()), false);
        body["max_tokens"] = json!(10);
        let seen = s.chat(Some(&token), &body).await;
        assert_eq!(seen.status, 200, "{}", seen.text());
    }
    let (report, _) = usage_until(&s, &token, Duration::from_secs(5), "settled", |v| {
        spent(v) > 3800 && spent(v) < 4000
    })
    .await;
    let left = SMALL_DAY - spent(&report);
    let nonce = s.nonce();
    let body = chat_body(OPENAI_ALIAS, &format!("{nonce} {words}"), false);
    assert!(reservation(&body, CAP, 1) > left, "{left} left");
    let e = s
        .chat(Some(&token), &body)
        .await
        .assert_error(429, "budget_exhausted");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(&format!("{left} of today's")), "{e}");
    let mut small = chat_body(OPENAI_ALIAS, &format!("{nonce} later"), false);
    small["max_tokens"] = json!(50);
    let seen = s.chat(Some(&token), &small).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
}

async fn usage_reports_have_a_rate_limit_of_their_own(s: Arc<Suite>) {
    // A plan of 10 requests a minute still allows 120 usage reports a minute, then 429; chat
    // requests are not held back by them.
    let (_, token) = user(&s, "reports", "slow");
    for i in 0..120 {
        let seen = s
            .send(s.http.get(s.at("/v1/usage")).bearer_auth(&token))
            .await;
        assert_eq!(seen.status, 200, "report {i}: {}", seen.text());
    }
    let seen = s
        .send(s.http.get(s.at("/v1/usage")).bearer_auth(&token))
        .await;
    let e = seen.assert_error(429, "rate_limit_exceeded");
    assert!(e["message"].as_str().unwrap().contains("120"), "{e}");
    assert!(seen.header("retry-after").is_some());
    let seen = s
        .chat(Some(&token), &chat_body(OPENAI_ALIAS, &s.nonce(), false))
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
}

async fn a_stalled_reader_holds_at_most_the_buffer(s: Arc<Suite>) {
    let (sub, token) = user(&s, "stall", "free");
    let nonce = s.nonce();
    let body = chat_body(OPENAI_ALIAS, &format!("fault:big={BIG} {nonce}"), true);
    // A small receive window, as a reader that stopped would advertise.
    // Past wrangler's dev proxy, which would read the answer whatever the caller does.
    let mut conn = open(s.runtime_addr(), &token, &body, Some(16 * 1024)).await;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "the answer's head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let number = s.provider.requests_containing(&nonce)[0].number;
    // The caller reads nothing for 10 s. What the Worker has read from the provider is what
    // the provider wrote less what waits in the kernel on that connection (the provider's
    // send queue, the runtime's receive queue); what it holds is that, less what waits in the
    // kernel towards the caller (the runtime's send queue, the caller's receive queue).
    let provider_port = s.provider.addr().port();
    let caller_port = conn.local_addr().unwrap().port();
    let mut samples = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sockets = tcp_sockets();
        let queued = |local: &dyn Fn(&TcpSocket) -> bool| -> u64 {
            sockets
                .iter()
                .filter(|t| !t.listening && local(t))
                .map(|t| t.tx_queue + t.rx_queue)
                .sum()
        };
        let upstream = queued(&|t| t.local_port == provider_port || t.remote_port == provider_port);
        let downstream = queued(&|t| t.local_port == caller_port || t.remote_port == caller_port);
        let written = s.provider.bytes_sent(number);
        let read = written.saturating_sub(upstream);
        samples.push((
            written,
            read,
            read.saturating_sub(downstream),
            upstream,
            downstream,
        ));
    }
    let (written, read, held, upstream, downstream) = *samples.last().unwrap();
    eprintln!(
        "[lifecycle] a caller reading nothing for 10 s: the provider wrote {written} of {BIG} \
         bytes; {upstream} wait in the kernel towards the Worker, {downstream} towards the \
         caller: the Worker read {read} and holds {held} (each second: {samples:?})"
    );
    assert!(
        written < BIG,
        "the provider wrote the whole answer for a stalled caller"
    );
    assert!(
        held < 3 * 64 * 1024,
        "the Worker holds {held} bytes for a caller that reads nothing"
    );
    assert!(
        samples[9].0 - samples[4].0 < 100_000,
        "the provider kept writing while the caller read nothing: {samples:?}"
    );
    // The caller reads on, and gets the whole answer.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), conn.read_to_end(&mut rest))
        .await
        .expect("the rest within 60 s")
        .unwrap();
    let text = String::from_utf8_lossy(&rest);
    let content = text.matches('x').count() as u64;
    assert!(content >= BIG, "{content} of {BIG} content bytes");
    assert!(text.contains("data: [DONE]"), "no [DONE]");
    let lines = s.chat_lines(&sub, 1).await;
    assert!(lines[0]["error"].is_null(), "{}", lines[0]);
    assert_eq!(
        lines[0]["completion_tokens"],
        BIG.div_ceil(1000),
        "{}",
        lines[0]
    );
    assert!(s.provider.bytes_sent(number) >= BIG, "every piece written");
}
