//! The KV cache with `CACHE_SCOPE=shared`: an entry one user's request stored is served to
//! another user asking the same thing (the per-user default is in e2e_cache).

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc, time::Duration};

use serde_json::json;
use storycad_e2e::tokens::{self, Alg};
use support::{Seen, Suite, SuiteConfig, OPENAI_ALIAS};

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_cache_shared",
            jwks_url: false,
            extra_vars: vec![
                ("CACHE_TTL_SECONDS".into(), "120".into()),
                ("CACHE_SCOPE".into(), "shared".into()),
            ],
        },
        cases![shared_scope_serves_every_user],
    )
}

async fn ask_as(s: &Suite, sub: &str, text: &str) -> Seen {
    let token = tokens::mint(s.keys.get(Alg::EdDSA), &s.claims(sub));
    let body = json!({
        "model": OPENAI_ALIAS,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "user": sub,
    });
    s.send(
        s.http
            .post(s.at("/v1/chat/completions"))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

async fn shared_scope_serves_every_user(s: Arc<Suite>) {
    let nonce = unique(&s);
    let text = format!("{nonce} a common question");
    let a = ask_as(&s, "user-a", &text).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-storycad-cache"), Some("MISS"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Another user (with another `user` field, which is not part of the key).
    let b = ask_as(&s, "user-b", &text).await;
    assert_eq!(b.header("x-storycad-cache"), Some("HIT"), "{}", b.text());
    assert_eq!(b.json(), a.json());
    assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
    // A different prompt is still a miss.
    let c = ask_as(&s, "user-b", &format!("{text}?")).await;
    assert_eq!(c.header("x-storycad-cache"), Some("MISS"));
}

/// A word only this case's prompt holds. The suite's nonces end in a counter (`...x1`), which
/// `requests_containing` would also find inside `...x10`: a closing letter keeps them apart.
fn unique(s: &Suite) -> String {
    format!("{}z", s.nonce())
}
