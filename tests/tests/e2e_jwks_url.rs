//! The Worker with `JWT_JWKS_URL`: keys fetched from a JWKS endpoint on 127.0.0.1, cached,
//! refetched for an unknown `kid` at most once per 30 s; a rotated-in key picked up, with the
//! requests that arrive during the (slow) fetch waiting for it; a withdrawn key's tokens, which
//! the Worker had verified and cached, refused once the JWKS is fetched again.

// Test code: an unwrap that fails is a test that fails (clippy.toml allows it only inside
// #[test] functions, and these helpers live outside them).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use storycad_e2e::tokens::{forge, Alg};
use support::{chat_body, Suite, SuiteConfig, OPENAI_ALIAS};

/// The Worker's least time between two JWKS fetches.
const COOLDOWN: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let mut cases = cases![
        accepts_tokens_signed_by_the_fetched_keys,
        still_rejects_forgeries
    ];
    // These count fetches, so nothing else may fetch meanwhile: one at a time, in this order.
    for case in cases![
        keys_are_cached_across_requests,
        unknown_kids_cost_at_most_one_fetch,
        rotated_in_key_is_used_after_the_cooldown,
        withdrawn_key_stops_working_after_a_refresh,
    ] {
        cases.push(case.serial());
    }
    support::run(
        SuiteConfig {
            name: "e2e_jwks_url",
            edit_glue: None,
            jwks_url: true,
            extra_secrets: vec![],
            extra_vars: Vec::new(),
        },
        cases,
    )
}

fn jwks(s: &Suite) -> &storycad_e2e::jwks_server::JwksServer {
    s.jwks.as_ref().unwrap()
}

async fn status_with(s: &Suite, token: &str) -> (u16, String) {
    let seen = s
        .chat(Some(token), &chat_body(OPENAI_ALIAS, &s.nonce(), false))
        .await;
    let detail = if seen.status == 200 {
        String::new()
    } else {
        let id = seen
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id: {} {}", seen.status, seen.text()));
        s.log_line(id).await["detail"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    (seen.status, detail)
}

async fn accepts_tokens_signed_by_the_fetched_keys(s: Arc<Suite>) {
    for alg in [Alg::RS256, Alg::ES256] {
        let (status, detail) = status_with(&s, &s.token(alg)).await;
        assert_eq!(status, 200, "{alg:?}: {detail}");
    }
    assert!(jwks(&s).hits() >= 1, "the JWKS was never fetched");
}

async fn still_rejects_forgeries(s: Arc<Suite>) {
    let forged = [
        (
            forge::alg_none_with_signature("none", &s.claims("u"), b"x"),
            "alg_none",
        ),
        (forge::embedded_jwk(&s.claims("u")).unwrap(), "header_jwk"),
        (
            forge::with_header(
                &s.keys.rs256,
                &json!({"jku": format!("{}?evil", jwks(&s).url())}),
                &s.claims("u"),
            ),
            "header_jku",
        ),
    ];
    for (token, reason) in forged {
        assert_eq!(status_with(&s, &token).await, (401, reason.to_owned()));
    }
}

async fn keys_are_cached_across_requests(s: Arc<Suite>) {
    let before = jwks(&s).hits();
    for _ in 0..10 {
        let (status, detail) = status_with(&s, &s.token(Alg::ES256)).await;
        assert_eq!(status, 200, "{detail}");
    }
    let fetched = jwks(&s).hits() - before;
    // One fetch if this case runs first (nothing cached yet), none otherwise.
    assert!(fetched <= 1, "{fetched} fetches for 10 requests");
}

async fn unknown_kids_cost_at_most_one_fetch(s: Arc<Suite>) {
    let before = jwks(&s).hits();
    for i in 0..8 {
        let token = forge::with_header(
            &s.keys.rs256,
            &json!({"kid": format!("made-up-{i}")}),
            &s.claims("u"),
        );
        assert_eq!(
            status_with(&s, &token).await,
            (401, "unknown_kid".to_owned())
        );
    }
    let fetched = jwks(&s).hits() - before;
    assert!(fetched <= 1, "{fetched} fetches for 8 made-up kids");
}

async fn rotated_in_key_is_used_after_the_cooldown(s: Arc<Suite>) {
    let eddsa = s.token(Alg::EdDSA);
    assert_eq!(
        status_with(&s, &eddsa).await,
        (401, "unknown_kid".to_owned()),
        "the EdDSA key is not published yet"
    );
    jwks(&s).set(s.keys.jwks());
    // The next fetch may start once the cooldown since the last one has passed.
    wait_for_the_cooldown(&s).await;
    // The issuer is slow: the requests that arrive while the fetch is in flight wait for it
    // (none is refused for want of the new key, none starts a fetch of its own).
    jwks(&s).set_delay(Duration::from_millis(800));
    let before = jwks(&s).hits();
    let answers = futures_util::future::join_all((0..6).map(|_| status_with(&s, &eddsa))).await;
    jwks(&s).set_delay(Duration::ZERO);
    for (status, detail) in answers {
        assert_eq!(
            status, 200,
            "the rotated-in key was not picked up: {detail}"
        );
    }
    assert_eq!(jwks(&s).hits() - before, 1, "one refetch for the new kid");
    // And the old keys still work from the new set.
    assert_eq!(status_with(&s, &s.token(Alg::RS256)).await.0, 200);
}

async fn wait_for_the_cooldown(s: &Suite) {
    let last = jwks(s).last_hit().unwrap_or_else(Instant::now);
    let ready = last + COOLDOWN + Duration::from_secs(1);
    tokio::time::sleep(ready.saturating_duration_since(Instant::now())).await;
}

async fn withdrawn_key_stops_working_after_a_refresh(s: Arc<Suite>) {
    // Tokens of the ES256 key, verified (and cached by the Worker), and of the RS256 key.
    let es256 = s.token(Alg::ES256);
    let rs256 = s.token(Alg::RS256);
    for token in [&es256, &rs256] {
        assert_eq!(status_with(&s, token).await.0, 200);
    }
    // The issuer withdraws the ES256 key.
    jwks(&s).set(storycad_e2e::tokens::jwks(&[&s.keys.rs256, &s.keys.eddsa]));
    // The next fetch (here: for a kid the Worker has not seen, once the cooldown allows one)
    // drops the withdrawn key's tokens from the cache, and nobody else's.
    wait_for_the_cooldown(&s).await;
    let before = jwks(&s).hits();
    let unknown = forge::with_header(
        &s.keys.rs256,
        &json!({"kid": "rotated-later"}),
        &s.claims("u"),
    );
    assert_eq!(
        status_with(&s, &unknown).await,
        (401, "unknown_kid".to_owned())
    );
    assert_eq!(jwks(&s).hits() - before, 1, "the refresh");
    assert_eq!(
        status_with(&s, &es256).await,
        (401, "unknown_kid".to_owned()),
        "a withdrawn key's cached token still works"
    );
    assert_eq!(status_with(&s, &rs256).await.0, 200);
}
