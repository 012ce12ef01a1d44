//! Resumable streams: a TCP relay between the caller and the Worker cuts a streamed answer at
//! several points (through both providers); the caller picks it up again with
//! `GET /v1/chat/completions/streams/{id}` and `Last-Event-ID`, and gets the rest: the same
//! events, the same text as an uninterrupted answer, the provider called once, the user charged
//! once, what the provider reported. Another user cannot resume it; after the window, nobody
//! can. Then the same through the client SDK, which resumes by itself.
//!
//! `RESUME_WINDOW_SECONDS` is 3 here (the window counts from the stream's last event).

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use storycad_e2e::relay::{Cut, CutRelay};
use support::resume::{
    ask, charged_down_to, events, remaining, resume, slow_prompt, streamed, text_of, token_for,
    usage_of, user,
};
use support::{Suite, SuiteConfig, ANTHROPIC_ALIAS, OPENAI_ALIAS};

const WINDOW_SECONDS: u64 = 3;

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_resume",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("RESUME_WINDOW_SECONDS".into(), WINDOW_SECONDS.to_string())],
        },
        cases![
            a_cut_stream_resumes_where_the_caller_was,
            the_client_resumes_by_itself,
            another_user_cannot_resume_it,
            a_stream_read_to_its_end_is_not_kept,
            an_expired_stream_answers_404,
            a_bad_last_event_id_is_a_400,
        ],
    )
}

async fn a_cut_stream_resumes_where_the_caller_was(s: Arc<Suite>) {
    let relay = CutRelay::start(s.runtime_addr()).await.unwrap();
    let cuts = [
        Cut::AfterBytes(0),
        // In the middle of the first event.
        Cut::Before("\"role\"".into()),
        Cut::Before("id: 4\n".into()),
        Cut::Before(" epsilon".into()),
    ];
    for alias in [OPENAI_ALIAS, ANTHROPIC_ALIAS] {
        for cut in &cuts {
            let what = format!("{alias}, cut {cut:?}");
            let prompt = slow_prompt(&s, 150);
            let control = ask(&s.url, &token_for(&s, &user(&s, "control")), &{
                streamed(alias, &prompt)
            })
            .await;
            let whole = events(&control.body);
            assert_eq!(whole.last().unwrap().1, "[DONE]", "{what}: the control");
            assert!(control.stream_id.is_some(), "{what}: no stream id");

            let sub = user(&s, "cut");
            let t = token_for(&s, &sub);
            let before = remaining(&s, &t).await;
            relay.cut_next(cut.clone());
            let first = ask(&relay.url(), &t, &streamed(alias, &prompt)).await;
            assert_eq!(first.status, 200, "{what}");
            let got = events(&first.body);
            assert!(
                got.last().is_none_or(|(_, d)| d != "[DONE]"),
                "{what}: the cut came after the end: {}",
                first.body
            );
            let id = first.stream_id.expect("a stream id");
            let last = got.last().and_then(|(n, _)| *n).unwrap_or(0);
            let again = resume(&relay.url(), &t, &id, Some(&last.to_string())).await;
            assert_eq!(again.status, 200, "{what}: {}", again.body);
            assert_eq!(again.stream_id.as_deref(), Some(id.as_str()), "{what}");
            let rest = events(&again.body);
            let all: Vec<_> = got.iter().chain(rest.iter()).cloned().collect();
            // Numbered 1, 2, 3... with nothing missing or repeated, to [DONE].
            let ids: Vec<u64> = all.iter().map(|(n, _)| n.unwrap()).collect();
            assert_eq!(ids, (1..=all.len() as u64).collect::<Vec<_>>(), "{what}");
            assert_eq!(all.last().unwrap().1, "[DONE]", "{what}");
            assert_eq!(text_of(&all), text_of(&whole), "{what}: the text");
            assert_eq!(text_of(&all), format!("echo: {prompt}"), "{what}");
            // One provider call for the cut request, one for the control.
            let calls = s.provider.requests_containing(&prompt).len();
            assert_eq!(calls, 2, "{what}: provider calls");
            // Charged once: what the provider reported.
            let cost = usage_of(&whole);
            charged_down_to(&s, &t, before - cost, &what).await;
            let line = &s.chat_lines(&sub, 1).await[0];
            assert_eq!(line["handed_off"], true, "{what}: {line}");
            // The events went over in a few calls (the first carries all those kept).
            let calls = line["handoff_calls"].as_u64().unwrap();
            assert!((1..=all.len() as u64).contains(&calls), "{what}: {line}");
            assert!(
                line["handoff_bytes"].as_u64().unwrap() > 0,
                "{what}: {line}"
            );
            assert_eq!(line["charged"], cost, "{what}: {line}");
        }
    }
    assert_eq!(relay.cuts(), 8);
}

