//! Every fault of the fake provider, streamed and not, through the OpenAI and the Anthropic
//! route, driven through the real Rust client: one trial per row of [`ROWS`] and route, named
//! `<provider>/<stream|json>/<fault>` (e.g. `openai/stream/429-retry-after`).
//!
//! Each row writes its expected outcome out in full, the same for both routes (the Worker
//! turns either provider's failure into the one contract), and each trial checks, for a user
//! of its own (a fresh `sub`, so trials never share limiter state):
//!
//! - (a) the client's typed error: the [`Error`] variant, the status, the Worker's error code,
//!   `retry-after`, and how many times the client tried (it retries what the contract calls
//!   retryable, within a small policy: one retry, short backoff);
//! - (b) the Worker's log: the line of the request id the error carries has the same status
//!   and `error` code, and the user has exactly one line per attempt, each with that code; the
//!   provider saw exactly one request per attempt;
//! - (c) the limiter settled: `GET /v1/usage` for the user shows every stream slot free, one
//!   request per attempt in the window, and the day's tokens charged as the ledger says:
//!   nothing where the provider did no work (an error status, no connection); the reservation
//!   (the prompt estimate plus the plan's 4,096 output tokens) where it accepted the work and
//!   then failed (a cut, a bad or slow answer, no headers in time), and such an error is not
//!   retried (`x-should-retry: false`); polled for at most 5 s;
//! - (d) no provider key or provider address in the error the caller got; the same fault sent
//!   once more without the client (another user, no retry), its answer checked on the wire
//!   (OpenAI's error shape and `retry-after`, or a 200 event stream ending with the error event
//!   and no `[DONE]`), that user charged exactly the reservation of that body where the row
//!   charges one, and kept for the suite's checks, which run after the rows: no panic in
//!   workerd's log, no secret or provider address in any answer, no secret in the log.
//!
//! Every fault of the fake provider fires on every request that carries its marker, so a
//! retried request fails the same way again: no row ends in a retried success.
//!
//! The Worker's `UPSTREAM_ANSWER_TIMEOUT_MS` is 3 s: a JSON answer whose headers take longer
//! (hang, slow drip) is a 504 charged its reservation.
//!
//! Single-route aliases (`OPENAI_ALIAS`, `ANTHROPIC_ALIAS`) keep a fallback from hiding a fault.
//! The Worker's `UPSTREAM_TIMEOUT_MS` is 2.5 s, so the hang and slow rows take 2.5 s per
//! attempt; the rows run in parallel.

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use storycad_client::{ChatRequest, Client, Error, Message, RetryPolicy, Timeouts};
use storycad_e2e::tokens::{self, Alg};
use storycad_protocol::UsageReport;
use support::{
    chat_body, drain, Case, Suite, SuiteConfig, ANSWER_TIMEOUT, ANTHROPIC_ALIAS, ANTHROPIC_MODEL,
    OPENAI_ALIAS, OPENAI_MODEL, UPSTREAM_TIMEOUT,
};

/// Which route a row goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    fn alias(self) -> &'static str {
        match self {
            Provider::OpenAi => OPENAI_ALIAS,
            Provider::Anthropic => ANTHROPIC_ALIAS,
        }
    }

    /// The `provider:model` the Worker logs as the route.
    fn route(self) -> String {
        match self {
            Provider::OpenAi => format!("openai:{OPENAI_MODEL}"),
            Provider::Anthropic => format!("anthropic:{ANTHROPIC_MODEL}"),
        }
    }
}

/// The client's error variant for an HTTP error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `Error::RateLimited`: a 429 worth retrying.
    RateLimited,
    /// `Error::Api`: any other error status.
    Api,
}

/// What the caller gets for one row.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// `chat` / `chat_stream` itself fails with an HTTP error after `attempts` tries.
    Http {
        variant: Variant,
        status: u16,
        code: &'static str,
        /// The `retry-after` the error carries, in seconds.
        retry_after_secs: Option<u64>,
        attempts: usize,
        /// Charged the reservation (the provider had the work), and so not retried.
        charged: bool,
    },
    /// The stream opens (200) and, after `text` arrived, ends with the Worker's error event:
    /// `Error::Stream { code }`. Never retried (the caller may already hold part of it).
    StreamEvent {
        code: &'static str,
        text: &'static str,
    },
}

