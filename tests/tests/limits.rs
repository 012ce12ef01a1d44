//! Plans and per-user limits end to end under workerd: the `UserLimiter` Durable Object admits
//! exactly a plan's requests per minute under a concurrent burst, charges what the provider
//! reported and refuses a request whose reservation no longer fits the day's budget, charges a
//! cut stream its reservation,
//! gives stream slots back on every path; plans refuse models they lack (403), cap
//! `max_tokens`, and an unknown plan is refused; every answer after auth carries
//! `x-ratelimit-*`; `GET /v1/usage` reports the plan and what is left. A last, serial case
//! measures what the limiter adds to a request (limits on vs `LIMITS_ENABLED=false`).

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use serde_json::{json, Value};
use storycad_e2e::{
    tokens::{self, Alg},
    workerd::{Worker, WorkerOptions},
};
use support::{
    chat_body, Seen, Suite, SuiteConfig, ANTHROPIC_ALIAS, ANTHROPIC_KEY, ANTHROPIC_MODEL, AUDIENCE,
    FALLBACK_ALIAS, ISSUER, OPENAI_ALIAS, OPENAI_KEY, OPENAI_MODEL,
};

/// Tokens per day of the `budget` plan.
const BUDGET: u64 = 60;
/// Output cap of the `budget` plan.
const BUDGET_CAP: u64 = 20;
/// Output cap of the `narrow` plan.
const NARROW_CAP: u64 = 7;
/// Stream slots of the `streams` plan.
const STREAMS: u64 = 3;
/// Requests per minute of the `rpm10` plan.
const RPM: u64 = 10;

fn plan(models: Value, rpm: u64, tpd: u64, max_out: u64, streams: u64) -> Value {
    json!({
        "models": models,
        "requests_per_minute": rpm,
        "tokens_per_day": tpd,
        "max_output_tokens": max_out,
        "concurrent_streams": streams
    })
}

fn plans() -> Value {
    let both = json!([OPENAI_ALIAS, ANTHROPIC_ALIAS]);
    json!({
        "free": plan(json!(["*"]), 100_000, 1_000_000_000, 4096, 64),
        "rpm10": plan(both.clone(), RPM, 1_000_000_000, 4096, 64),
        "budget": plan(both.clone(), 1000, BUDGET, BUDGET_CAP, 64),
        "streams": plan(both.clone(), 1000, 1_000_000_000, 4096, STREAMS),
        "narrow": plan(json!([OPENAI_ALIAS]), 1000, 1_000_000, NARROW_CAP, 64),
        "metered": plan(both, 50, 100_000, 4096, 4),
    })
}

fn main() -> ExitCode {
    let mut cases = cases![
        burst_of_50_admits_exactly_the_rate_limit,
        budget_holds_reservations_and_charges_what_the_provider_said,
        completed_stream_is_charged_the_provider_usage,
        cut_stream_is_charged_its_reservation,
        stream_slots_come_back_after_errors_cuts_and_hang_ups,
        model_outside_the_plan_is_403,
        models_lists_only_the_plan_aliases,
        max_tokens_is_lowered_to_the_plan_cap,
        unknown_plan_is_403,
        rate_limit_headers_on_every_answer_after_auth,
        usage_endpoint_reports_plan_limits_and_what_is_left,
        settlements_of_a_burst_answered_at_once_are_all_charged,
    ];
    cases.push(support::Case::new("limiter_latency_on_vs_off", limiter_latency_on_vs_off).serial());
    support::run(
        SuiteConfig {
            name: "limits",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("PLANS".into(), plans().to_string())],
        },
        cases,
    )
}

/// A token for user `sub` (unique per case) on `plan` (`None`: no claim, the default plan).
fn token(s: &Suite, sub: &str, plan: Option<&str>) -> String {
    let mut claims = s.claims(&format!("{sub}-{}", s.nonce()));
    if let Some(p) = plan {
        claims["plan"] = json!(p);
    }
    tokens::mint(s.keys.get(Alg::EdDSA), &claims)
}

/// A marker no other request contains (the suite's nonces are prefixes of one another:
/// `…x1` of `…x10`).
fn unique(s: &Suite) -> String {
    format!("{}z", s.nonce())
}

