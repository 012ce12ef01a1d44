//! The limiter's state machine for one user: a request window, a daily token budget with
//! reservations, and stream slots. Pure and clock-free (every call takes `now` in Unix
//! milliseconds), so it is tested on the host; the Durable Object holds one of these per user
//! and serializes the calls.
//!
//! # Rules
//!
//! - **Requests per minute**: a window opens at the first admitted request and lasts 60 s; it
//!   admits `requests_per_minute` requests. A refusal says when the window ends.
//! - **Tokens per day**: a UTC day's budget. Admitting reserves the request's estimate; settling
//!   replaces the reservation with the real charge. A request is admitted while the day's
//!   settled tokens plus the reservations in flight are below the budget, so one request can go
//!   past the budget by at most its own size, and a burst of concurrent requests cannot all slip
//!   through. Settled tokens at or above the budget: `budget_exhausted` until the next UTC
//!   midnight. Below it, but reservations in flight fill it: a retryable `rate_limit_exceeded`
//!   (they settle soon, usually for less than reserved).
//! - **Concurrent streams**: a stream holds a slot from admission until it is settled.
//! - **Leases**: every reservation (and so every stream slot) expires [`LEASE_MS`] after
//!   admission if it is never settled (the Worker died, or a settle was lost). Expiry frees the
//!   slot and the reservation without charging; a settle that arrives after expiry still charges
//!   its tokens.

use serde::{Deserialize, Serialize};

/// Length of a request window.
pub const MINUTE_MS: u64 = 60_000;
/// Length of a budget day (UTC days: the budget resets at midnight UTC).
pub const DAY_MS: u64 = 86_400_000;
/// How long a reservation and its stream slot live without a settle: the longest stream the
/// limiter waits for.
pub const LEASE_MS: u64 = 10 * 60_000;
/// `retry-after` when reservations in flight fill the budget, or every stream slot is taken.
pub const BUSY_RETRY_MS: u64 = 1_000;
/// Most reservations one user may hold at once (bounds the state's size whatever the plan).
pub const MAX_TICKETS: usize = 4096;

/// One plan's limits, as the limiter needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests admitted per window.
    pub requests_per_minute: u64,
    /// Tokens per UTC day.
    pub tokens_per_day: u64,
    /// Streams open at once.
    pub concurrent_streams: u64,
}

/// An admitted request's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Its id (unique per user).
    pub id: u64,
    /// Tokens reserved.
    pub tokens: u64,
    /// Whether it holds a stream slot.
    pub stream: bool,
    /// When it lapses if never settled.
    pub expires: u64,
}

/// One user's limiter state (what the Durable Object stores).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// Start of the current request window (meaningful while `window_count > 0`).
    pub window_start: u64,
    /// Requests admitted in the current window.
    pub window_count: u64,
    /// The UTC day (`now / DAY_MS`) that `used` counts.
    pub day: u64,
    /// Tokens settled that day.
    pub used: u64,
    /// The next ticket id.
    pub next_ticket: u64,
    /// Reservations in flight.
    pub tickets: Vec<Ticket>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The request window is full.
    Requests,
    /// Reservations in flight fill the rest of the day's budget.
    TokensInFlight,
    /// The day's budget is spent.
    Budget,
    /// Every stream slot is taken.
    Streams,
}

/// A refusal: which limit, its size, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The limit that refused.
    pub kind: RefusalKind,
    /// That limit's size.
    pub limit: u64,
    /// Milliseconds until retrying can succeed.
    pub retry_after_ms: u64,
}

/// One limit's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// The limit.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Milliseconds until it is full again (0: it is full).
    pub reset_ms: u64,
}

/// Every limit's state at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Requests in the window.
    pub requests: Level,
    /// Tokens of the day (settled and reserved).
    pub tokens: Level,
    /// Stream slots.
    pub streams: Level,
}

/// What `admit` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The reservation, when admitted.
    pub ticket: Option<u64>,
    /// The refusal, when not.
    pub refusal: Option<Refusal>,
    /// The limits after the decision.
    pub snapshot: Snapshot,
}

impl UserState {
    /// Drops lapsed reservations, closes an ended window and starts a new day.
    fn roll(&mut self, now: u64) {
        self.tickets.retain(|t| t.expires > now);
        if self.window_count > 0 && now >= self.window_start.saturating_add(MINUTE_MS) {
            self.window_count = 0;
        }
        let today = now / DAY_MS;
        if today != self.day {
            self.day = today;
            self.used = 0;
        }
    }