/// One row of the matrix: a fault and mode, and what the caller gets, through either route.
#[derive(Debug, Clone, Copy)]
struct Row {
    stream: bool,
    /// The trial's last name part.
    fault: &'static str,
    /// The first word of the prompt: the fake provider's fault marker.
    marker: &'static str,
    expect: Outcome,
}

impl Row {
    /// Whether the provider had the work: charged the reservation.
    fn charges(&self) -> bool {
        match self.expect {
            Outcome::Http { charged, .. } => charged,
            Outcome::StreamEvent { .. } => true,
        }
    }
}

/// One trial: a row through one route.
#[derive(Debug, Clone, Copy)]
struct Trial {
    provider: Provider,
    row: &'static Row,
}

impl Trial {
    fn name(&self) -> String {
        format!(
            "{}/{}/{}",
            self.provider.name(),
            if self.row.stream { "stream" } else { "json" },
            self.row.fault
        )
    }
}

// Error codes (the Worker's, see storycad_protocol::codes).
const RATE_LIMITED: &str = "rate_limit_exceeded";
const UPSTREAM_ERROR: &str = "upstream_error";
const UPSTREAM_TIMEOUT_CODE: &str = "upstream_timeout";
const STREAM_TRUNCATED: &str = "stream_truncated";

use Provider::{Anthropic, OpenAi};
use Variant::{Api, RateLimited};

/// An HTTP error where the provider did no work: variant, status, code, `retry-after`
/// seconds, attempts; charged nothing.
const fn http(
    variant: Variant,
    status: u16,
    code: &'static str,
    retry_after_secs: Option<u64>,
    attempts: usize,
) -> Outcome {
    Outcome::Http {
        variant,
        status,
        code,
        retry_after_secs,
        attempts,
        charged: false,
    }
}

/// An HTTP error after the provider accepted the work: charged the reservation, one attempt.
const fn charged(status: u16, code: &'static str) -> Outcome {
    Outcome::Http {
        variant: Variant::Api,
        status,
        code,
        retry_after_secs: None,
        attempts: 1,
        charged: true,
    }
}

/// A stream that opens and ends with an error event `code` after `text`.
const fn event(code: &'static str, text: &'static str) -> Outcome {
    Outcome::StreamEvent { code, text }
}

const fn row(stream: bool, fault: &'static str, marker: &'static str, expect: Outcome) -> Row {
    Row {
        stream,
        fault,
        marker,
        expect,
    }
}

const STREAM: bool = true;
const JSON: bool = false;

/// The text the fake streams before `fault:cut` cuts the body: its first two content pieces
/// (`"echo:"` and the marker, the first word of the prompt).
const CUT_TEXT: &str = "echo: fault:cut";

/// The plan's `max_output_tokens`: a reservation's output part.
const MAX_OUTPUT: u64 = 4096;

/// The slow drip: one content event every 4 s, past the Worker's 2.5 s idle timeout (a
/// non-streamed answer waits 4 s per piece before its headers).
const SLOW: &str = "fault:slow=4000";

