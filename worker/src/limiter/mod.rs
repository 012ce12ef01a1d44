//! Per-user limits: requests per minute, tokens per UTC day, concurrent streams.
//!
//! - [`core`]: the state machine of one user (host-tested).
//! - This module: the messages between the Worker and the `UserLimiter` Durable Object, and how
//!   a decision becomes an answer (429 bodies, `retry-after`, `x-ratelimit-*`, `/v1/usage`).
//! - [`pending`]: the settlements an isolate holds until the object has stored them.
//! - The runtime's side (wasm only, in `runtime`): the `UserLimiter` Durable Object, one per
//!   `sub`, bound as `LIMITER` (`runtime/durable.rs`), and its client, what the request
//!   pipeline calls (`runtime/limiter.rs`).

pub mod core;
pub mod pending;
pub mod wire;

use std::time::Duration;

use storycad_protocol::ratelimit::RateLimitInfo;
use storycad_protocol::{codes, headers, ErrorBody, LimitStatus, UsageReport};

pub use self::core::{Decision, Level, Limits, Refusal, RefusalKind, Settled, Snapshot, UserState};
use crate::config::Config;
use crate::plans::Plan;

/// A request's real cost, settled against the ticket its admission got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Settlement {
    /// The ticket `Admit` gave.
    pub ticket: u64,
    /// The tokens the request really cost.
    pub tokens: u64,
}

/// A call from the Worker to a user's Durable Object (the JSON body of its `fetch`).
///
/// Every call carries the settlements the isolate holds for that user (`settle`), applied
/// before the call's own operation: a settled request waits in the isolate (briefly, see
/// `client`) for the user's next call instead of making a round trip of its own.
///
/// On the wire `{"op": "admit", ...}`; read by [`wire`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[cfg_attr(test, serde(tag = "op", rename_all = "snake_case"))]
pub enum Call {
    /// Admit a request reserving `tokens`, with a stream slot if `stream`.
    Admit {
        /// The caller's plan's limits (sent each time: a changed plan applies at once).
        limits: Limits,
        /// Tokens to reserve.
        tokens: u64,
        /// Whether it holds a stream slot.
        stream: bool,
        /// Requests settled since the last call.
        #[cfg_attr(test, serde(skip_serializing_if = "Vec::is_empty"))]
        settle: Vec<Settlement>,
    },
    /// Settle requests that no other call took along.
    Settle {
        /// The caller's plan's limits.
        limits: Limits,
        /// The requests settled.
        settle: Vec<Settlement>,
    },
    /// Every limit's state now.
    Peek {
        /// The caller's plan's limits.
        limits: Limits,
        /// Requests settled since the last call.
        #[cfg_attr(test, serde(skip_serializing_if = "Vec::is_empty"))]
        settle: Vec<Settlement>,
    },
}

impl Call {
    /// The settlements the call carries.
    pub fn settlements(&self) -> &[Settlement] {
        match self {
            Call::Admit { settle, .. }
            | Call::Settle { settle, .. }
            | Call::Peek { settle, .. } => settle,
        }
    }
}

/// Runs one call against a user's state. The call's settlements are applied first, so its
/// decision sees them. The second value says whether the state changed in a way a restart must
/// not lose: a settlement charged or a lease lapsed (an admission alone is not stored: see
/// [`core`]'s restarts).
pub fn apply(state: &mut UserState, now: u64, call: &Call) -> (Decision, bool) {
    let mut changed = false;
    for s in call.settlements() {
        let (done, lapses) = state.settle(now, s.ticket, s.tokens);
        changed |= done.charged() || lapses > 0;
    }
    let (decision, lapses) = match call {
        Call::Admit {
            limits,
            tokens,
            stream,
            ..
        } => state.admit(now, limits, *tokens, *stream),
        Call::Peek { limits, .. } => state.peek_metered(now, limits),
        Call::Settle { limits, .. } => {
            let (snapshot, lapses) = state.peek(now, limits);
            let decision = Decision {
                ticket: None,
                refusal: None,
                snapshot,
                stored: false,
            };
            (decision, lapses)
        }
    };
    (decision, changed || lapses > 0)
}

/// The longest an object holds charges only in memory while admissions keep coming.
pub const WRITE_INTERVAL_MS: u64 = 1_000;

