//! A Worker whose configuration does not parse (`PLANS` is not JSON). The isolate parses its
//! configuration as it loads the module, from the importable `env`, and keeps only a good
//! parse; so every request still parses its own `env` and is refused as misconfigured, with
//! the variable named in the log line and nothing of it in the answer, and nothing goes
//! upstream. `/healthz` answers all the same.

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc};

use storycad_e2e::tokens::Alg;
use support::{chat_body, Suite, SuiteConfig, OPENAI_ALIAS};

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_config_broken",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("PLANS".into(), "{\"free\": not json".into())],
        },
        cases![every_request_is_refused_as_misconfigured, health_answers],
    )
}

async fn every_request_is_refused_as_misconfigured(s: Arc<Suite>) {
    let token = s.token(Alg::EdDSA);
    for (what, token, stream) in [
        ("first", Some(token.as_str()), false),
        ("second", Some(token.as_str()), true),
        ("without a token", None, false),
    ] {
        let nonce = s.nonce();
        let seen = s
            .chat(token, &chat_body(OPENAI_ALIAS, &nonce, stream))
            .await;
        let error = seen.assert_error(500, "configuration_error");
        let text = seen.text();
        assert!(
            !text.contains("PLANS") && !text.contains("not json"),
            "{what}: the answer tells the configuration: {text}"
        );
        let id = seen.header("x-request-id").unwrap();
        let line = s.log_line(id).await;
        assert_eq!(line["error"], "configuration_error", "{what}: {line}");
        assert!(
            line["detail"].as_str().is_some_and(|d| d.contains("PLANS")),
            "{what}: the log line does not name the variable: {line}"
        );
        assert!(
            s.provider.requests_containing(&nonce).is_empty(),
            "{what}: a request went upstream ({error})"
        );
    }
}

async fn health_answers(s: Arc<Suite>) {
    let seen = s.send(s.http.get(s.at("/healthz"))).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
}