/// The matrix. Retried: 429 `rate_limit_exceeded`, 502, 503 where the provider did no work
/// (the client's policy here: one retry), so each of those rows shows 2 attempts. An error
/// after the provider accepted the work is charged and says `x-should-retry: false`; a stream
/// that has opened is never retried.
#[rustfmt::skip]
const ROWS: &[Row] = &[
    //  mode    fault                 marker                      expected outcome
    row(JSON,   "429-retry-after",    "fault:429=1",              http(RateLimited, 429, RATE_LIMITED, Some(1), 2)),
    row(JSON,   "429-no-retry-after", "fault:429-no-retry-after", http(RateLimited, 429, RATE_LIMITED, None, 2)),
    row(JSON,   "500",                "fault:500",                http(Api, 502, UPSTREAM_ERROR, None, 2)),
    row(JSON,   "503",                "fault:503",                http(Api, 503, UPSTREAM_ERROR, None, 2)),
    row(JSON,   "529",                "fault:529",                http(Api, 503, UPSTREAM_ERROR, None, 2)),
    row(JSON,   "reset",              "fault:reset",              http(Api, 502, UPSTREAM_ERROR, None, 2)),
    row(JSON,   "redirect",           "fault:redirect",           http(Api, 502, UPSTREAM_ERROR, None, 2)),
    row(JSON,   "cut",                "fault:cut",                charged(502, UPSTREAM_ERROR)),
    row(JSON,   "slow-drip",          SLOW,                       charged(504, UPSTREAM_TIMEOUT_CODE)),
    row(JSON,   "bad-sse",            "fault:bad-sse",            charged(502, UPSTREAM_ERROR)),
    row(JSON,   "bad-json",           "fault:bad-json",           charged(502, UPSTREAM_ERROR)),
    row(JSON,   "hang",               "fault:hang",               charged(504, UPSTREAM_TIMEOUT_CODE)),

    row(STREAM, "429-retry-after",    "fault:429=1",              http(RateLimited, 429, RATE_LIMITED, Some(1), 2)),
    row(STREAM, "429-no-retry-after", "fault:429-no-retry-after", http(RateLimited, 429, RATE_LIMITED, None, 2)),
    row(STREAM, "500",                "fault:500",                http(Api, 502, UPSTREAM_ERROR, None, 2)),
    row(STREAM, "503",                "fault:503",                http(Api, 503, UPSTREAM_ERROR, None, 2)),
    row(STREAM, "529",                "fault:529",                http(Api, 503, UPSTREAM_ERROR, None, 2)),
    row(STREAM, "reset",              "fault:reset",              http(Api, 502, UPSTREAM_ERROR, None, 2)),
    row(STREAM, "redirect",           "fault:redirect",           http(Api, 502, UPSTREAM_ERROR, None, 2)),
    row(STREAM, "cut",                "fault:cut",                event(STREAM_TRUNCATED, CUT_TEXT)),
    row(STREAM, "slow-drip",          SLOW,                       event(UPSTREAM_TIMEOUT_CODE, "")),
    row(STREAM, "bad-sse",            "fault:bad-sse",            event(UPSTREAM_ERROR, "")),
    row(STREAM, "bad-json",           "fault:bad-json",           event(UPSTREAM_ERROR, "")),
    row(STREAM, "hang",               "fault:hang",               charged(504, UPSTREAM_TIMEOUT_CODE)),
];

/// Every fault of the fake provider, each of which must have a row per mode.
const FAULTS: &[&str] = &[
    "429-retry-after",
    "429-no-retry-after",
    "500",
    "503",
    "529",
    "reset",
    "redirect",
    "cut",
    "slow-drip",
    "bad-sse",
    "bad-json",
    "hang",
];

fn main() -> ExitCode {
    let mut cases: Vec<Case> = [OpenAi, Anthropic]
        .into_iter()
        .flat_map(|provider| ROWS.iter().map(move |row| Trial { provider, row }))
        .map(|t| Case::new(t.name(), move |s| run_trial(s, t)))
        .collect();
    cases.push(Case::new("matrix_is_complete", matrix_is_complete));
    support::run(
        SuiteConfig {
            name: "fault_matrix",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: Vec::new(),
        },
        cases,
    )
}

/// Each fault has one row per mode, and nothing else is in the table.
async fn matrix_is_complete(_s: Arc<Suite>) {
    for stream in [JSON, STREAM] {
        for fault in FAULTS {
            let n = ROWS
                .iter()
                .filter(|r| r.stream == stream && r.fault == *fault)
                .count();
            let mode = if stream { "stream" } else { "json" };
            assert_eq!(n, 1, "{mode}/{fault}");
        }
    }
    assert_eq!(ROWS.len(), FAULTS.len() * 2);
}

/// The small retry policy of the rows: one retry, a short backoff, server waits up to 2 s
/// honoured (the 429 rows ask for 1 s).
fn retry_policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_retries(1)
        .initial_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(200))
        .max_server_delay(Duration::from_secs(2))
}