/// The whole of the `UserLimiter` Durable Object's logic: the user's state, and whether some of
/// it is not yet stored.
///
/// A `Settle` call (an isolate making a settlement durable: no other call came to carry it)
/// stores what changed before answering. An `Admit` or `Peek` stores at most once every
/// [`WRITE_INTERVAL_MS`]: a write on an admission's path cost about 2.6 ms of its 4 under
/// workerd. Each answer says whether everything applied so far is stored
/// ([`Decision::stored`]); the isolate keeps every settlement (and sends it again: it is applied
/// once) until a call carrying it is answered `stored`. So a restart never loses a settlement,
/// and under steady traffic the writes stay off most requests' path.
#[derive(Debug, Clone)]
pub struct Ledger {
    state: UserState,
    dirty: bool,
    last_write: u64,
}

impl Ledger {
    /// The ledger of an object starting at `now` from what was stored.
    pub fn restore(stored: Option<UserState>, now: u64) -> Ledger {
        Ledger {
            state: UserState::restore(stored, now),
            dirty: false,
            last_write: now,
        }
    }

    /// Runs `call`. With `Some(text)`, the state must be stored as `text` before the answer
    /// goes (then [`Ledger::stored`]); the decision already says `stored: true` for that case.
    pub fn call(&mut self, now: u64, call: &Call) -> (Decision, Option<String>) {
        let (mut decision, changed) = apply(&mut self.state, now, call);
        self.dirty |= changed;
        let due = matches!(call, Call::Settle { .. })
            || now.saturating_sub(self.last_write) >= WRITE_INTERVAL_MS;
        let text = (self.dirty && due).then(|| wire::state_text(&self.state));
        decision.stored = !self.dirty || text.is_some();
        (decision, text)
    }

    /// The state given by [`Ledger::call`] was stored.
    pub fn stored(&mut self, now: u64) {
        self.dirty = false;
        self.last_write = now;
    }

    /// The state.
    pub fn state(&self) -> &UserState {
        &self.state
    }
}

/// The `x-ratelimit-*` headers of a snapshot: requests of the window, tokens of the day.
pub fn rate_limit_info(s: &Snapshot) -> RateLimitInfo {
    let mut info = RateLimitInfo::default();
    info.limit_requests = Some(s.requests.limit);
    info.limit_tokens = Some(s.tokens.limit);
    info.remaining_requests = Some(s.requests.remaining);
    info.remaining_tokens = Some(s.tokens.remaining);
    info.reset_requests = Some(Duration::from_millis(s.requests.reset_ms));
    info.reset_tokens = Some(Duration::from_millis(s.tokens.reset_ms));
    info
}

impl Refusal {
    /// Always 429.
    pub fn status(&self) -> u16 {
        429
    }

    /// `rate_limit_exceeded`, `budget_exhausted` or `concurrent_streams_exceeded`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            RefusalKind::Requests | RefusalKind::TokensInFlight | RefusalKind::Reports => {
                codes::RATE_LIMIT_EXCEEDED
            }
            RefusalKind::Budget | RefusalKind::Reservation => codes::BUDGET_EXHAUSTED,
            RefusalKind::Streams => codes::TOO_MANY_STREAMS,
        }
    }

    /// The error body, naming the limit.
    pub fn body(&self) -> ErrorBody {
        let secs = retry_secs(self.retry_after_ms);
        let message = match self.kind {
            RefusalKind::Requests => format!(
                "Rate limit reached: {} requests per minute. Retry in {secs} s.",
                self.limit
            ),
            RefusalKind::TokensInFlight => format!(
                "Requests in progress hold the rest of today's token budget ({} tokens). \
                 Retry in {secs} s.",
                self.limit
            ),
            RefusalKind::Budget => format!(
                "Today's token budget ({} tokens) is spent. It resets at midnight UTC, in {secs} s.",
                self.limit
            ),
            RefusalKind::Reservation => format!(
                "This request reserves {} tokens (its prompt estimate plus the output cap of \
                 every choice); {} of today's budget ({} tokens) are left. Ask for fewer output \
                 tokens or choices, or retry after midnight UTC, in {secs} s.",
                self.asked, self.left, self.limit
            ),
            RefusalKind::Streams => format!(
                "Too many streams open at once (the limit is {}). Retry when one ends.",
                self.limit
            ),
            RefusalKind::Reports => format!(
                "Usage report limit reached: {} a minute. Retry in {secs} s.",
                self.limit
            ),
        };
        ErrorBody::new(codes::RATE_LIMIT, self.code(), message)
    }

    /// `retry-after` (whole seconds, rounded up), `retry-after-ms`, and `x-should-retry: false`
    /// for a spent budget (retrying before it resets is useless).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (
                headers::RETRY_AFTER,
                retry_secs(self.retry_after_ms).to_string(),
            ),
            (headers::RETRY_AFTER_MS, self.retry_after_ms.to_string()),
        ];
        if matches!(self.kind, RefusalKind::Budget | RefusalKind::Reservation) {
            h.push((headers::SHOULD_RETRY, "false".to_owned()));
        }
        h
    }
}