async fn the_client_resumes_by_itself(s: Arc<Suite>) {
    let relay = CutRelay::start(s.runtime_addr()).await.unwrap();
    for alias in [OPENAI_ALIAS, ANTHROPIC_ALIAS] {
        // The second cut of a pair falls on the resume's own connection.
        let cuts = [
            vec![Cut::AfterBytes(0)],
            vec![Cut::Before("id: 5\n".into())],
            vec![Cut::Before("id: 3\n".into()), Cut::Before("id: 7\n".into())],
        ];
        for cut in cuts {
            let what = format!("{alias}, cuts {cut:?}");
            let sub = user(&s, "client");
            let t = token_for(&s, &sub);
            let before = remaining(&s, &t).await;
            let prompt = slow_prompt(&s, 120);
            let client = storycad_client::Client::builder()
                .base_url(format!("{}/v1", relay.url()))
                .token(t.clone())
                .build()
                .unwrap();
            relay.cut_next(cut[0].clone());
            let request: storycad_client::ChatRequest =
                serde_json::from_value(streamed(alias, &prompt)).unwrap();
            let mut stream = client.chat_stream(&request).await.unwrap();
            if let Some(second) = cut.get(1) {
                relay.cut_next(second.clone());
            }
            let mut text = String::new();
            let mut usage = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap_or_else(|e| panic!("{what}: {e}"));
                text.push_str(chunk.text().unwrap_or(""));
                if let Some(u) = &chunk.usage {
                    usage = u.prompt_tokens + u.completion_tokens;
                }
            }
            assert_eq!(text, format!("echo: {prompt}"), "{what}");
            assert_eq!(stream.meta().resumptions, cut.len() as u32, "{what}");
            assert_eq!(s.provider.requests_containing(&prompt).len(), 1, "{what}");
            charged_down_to(&s, &t, before - usage, &what).await;
        }
    }
}

async fn another_user_cannot_resume_it(s: Arc<Suite>) {
    let relay = CutRelay::start(s.runtime_addr()).await.unwrap();
    let owner = token_for(&s, &user(&s, "owner"));
    let other = token_for(&s, &user(&s, "other"));
    let prompt = slow_prompt(&s, 100);
    relay.cut_next(Cut::Before("id: 3\n".into()));
    let first = ask(&relay.url(), &owner, &streamed(OPENAI_ALIAS, &prompt)).await;
    let id = first.stream_id.unwrap();
    let started = Instant::now();
    let theirs = resume(&s.url, &other, &id, Some("2")).await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    assert!(theirs.body.contains("stream_expired"), "{}", theirs.body);
    assert!(!theirs.body.contains("echo"), "{}", theirs.body);
    // Refused by the id's tag, without waiting for a handoff.
    assert!(started.elapsed() < Duration::from_secs(2));
    // A well-formed id of the other user's own does not reach the owner's stream either.
    let mine = resume(&s.url, &owner, &id, Some("2")).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(events(&mine.body).last().unwrap().1, "[DONE]");
}

async fn a_stream_read_to_its_end_is_not_kept(s: Arc<Suite>) {
    let sub = user(&s, "whole");
    let t = token_for(&s, &sub);
    let prompt = format!("{} one two", s.nonce());
    let whole = ask(&s.url, &t, &streamed(OPENAI_ALIAS, &prompt)).await;
    let all = events(&whole.body);
    assert_eq!(all.last().unwrap().1, "[DONE]");
    assert!(all.iter().all(|(n, _)| n.is_some()), "{}", whole.body);
    let line = &s.chat_lines(&sub, 1).await[0];
    assert!(line.get("handed_off").is_none(), "{line}");
    assert_eq!(line["stream_id"], whole.stream_id.clone().unwrap().as_str());
    // Nothing was handed over: after waiting out a possible handoff, 404.
    let again = resume(&s.url, &t, &whole.stream_id.unwrap(), Some("1")).await;
    assert_eq!(again.status, 404, "{}", again.body);
    assert!(again.body.contains("stream_expired"), "{}", again.body);
}

async fn an_expired_stream_answers_404(s: Arc<Suite>) {
    let relay = CutRelay::start(s.runtime_addr()).await.unwrap();
    let t = token_for(&s, &user(&s, "expired"));
    let prompt = slow_prompt(&s, 50);
    relay.cut_next(Cut::Before("id: 3\n".into()));
    let first = ask(&relay.url(), &t, &streamed(ANTHROPIC_ALIAS, &prompt)).await;
    let id = first.stream_id.unwrap();
    // Resumable now (this also waits for the stream's end).
    let now = resume(&s.url, &t, &id, Some("2")).await;
    assert_eq!(now.status, 200, "{}", now.body);
    assert_eq!(events(&now.body).last().unwrap().1, "[DONE]");
    tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS) + Duration::from_millis(700)).await;
    let started = Instant::now();
    let later = resume(&s.url, &t, &id, Some("2")).await;
    assert_eq!(later.status, 404, "{}", later.body);
    assert!(later.body.contains("stream_expired"), "{}", later.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
}

async fn a_bad_last_event_id_is_a_400(s: Arc<Suite>) {
    let sub = user(&s, "bad-id");
    let t = token_for(&s, &sub);
    // Checked before the id: any id will do.
    let id = "1-2-3";
    for bad in ["x", "-1", "1.5"] {
        let got = resume(&s.url, &t, id, Some(bad)).await;
        assert_eq!(got.status, 400, "{bad}: {}", got.body);
        assert!(got.body.contains("Last-Event-ID"), "{}", got.body);
    }
    let none = s
        .send(
            s.http
                .get(s.at("/v1/chat/completions/streams/abc"))
                .bearer_auth(&t),
        )
        .await;
    none.assert_error(404, "stream_expired");
    let long = s
        .send(
            s.http
                .get(s.at(&format!(
                    "/v1/chat/completions/streams/{}",
                    "f".repeat(5000)
                )))
                .bearer_auth(&t),
        )
        .await;
    assert!(long.status == 404 || long.status == 414, "{}", long.status);
    let anonymous = s
        .send(
            s.http
                .get(s.at(&format!("/v1/chat/completions/streams/{id}"))),
        )
        .await;
    assert_eq!(anonymous.status, 401);
}