    fn reserved(&self) -> u64 {
        self.tickets
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.tokens))
    }

    fn streams(&self) -> u64 {
        self.tickets.iter().filter(|t| t.stream).count() as u64
    }

    fn window_open(&self) -> bool {
        self.window_count > 0
    }

    /// Admits a request reserving `tokens` (0 for one that costs no tokens, such as a cached
    /// answer), holding a stream slot if `stream`; or says which limit refuses it.
    pub fn admit(&mut self, now: u64, limits: &Limits, tokens: u64, stream: bool) -> Decision {
        self.roll(now);
        let refusal = self.check(now, limits, tokens, stream);
        let ticket = if refusal.is_none() {
            if !self.window_open() {
                self.window_start = now;
            }
            self.window_count += 1;
            let id = self.next_ticket;
            self.next_ticket = self.next_ticket.wrapping_add(1);
            self.tickets.push(Ticket {
                id,
                tokens,
                stream,
                expires: now.saturating_add(LEASE_MS),
            });
            Some(id)
        } else {
            None
        };
        Decision {
            ticket,
            refusal,
            snapshot: self.snapshot(now, limits),
        }
    }

    fn check(&self, now: u64, limits: &Limits, tokens: u64, stream: bool) -> Option<Refusal> {
        let refuse = |kind, limit, retry_after_ms| {
            Some(Refusal {
                kind,
                limit,
                retry_after_ms,
            })
        };
        if self.used >= limits.tokens_per_day {
            return refuse(
                RefusalKind::Budget,
                limits.tokens_per_day,
                until_midnight(now),
            );
        }
        if self.window_open() && self.window_count >= limits.requests_per_minute {
            let end = self.window_start.saturating_add(MINUTE_MS);
            return refuse(
                RefusalKind::Requests,
                limits.requests_per_minute,
                end.saturating_sub(now).max(1),
            );
        }
        if tokens > 0
            && self.used.saturating_add(self.reserved()) >= limits.tokens_per_day
            && !self.tickets.is_empty()
        {
            return refuse(
                RefusalKind::TokensInFlight,
                limits.tokens_per_day,
                BUSY_RETRY_MS,
            );
        }
        if stream && self.streams() >= limits.concurrent_streams {
            return refuse(
                RefusalKind::Streams,
                limits.concurrent_streams,
                BUSY_RETRY_MS,
            );
        }
        if self.tickets.len() >= MAX_TICKETS {
            return refuse(
                RefusalKind::Requests,
                limits.requests_per_minute,
                BUSY_RETRY_MS,
            );
        }
        None
    }

    /// Settles ticket `id` with the tokens the request really cost: its reservation (and stream
    /// slot) goes, the tokens count against today. A ticket that lapsed is charged all the
    /// same. Returns whether the ticket was still held.
    pub fn settle(&mut self, now: u64, id: u64, tokens: u64) -> bool {
        self.roll(now);
        let held = match self.tickets.iter().position(|t| t.id == id) {
            Some(i) => {
                self.tickets.swap_remove(i);
                true
            }
            None => false,
        };
        self.used = self.used.saturating_add(tokens);
        held
    }

    /// Every limit's state now (rolls the windows first).
    pub fn peek(&mut self, now: u64, limits: &Limits) -> Snapshot {
        self.roll(now);
        self.snapshot(now, limits)
    }

    fn snapshot(&self, now: u64, limits: &Limits) -> Snapshot {
        let requests = if self.window_open() {
            Level {
                limit: limits.requests_per_minute,
                remaining: limits.requests_per_minute.saturating_sub(self.window_count),
                reset_ms: self
                    .window_start
                    .saturating_add(MINUTE_MS)
                    .saturating_sub(now),
            }
        } else {
            Level {
                limit: limits.requests_per_minute,
                remaining: limits.requests_per_minute,
                reset_ms: 0,
            }
        };
        let spent = self.used.saturating_add(self.reserved());
        let tokens = Level {
            limit: limits.tokens_per_day,
            remaining: limits.tokens_per_day.saturating_sub(spent),
            reset_ms: if spent == 0 { 0 } else { until_midnight(now) },
        };
        let open = self.streams();
        let streams = Level {
            limit: limits.concurrent_streams,
            remaining: limits.concurrent_streams.saturating_sub(open),
            reset_ms: self
                .tickets
                .iter()
                .filter(|t| t.stream)
                .map(|t| t.expires.saturating_sub(now))
                .max()
                .unwrap_or(0),
        };
        Snapshot {
            requests,
            tokens,
            streams,
        }
    }
}

