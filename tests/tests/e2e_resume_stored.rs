//! A handed-over stream outlives its Durable Object's memory: the object writes a stream that
//! ended to its storage, so a resume after the runtime evicted the object (here: the Worker
//! restarted on the same state) still gets every event; after the window the resume is
//! refused at once and the object's alarm has deleted the events; after twice the window it
//! has deleted the stream's record too. What is stored is read from the objects' SQLite files
//! while the Worker is down (`python3`'s sqlite3: the KV API's rows are in `_cf_KV`).
//!
//! `RESUME_WINDOW_SECONDS` is 15 here: long enough for a restart inside it.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use storycad_e2e::relay::{Cut, CutRelay};
use support::resume::{ask, events, resume, slow_prompt, streamed, text_of, token_for, user};
use support::{Case, Suite, SuiteConfig, ANTHROPIC_ALIAS};

const WINDOW: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_resume_stored",
            edit_glue: None,
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("RESUME_WINDOW_SECONDS".into(), WINDOW.as_secs().to_string())],
        },
        // It restarts the Worker: nothing else may run meanwhile.
        vec![Case::new(
            "a_stored_stream_outlives_the_object",
            a_stored_stream_outlives_the_object,
        )
        .serial()],
    )
}

/// The keys starting with `stream` in the users' objects' storage, as the stopped Worker left
/// them in `run_dir`.
fn stored_keys(run_dir: &Path) -> Vec<String> {
    const READ: &str = r#"
import glob, sqlite3, sys
tables = set()
for path in glob.glob(sys.argv[1] + "/state/**/*.sqlite", recursive=True):
    db = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
    names = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    tables |= names
    if "_cf_KV" in names:
        for (key,) in db.execute("select key from _cf_KV where key like 'stream%' order by key"):
            print(key)
if "_cf_KV" not in tables:
    sys.exit("no _cf_KV table among " + repr(sorted(tables)))
"#;
    support::stored_state(run_dir, READ)
}

async fn a_stored_stream_outlives_the_object(s: Arc<Suite>) {
    let relay = CutRelay::start(s.runtime_addr()).await.unwrap();
    let sub = user(&s, "stored");
    let t = token_for(&s, &sub);
    let prompt = slow_prompt(&s, 100);
    relay.cut_next(Cut::Before("id: 3\n".into()));
    let first = ask(&relay.url(), &t, &streamed(ANTHROPIC_ALIAS, &prompt)).await;
    let got = events(&first.body);
    let id = first.stream_id.expect("a stream id");
    // The request's log line is written after its last handoff call: the stream has ended in
    // the object, which stored it before answering that call.
    let line = &s.chat_lines(&sub, 1).await[0];
    assert_eq!(line["handed_off"], true, "{line}");
    let ended = Instant::now();

    let mut stored = Vec::new();
    let took = s.restart_worker(|dir| stored = stored_keys(dir)).unwrap();
    // The record and one chunk (a short answer).
    assert_eq!(
        stored,
        [format!("stream-events/{id}/0"), format!("stream/{id}")]
    );
    assert!(
        took + Duration::from_secs(2) < WINDOW,
        "the restart took {took:?}: too long for the window"
    );
    let last = got.last().and_then(|(n, _)| *n).unwrap_or(0);
    let again = resume(&s.url, &t, &id, Some(&last.to_string())).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let all: Vec<_> = got
        .iter()
        .chain(events(&again.body).iter())
        .cloned()
        .collect();
    let ids: Vec<u64> = all.iter().map(|(n, _)| n.unwrap()).collect();
    assert_eq!(ids, (1..=all.len() as u64).collect::<Vec<_>>());
    assert_eq!(all.last().unwrap().1, "[DONE]");
    assert_eq!(text_of(&all), format!("echo: {prompt}"));
    assert_eq!(s.provider.requests_containing(&prompt).len(), 1);
    // From the first event, too: everything kept came back.
    let whole = resume(&s.url, &t, &id, None).await;
    assert_eq!(events(&whole.body), all);

    // Past the window, after another restart: refused at once, from the stored record.
    tokio::time::sleep(
        (ended + WINDOW + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    )
    .await;
    s.restart_worker(|dir| stored = stored_keys(dir)).unwrap();
    // The alarm deleted the events at the window's end; the record stays for one more.
    assert_eq!(stored, [format!("stream/{id}")]);
    let asked = Instant::now();
    let late = resume(&s.url, &t, &id, Some("0")).await;
    assert_eq!(late.status, 404, "{}", late.body);
    assert!(late.body.contains("stream_expired"), "{}", late.body);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    // Past twice the window the alarm has deleted the record too, and the object has
    // forgotten the stream: the resume waits for a handoff that never comes, then is 404.
    tokio::time::sleep(
        (ended + WINDOW * 2 + Duration::from_secs(2)).saturating_duration_since(Instant::now()),
    )
    .await;
    let forgotten = resume(&s.url, &t, &id, Some("0")).await;
    assert_eq!(forgotten.status, 404, "{}", forgotten.body);
    s.restart_worker(|dir| stored = stored_keys(dir)).unwrap();
    assert_eq!(stored, Vec::<String>::new());
}
