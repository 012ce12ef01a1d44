//! The limiter's JSON: the calls the Worker sends its users' Durable Objects, the decisions
//! they answer, and the state they store. Written here by hand ([`crate::json_write`], as
//! serde's derived writer writes them: the tests hold the two equal, and keep the derive for
//! that alone), and read here, by field ([`crate::json_read`]).
//!
//! The types are flat structs of integers, read only from what this code wrote, on every
//! admission (a call one way, a decision the other). serde's derived readers cost the wasm
//! ~39 KB before optimisation for them; these are a few hundred bytes each. The rules are
//! serde's, so what was stored by an earlier release still reads. Integers keep all 64 bits
//! (ticket ids are exact).

use serde_json::Value;

pub use crate::json_read::from_str;

/// A call goes through JavaScript RPC (`runtime::limiter`); these two headers are the fetch
/// path's, which an isolate takes with an object of an earlier release (no RPC) and which an
/// isolate of an earlier release takes with every object.
///
/// The request header a call travels in when it fits one ([`fits_header`]), besides the body;
/// an object that finds it reads neither the body nor writes one: it answers with its decision
/// in [`DECISION_HEADER`] (when that fits too) and an empty body. No promise is then awaited for
/// a body's text on either side (each such read is a pass through the runtime's event loop). A
/// call that does not fit (a long list of settlements) goes as the body alone, and is answered
/// in a body. Across a deploy both ways work with no retry: an object of an earlier release
/// reads the body (the header means nothing to it) and answers in a body, which the caller
/// reads when the decision header is absent; an isolate of an earlier release sends the body
/// alone and gets a body back. (The body a header call also carries costs nothing measurable:
/// 0.87 against 0.86 ms of CPU a request at concurrency 16, side by side.)
pub const CALL_HEADER: &str = "x-storycad-limiter-call";
/// See [`CALL_HEADER`].
pub const DECISION_HEADER: &str = "x-storycad-limiter-decision";
/// The longest text sent in a header here: far under any runtime's limit on a request's
/// headers (Cloudflare's is 128 KB), and more than an admission with a few dozen settlements.
pub const HEADER_TEXT_MAX: usize = 4096;

/// Whether `text` can be a header's value as it is: at most [`HEADER_TEXT_MAX`] bytes, all
/// printable ASCII (a header value is bytes, and the runtime refuses a character past 0xFF;
/// serde writes other characters as they are), without space at either end (which a header
/// value loses).
pub fn fits_header(text: &str) -> bool {
    let printable = |b: &u8| (0x21..0x7f).contains(b);
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= HEADER_TEXT_MAX
                && printable(first)
                && printable(last)
                && bytes.iter().all(|b| *b == b' ' || printable(b))
        }
        _ => false,
    }
}
use crate::json_read::{invalid, Fields, FromJson};
use crate::json_write::Object;

use super::core::{IdRange, Lapsed, Ticket};
use super::{Call, Decision, Level, Limits, Refusal, RefusalKind, Settlement, Snapshot, UserState};

impl FromJson for Limits {
    fn from_json(value: &Value) -> Result<Limits, String> {
        let f = Fields::of(value, "struct Limits")?;
        Ok(Limits {
            requests_per_minute: f.required("requests_per_minute")?,
            tokens_per_day: f.required("tokens_per_day")?,
            concurrent_streams: f.required("concurrent_streams")?,
        })
    }
}

impl FromJson for Ticket {
    fn from_json(value: &Value) -> Result<Ticket, String> {
        let f = Fields::of(value, "struct Ticket")?;
        Ok(Ticket {
            id: f.required("id")?,
            tokens: f.required("tokens")?,
            stream: f.required("stream")?,
            expires: f.required("expires")?,
        })
    }
}

impl FromJson for Lapsed {
    fn from_json(value: &Value) -> Result<Lapsed, String> {
        let f = Fields::of(value, "struct Lapsed")?;
        Ok(Lapsed {
            id: f.required("id")?,
            tokens: f.required("tokens")?,
            day: f.required("day")?,
            at: f.required("at")?,
        })
    }
}

impl FromJson for IdRange {
    fn from_json(value: &Value) -> Result<IdRange, String> {
        let f = Fields::of(value, "struct IdRange")?;
        Ok(IdRange {
            start: f.required("start")?,
            end: f.required("end")?,
        })
    }
}