/// A client for user `sub`; its deadlines are well past the Worker's, which must fire first.
fn client_for(s: &Suite, sub: &str) -> Client {
    Client::builder()
        .base_url(format!("{}/v1", s.url))
        .token(tokens::mint(s.keys.get(Alg::EdDSA), &s.claims(sub)))
        .retry_policy(retry_policy())
        .timeouts(
            Timeouts::default()
                .with_connect(Duration::from_secs(5))
                .with_response_headers(Duration::from_secs(20))
                .with_stream_idle(Duration::from_secs(10)),
        )
        .build()
        .unwrap()
}

async fn run_trial(s: Arc<Suite>, trial: Trial) {
    let Trial { provider, row } = trial;
    let name = trial.name();
    let nonce = s.nonce();
    let sub = format!("fm-{}-{nonce}", name.replace('/', "-"));
    let client = client_for(&s, &sub);
    let request = ChatRequest::new(
        provider.alias(),
        vec![
            Message::system("You are terse."),
            Message::user(format!("{} {nonce} alpha beta gamma", row.marker)),
        ],
    );

    // (a) The client's typed error.
    let started = Instant::now();
    let (err, streamed_text) = if row.stream {
        match client.chat_stream(&request).await {
            Err(e) => (e, None),
            Ok(stream) => {
                let (text, err) = drain(stream).await;
                let err = err.unwrap_or_else(|| {
                    panic!("{name}: the stream ended with [DONE] after {text:?}")
                });
                (err, Some(text))
            }
        }
    } else {
        match client.chat(&request).await {
            Err(e) => (e, None),
            Ok(answer) => panic!("{name}: expected an error, got {:?}", answer.text()),
        }
    };
    let took = started.elapsed();
    let shown = format!("{err} {err:?}");
    s.assert_no_secret(&name, &shown);
    let provider_addr = s.provider.addr().to_string();
    assert!(
        !shown.contains(&provider_addr),
        "{name}: the error names the provider's address: {shown}"
    );

    let (status, code, attempts) = match row.expect {
        Outcome::Http {
            variant,
            status,
            code,
            retry_after_secs,
            attempts,
            charged,
        } => {
            assert!(
                streamed_text.is_none(),
                "{name}: expected an HTTP error from the call, the stream opened: {err:?}"
            );
            let details = match (&err, variant) {
                (Error::RateLimited(d), Variant::RateLimited) | (Error::Api(d), Variant::Api) => d,
                _ => panic!("{name}: expected {variant:?}, got {err:?}"),
            };
            assert_eq!(details.status, status, "{name}: {err:?}");
            assert_eq!(details.code.as_deref(), Some(code), "{name}: {err:?}");
            assert_eq!(
                details.retry_after,
                retry_after_secs.map(Duration::from_secs),
                "{name}: retry-after: {err:?}"
            );
            assert!(
                details.body.is_none(),
                "{name}: the error body is not OpenAI's error shape: {err:?}"
            );
            // Charged: the provider had the work, so the Worker says not to retry.
            assert_eq!(err.is_retryable(), !charged, "{name}: {err:?}");
            (status, code, attempts)
        }
        Outcome::StreamEvent { code, text } => {
            let Some(received) = &streamed_text else {
                panic!("{name}: expected the stream to open, the call failed: {err:?}")
            };
            assert_eq!(received, text, "{name}: text before the error");
            match &err {
                Error::Stream { code: got, .. } => {
                    assert_eq!(got.as_deref(), Some(code), "{name}: {err:?}")
                }
                other => panic!("{name}: expected Error::Stream {{ code: {code} }}, got {other:?}"),
            }
            (200, code, 1)
        }
    };
    if code == UPSTREAM_TIMEOUT_CODE {
        // Each attempt waited out the Worker's limit (a JSON answer's wait for headers, or a
        // stream's), no more than a few times over.
        let limit = if row.stream {
            UPSTREAM_TIMEOUT
        } else {
            ANSWER_TIMEOUT
        };
        let least = limit * attempts as u32;
        assert!(
            took >= least,
            "{name}: failed after {took:?}, before {least:?}"
        );
        assert!(took < least * 3, "{name}: took {took:?}");
    }

    // (b) The Worker's log: the line of the request the error names, and one line per attempt.
    let request_id = err
        .request_id()
        .unwrap_or_else(|| panic!("{name}: no request id in {err:?}"));
    let line = s.log_line(request_id).await;
    assert_eq!(line["sub"], sub.as_str(), "{name}: {line}");
    assert_eq!(line["path"], "/v1/chat/completions", "{name}: {line}");
    assert_eq!(line["status"], status, "{name}: {line}");
    assert_eq!(line["error"], code, "{name}: {line}");
    assert_eq!(line["stream"], row.stream, "{name}: {line}");
    assert_eq!(line["route"], provider.route(), "{name}: {line}");
    let lines = s.chat_lines(&sub, attempts).await;
    for l in &lines {
        assert_eq!(
            l["error"], code,
            "{name}: every attempt failed the same way: {l}"
        );
        assert_eq!(l["status"], status, "{name}: {l}");
    }
    assert_eq!(
        s.provider.requests_containing(&nonce).len(),
        attempts,
        "{name}: requests the provider received"
    );

    // (c) The limiter settled: nothing where the provider did no work, else the reservation
    // (the plan's 4,096 output tokens and the prompt estimate), as the log line says.
    let charges = row.charges();
    let report = settled(&client, &name, |r| {
        let spent = r.tokens.limit - r.tokens.remaining;
        r.streams.remaining == r.streams.limit
            && if charges {
                spent > MAX_OUTPUT && spent < MAX_OUTPUT + 1_000
            } else {
                spent == 0
            }
    })
    .await;
    let spent = report.tokens.limit - report.tokens.remaining;
    assert_eq!(
        line["charged"].as_u64().unwrap_or(0),
        spent,
        "{name}: the log line's charge: {line}"
    );
    assert_eq!(
        report.requests.limit - report.requests.remaining,
        attempts as u64,
        "{name}: requests admitted: {report:?}"
    );
    eprintln!(
        "[fault_matrix] {name}: {code} after {:.2} s, {attempts} attempt(s)",
        took.as_secs_f64()
    );

    wire(&s, trial).await;
}