/// Milliseconds from `now` to the next midnight UTC.
pub fn until_midnight(now: u64) -> u64 {
    DAY_MS - now % DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        requests_per_minute: 3,
        tokens_per_day: 1000,
        concurrent_streams: 2,
    };
    /// Some Tuesday, 10:00:00 UTC.
    const T0: u64 = 1_795_000_000_000 / DAY_MS * DAY_MS + 10 * 3_600_000;

    fn admit(s: &mut UserState, now: u64, tokens: u64, stream: bool) -> Result<u64, Refusal> {
        let d = s.admit(now, &LIMITS, tokens, stream);
        match (d.ticket, d.refusal) {
            (Some(t), None) => Ok(t),
            (None, Some(r)) => Err(r),
            other => panic!("admitted and refused at once: {other:?}"),
        }
    }

    #[test]
    fn window_admits_the_limit_then_refuses_until_it_ends() {
        let mut s = UserState::default();
        for i in 0..3 {
            let t = admit(&mut s, T0 + i * 1000, 0, false).unwrap();
            assert!(s.settle(T0 + i * 1000, t, 0));
        }
        let r = admit(&mut s, T0 + 10_000, 0, false).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Requests);
        assert_eq!(r.limit, 3);
        // The window opened at T0: it frees 50 s later.
        assert_eq!(r.retry_after_ms, 50_000);
        let snap = s.peek(T0 + 10_000, &LIMITS);
        assert_eq!(snap.requests.remaining, 0);
        assert_eq!(snap.requests.reset_ms, 50_000);
        // Refusals do not count; one millisecond before the end it still refuses.
        assert!(admit(&mut s, T0 + MINUTE_MS - 1, 0, false).is_err());
        // At the end a new window opens with the next request.
        assert!(admit(&mut s, T0 + MINUTE_MS, 0, false).is_ok());
        let snap = s.peek(T0 + MINUTE_MS + 5_000, &LIMITS);
        assert_eq!(snap.requests.remaining, 2);
        assert_eq!(snap.requests.reset_ms, 55_000);
        // An idle user's window is full and resets in 0.
        let snap = s.peek(T0 + 10 * MINUTE_MS, &LIMITS);
        assert_eq!(
            snap.requests,
            Level {
                limit: 3,
                remaining: 3,
                reset_ms: 0
            }
        );
    }

    #[test]
    fn exact_under_a_burst() {
        let limits = Limits {
            requests_per_minute: 10,
            tokens_per_day: u64::MAX,
            concurrent_streams: 100,
        };
        let mut s = UserState::default();
        let admitted = (0..50)
            .filter(|i| s.admit(T0 + i, &limits, 500, false).ticket.is_some())
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn reservation_and_settlement_arithmetic() {
        let limits = Limits {
            requests_per_minute: 100,
            ..LIMITS
        };
        let mut s = UserState::default();
        let a = admit(&mut s, T0, 300, false).unwrap();
        let b = admit(&mut s, T0, 200, false).unwrap();
        let snap = s.peek(T0, &limits);
        assert_eq!(snap.tokens.remaining, 500, "both reservations count");
        assert!(snap.tokens.reset_ms > 0);
        // Under-estimate: charged what it really cost, more than reserved.
        assert!(s.settle(T0 + 1, a, 450));
        assert_eq!(s.used, 450);
        assert_eq!(s.peek(T0 + 1, &limits).tokens.remaining, 350);
        // Over-estimate: the unused part of the reservation comes back.
        assert!(s.settle(T0 + 2, b, 20));
        assert_eq!(s.used, 470);
        assert_eq!(s.peek(T0 + 2, &limits).tokens.remaining, 530);
        assert!(s.tickets.is_empty());
        // Settling twice charges twice but holds nothing.
        assert!(!s.settle(T0 + 3, b, 5));
        assert_eq!(s.used, 475);
    }

    #[test]
    fn budget_stops_after_it_is_spent_and_resets_at_midnight() {
        let limits = Limits {
            requests_per_minute: 1000,
            ..LIMITS
        };
        let mut s = UserState::default();
        // One request may go past the budget (by its own size at most)...
        let t = s.admit(T0, &limits, 900, false).ticket.unwrap();
        s.settle(T0, t, 990);
        let t = s.admit(T0 + 1, &limits, 900, false).ticket.unwrap();
        s.settle(T0 + 1, t, 300);
        assert_eq!(s.used, 1290);
        // ...then the budget is exhausted until midnight UTC.
        let d = s.admit(T0 + 2, &limits, 1, false);
        let r = d.refusal.unwrap();
        assert_eq!(r.kind, RefusalKind::Budget);
        assert_eq!(r.limit, 1000);
        assert_eq!(r.retry_after_ms, 14 * 3_600_000 - 2);
        assert_eq!(d.snapshot.tokens.remaining, 0);
        // A cached answer (0 tokens) is refused too: the budget is spent.
        assert_eq!(
            s.admit(T0 + 3, &limits, 0, false).refusal.unwrap().kind,
            RefusalKind::Budget
        );
        let midnight = (T0 / DAY_MS + 1) * DAY_MS;
        assert!(s.admit(midnight - 1, &limits, 1, false).refusal.is_some());
        assert!(s.admit(midnight, &limits, 1, false).ticket.is_some());
        assert_eq!(s.used, 0);
    }

    #[test]
    fn reservations_in_flight_hold_the_budget_back() {
        let limits = Limits {
            requests_per_minute: 1000,
            ..LIMITS
        };
        let mut s = UserState::default();
        let big = s.admit(T0, &limits, 1200, false).ticket.unwrap();
        // Nothing is spent yet, but the reservation fills the budget: retry soon.
        let r = s.admit(T0, &limits, 10, false).refusal.unwrap();
        assert_eq!(r.kind, RefusalKind::TokensInFlight);
        assert_eq!(r.retry_after_ms, BUSY_RETRY_MS);
        // A request that costs no tokens still passes.
        assert!(s.admit(T0, &limits, 0, false).ticket.is_some());
        s.settle(T0 + 5, big, 40);
        assert!(s.admit(T0 + 6, &limits, 10, false).ticket.is_some());
    }

    #[test]
    fn stream_slots_are_held_until_settled() {
        let limits = Limits {
            requests_per_minute: 1000,
            ..LIMITS
        };
        let mut s = UserState::default();
        let a = s.admit(T0, &limits, 10, true).ticket.unwrap();
        let _b = s.admit(T0, &limits, 10, true).ticket.unwrap();
        let d = s.admit(T0, &limits, 10, true);
        let r = d.refusal.unwrap();
        assert_eq!(r.kind, RefusalKind::Streams);
        assert_eq!((r.limit, r.retry_after_ms), (2, BUSY_RETRY_MS));
        assert_eq!(d.snapshot.streams.remaining, 0);
        assert_eq!(d.snapshot.streams.reset_ms, LEASE_MS);
        // Non-stream requests do not need a slot.
        assert!(s.admit(T0, &limits, 10, false).ticket.is_some());
        s.settle(T0 + 1, a, 5);
        assert!(s.admit(T0 + 1, &limits, 10, true).ticket.is_some());
    }

    #[test]
    fn leases_expire_without_charge_and_late_settles_still_charge() {
        let limits = Limits {
            requests_per_minute: 1000,
            ..LIMITS
        };
        let mut s = UserState::default();
        let a = s.admit(T0, &limits, 100, true).ticket.unwrap();
        let _b = s.admit(T0, &limits, 100, true).ticket.unwrap();
        assert!(s
            .admit(T0 + LEASE_MS - 1, &limits, 1, true)
            .refusal
            .is_some());
        let snap = s.peek(T0 + LEASE_MS, &limits);
        assert_eq!(snap.streams.remaining, 2, "both leases lapsed");
        assert_eq!(snap.tokens.remaining, 1000, "lapsing charges nothing");
        assert!(!s.settle(T0 + LEASE_MS + 1, a, 70));
        assert_eq!(s.peek(T0 + LEASE_MS + 1, &limits).tokens.remaining, 930);
    }

    #[test]
    fn state_survives_a_json_round_trip() {
        let mut s = UserState::default();
        admit(&mut s, T0, 10, true).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        let back: UserState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn ticket_count_is_bounded() {
        let limits = Limits {
            requests_per_minute: u64::MAX,
            tokens_per_day: u64::MAX,
            concurrent_streams: u64::MAX,
        };
        let mut s = UserState::default();
        for i in 0..MAX_TICKETS as u64 {
            assert!(s.admit(T0, &limits, i, false).ticket.is_some());
        }
        assert!(s.admit(T0, &limits, 1, false).refusal.is_some());
    }
}