fn retry_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

fn status(level: &Level) -> LimitStatus {
    LimitStatus::new(level.limit, level.remaining, level.reset_ms as f64 / 1000.0)
}

/// The `GET /v1/usage` body. `snapshot` is `None` when limits are off (`LIMITS_ENABLED=false`):
/// every limit then shows as full.
pub fn usage_report(plan: &Plan, config: &Config, snapshot: Option<&Snapshot>) -> UsageReport {
    let limits = plan.limits();
    let full = |limit| Level {
        limit,
        remaining: limit,
        reset_ms: 0,
    };
    let snap = snapshot.copied().unwrap_or(Snapshot {
        requests: full(limits.requests_per_minute),
        tokens: full(limits.tokens_per_day),
        streams: full(limits.concurrent_streams),
    });
    let mut report = UsageReport::new(
        plan.name.clone(),
        status(&snap.requests),
        status(&snap.tokens),
        status(&snap.streams),
    );
    report.models = plan
        .allowed_aliases(config)
        .into_iter()
        .map(str::to_owned)
        .collect();
    report.max_output_tokens = plan.max_output_tokens;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_config;

    const LIMITS: Limits = Limits {
        requests_per_minute: 2,
        tokens_per_day: 100,
        concurrent_streams: 1,
    };

    #[test]
    fn calls_keep_their_wire_shape_and_refuse_what_is_not_a_call() {
        let limits = serde_json::to_value(LIMITS).unwrap();
        let admit = Call::Admit {
            limits: LIMITS,
            tokens: 60,
            stream: true,
            settle: Vec::new(),
        };
        assert_eq!(
            serde_json::to_value(&admit).unwrap(),
            serde_json::json!({"op": "admit", "limits": limits, "tokens": 60, "stream": true})
        );
        let read = |v: serde_json::Value| wire::from_str::<Call>(&v.to_string());
        let settle = read(serde_json::json!({"op": "settle", "limits": limits,
            "settle": [{"ticket": 3, "tokens": 9}], "tokens": 1}));
        assert_eq!(
            settle,
            Ok(Call::Settle {
                limits: LIMITS,
                settle: vec![Settlement {
                    ticket: 3,
                    tokens: 9
                }],
            })
        );
        let refused = [
            (
                serde_json::json!({"op": "admit", "limits": limits, "stream": true}),
                "missing field `tokens`",
            ),
            (
                serde_json::json!({"op": "admit", "limits": limits, "tokens": 1}),
                "missing field `stream`",
            ),
            (
                serde_json::json!({"op": "settle", "limits": limits}),
                "missing field `settle`",
            ),
            (serde_json::json!({"op": "peek"}), "missing field `limits`"),
            (
                serde_json::json!({"op": "grant", "limits": limits}),
                "unknown variant `grant`",
            ),
            (serde_json::json!({"limits": limits}), "missing field `op`"),
            (
                serde_json::json!({"op": "admit", "limits": limits, "tokens": -1, "stream": true}),
                "invalid value",
            ),
        ];
        for (call, why) in refused {
            let e = read(call.clone()).unwrap_err();
            assert!(e.contains(why), "{call}: {e}");
        }
    }

    #[test]
    fn calls_round_trip_as_json_and_apply() {
        let mut state = UserState::default();
        let admit = Call::Admit {
            limits: LIMITS,
            tokens: 60,
            stream: true,
            settle: Vec::new(),
        };
        let (first, _) = apply(&mut state, 1_000, &admit);
        let ticket = first.ticket.unwrap();
        let calls = [
            Call::Settle {
                limits: LIMITS,
                settle: vec![Settlement { ticket, tokens: 25 }],
            },
            Call::Peek {
                limits: LIMITS,
                settle: Vec::new(),
            },
        ];
        let mut out = vec![first];
        for call in &calls {
            let text = serde_json::to_string(call).unwrap();
            let back: Call = wire::from_str(&text).unwrap();
            assert_eq!(&back, call);
            let (d, _) = apply(&mut state, 1_000, &back);
            let d: Decision = wire::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
            out.push(d);
        }
        assert_eq!(out[0].snapshot.tokens.remaining, 40);
        assert_eq!(out[0].snapshot.streams.remaining, 0);
        assert_eq!(out[1].snapshot.tokens.remaining, 75);
        assert_eq!(out[1].snapshot.streams.remaining, 1);
        assert_eq!(out[2].snapshot, out[1].snapshot);
        assert_eq!(out[2].snapshot.requests.remaining, 1);
    }

    #[test]
    fn settlements_carried_by_an_admit_apply_before_its_decision() {
        let mut state = UserState::default();
        let admit = |settle: Vec<Settlement>| Call::Admit {
            limits: LIMITS,
            tokens: 60,
            stream: true,
            settle,
        };
        let (first, _) = apply(&mut state, 1_000, &admit(Vec::new()));
        let ticket = first.ticket.unwrap();
        // Without the first's settlement the only stream slot is taken.
        let mut without = state.clone();
        assert!(apply(&mut without, 1_100, &admit(Vec::new()))
            .0
            .refusal
            .is_some());
        // Carrying it: the slot is free again and the real cost (10), not the 60 reserved, counts.
        let (second, _) = apply(
            &mut state,
            1_100,
            &admit(vec![Settlement { ticket, tokens: 10 }]),
        );
        assert!(second.refusal.is_none(), "{second:?}");
        assert_eq!(second.snapshot.tokens.remaining, 100 - 10 - 60);
        // An admit without settlements leaves the wire format as it was.
        let text = serde_json::to_string(&admit(Vec::new())).unwrap();
        assert!(!text.contains("settle"), "{text}");
    }

    #[test]
    fn the_state_is_stored_when_a_charge_or_a_lapse_must_survive() {
        let mut state = UserState::default();
        let admit = |settle: Vec<Settlement>| Call::Admit {
            limits: LIMITS,
            tokens: 10,
            stream: false,
            settle,
        };
        // An admission alone: not stored.
        let (d, store) = apply(&mut state, 1_000, &admit(Vec::new()));
        assert!(!store);
        let ticket = d.ticket.unwrap();
        let peek = Call::Peek {
            limits: LIMITS,
            settle: Vec::new(),
        };
        assert!(!apply(&mut state, 1_001, &peek).1);
        // Its settlement, whichever call carries it: stored.
        let settle = vec![Settlement { ticket, tokens: 5 }];
        assert!(apply(&mut state.clone(), 1_002, &admit(settle.clone())).1);
        let flush = Call::Settle {
            limits: LIMITS,
            settle: settle.clone(),
        };
        assert!(apply(&mut state, 1_002, &flush).1);
        // The same settlement again changes nothing: not stored.
        assert!(!apply(&mut state, 1_003, &flush).1);
        // A lease that lapses is a charge: stored by whatever call sees it.
        apply(&mut state, 2_000, &admit(Vec::new()));
        assert!(apply(&mut state, 2_000 + core::LEASE_MS, &peek).1);
    }

    #[test]
    fn the_ledger_stores_at_once_for_a_settle_call_and_once_a_second_for_admissions() {
        let t0 = 1_000_000;
        let mut ledger = Ledger::restore(None, t0);
        let admit = |settle: Vec<Settlement>| Call::Admit {
            limits: LIMITS,
            tokens: 1,
            stream: false,
            settle,
        };
        // Nothing changed: nothing to store, and everything applied is stored.
        let (d, text) = ledger.call(t0 + 10, &admit(Vec::new()));
        assert!(text.is_none() && d.stored);
        let first = d.ticket.unwrap();
        let (d, _) = ledger.call(t0 + 20, &admit(Vec::new()));
        let second = d.ticket.unwrap();
        // A settlement carried by an admission within the second: applied, not stored yet.
        let (d, text) = ledger.call(
            t0 + 30,
            &admit(vec![Settlement {
                ticket: first,
                tokens: 5,
            }]),
        );
        assert!(text.is_none() && !d.stored);
        // Carried again, it changes nothing, and is still not stored.
        let (d, text) = ledger.call(
            t0 + 40,
            &admit(vec![Settlement {
                ticket: first,
                tokens: 5,
            }]),
        );
        assert!(text.is_none() && !d.stored);
        // A second after the last write, an admission stores everything.
        let (d, text) = ledger.call(t0 + WRITE_INTERVAL_MS, &admit(Vec::new()));
        let stored: UserState = wire::from_str(&text.unwrap()).unwrap();
        assert!(d.stored);
        assert_eq!(stored.used, 5);
        ledger.stored(t0 + WRITE_INTERVAL_MS);
        // A Settle call stores at once.
        let settle = Call::Settle {
            limits: LIMITS,
            settle: vec![Settlement {
                ticket: second,
                tokens: 7,
            }],
        };
        let (d, text) = ledger.call(t0 + WRITE_INTERVAL_MS + 1, &settle);
        assert!(text.is_some() && d.stored);
    }

    #[test]
    fn refusals_become_429s_naming_the_limit() {
        let cases = [
            (RefusalKind::Requests, "rate_limit_exceeded", 1_500, "2"),
            (
                RefusalKind::TokensInFlight,
                "rate_limit_exceeded",
                1_000,
                "1",
            ),
            (RefusalKind::Budget, "budget_exhausted", 3_600_000, "3600"),
            (
                RefusalKind::Reservation,
                "budget_exhausted",
                3_600_000,
                "3600",
            ),
            (RefusalKind::Streams, "concurrent_streams_exceeded", 1, "1"),
            (RefusalKind::Reports, "rate_limit_exceeded", 30_000, "30"),
        ];
        for (kind, code, ms, secs) in cases {
            let r = Refusal {
                kind,
                limit: 7,
                retry_after_ms: ms,
                asked: 9,
                left: 3,
            };
            assert_eq!((r.status(), r.code()), (429, code));
            let body = r.body();
            assert_eq!(body.error.code.as_deref(), Some(code));
            assert_eq!(body.error.kind.as_deref(), Some("rate_limit_error"));
            assert!(body.error.message.contains('7'), "{}", body.error.message);
            let h = r.headers();
            assert!(h.contains(&("retry-after", secs.to_owned())), "{h:?}");
            assert!(h.contains(&("retry-after-ms", ms.to_string())));
            let spent = matches!(kind, RefusalKind::Budget | RefusalKind::Reservation);
            assert_eq!(h.contains(&("x-should-retry", "false".to_owned())), spent);
            assert_eq!(codes::is_retryable_429(Some(r.code())), !spent);
        }
        let r = Refusal {
            kind: RefusalKind::Reservation,
            limit: 1000,
            retry_after_ms: 1,
            asked: 1234,
            left: 567,
        };
        let message = r.body().error.message;
        assert!(
            message.contains("1234") && message.contains("567"),
            "{message}"
        );
    }

    #[test]
    fn headers_from_a_snapshot() {
        let mut s = UserState::default();
        let (d, _) = s.admit(5_000, &LIMITS, 30, false);
        let info = rate_limit_info(&d.snapshot);
        let h = info.to_headers();
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-ratelimit-limit-requests"), Some("2"));
        assert_eq!(get("x-ratelimit-remaining-requests"), Some("1"));
        assert_eq!(get("x-ratelimit-reset-requests"), Some("1m0s"));
        assert_eq!(get("x-ratelimit-limit-tokens"), Some("100"));
        assert_eq!(get("x-ratelimit-remaining-tokens"), Some("70"));
        assert!(get("x-ratelimit-reset-tokens").is_some());
    }

    #[test]
    fn usage_report_shape() {
        let config = test_config(&[
            ("ROUTES", r#"{"a":["openai:x"],"b":["openai:y"]}"#),
            (
                "PLANS",
                r#"{"free":{"models":["b"],"requests_per_minute":2,"tokens_per_day":100,
                    "max_output_tokens":50,"concurrent_streams":1}}"#,
            ),
        ]);
        let plan = config.plans.for_claim(None).unwrap();
        let mut s = UserState::default();
        s.admit(0, &LIMITS, 30, true);
        let (snap, _) = s.peek(10_000, &LIMITS);
        let r = usage_report(plan, &config, Some(&snap));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["object"], "usage");
        assert_eq!(v["plan"], "free");
        assert_eq!(v["models"], serde_json::json!(["b"]));
        assert_eq!(v["max_output_tokens"], 50);
        assert_eq!(v["requests"]["remaining"], 1);
        assert_eq!(v["requests"]["reset_seconds"], 50.0);
        assert_eq!(v["tokens"]["remaining"], 70);
        assert_eq!(v["streams"]["remaining"], 0);
        let off = usage_report(plan, &config, None);
        assert_eq!(off.tokens.remaining, 100);
        assert_eq!(off.requests.reset_seconds, 0.0);
    }
}