/// The same fault once more without the client (another user, no retry): the answer as sent,
/// kept for the suite's secret check, in OpenAI's error shape or ending with the error event;
/// that user charged the reservation of exactly this body where the row charges.
async fn wire(s: &Suite, trial: Trial) {
    let Trial { provider, row } = trial;
    let name = trial.name();
    let nonce = s.nonce();
    let sub = format!("fm-wire-{}-{nonce}", name.replace('/', "-"));
    let token = tokens::mint(s.keys.get(Alg::EdDSA), &s.claims(&sub));
    let text = format!("{} {nonce} alpha beta gamma", row.marker);
    let body = chat_body(provider.alias(), &text, row.stream);
    let seen = s.chat(Some(&token), &body).await;
    match row.expect {
        Outcome::Http {
            status,
            code,
            retry_after_secs,
            ..
        } => {
            seen.assert_error(status, code);
            assert_eq!(
                seen.header("retry-after"),
                retry_after_secs.map(|n| n.to_string()).as_deref(),
                "{name}: retry-after on the wire"
            );
        }
        Outcome::StreamEvent { code, .. } => {
            assert!(
                seen.header("content-type")
                    .is_some_and(|t| t.starts_with("text/event-stream")),
                "{name}: {:?}",
                seen.headers
            );
            assert!(seen.body_error.is_none(), "{name}: {:?}", seen.body_error);
            assert_eq!(seen.stream_error()["code"], code, "{name}");
        }
    }
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1, "{name}");
    let reservation = if row.charges() {
        let bytes = serde_json::to_vec(&body).unwrap().len() as u64;
        MAX_OUTPUT + bytes.div_ceil(4)
    } else {
        0
    };
    let report = settled(&client_for(s, &sub), &name, |r| {
        r.streams.remaining == r.streams.limit && r.tokens.limit - r.tokens.remaining == reservation
    })
    .await;
    assert_eq!(report.requests.limit - report.requests.remaining, 1);
}

/// Polls `GET /v1/usage` (through the client) until `done` holds; at most 5 s.
async fn settled(client: &Client, name: &str, done: impl Fn(&UsageReport) -> bool) -> UsageReport {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = client.usage().await.unwrap();
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the limiter did not settle in 5 s: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