impl FromJson for UserState {
    fn from_json(value: &Value) -> Result<UserState, String> {
        let f = Fields::of(value, "struct UserState")?;
        Ok(UserState {
            window_start: f.required("window_start")?,
            window_count: f.required("window_count")?,
            peek_start: f.or_default("peek_start")?,
            peek_count: f.or_default("peek_count")?,
            day: f.required("day")?,
            used: f.required("used")?,
            next_ticket: f.required("next_ticket")?,
            tickets: f.required("tickets")?,
            lapsed: f.or_default("lapsed")?,
            lost: f.or_default("lost")?,
            recovered: f.or_default("recovered")?,
        })
    }
}

impl FromJson for RefusalKind {
    fn from_json(value: &Value) -> Result<RefusalKind, String> {
        let name = value
            .as_str()
            .ok_or_else(|| invalid(value, "a refusal kind"))?;
        RefusalKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("unknown variant `{name}`"))
    }
}

impl FromJson for Refusal {
    fn from_json(value: &Value) -> Result<Refusal, String> {
        let f = Fields::of(value, "struct Refusal")?;
        Ok(Refusal {
            kind: f.required("kind")?,
            limit: f.required("limit")?,
            retry_after_ms: f.required("retry_after_ms")?,
            asked: f.or_default("asked")?,
            left: f.or_default("left")?,
        })
    }
}

impl FromJson for Level {
    fn from_json(value: &Value) -> Result<Level, String> {
        let f = Fields::of(value, "struct Level")?;
        Ok(Level {
            limit: f.required("limit")?,
            remaining: f.required("remaining")?,
            reset_ms: f.required("reset_ms")?,
        })
    }
}

impl FromJson for Snapshot {
    fn from_json(value: &Value) -> Result<Snapshot, String> {
        let f = Fields::of(value, "struct Snapshot")?;
        Ok(Snapshot {
            requests: f.required("requests")?,
            tokens: f.required("tokens")?,
            streams: f.required("streams")?,
        })
    }
}

impl FromJson for Decision {
    fn from_json(value: &Value) -> Result<Decision, String> {
        let f = Fields::of(value, "struct Decision")?;
        Ok(Decision {
            ticket: f.or_default("ticket")?,
            refusal: f.or_default("refusal")?,
            snapshot: f.required("snapshot")?,
            stored: f.or_default("stored")?,
        })
    }
}

impl FromJson for Settlement {
    fn from_json(value: &Value) -> Result<Settlement, String> {
        let f = Fields::of(value, "struct Settlement")?;
        Ok(Settlement {
            ticket: f.required("ticket")?,
            tokens: f.required("tokens")?,
        })
    }
}

impl FromJson for Call {
    /// `{"op": "admit" | "settle" | "peek", "limits", ...}`: `tokens` and `stream` for an
    /// admission, `settle` (settlements) required by a settle call and optional otherwise.
    fn from_json(value: &Value) -> Result<Call, String> {
        let f = Fields::of(value, "a limiter call")?;
        let op = match f.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(other) => return Err(invalid(other, "a string (field `op`)")),
            None => return Err("missing field `op`".to_owned()),
        };
        let limits = f.required("limits")?;
        match op {
            "admit" => Ok(Call::Admit {
                limits,
                tokens: f.required("tokens")?,
                stream: f.required("stream")?,
                settle: f.or_default("settle")?,
            }),
            "settle" => Ok(Call::Settle {
                limits,
                settle: f.required("settle")?,
            }),
            "peek" => Ok(Call::Peek {
                limits,
                settle: f.or_default("settle")?,
            }),
            other => Err(format!(
                "unknown variant `{other}`, expected one of `admit`, `settle`, `peek`"
            )),
        }
    }
}

/// `call`'s text.
pub fn call_text(call: &Call) -> String {
    let mut o = Object::with_capacity(160);
    let (op, limits) = match call {
        Call::Admit { limits, .. } => ("admit", limits),
        Call::Settle { limits, .. } => ("settle", limits),
        Call::Peek { limits, .. } => ("peek", limits),
    };
    let settle = call.settlements();
    o.string("op", op);
    o.object("limits", |o| {
        o.number("requests_per_minute", limits.requests_per_minute);
        o.number("tokens_per_day", limits.tokens_per_day);
        o.number("concurrent_streams", limits.concurrent_streams);
    });
    if let Call::Admit { tokens, stream, .. } = call {
        o.number("tokens", *tokens);
        o.boolean("stream", *stream);
    }
    // A settle call's list is written even when empty; the others' only when not.
    if matches!(call, Call::Settle { .. }) || !settle.is_empty() {
        o.objects("settle", settle, |o, s| {
            o.number("ticket", s.ticket);
            o.number("tokens", s.tokens);
        });
    }
    o.end()
}

