//! `RESUME_WINDOW_SECONDS=0`: streams are not resumable. An answer carries no stream id and no
//! event ids (byte for byte what it was before resumable streams), a resume is a 404, and a
//! stream cut mid-answer is `StreamTruncated` for the client, as before.

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc};

use futures_util::StreamExt;
use storycad_e2e::relay::{Cut, CutRelay};
use storycad_protocol::headers::STREAM_ID;
use support::{chat_body, Suite, SuiteConfig, OPENAI_ALIAS};

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_resume_off",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("RESUME_WINDOW_SECONDS".into(), "0".into())],
        },
        cases![streams_are_not_resumable],
    )
}

async fn streams_are_not_resumable(s: Arc<Suite>) {
    let whole = s
        .ask(OPENAI_ALIAS, &format!("{} one two", s.nonce()), true)
        .await;
    assert_eq!(whole.status, 200);
    assert!(whole.header(STREAM_ID).is_none());
    assert!(!whole.text().contains("id:"), "{}", whole.text());
    assert!(whole.text().starts_with("data: "), "{}", whole.text());

    let resume = s
        .send(
            s.http
                .get(s.at("/v1/chat/completions/streams/1-2-3"))
                .bearer_auth(s.token(storycad_e2e::tokens::Alg::EdDSA)),
        )
        .await;
    resume.assert_error(404, "stream_expired");

    let relay = CutRelay::start(s.runtime_addr()).await.unwrap();
    let client = storycad_client::Client::builder()
        .base_url(format!("{}/v1", relay.url()))
        .token(s.token(storycad_e2e::tokens::Alg::EdDSA))
        .build()
        .unwrap();
    relay.cut_next(Cut::Before("\"content\":\" b".into()));
    let prompt = format!("fault:slow=100 {} a b c d", s.nonce());
    let request: storycad_client::ChatRequest =
        serde_json::from_value(chat_body(OPENAI_ALIAS, &prompt, true)).unwrap();
    let mut stream = client.chat_stream(&request).await.unwrap();
    let mut error = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the cut is an error");
    assert!(
        matches!(error, storycad_client::Error::StreamTruncated { .. }),
        "{error:?}"
    );
    assert_eq!(relay.cuts(), 1);
    assert_eq!(relay.connections(), 1, "no resume was tried");
}
