//! The KV cache with `CACHE_SCOPE=shared`: an entry one user's request stored is served to
//! another user asking the same thing (the per-user default is in e2e_cache). The entry is
//! stored with `CACHE_TTL_SECONDS` as its expiry, read from KV's SQLite file while the Worker
//! is down (`python3`'s sqlite3), and it outlives a restart.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::json;
use storycad_e2e::tokens::{self, Alg};
use support::{Case, Seen, Suite, SuiteConfig, OPENAI_ALIAS};

const TTL_SECONDS: u64 = 120;

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_cache_shared",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![
                ("CACHE_TTL_SECONDS".into(), TTL_SECONDS.to_string()),
                ("CACHE_SCOPE".into(), "shared".into()),
            ],
        },
        // It restarts the Worker: nothing else may run meanwhile.
        vec![Case::new(
            "shared_scope_serves_every_user",
            shared_scope_serves_every_user,
        )
        .serial()],
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

    // Both entries expire CACHE_TTL_SECONDS after they were written, and outlive a restart.
    let stored_by = now_ms();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut entries = Vec::new();
    s.restart_worker(|dir| entries = cache_entries(dir))
        .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (key, expires) in &entries {
        let ttl = expires.saturating_sub(stored_by) as f64 / 1000.0;
        assert!(
            (TTL_SECONDS as f64 - 10.0..=TTL_SECONDS as f64 + 1.0).contains(&ttl),
            "{key} expires {ttl} s after it was stored"
        );
    }
    let d = ask_as(&s, "user-c", &text).await;
    assert_eq!(d.header("x-storycad-cache"), Some("HIT"), "{}", d.text());
    assert_eq!(d.json(), a.json());
    // The provider saw the two misses (a and c) only.
    assert_eq!(s.provider.requests_containing(&nonce).len(), 2);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The cache's entries in KV as the stopped Worker left them in `run_dir`: each key and when
/// it expires (ms since the epoch).
fn cache_entries(run_dir: &Path) -> Vec<(String, u64)> {
    const READ: &str = r#"
import glob, sqlite3, sys
tables = set()
for path in glob.glob(sys.argv[1] + "/state/**/*.sqlite", recursive=True):
    db = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
    names = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    tables |= names
    if "_mf_entries" in names:
        for key, expires in db.execute("select key, expiration from _mf_entries order by key"):
            print(key, expires)
if "_mf_entries" not in tables:
    sys.exit("no _mf_entries table among " + repr(sorted(tables)))
"#;
    support::stored_state(run_dir, READ)
        .iter()
        .map(|line| {
            let (key, expires) = line.rsplit_once(' ').unwrap();
            (key.to_owned(), expires.parse().unwrap_or(0))
        })
        .collect()
}

/// A word only this case's prompt holds. The suite's nonces end in a counter (`...x1`), which
/// `requests_containing` would also find inside `...x10`: a closing letter keeps them apart.
fn unique(s: &Suite) -> String {
    format!("{}z", s.nonce())
}