/// `decision`'s text.
pub fn decision_text(decision: &Decision) -> String {
    let mut o = Object::with_capacity(256);
    match decision.ticket {
        Some(ticket) => o.number("ticket", ticket),
        None => o.null("ticket"),
    }
    match &decision.refusal {
        Some(r) => o.object("refusal", |o| {
            o.string("kind", r.kind.name());
            o.number("limit", r.limit);
            o.number("retry_after_ms", r.retry_after_ms);
            o.number("asked", r.asked);
            o.number("left", r.left);
        }),
        None => o.null("refusal"),
    }
    let snapshot = &decision.snapshot;
    o.object("snapshot", |o| {
        for (name, level) in [
            ("requests", &snapshot.requests),
            ("tokens", &snapshot.tokens),
            ("streams", &snapshot.streams),
        ] {
            o.object(name, |o| {
                o.number("limit", level.limit);
                o.number("remaining", level.remaining);
                o.number("reset_ms", level.reset_ms);
            });
        }
    });
    o.boolean("stored", decision.stored);
    o.end()
}

/// `state`'s text (what the object stores).
pub fn state_text(state: &UserState) -> String {
    let mut o = Object::with_capacity(256 + 64 * state.tickets.len());
    o.number("window_start", state.window_start);
    o.number("window_count", state.window_count);
    o.number("peek_start", state.peek_start);
    o.number("peek_count", state.peek_count);
    o.number("day", state.day);
    o.number("used", state.used);
    o.number("next_ticket", state.next_ticket);
    o.objects("tickets", &state.tickets, |o, t| {
        o.number("id", t.id);
        o.number("tokens", t.tokens);
        o.boolean("stream", t.stream);
        o.number("expires", t.expires);
    });
    o.objects("lapsed", &state.lapsed, |o, l| {
        o.number("id", l.id);
        o.number("tokens", l.tokens);
        o.number("day", l.day);
        o.number("at", l.at);
    });
    o.objects("lost", &state.lost, |o, r| {
        o.number("start", r.start);
        o.number("end", r.end);
    });
    o.numbers("recovered", &state.recovered);
    o.end()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_admission_and_its_decision_travel_in_headers_a_long_settle_list_does_not() {
        let limits = Limits {
            requests_per_minute: u64::MAX,
            tokens_per_day: u64::MAX,
            concurrent_streams: u64::MAX,
        };
        let settle = |n: u64| -> Vec<Settlement> {
            (0..n)
                .map(|i| Settlement {
                    ticket: u64::MAX - i,
                    tokens: u64::MAX,
                })
                .collect()
        };
        let admit = |n| Call::Admit {
            limits,
            tokens: u64::MAX,
            stream: true,
            settle: settle(n),
        };
        assert!(fits_header(&call_text(&admit(0))));
        assert!(fits_header(&call_text(&admit(40))));
        assert!(!fits_header(&call_text(&admit(100))));
        let decision = Decision {
            ticket: Some(u64::MAX),
            refusal: Some(Refusal {
                kind: RefusalKind::TokensInFlight,
                limit: u64::MAX,
                retry_after_ms: u64::MAX,
                asked: u64::MAX,
                left: u64::MAX,
            }),
            snapshot: Snapshot {
                requests: level(u64::MAX),
                tokens: level(u64::MAX),
                streams: level(u64::MAX),
            },
            stored: true,
        };
        let text = decision_text(&decision);
        assert!(fits_header(&text), "{text}");
    }

    #[test]
    fn a_header_carries_printable_ascii_within_its_length_and_nothing_else() {
        let at_most = "x".repeat(HEADER_TEXT_MAX);
        assert!(fits_header(&at_most));
        assert!(!fits_header(&format!("{at_most}x")));
        assert!(fits_header(r#"{"op":"admit","a b":"~!"}"#));
        for refused in [
            "",
            " {}",
            "{} ",
            "{\t}",
            "{\n}",
            "{\r}",
            "{\u{7f}}",
            "{\0}",
            r#"{"model":"café"}"#,
            "{\"x\":\"\u{1F600}\"}",
        ] {
            assert!(!fits_header(refused), "{refused:?}");
        }
    }

    fn level(n: u64) -> Level {
        Level {
            limit: n,
            remaining: n / 2,
            reset_ms: n.saturating_mul(3),
        }
    }

    /// The texts this module writes by hand.
    trait Written {
        fn written(&self) -> String;
    }

    impl Written for Call {
        fn written(&self) -> String {
            call_text(self)
        }
    }

    impl Written for Decision {
        fn written(&self) -> String {
            decision_text(self)
        }
    }

    impl Written for UserState {
        fn written(&self) -> String {
            state_text(self)
        }
    }

    /// `value`'s text is what serde's derived writer writes, byte for byte, and reads back.
    fn round_trip<T: FromJson + Written + serde::Serialize + PartialEq + std::fmt::Debug>(
        value: &T,
    ) {
        let text = value.written();
        assert_eq!(text, serde_json::to_string(value).unwrap());
        assert_eq!(&from_str::<T>(&text).unwrap(), value, "{text}");
    }

    /// Random calls, decisions and states: written as serde writes them, read back whole.
    #[test]
    fn random_texts_are_what_serde_writes() {
        let mut pick = crate::picker(0xA076_1D64_78BD_642F);
        let numbers = [0, 1, 59_999, 1 << 53, u64::MAX - 1, u64::MAX];
        let n = move |pick: &mut dyn FnMut(usize) -> usize| numbers[pick(numbers.len())];
        for _ in 0..2_000 {
            let limits = Limits {
                requests_per_minute: n(&mut pick),
                tokens_per_day: n(&mut pick),
                concurrent_streams: n(&mut pick),
            };
            let settle: Vec<Settlement> = (0..pick(3))
                .map(|_| Settlement {
                    ticket: n(&mut pick),
                    tokens: n(&mut pick),
                })
                .collect();
            let call = match pick(3) {
                0 => Call::Admit {
                    limits,
                    tokens: n(&mut pick),
                    stream: pick(2) == 1,
                    settle,
                },
                1 => Call::Settle { limits, settle },
                _ => Call::Peek { limits, settle },
            };
            round_trip(&call);
            let level = |pick: &mut dyn FnMut(usize) -> usize| Level {
                limit: n(pick),
                remaining: n(pick),
                reset_ms: n(pick),
            };
            let decision = Decision {
                ticket: (pick(2) == 1).then(|| n(&mut pick)),
                refusal: (pick(2) == 1).then(|| Refusal {
                    kind: RefusalKind::ALL[pick(RefusalKind::ALL.len())],
                    limit: n(&mut pick),
                    retry_after_ms: n(&mut pick),
                    asked: n(&mut pick),
                    left: n(&mut pick),
                }),
                snapshot: Snapshot {
                    requests: level(&mut pick),
                    tokens: level(&mut pick),
                    streams: level(&mut pick),
                },
                stored: pick(2) == 1,
            };
            round_trip(&decision);
            let state = UserState {
                window_start: n(&mut pick),
                window_count: n(&mut pick),
                peek_start: n(&mut pick),
                peek_count: n(&mut pick),
                day: n(&mut pick),
                used: n(&mut pick),
                next_ticket: n(&mut pick),
                tickets: (0..pick(3))
                    .map(|_| Ticket {
                        id: n(&mut pick),
                        tokens: n(&mut pick),
                        stream: pick(2) == 1,
                        expires: n(&mut pick),
                    })
                    .collect(),
                lapsed: (0..pick(3))
                    .map(|_| Lapsed {
                        id: n(&mut pick),
                        tokens: n(&mut pick),
                        day: n(&mut pick),
                        at: n(&mut pick),
                    })
                    .collect(),
                lost: (0..pick(3))
                    .map(|_| IdRange {
                        start: n(&mut pick),
                        end: n(&mut pick),
                    })
                    .collect(),
                recovered: (0..pick(3)).map(|_| n(&mut pick)).collect(),
            };
            round_trip(&state);
        }
    }

    #[test]
    fn what_serde_writes_reads_back() {
        for kind in RefusalKind::ALL {
            let refusal = Refusal {
                kind,
                limit: 10,
                retry_after_ms: 1_500,
                asked: 7,
                left: 3,
            };
            round_trip(&Decision {
                ticket: None,
                refusal: Some(refusal),
                snapshot: Snapshot {
                    requests: level(10),
                    tokens: level(u64::MAX),
                    streams: level(0),
                },
                stored: true,
            });
        }
        round_trip(&Decision {
            ticket: Some(u64::MAX),
            refusal: None,
            snapshot: Snapshot::default(),
            stored: false,
        });
        // Ids past 2^53 stay exact: they are not read as floats.
        let big = (1u64 << 53) + 1;
        round_trip(&UserState {
            window_start: 1,
            window_count: 2,
            peek_start: 3,
            peek_count: 4,
            day: 5,
            used: 6,
            next_ticket: big,
            tickets: vec![Ticket {
                id: big - 2,
                tokens: 9,
                stream: true,
                expires: 10,
            }],
            lapsed: vec![Lapsed {
                id: big - 3,
                tokens: 11,
                day: 5,
                at: 12,
            }],
            lost: vec![IdRange {
                start: 100,
                end: big,
            }],
            recovered: vec![101, 102],
        });
        round_trip(&UserState::default());
        let limits = Limits {
            requests_per_minute: 1,
            tokens_per_day: 2,
            concurrent_streams: 3,
        };
        for call in [
            Call::Admit {
                limits,
                tokens: 5,
                stream: false,
                settle: vec![Settlement {
                    ticket: big,
                    tokens: 0,
                }],
            },
            Call::Admit {
                limits,
                tokens: 0,
                stream: true,
                settle: Vec::new(),
            },
            Call::Settle {
                limits,
                settle: vec![Settlement {
                    ticket: 1,
                    tokens: 2,
                }],
            },
            Call::Peek {
                limits,
                settle: Vec::new(),
            },
        ] {
            round_trip(&call);
        }
    }

    #[test]
    fn serde_rules_for_missing_null_and_unknown_fields() {
        // Defaults and Options may be missing; an Option may be null; unknown fields are
        // ignored (a later release may add some).
        let d: Decision = from_str(
            r#"{"ticket":null,"snapshot":{"requests":{"limit":1,"remaining":1,"reset_ms":0,
                "new":true},"tokens":{"limit":2,"remaining":2,"reset_ms":0},
                "streams":{"limit":3,"remaining":3,"reset_ms":0}},"later":[1,2]}"#,
        )
        .unwrap();
        assert_eq!((d.ticket, d.refusal, d.stored), (None, None, false));
        assert_eq!(d.snapshot.streams.limit, 3);
        let r: Refusal = from_str(r#"{"kind":"budget","limit":5,"retry_after_ms":9}"#).unwrap();
        assert_eq!((r.kind, r.asked, r.left), (RefusalKind::Budget, 0, 0));

        // Each case's other fields are valid: the reader stops at the first bad one.
        let snapshot = r#""snapshot":{"requests":{"limit":1,"remaining":1,"reset_ms":0},
            "tokens":{"limit":2,"remaining":2,"reset_ms":0},
            "streams":{"limit":3,"remaining":3,"reset_ms":0}}"#;
        let refused = [
            ("not json".to_owned(), "expected"),
            (
                "[]".to_owned(),
                "invalid type: an array, expected struct Decision",
            ),
            (r#"{"ticket":1}"#.to_owned(), "missing field `snapshot`"),
            (r#"{"snapshot":{}}"#.to_owned(), "missing field `requests`"),
            (
                format!(r#"{{"ticket":"1",{snapshot}}}"#),
                "invalid type: a string, expected an unsigned integer (field `ticket`)",
            ),
            (
                format!(r#"{{"ticket":1.5,{snapshot}}}"#),
                "invalid value: 1.5, expected an unsigned integer (field `ticket`)",
            ),
            (
                format!(r#"{{"ticket":-1,{snapshot}}}"#),
                "invalid value: -1, expected an unsigned integer",
            ),
            (
                format!(
                    r#"{{"refusal":{{"kind":"Budget","limit":1,"retry_after_ms":1}},{snapshot}}}"#
                ),
                "unknown variant `Budget`",
            ),
            (
                format!(r#"{{"stored":1,{snapshot}}}"#),
                "expected a boolean (field `stored`)",
            ),
            (
                format!(r#"{{"stored":null,{snapshot}}}"#),
                "invalid type: null, expected a boolean",
            ),
        ];
        for (text, why) in refused {
            let e = from_str::<Decision>(&text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        // A required list may not be missing; an optional one may.
        let state = json!({"window_start": 0, "window_count": 0, "day": 0, "used": 0,
            "next_ticket": 0});
        assert_eq!(
            UserState::from_json(&state).unwrap_err(),
            "missing field `tickets`"
        );
        let e = from_str::<UserState>(
            r#"{"window_start":0,"window_count":0,"day":0,"used":0,"next_ticket":0,
                "tickets":[{"id":1,"tokens":1,"stream":"yes","expires":1}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("(field `stream`) (field `tickets`)"), "{e}");
    }
}
