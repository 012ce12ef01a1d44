//! The writer's session ([`storycad_e2e::writer_session`]) through the suite's Worker, turn by
//! turn, with what each turn showed: the answer's usage, the request the provider received,
//! what the provider's cache did, and what the Worker charged.

use serde_json::Value;
use storycad_e2e::{
    fake_provider::{CacheUsage, RecordedRequest},
    tokens::{self, Alg},
    writer_session::{self, Session, TurnUsage, TURNS},
};

use super::Suite;

/// One turn as seen from every side.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The usage in the Worker's answer (JSON, or the stream's usage chunk).
    pub usage: TurnUsage,
    /// The request the fake provider received for it.
    pub upstream: RecordedRequest,
    /// What the fake provider's cache read and wrote for it.
    pub cache: CacheUsage,
    /// The `charged` field of the Worker's log line.
    pub charged: u64,
}

/// Runs the ten turns of a session on `story` (a name no other session uses: the provider's
/// requests are found by it) as user `sub` with `alias`, streamed or not.
pub async fn run(s: &Suite, sub: &str, alias: &str, story: &str, stream: bool) -> Vec<Turn> {
    let token = tokens::mint(s.keys.get(Alg::EdDSA), &s.claims(sub));
    let mut session = Session::new(alias, story);
    let mut answers = Vec::new();
    for turn in 1..=TURNS {
        let seen = s.chat(Some(&token), &session.request(stream)).await;
        assert_eq!(seen.status, 200, "{sub} turn {turn}: {}", seen.text());
        let (text, usage) = if stream {
            assert!(seen.text().ends_with("data: [DONE]\n\n"), "{}", seen.text());
            writer_session::read_stream(&seen.text())
        } else {
            writer_session::read_json(&seen.json())
        };
        let usage = usage.unwrap_or_else(|| panic!("{sub} turn {turn}: no usage: {}", seen.text()));
        assert!(text.starts_with("echo:"), "{sub} turn {turn}: {text}");
        let rid = seen
            .header("x-request-id")
            .expect("x-request-id")
            .to_owned();
        answers.push((usage, rid));
        session.answered(&text);
    }
    let upstream = s.provider.requests_containing(story);
    assert_eq!(
        upstream.len(),
        TURNS,
        "{sub}: one provider request per turn"
    );
    let mut turns = Vec::new();
    for ((usage, rid), upstream) in answers.into_iter().zip(upstream) {
        let line = s.log_line(&rid).await;
        let charged = line["charged"]
            .as_u64()
            .unwrap_or_else(|| panic!("no charged field: {line}"));
        let cache = s
            .provider
            .cache_usage(upstream.number)
            .expect("the provider answered");
        turns.push(Turn {
            usage,
            upstream,
            cache,
            charged,
        });
    }
    turns
}

/// The sum of the turns' usage.
pub fn total(turns: &[Turn]) -> TurnUsage {
    let mut t = TurnUsage::default();
    for turn in turns {
        t.add(&turn.usage);
    }
    t
}

/// Every `cache_control` object in a JSON value, wherever it is.
pub fn cache_controls(v: &Value) -> Vec<Value> {
    let mut found = Vec::new();
    fn walk(v: &Value, found: &mut Vec<Value>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "cache_control" {
                        found.push(x.clone());
                    } else {
                        walk(x, found);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, found)),
            _ => {}
        }
    }
    walk(v, &mut found);
    found
}