/// Sends exactly `body` (so the test knows the byte count the Worker estimates from).
async fn post_bytes(s: &Suite, token: &str, body: &[u8]) -> Seen {
    s.send(
        s.http
            .post(s.at("/v1/chat/completions"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_vec()),
    )
    .await
}

async fn get(s: &Suite, token: &str, path: &str) -> Seen {
    s.send(s.http.get(s.at(path)).bearer_auth(token)).await
}

async fn usage(s: &Suite, token: &str) -> Value {
    let seen = get(s, token, "/v1/usage").await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    seen.json()
}

/// Polls `/v1/usage` until `done` holds (settles run after the answer, in `wait_until`).
async fn usage_until(s: &Suite, token: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = usage(s, token).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: /v1/usage stays at {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn header_u64(seen: &Seen, name: &str) -> u64 {
    seen.header(name)
        .unwrap_or_else(|| panic!("{name} missing (status {})", seen.status))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

fn assert_rate_limit_headers(seen: &Seen, what: &str) {
    for name in storycad_protocol::headers::RATE_LIMIT_HEADERS {
        assert!(
            seen.header(name).is_some(),
            "{what}: {name} missing (status {})",
            seen.status
        );
    }
}

fn tokens_of(answer: &Value) -> u64 {
    answer["usage"]["prompt_tokens"].as_u64().unwrap()
        + answer["usage"]["completion_tokens"].as_u64().unwrap()
}

fn seconds_to_utc_midnight() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    86_400 - now % 86_400
}

async fn burst_of_50_admits_exactly_the_rate_limit(s: Arc<Suite>) {
    let burst_user = token(&s, "burst", Some("rpm10"));
    let other_user = token(&s, "bystander", Some("rpm10"));
    let nonce = unique(&s);
    let body = chat_body(OPENAI_ALIAS, &format!("{nonce} burst"), false);
    let other_nonce = unique(&s);
    let other_body = chat_body(OPENAI_ALIAS, &format!("{other_nonce} other"), false);
    let burst = (0..50).map(|_| s.chat(Some(&burst_user), &body));
    let others = (0..5).map(|_| s.chat(Some(&other_user), &other_body));
    let (burst, others) = tokio::join!(
        futures_util::future::join_all(burst),
        futures_util::future::join_all(others)
    );
    let ok = burst.iter().filter(|a| a.status == 200).count();
    let limited: Vec<&Seen> = burst.iter().filter(|a| a.status == 429).collect();
    eprintln!(
        "[limits] burst of 50 at {RPM}/min: {ok} admitted, {} refused 429",
        limited.len()
    );
    assert_eq!(ok, RPM as usize, "exactly the limit is admitted");
    assert_eq!(limited.len(), 50 - RPM as usize, "every other one is 429");
    for a in &limited {
        let e = a.assert_error(429, "rate_limit_exceeded");
        assert!(e["message"]
            .as_str()
            .unwrap()
            .contains("10 requests per minute"));
        let retry = header_u64(a, "retry-after");
        assert!((1..=60).contains(&retry), "retry-after {retry}");
        assert_eq!(header_u64(a, "x-ratelimit-limit-requests"), RPM);
        assert_eq!(header_u64(a, "x-ratelimit-remaining-requests"), 0);
    }
    // Only the admitted ones reached the provider.
    assert_eq!(s.provider.requests_containing(&nonce).len(), RPM as usize);
    // The other user of the same plan was not affected.
    for a in &others {
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let remaining: Vec<u64> = others
        .iter()
        .map(|a| header_u64(a, "x-ratelimit-remaining-requests"))
        .collect();
    assert_eq!(remaining.iter().min(), Some(&(RPM - 5)), "{remaining:?}");
    // The window is full for the burst user: usage says so, and when it frees.
    let v = usage(&s, &burst_user).await;
    assert_eq!(v["requests"]["remaining"], 0, "{v}");
    let reset = v["requests"]["reset_seconds"].as_f64().unwrap();
    assert!(reset > 0.0 && reset <= 60.0, "{v}");
}

/// Requests held at the provider, then answered at once: their settlements wait in the isolate
/// together and reach the object in one call, longer than a header carries
/// (`limiter::wire::HEADER_TEXT_MAX`, 4,096 bytes; a settlement is ~40), so as the call's body,
/// and the object answers in a body. Every one is charged what the provider said.
async fn settlements_of_a_burst_answered_at_once_are_all_charged(s: Arc<Suite>) {
    const HELD: usize = 250;
    const GATE: u64 = 1;
    let t = token(&s, "settle-burst", Some("free"));
    let nonce = unique(&s);
    let body = chat_body(OPENAI_ALIAS, &format!("fault:gate={GATE} {nonce}"), false);
    let limit = usage(&s, &t).await["tokens"]["limit"].as_u64().unwrap();
    let requests = futures_util::future::join_all((0..HELD).map(|_| s.chat(Some(&t), &body)));
    let open = async {
        // Once every request is admitted and at the provider.
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.provider.requests_containing(&nonce).len() < HELD {
            assert!(
                Instant::now() < deadline,
                "the burst did not reach the provider"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.provider.open_gate(GATE);
    };
    let (answers, ()) = tokio::join!(requests, open);
    let mut charged = 0;
    for seen in &answers {
        assert_eq!(seen.status, 200, "{}", seen.text());
        charged += tokens_of(&seen.json());
    }
    let v = usage_until(&s, &t, "the burst's settlements", |v| {
        v["tokens"]["remaining"] == limit - charged
    })
    .await;
    let requests = &v["requests"];
    let used = requests["limit"].as_u64().unwrap() - requests["remaining"].as_u64().unwrap();
    assert_eq!(used, HELD as u64, "{v}");
    eprintln!("[limits] {HELD} requests answered at once: {charged} tokens charged, all of them");
}

async fn budget_holds_reservations_and_charges_what_the_provider_said(s: Arc<Suite>) {
    let t = token(&s, "budget", Some("budget"));
    // prompt: 3 (system) + 5 words; completion: 1 + 5 words (under the cap of 20).
    let ask = |max_tokens: Option<u64>| {
        let nonce = unique(&s);
        let mut body = chat_body(OPENAI_ALIAS, &format!("{nonce} one two three four"), false);
        if let Some(m) = max_tokens {
            body["max_tokens"] = json!(m);
        }
        let reservation = (serde_json::to_vec(&body).unwrap().len() as u64).div_ceil(4)
            + max_tokens.unwrap_or(BUDGET_CAP);
        (nonce, body, reservation)
    };
    let mut left = BUDGET;
    let mut answers = 0;
    for (max_tokens, fits) in [
        (None, true),
        (None, false),
        (Some(1), true),
        (Some(1), false),
    ] {
        let (nonce, body, reservation) = ask(max_tokens);
        assert_eq!(reservation <= left, fits, "{reservation} for {left} left");
        let seen = s.chat(Some(&t), &body).await;
        if !fits {
            // The reservation does not fit what is left: refused before it goes upstream.
            let e = seen.assert_error(429, "budget_exhausted");
            let message = e["message"].as_str().unwrap();
            assert!(message.contains(&reservation.to_string()), "{e}");
            assert!(
                message.contains(&format!("{left} of today's budget (60 tokens)")),
                "{e}"
            );
            let retry = header_u64(&seen, "retry-after");
            assert!(
                retry.abs_diff(seconds_to_utc_midnight()) <= 5,
                "retry-after {retry}: the next midnight UTC"
            );
            assert_eq!(seen.header("x-should-retry"), Some("false"));
            assert_eq!(header_u64(&seen, "x-ratelimit-remaining-tokens"), left);
            assert_eq!(s.provider.requests_containing(&nonce).len(), 0);
            continue;
        }
        assert_eq!(seen.status, 200, "{}", seen.text());
        let answer = seen.json();
        assert_eq!(answer["usage"]["prompt_tokens"], 8);
        let completion = answer["usage"]["completion_tokens"].as_u64().unwrap();
        assert_eq!(completion, max_tokens.unwrap_or(6));
        answers += 1;
        // What the limiter charged is what the provider reported.
        left -= tokens_of(&answer);
        let v = usage_until(&s, &t, "budget after a request", |v| {
            v["tokens"]["remaining"] == left
        })
        .await;
        assert_eq!(v["tokens"]["limit"], BUDGET);
    }
    assert_eq!(answers, 2);
    eprintln!("[limits] budget {BUDGET}: 2 answers, {left} left, refused what did not fit");
    let v = usage(&s, &t).await;
    let reset = v["tokens"]["reset_seconds"].as_f64().unwrap();
    assert!(
        (reset - seconds_to_utc_midnight() as f64).abs() <= 5.0,
        "{v}"
    );
}

async fn completed_stream_is_charged_the_provider_usage(s: Arc<Suite>) {
    let t = token(&s, "stream-usage", Some("metered"));
    let before = usage(&s, &t).await["tokens"]["remaining"].as_u64().unwrap();
    let nonce = unique(&s);
    // The caller does not ask for usage; the Worker meters it anyway.
    let seen = s
        .chat(
            Some(&t),
            &chat_body(OPENAI_ALIAS, &format!("{nonce} a b c"), true),
        )
        .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.sse_data().last().map(String::as_str), Some("[DONE]"));
    assert!(!seen.text().contains("\"usage\""), "usage not asked for");
    assert_rate_limit_headers(&seen, "stream");
    // prompt 3 + 4, completion 1 + 4.
    let expected = before - 12;
    usage_until(&s, &t, "stream charge", |v| {
        v["tokens"]["remaining"] == expected && v["streams"]["remaining"] == 4
    })
    .await;
}

async fn cut_stream_is_charged_its_reservation(s: Arc<Suite>) {
    let t = token(&s, "cut", Some("metered"));
    let before = usage(&s, &t).await["tokens"]["remaining"].as_u64().unwrap();
    let body = serde_json::to_vec(&chat_body(
        OPENAI_ALIAS,
        "fault:cut alpha beta gamma delta epsilon",
        true,
    ))
    .unwrap();
    let seen = post_bytes(&s, &t, &body).await;
    assert_eq!(seen.status, 200);
    let data = seen.sse_data();
    assert!(!data.iter().any(|d| d == "[DONE]"), "{}", seen.text());
    // The provider had the request and stopped before its usage: charged the reservation,
    // the prompt estimate (a quarter of the body's bytes) plus the plan's output cap.
    let expected = before - ((body.len() as u64).div_ceil(4) + 4096);
    let v = usage_until(&s, &t, "cut stream charge", |v| {
        v["tokens"]["remaining"] == expected && v["streams"]["remaining"] == 4
    })
    .await;
    eprintln!(
        "[limits] cut stream of a {}-byte body charged {} tokens",
        body.len(),
        before - v["tokens"]["remaining"].as_u64().unwrap()
    );
}

async fn stream_slots_come_back_after_errors_cuts_and_hang_ups(s: Arc<Suite>) {
    let t = token(&s, "slots", Some("streams"));
    let stream_of = |text: &str| chat_body(OPENAI_ALIAS, text, true);
    // Three streams that end badly, at once: cut mid-way, an upstream error event, and an
    // upstream 500 before any byte.
    let failing = [
        stream_of("fault:cut a b c"),
        stream_of("fault:stream-error a b c"),
        stream_of("fault:500 a b c"),
    ];
    let answers = futures_util::future::join_all(failing.iter().map(|b| s.chat(Some(&t), b))).await;
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[1].status, 200);
    assert_eq!(answers[2].status, 502);
    usage_until(&s, &t, "slots after failures", |v| {
        v["streams"]["remaining"] == STREAMS
    })
    .await;

    // A caller that hangs up mid-stream: the Worker drops the stream and settles.
    let response = s
        .http
        .post(s.at("/v1/chat/completions"))
        .bearer_auth(&t)
        .json(&stream_of(
            "fault:slow=300 one two three four five six seven eight",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(body);
    usage_until(&s, &t, "slot after a hang-up", |v| {
        v["streams"]["remaining"] == STREAMS
    })
    .await;

    // All slots are free: STREAMS slow streams at once pass, one more is refused.
    let slow = stream_of("fault:slow=400 one two three");
    let open = (0..STREAMS).map(|_| s.chat(Some(&t), &slow));
    let extra = async {
        // Let the slow ones be admitted first.
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.chat(Some(&t), &stream_of("one more")).await
    };
    let (open, extra) = tokio::join!(futures_util::future::join_all(open), extra);
    for a in &open {
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"));
    }
    let e = extra.assert_error(429, "concurrent_streams_exceeded");
    assert!(e["message"].as_str().unwrap().contains('3'), "{e}");
    assert_eq!(header_u64(&extra, "retry-after"), 1);
    // And they come back once those end.
    usage_until(&s, &t, "slots after the streams", |v| {
        v["streams"]["remaining"] == STREAMS
    })
    .await;
    let again = s.chat(Some(&t), &stream_of("again")).await;
    assert_eq!(again.status, 200);
}

async fn model_outside_the_plan_is_403(s: Arc<Suite>) {
    let t = token(&s, "narrow-model", Some("narrow"));
    let nonce = unique(&s);
    let seen = s
        .chat(Some(&t), &chat_body(ANTHROPIC_ALIAS, &nonce, false))
        .await;
    let e = seen.assert_error(403, "model_not_allowed");
    assert_eq!(e["param"], "model");
    assert_eq!(e["type"], "permission_error");
    assert_rate_limit_headers(&seen, "403");
    assert!(s.provider.requests_containing(&nonce).is_empty());
    // An alias that does not exist at all is still 404.
    let seen = s
        .chat(Some(&t), &chat_body("no-such-alias", &nonce, false))
        .await;
    seen.assert_error(404, "model_not_found");
    // The same model on a plan that has it passes.
    let wide = token(&s, "wide-model", None);
    let seen = s
        .chat(Some(&wide), &chat_body(ANTHROPIC_ALIAS, &nonce, false))
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
}

async fn models_lists_only_the_plan_aliases(s: Arc<Suite>) {
    let ids = |seen: &Seen| -> Vec<String> {
        assert_eq!(seen.status, 200, "{}", seen.text());
        seen.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let narrow = get(&s, &token(&s, "list-narrow", Some("narrow")), "/v1/models").await;
    assert_eq!(ids(&narrow), [OPENAI_ALIAS]);
    assert_rate_limit_headers(&narrow, "/v1/models");
    let default = get(&s, &token(&s, "list-default", None), "/v1/models").await;
    // `["*"]`: every alias of ROUTES.
    assert_eq!(
        ids(&default),
        [ANTHROPIC_ALIAS, FALLBACK_ALIAS, OPENAI_ALIAS]
    );
}

async fn max_tokens_is_lowered_to_the_plan_cap(s: Arc<Suite>) {
    let t = token(&s, "cap", Some("narrow"));
    let words = "one two three four five six seven eight nine ten";
    let cases = [
        (json!({"max_tokens": 500}), "max_tokens", NARROW_CAP),
        (
            json!({"max_completion_tokens": 5000}),
            "max_completion_tokens",
            NARROW_CAP,
        ),
        (
            json!({"max_completion_tokens": 3}),
            "max_completion_tokens",
            3,
        ),
        (json!({}), "max_completion_tokens", NARROW_CAP),
    ];
    for (extra, field, expected) in cases {
        let nonce = unique(&s);
        let mut body = chat_body(OPENAI_ALIAS, &format!("{nonce} {words}"), false);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let seen = s.chat(Some(&t), &body).await;
        assert_eq!(seen.status, 200, "{}", seen.text());
        let sent = s.provider.requests_containing(&nonce);
        assert_eq!(sent.len(), 1);
        let upstream = sent[0].json().unwrap();
        assert_eq!(
            upstream[field], expected,
            "{extra}: upstream body {upstream}"
        );
        if extra.as_object().unwrap().is_empty() {
            assert!(upstream.get("max_tokens").is_none(), "{upstream}");
        }
        // The provider honoured it: the answer stops at the cap.
        let answer = seen.json();
        assert_eq!(answer["usage"]["completion_tokens"], expected, "{answer}");
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
    }
}

async fn unknown_plan_is_403(s: Arc<Suite>) {
    let t = token(&s, "platinum", Some("platinum"));
    let nonce = unique(&s);
    let seen = s
        .chat(Some(&t), &chat_body(OPENAI_ALIAS, &nonce, false))
        .await;
    let e = seen.assert_error(403, "unknown_plan");
    assert!(e["message"].as_str().unwrap().contains("platinum"), "{e}");
    assert!(s.provider.requests_containing(&nonce).is_empty());
    get(&s, &t, "/v1/usage")
        .await
        .assert_error(403, "unknown_plan");
    get(&s, &t, "/v1/models")
        .await
        .assert_error(403, "unknown_plan");
}

async fn rate_limit_headers_on_every_answer_after_auth(s: Arc<Suite>) {
    let t = token(&s, "headers", Some("metered"));
    let nonce = unique(&s);
    let first = s
        .chat(Some(&t), &chat_body(OPENAI_ALIAS, &nonce, false))
        .await;
    assert_eq!(first.status, 200);
    assert_rate_limit_headers(&first, "200");
    assert_eq!(header_u64(&first, "x-ratelimit-limit-requests"), 50);
    assert_eq!(header_u64(&first, "x-ratelimit-remaining-requests"), 49);
    assert_eq!(header_u64(&first, "x-ratelimit-limit-tokens"), 100_000);
    // At admission the reservation (estimate) is held: fewer tokens than the limit.
    assert!(header_u64(&first, "x-ratelimit-remaining-tokens") < 100_000);
    let reset = first.header("x-ratelimit-reset-requests").unwrap();
    let reset = storycad_protocol::ratelimit::parse_duration(reset).unwrap();
    assert!(
        reset <= Duration::from_secs(60) && reset > Duration::from_secs(50),
        "{reset:?}"
    );
    let second = s
        .chat(Some(&t), &chat_body(OPENAI_ALIAS, &nonce, true))
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(header_u64(&second, "x-ratelimit-remaining-requests"), 48);
    // Errors after auth carry them too (without using up a request).
    let bad_json = post_bytes(&s, &t, b"{not json").await;
    bad_json.assert_error(400, "invalid_json");
    assert_rate_limit_headers(&bad_json, "400");
    let unknown = s
        .chat(Some(&t), &chat_body("no-such-alias", "x", false))
        .await;
    unknown.assert_error(404, "model_not_found");
    assert_rate_limit_headers(&unknown, "404");
    assert_eq!(header_u64(&unknown, "x-ratelimit-remaining-requests"), 48);
    let upstream_error = s
        .chat(Some(&t), &chat_body(OPENAI_ALIAS, "fault:500", false))
        .await;
    assert_eq!(upstream_error.status, 502);
    assert_rate_limit_headers(&upstream_error, "502");
    assert_rate_limit_headers(&get(&s, &t, "/v1/usage").await, "/v1/usage");
    // Before auth there is no caller, so no limits.
    let anonymous = s.chat(None, &chat_body(OPENAI_ALIAS, "x", false)).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("x-ratelimit-limit-requests").is_none());
}

async fn usage_endpoint_reports_plan_limits_and_what_is_left(s: Arc<Suite>) {
    let t = token(&s, "usage", Some("metered"));
    let v = usage(&s, &t).await;
    assert_eq!(
        v,
        json!({
            "object": "usage",
            "plan": "metered",
            "models": [ANTHROPIC_ALIAS, OPENAI_ALIAS],
            "max_output_tokens": 4096,
            "requests": {"limit": 50, "remaining": 50, "reset_seconds": 0.0},
            "tokens": {"limit": 100_000, "remaining": 100_000, "reset_seconds": 0.0},
            "streams": {"limit": 4, "remaining": 4, "reset_seconds": 0.0},
        })
    );
    let nonce = unique(&s);
    let seen = s
        .chat(
            Some(&t),
            &chat_body(OPENAI_ALIAS, &format!("{nonce} x y"), false),
        )
        .await;
    assert_eq!(seen.status, 200);
    let charged = tokens_of(&seen.json());
    let v = usage_until(&s, &t, "usage after one request", |v| {
        v["tokens"]["remaining"] == 100_000 - charged
    })
    .await;
    assert_eq!(v["requests"]["remaining"], 49);
    let reset = v["requests"]["reset_seconds"].as_f64().unwrap();
    assert!(reset > 0.0 && reset <= 60.0, "{v}");
    let reset = v["tokens"]["reset_seconds"].as_f64().unwrap();
    assert!(
        (reset - seconds_to_utc_midnight() as f64).abs() <= 5.0,
        "{v}"
    );
    // The default plan (no claim).
    let v = usage(&s, &token(&s, "usage-default", None)).await;
    assert_eq!(v["plan"], "free");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The limiter's cost: the same requests through a Worker with limits on and one with
/// `LIMITS_ENABLED=false`, interleaved, one at a time.
async fn limiter_latency_on_vs_off(s: Arc<Suite>) {
    let routes = json!({
        OPENAI_ALIAS: [format!("openai:{OPENAI_MODEL}")],
        ANTHROPIC_ALIAS: [format!("anthropic:{ANTHROPIC_MODEL}")],
    });
    let off = Worker::start(
        WorkerOptions {
            name: "limits-off".to_owned(),
            build: false,
            ..Default::default()
        }
        .var("JWT_ISSUER", ISSUER)
        .var("JWT_AUDIENCE", AUDIENCE)
        .var("JWT_PUBLIC_JWK", s.keys.jwks().to_string())
        .var("OPENAI_BASE_URL", s.provider.openai_base_url())
        .var("ANTHROPIC_BASE_URL", s.provider.anthropic_base_url())
        .var("ROUTES", routes.to_string())
        .var("CACHE_TTL_SECONDS", "0")
        .var("PLANS", plans().to_string())
        .var("LIMITS_ENABLED", "false")
        .secret("OPENAI_API_KEY", OPENAI_KEY)
        .secret("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
    )
    .unwrap();
    let t = token(&s, "latency", None);
    let body = chat_body(OPENAI_ALIAS, "how long does the limiter take", false);
    let send = |url: String| {
        let (s, t, body) = (&s, &t, &body);
        async move {
            let started = Instant::now();
            let seen = s
                .send(
                    s.http
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(t)
                        .json(body),
                )
                .await;
            assert_eq!(seen.status, 200, "{}", seen.text());
            (started.elapsed(), seen)
        }
    };
    for _ in 0..20 {
        send(s.url.clone()).await;
        send(off.url()).await;
    }
    const N: usize = 400;
    let (mut on_times, mut off_times) = (Vec::with_capacity(N), Vec::with_capacity(N));
    for i in 0..N {
        // Alternate which goes first, so neither always follows the other.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for limits_on in order {
            if limits_on {
                let (took, seen) = send(s.url.clone()).await;
                assert!(seen.header("x-ratelimit-remaining-requests").is_some());
                on_times.push(took);
            } else {
                let (took, seen) = send(off.url()).await;
                assert!(seen.header("x-ratelimit-remaining-requests").is_none());
                off_times.push(took);
            }
        }
    }
    on_times.sort();
    off_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (on50, on99) = (percentile(&on_times, 0.5), percentile(&on_times, 0.99));
    let (off50, off99) = (percentile(&off_times, 0.5), percentile(&off_times, 0.99));
    eprintln!(
        "[limits] latency over {N} interleaved requests each: limits on p50 {:.2} ms p99 {:.2} ms; \
         off p50 {:.2} ms p99 {:.2} ms; added p50 {:+.2} ms p99 {:+.2} ms (ratio p50 {:.2})",
        ms(on50),
        ms(on99),
        ms(off50),
        ms(off99),
        ms(on50) - ms(off50),
        ms(on99) - ms(off99),
        ms(on50) / ms(off50)
    );
    // The limiter's own counting stayed exact through all of it.
    let v = usage(&s, &t).await;
    assert_eq!(v["requests"]["limit"], 100_000);
    assert!(v["requests"]["remaining"].as_u64().unwrap() <= 100_000 - (N as u64 + 20));
    let report = off.stop();
    assert!(report.group_empty, "the limits-off Worker left processes");
}
