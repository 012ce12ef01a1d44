//! The limiter's state machine for one user: a request window, a daily token budget with
//! reservations, and stream slots. Pure and clock-free (every call takes `now` in Unix
//! milliseconds), so it is tested on the host; the Durable Object holds one of these per user
//! and serializes the calls.
//!
//! # Rules
//!
//! - **Requests per minute**: a window opens at the first admitted request and lasts 60 s; it
//!   admits `requests_per_minute` requests. A refusal says when the window ends. Usage reports
//!   (`GET /v1/usage`, and the limits other answers show: [`UserState::peek_metered`]) have a
//!   window of their own: `requests_per_minute`, at least [`MIN_REPORTS_PER_MINUTE`].
//! - **Tokens per day**: a UTC day's budget. Admitting reserves the request's estimate (its
//!   prompt and every choice's capped output); settling replaces the reservation with the real
//!   charge. A request is admitted only when today's settled tokens, the reservations in flight
//!   and its own reservation fit the budget. Settled tokens at or above the budget, or a
//!   reservation larger than what is left even with nothing in flight: `budget_exhausted` until
//!   the next UTC midnight. Left for it, but reservations in flight fill it: a retryable
//!   `rate_limit_exceeded` (they settle soon, usually for less than reserved).
//! - **Concurrent streams**: a stream holds a slot from admission until it is settled.
//! - **Leases**: every reservation (and so every stream slot) lapses [`LEASE_MS`] after
//!   admission if it is never settled (the Worker died, or a settle was lost). A lapse frees
//!   the slot and charges the reservation: whatever the request did upstream, it did not cost
//!   more than that. A settlement that arrives after the lapse replaces that charge with its
//!   own.
//!
//! # Settlements are applied once
//!
//! A settlement names its ticket. It charges when the ticket is held, lapsed, or was issued by
//! an earlier run of the object whose admissions were not stored; any other settlement (a
//! repeat of one already applied, as when the Worker resends one whose answer it lost) changes
//! nothing. So the Worker may resend a settlement until it hears back.
//!
//! # Restarts
//!
//! The object stores its state when a change must survive (settlements, lapses), not on every
//! admission. A restarted object ([`UserState::restore`]) numbers its tickets from
//! `now << 10`, so an id is never issued twice, and remembers the ids an earlier run may have
//! issued since its last write as [`UserState::lost`]: their reservations are gone (the
//! requests are still running upstream), but their settlements, when they come, charge.

/// Length of a request window.
pub const MINUTE_MS: u64 = 60_000;
/// Length of a budget day (UTC days: the budget resets at midnight UTC).
pub const DAY_MS: u64 = 86_400_000;
/// How long a reservation and its stream slot live without a settle: the longest stream the
/// limiter waits for.
pub const LEASE_MS: u64 = 10 * 60_000;
/// `retry-after` when reservations in flight fill the budget, or every stream slot is taken.
pub const BUSY_RETRY_MS: u64 = 1_000;
/// The fewest usage reports a minute any plan allows.
pub const MIN_REPORTS_PER_MINUTE: u64 = 120;
/// Most reservations one user may hold at once (bounds the state's size whatever the plan).
pub const MAX_TICKETS: usize = 4096;
/// How long a lapsed ticket, a lost range and its recovered tickets are remembered for a late
/// settlement.
pub const RETENTION_MS: u64 = 3_600_000;
/// Most lapsed tickets remembered (the newest are kept).
pub const MAX_LAPSED: usize = 256;
/// Most lost ranges remembered (the newest are kept).
pub const MAX_LOST: usize = 32;
/// Most recovered tickets remembered (the newest are kept).
pub const MAX_RECOVERED: usize = 1024;
/// A run of the object numbers its tickets from its start time shifted by this much: 1,024 ids
/// per millisecond of the run's life before it could reach the next run's first id (far more
/// than any plan admits), and ids below 2^53 (exact as JSON numbers anywhere) until 2100.
pub const ID_SHIFT: u32 = 10;

/// One plan's limits, as the limiter needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Limits {
    /// Requests admitted per window.
    pub requests_per_minute: u64,
    /// Tokens per UTC day.
    pub tokens_per_day: u64,
    /// Streams open at once.
    pub concurrent_streams: u64,
}

/// An admitted request's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Ticket {
    /// Its id (unique per user, across restarts).
    pub id: u64,
    /// Tokens reserved.
    pub tokens: u64,
    /// Whether it holds a stream slot.
    pub stream: bool,
    /// When it lapses if never settled.
    pub expires: u64,
}

/// A ticket whose lease lapsed: its reservation was charged, on `day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Lapsed {
    /// The ticket.
    pub id: u64,
    /// The reservation charged.
    pub tokens: u64,
    /// The UTC day it was charged to.
    pub day: u64,
    /// When it lapsed.
    pub at: u64,
}

/// Ticket ids `start..end` that a run of the object may have issued without storing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct IdRange {
    /// The first id.
    pub start: u64,
    /// One past the last.
    pub end: u64,
}

impl IdRange {
    fn contains(&self, id: u64) -> bool {
        (self.start..self.end).contains(&id)
    }
}

/// One user's limiter state (what the Durable Object stores). Read back by
/// [`super::wire`]: a field added later is read there with a default, since the state an
/// earlier release stored lacks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct UserState {
    /// Start of the current request window (meaningful while `window_count > 0`).
    pub window_start: u64,
    /// Requests admitted in the current window.
    pub window_count: u64,
    /// Start of the current usage-report window.
    pub peek_start: u64,
    /// Usage reports in it.
    pub peek_count: u64,
    /// The UTC day (`now / DAY_MS`) that `used` counts.
    pub day: u64,
    /// Tokens settled that day.
    pub used: u64,
    /// The next ticket id.
    pub next_ticket: u64,
    /// Reservations in flight.
    pub tickets: Vec<Ticket>,
    /// Tickets that lapsed, kept [`RETENTION_MS`] for a late settlement.
    pub lapsed: Vec<Lapsed>,
    /// Ids earlier runs may have issued without storing them.
    pub lost: Vec<IdRange>,
    /// Tickets of `lost` already settled.
    pub recovered: Vec<u64>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request window is full.
    Requests,
    /// Reservations in flight fill the rest of the day's budget.
    TokensInFlight,
    /// The day's budget is spent.
    Budget,
    /// The request's reservation is more than what is left of the day's budget.
    Reservation,
    /// Every stream slot is taken.
    Streams,
    /// The usage-report window is full.
    Reports,
}

impl RefusalKind {
    /// Every kind.
    pub const ALL: [RefusalKind; 6] = [
        RefusalKind::Requests,
        RefusalKind::TokensInFlight,
        RefusalKind::Budget,
        RefusalKind::Reservation,
        RefusalKind::Streams,
        RefusalKind::Reports,
    ];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            RefusalKind::Requests => "requests",
            RefusalKind::TokensInFlight => "tokens_in_flight",
            RefusalKind::Budget => "budget",
            RefusalKind::Reservation => "reservation",
            RefusalKind::Streams => "streams",
            RefusalKind::Reports => "reports",
        }
    }
}

#[cfg(test)]
impl serde::Serialize for RefusalKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A refusal: which limit, its size, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Refusal {
    /// The limit that refused.
    pub kind: RefusalKind,
    /// That limit's size.
    pub limit: u64,
    /// Milliseconds until retrying can succeed.
    pub retry_after_ms: u64,
    /// What the request asked for (tokens, for [`RefusalKind::Reservation`]).
    pub asked: u64,
    /// What was left of it (tokens, for [`RefusalKind::Reservation`]).
    pub left: u64,
}

/// One limit's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Level {
    /// The limit.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Milliseconds until it is full again (0: it is full).
    pub reset_ms: u64,
}

/// Every limit's state at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Snapshot {
    /// Requests in the window.
    pub requests: Level,
    /// Tokens of the day (settled and reserved).
    pub tokens: Level,
    /// Stream slots.
    pub streams: Level,
}

/// What `admit` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Decision {
    /// The reservation, when admitted.
    pub ticket: Option<u64>,
    /// The refusal, when not.
    pub refusal: Option<Refusal>,
    /// The limits after the decision.
    pub snapshot: Snapshot,
    /// Whether everything the object has applied, this call's settlements included, is stored
    /// (a settlement stays with the isolate until a call carrying it says so).
    pub stored: bool,
}

/// What a settlement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The ticket was held: its reservation went, the tokens were charged.
    Held,
    /// The ticket had lapsed: its charge was replaced by the tokens.
    AfterLapse,
    /// The ticket was issued by an earlier run and not stored: the tokens were charged.
    Recovered,
    /// Nothing: the settlement was applied before (or is too old to be known).
    Repeated,
}

impl Settled {
    /// Whether the state changed (and must be stored).
    pub fn charged(self) -> bool {
        self != Settled::Repeated
    }
}

impl UserState {
    /// The state of a run of the object that starts at `now` from what was stored (`None`: no
    /// state was ever stored). Ids from the stored `next_ticket` up to this run's first are
    /// recorded as lost: an earlier run may have issued them without storing them.
    pub fn restore(stored: Option<UserState>, now: u64) -> UserState {
        let mut s = stored.unwrap_or_default();
        let first = now.saturating_mul(1 << ID_SHIFT).max(s.next_ticket);
        if first > s.next_ticket {
            s.lost.push(IdRange {
                start: s.next_ticket,
                end: first,
            });
        }
        s.next_ticket = first;
        s.prune(now);
        s
    }

    /// Drops lapsed reservations (charging them), closes ended windows, starts a new day and
    /// forgets what is past its retention. Returns how many reservations lapsed.
    fn roll(&mut self, now: u64) -> usize {
        if self.window_count > 0 && now >= self.window_start.saturating_add(MINUTE_MS) {
            self.window_count = 0;
        }
        if self.peek_count > 0 && now >= self.peek_start.saturating_add(MINUTE_MS) {
            self.peek_count = 0;
        }
        let today = now / DAY_MS;
        if today != self.day {
            self.day = today;
            self.used = 0;
        }
        let before = self.tickets.len();
        let mut lapsed = Vec::new();
        self.tickets.retain(|t| {
            let live = t.expires > now;
            if !live {
                lapsed.push(*t);
            }
            live
        });
        for t in &lapsed {
            self.used = self.used.saturating_add(t.tokens);
            self.lapsed.push(Lapsed {
                id: t.id,
                tokens: t.tokens,
                day: today,
                at: now,
            });
        }
        self.prune(now);
        before - self.tickets.len()
    }

    /// Forgets lapsed tickets and lost ranges past [`RETENTION_MS`], and the oldest beyond the
    /// caps.
    fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(RETENTION_MS);
        self.lapsed.retain(|l| l.at >= horizon);
        keep_last(&mut self.lapsed, MAX_LAPSED);
        self.lost.retain(|r| r.end >> ID_SHIFT >= horizon);
        keep_last(&mut self.lost, MAX_LOST);
        let lost = &self.lost;
        self.recovered
            .retain(|id| lost.iter().any(|r| r.contains(*id)));
        keep_last(&mut self.recovered, MAX_RECOVERED);
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
    /// answer), holding a stream slot if `stream`; or says which limit refuses it. The second
    /// value is how many reservations lapsed meanwhile (a change to store).
    pub fn admit(
        &mut self,
        now: u64,
        limits: &Limits,
        tokens: u64,
        stream: bool,
    ) -> (Decision, usize) {
        let lapsed = self.roll(now);
        let refusal = self.check(now, limits, tokens, stream);
        let ticket = if refusal.is_none() {
            if !self.window_open() {
                self.window_start = now;
            }
            self.window_count += 1;
            let id = self.next_ticket;
            self.next_ticket = self.next_ticket.saturating_add(1);
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
        let decision = Decision {
            ticket,
            refusal,
            snapshot: self.snapshot(now, limits),
            stored: false,
        };
        (decision, lapsed)
    }

    fn check(&self, now: u64, limits: &Limits, tokens: u64, stream: bool) -> Option<Refusal> {
        let refuse = |kind, limit, retry_after_ms| {
            Some(Refusal {
                kind,
                limit,
                retry_after_ms,
                asked: 0,
                left: 0,
            })
        };
        let budget = limits.tokens_per_day;
        if self.used >= budget {
            return refuse(RefusalKind::Budget, budget, until_midnight(now));
        }
        if self.window_open() && self.window_count >= limits.requests_per_minute {
            let end = self.window_start.saturating_add(MINUTE_MS);
            return refuse(
                RefusalKind::Requests,
                limits.requests_per_minute,
                end.saturating_sub(now).max(1),
            );
        }
        let left = budget - self.used;
        if tokens > left {
            return Some(Refusal {
                kind: RefusalKind::Reservation,
                limit: budget,
                retry_after_ms: until_midnight(now),
                asked: tokens,
                left,
            });
        }
        if tokens > left.saturating_sub(self.reserved()) {
            return refuse(RefusalKind::TokensInFlight, budget, BUSY_RETRY_MS);
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

    /// Settles ticket `id` with the tokens the request really cost (see the module's rules).
    /// Returns what it did; the second value is how many reservations lapsed meanwhile.
    pub fn settle(&mut self, now: u64, id: u64, tokens: u64) -> (Settled, usize) {
        let lapses = self.roll(now);
        let done = if let Some(i) = self.tickets.iter().position(|t| t.id == id) {
            self.tickets.swap_remove(i);
            self.used = self.used.saturating_add(tokens);
            Settled::Held
        } else if let Some(i) = self.lapsed.iter().position(|l| l.id == id) {
            let l = self.lapsed.remove(i);
            self.used = if l.day == self.day {
                self.used.saturating_sub(l.tokens).saturating_add(tokens)
            } else {
                // Charged to an earlier day: only what goes beyond it counts today.
                self.used.saturating_add(tokens.saturating_sub(l.tokens))
            };
            Settled::AfterLapse
        } else if self.lost.iter().any(|r| r.contains(id)) && !self.recovered.contains(&id) {
            self.used = self.used.saturating_add(tokens);
            self.recovered.push(id);
            keep_last(&mut self.recovered, MAX_RECOVERED);
            Settled::Recovered
        } else {
            Settled::Repeated
        };
        (done, lapses)
    }

    /// Every limit's state now (rolls the windows first). The second value is how many
    /// reservations lapsed meanwhile.
    pub fn peek(&mut self, now: u64, limits: &Limits) -> (Snapshot, usize) {
        let lapses = self.roll(now);
        (self.snapshot(now, limits), lapses)
    }

    /// A usage report: counted in a window of its own, `requests_per_minute` a minute (at
    /// least [`MIN_REPORTS_PER_MINUTE`]).
    pub fn peek_metered(&mut self, now: u64, limits: &Limits) -> (Decision, usize) {
        let (snapshot, lapses) = self.peek(now, limits);
        let allowed = limits.requests_per_minute.max(MIN_REPORTS_PER_MINUTE);
        let refusal = if self.peek_count > 0 && self.peek_count >= allowed {
            let end = self.peek_start.saturating_add(MINUTE_MS);
            Some(Refusal {
                kind: RefusalKind::Reports,
                limit: allowed,
                retry_after_ms: end.saturating_sub(now).max(1),
                asked: 0,
                left: 0,
            })
        } else {
            if self.peek_count == 0 {
                self.peek_start = now;
            }
            self.peek_count += 1;
            None
        };
        let decision = Decision {
            ticket: None,
            refusal,
            snapshot,
            stored: false,
        };
        (decision, lapses)
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

/// Keeps the last `max` items.
fn keep_last<T>(items: &mut Vec<T>, max: usize) {
    if items.len() > max {
        items.drain(..items.len() - max);
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
        admit_with(s, now, &LIMITS, tokens, stream)
    }

    fn admit_with(
        s: &mut UserState,
        now: u64,
        limits: &Limits,
        tokens: u64,
        stream: bool,
    ) -> Result<u64, Refusal> {
        let (d, _) = s.admit(now, limits, tokens, stream);
        match (d.ticket, d.refusal) {
            (Some(t), None) => Ok(t),
            (None, Some(r)) => Err(r),
            other => panic!("admitted and refused at once: {other:?}"),
        }
    }

    fn settle(s: &mut UserState, now: u64, id: u64, tokens: u64) -> Settled {
        s.settle(now, id, tokens).0
    }

    fn remaining(s: &mut UserState, now: u64, limits: &Limits) -> u64 {
        s.peek(now, limits).0.tokens.remaining
    }

    const MANY: Limits = Limits {
        requests_per_minute: 1000,
        ..LIMITS
    };

    #[test]
    fn window_admits_the_limit_then_refuses_until_it_ends() {
        let mut s = UserState::default();
        for i in 0..3 {
            let t = admit(&mut s, T0 + i * 1000, 0, false).unwrap();
            assert_eq!(settle(&mut s, T0 + i * 1000, t, 0), Settled::Held);
        }
        let r = admit(&mut s, T0 + 10_000, 0, false).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Requests);
        assert_eq!(r.limit, 3);
        // The window opened at T0: it frees 50 s later.
        assert_eq!(r.retry_after_ms, 50_000);
        let snap = s.peek(T0 + 10_000, &LIMITS).0;
        assert_eq!(snap.requests.remaining, 0);
        assert_eq!(snap.requests.reset_ms, 50_000);
        // Refusals do not count; one millisecond before the end it still refuses.
        assert!(admit(&mut s, T0 + MINUTE_MS - 1, 0, false).is_err());
        // At the end a new window opens with the next request.
        assert!(admit(&mut s, T0 + MINUTE_MS, 0, false).is_ok());
        let snap = s.peek(T0 + MINUTE_MS + 5_000, &LIMITS).0;
        assert_eq!(snap.requests.remaining, 2);
        assert_eq!(snap.requests.reset_ms, 55_000);
        // An idle user's window is full and resets in 0.
        let snap = s.peek(T0 + 10 * MINUTE_MS, &LIMITS).0;
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
            .filter(|i| s.admit(T0 + i, &limits, 500, false).0.ticket.is_some())
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn reservation_and_settlement_arithmetic() {
        let mut s = UserState::default();
        let a = admit_with(&mut s, T0, &MANY, 300, false).unwrap();
        let b = admit_with(&mut s, T0, &MANY, 200, false).unwrap();
        let snap = s.peek(T0, &MANY).0;
        assert_eq!(snap.tokens.remaining, 500, "both reservations count");
        assert!(snap.tokens.reset_ms > 0);
        // Under-estimate: charged what it really cost, more than reserved.
        assert_eq!(settle(&mut s, T0 + 1, a, 450), Settled::Held);
        assert_eq!(s.used, 450);
        assert_eq!(remaining(&mut s, T0 + 1, &MANY), 350);
        // Over-estimate: the unused part of the reservation comes back.
        assert_eq!(settle(&mut s, T0 + 2, b, 20), Settled::Held);
        assert_eq!(s.used, 470);
        assert_eq!(remaining(&mut s, T0 + 2, &MANY), 530);
        assert!(s.tickets.is_empty());
        // A settlement sent twice is applied once.
        assert_eq!(settle(&mut s, T0 + 3, b, 20), Settled::Repeated);
        assert_eq!(s.used, 470);
    }

    #[test]
    fn a_reservation_must_fit_what_is_left_the_first_of_the_day_included() {
        let mut s = UserState::default();
        // More than the whole budget: refused up front, nothing spent yet.
        let r = admit_with(&mut s, T0, &MANY, 1001, false).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Reservation);
        assert_eq!((r.asked, r.left, r.limit), (1001, 1000, 1000));
        assert_eq!(r.retry_after_ms, 14 * 3_600_000);
        // Exactly the budget fits.
        let t = admit_with(&mut s, T0, &MANY, 1000, false).unwrap();
        assert_eq!(settle(&mut s, T0, t, 600), Settled::Held);
        // 400 left: 401 is refused for the day, 400 passes.
        let r = admit_with(&mut s, T0 + 1, &MANY, 401, false).unwrap_err();
        assert_eq!(
            (r.kind, r.asked, r.left),
            (RefusalKind::Reservation, 401, 400)
        );
        let t = admit_with(&mut s, T0 + 1, &MANY, 400, false).unwrap();
        // Held by a reservation in flight: retry soon, it settles for less.
        let r = admit_with(&mut s, T0 + 2, &MANY, 10, false).unwrap_err();
        assert_eq!(r.kind, RefusalKind::TokensInFlight);
        assert_eq!(r.retry_after_ms, BUSY_RETRY_MS);
        // A request that costs no tokens still passes.
        assert!(admit_with(&mut s, T0 + 2, &MANY, 0, false).is_ok());
        assert_eq!(settle(&mut s, T0 + 3, t, 40), Settled::Held);
        assert!(admit_with(&mut s, T0 + 4, &MANY, 10, false).is_ok());
    }

    #[test]
    fn budget_stops_after_it_is_spent_and_resets_at_midnight() {
        let mut s = UserState::default();
        // The provider may report more than was reserved: that is charged, past the budget.
        let t = admit_with(&mut s, T0, &MANY, 900, false).unwrap();
        settle(&mut s, T0, t, 1290);
        assert_eq!(s.used, 1290);
        // ...then the budget is exhausted until midnight UTC.
        let (d, _) = s.admit(T0 + 2, &MANY, 1, false);
        let r = d.refusal.unwrap();
        assert_eq!(r.kind, RefusalKind::Budget);
        assert_eq!(r.limit, 1000);
        assert_eq!(r.retry_after_ms, 14 * 3_600_000 - 2);
        assert_eq!(d.snapshot.tokens.remaining, 0);
        // A cached answer (0 tokens) is refused too: the budget is spent.
        assert_eq!(
            s.admit(T0 + 3, &MANY, 0, false).0.refusal.unwrap().kind,
            RefusalKind::Budget
        );
        let midnight = (T0 / DAY_MS + 1) * DAY_MS;
        assert!(s.admit(midnight - 1, &MANY, 1, false).0.refusal.is_some());
        assert!(s.admit(midnight, &MANY, 1, false).0.ticket.is_some());
        assert_eq!(s.used, 0);
    }

    #[test]
    fn stream_slots_are_held_until_settled() {
        let mut s = UserState::default();
        let a = admit_with(&mut s, T0, &MANY, 10, true).unwrap();
        let _b = admit_with(&mut s, T0, &MANY, 10, true).unwrap();
        let (d, _) = s.admit(T0, &MANY, 10, true);
        let r = d.refusal.unwrap();
        assert_eq!(r.kind, RefusalKind::Streams);
        assert_eq!((r.limit, r.retry_after_ms), (2, BUSY_RETRY_MS));
        assert_eq!(d.snapshot.streams.remaining, 0);
        assert_eq!(d.snapshot.streams.reset_ms, LEASE_MS);
        // Non-stream requests do not need a slot.
        assert!(admit_with(&mut s, T0, &MANY, 10, false).is_ok());
        settle(&mut s, T0 + 1, a, 5);
        assert!(admit_with(&mut s, T0 + 1, &MANY, 10, true).is_ok());
    }

    #[test]
    fn a_lapsed_lease_frees_its_slot_and_charges_its_reservation() {
        let mut s = UserState::default();
        let a = admit_with(&mut s, T0, &MANY, 100, true).unwrap();
        let b = admit_with(&mut s, T0, &MANY, 100, true).unwrap();
        assert!(s
            .admit(T0 + LEASE_MS - 1, &MANY, 1, true)
            .0
            .refusal
            .is_some());
        let (snap, lapses) = s.peek(T0 + LEASE_MS, &MANY);
        assert_eq!(lapses, 2);
        assert_eq!(snap.streams.remaining, 2, "both leases lapsed");
        assert_eq!(
            snap.tokens.remaining, 800,
            "each lapse charges its reservation"
        );
        // A settlement after the lapse replaces the reservation's charge with its own, once.
        assert_eq!(
            settle(&mut s, T0 + LEASE_MS + 1, a, 70),
            Settled::AfterLapse
        );
        assert_eq!(remaining(&mut s, T0 + LEASE_MS + 1, &MANY), 830);
        assert_eq!(settle(&mut s, T0 + LEASE_MS + 2, a, 70), Settled::Repeated);
        assert_eq!(remaining(&mut s, T0 + LEASE_MS + 2, &MANY), 830);
        // More than reserved is charged in full.
        assert_eq!(
            settle(&mut s, T0 + LEASE_MS + 3, b, 150),
            Settled::AfterLapse
        );
        assert_eq!(remaining(&mut s, T0 + LEASE_MS + 3, &MANY), 780);
        // A lapsed ticket is forgotten after the retention.
        let c = admit_with(&mut s, T0 + LEASE_MS + 4, &MANY, 50, false).unwrap();
        s.peek(T0 + 2 * LEASE_MS + 4, &MANY);
        assert_eq!(s.lapsed.iter().map(|l| l.id).collect::<Vec<_>>(), [c]);
        let later = T0 + 2 * LEASE_MS + 4 + RETENTION_MS + 1;
        s.peek(later, &MANY);
        assert!(s.lapsed.is_empty());
        assert_eq!(settle(&mut s, later, c, 5), Settled::Repeated);
    }

    #[test]
    fn a_lapse_on_an_earlier_day_charges_only_the_excess_today() {
        let mut s = UserState::default();
        let midnight = (T0 / DAY_MS + 1) * DAY_MS;
        let t = admit_with(&mut s, midnight - LEASE_MS - 10, &MANY, 100, true).unwrap();
        s.peek(midnight - 5, &MANY);
        assert_eq!(s.used, 100);
        assert_eq!(settle(&mut s, midnight + 5, t, 130), Settled::AfterLapse);
        assert_eq!(s.used, 30);
    }

    #[test]
    fn state_survives_a_json_round_trip_and_old_states_load() {
        let mut s = UserState::restore(None, T0);
        admit(&mut s, T0, 10, true).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        let back: UserState = crate::limiter::wire::from_str(&text).unwrap();
        assert_eq!(back, s);
        // The state as the previous release stored it.
        let old = r#"{"window_start":1,"window_count":1,"day":2,"used":3,"next_ticket":4,
            "tickets":[{"id":3,"tokens":5,"stream":true,"expires":9}]}"#;
        let old: UserState = crate::limiter::wire::from_str(old).unwrap();
        assert_eq!((old.used, old.next_ticket, old.tickets.len()), (3, 4, 1));
        assert!(old.lapsed.is_empty() && old.lost.is_empty());
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
            assert!(s.admit(T0, &limits, i, false).0.ticket.is_some());
        }
        assert!(s.admit(T0, &limits, 1, false).0.refusal.is_some());
    }

    #[test]
    fn ids_are_never_reused_after_a_restart() {
        // A run admits two requests; only the first is stored (with its settlement).
        let mut run1 = UserState::restore(None, T0);
        let a = admit_with(&mut run1, T0, &MANY, 10, true).unwrap();
        let b = admit_with(&mut run1, T0 + 1, &MANY, 10, true).unwrap();
        settle(&mut run1, T0 + 2, a, 7);
        let stored = run1.clone();
        let c = admit_with(&mut run1, T0 + 3, &MANY, 10, true).unwrap();
        // The object restarts a second later, from what was stored.
        let mut run2 = UserState::restore(Some(stored), T0 + 1_000);
        let d = admit_with(&mut run2, T0 + 1_000, &MANY, 10, true).unwrap();
        assert!(d > c && d > b, "{d} after {b}, {c}");
        // b was stored as held; c was not, so it is recovered from the lost range: both charge
        // once, and neither frees d's slot.
        assert_eq!(settle(&mut run2, T0 + 1_001, b, 20), Settled::Held);
        assert_eq!(settle(&mut run2, T0 + 1_002, c, 30), Settled::Recovered);
        assert_eq!(settle(&mut run2, T0 + 1_003, c, 30), Settled::Repeated);
        assert_eq!(settle(&mut run2, T0 + 1_004, a, 7), Settled::Repeated);
        assert_eq!(run2.used, 7 + 20 + 30);
        assert_eq!(run2.tickets.iter().map(|t| t.id).collect::<Vec<_>>(), [d]);
    }

    #[test]
    fn restarts_without_a_write_in_between_keep_every_lost_id() {
        let mut run1 = UserState::restore(None, T0);
        let a = admit_with(&mut run1, T0, &MANY, 10, false).unwrap();
        // Nothing stored; two restarts, the second run admits and is lost too.
        let mut run2 = UserState::restore(None, T0 + 100);
        let b = admit_with(&mut run2, T0 + 100, &MANY, 10, false).unwrap();
        let mut run3 = UserState::restore(None, T0 + 200);
        assert_eq!(settle(&mut run3, T0 + 201, a, 4), Settled::Recovered);
        assert_eq!(settle(&mut run3, T0 + 202, b, 5), Settled::Recovered);
        assert_eq!(run3.used, 9);
        // Lost ranges and what they recovered are forgotten after the retention.
        run3.peek(T0 + 200 + RETENTION_MS + 1, &MANY);
        assert!(run3.lost.is_empty() && run3.recovered.is_empty());
    }

    #[test]
    fn usage_reports_have_a_window_of_their_own() {
        let mut s = UserState::default();
        for i in 0..MIN_REPORTS_PER_MINUTE {
            assert!(s.peek_metered(T0 + i, &LIMITS).0.refusal.is_none());
        }
        let r = s.peek_metered(T0 + 200, &LIMITS).0.refusal.unwrap();
        assert_eq!(
            (r.kind, r.limit, r.retry_after_ms),
            (RefusalKind::Reports, MIN_REPORTS_PER_MINUTE, 59_800)
        );
        // Chat requests are not held back by reports, nor reports by chat requests.
        assert!(admit(&mut s, T0 + 201, 1, false).is_ok());
        assert!(s.peek_metered(T0 + MINUTE_MS, &LIMITS).0.refusal.is_none());
        // A plan with more requests a minute allows as many reports.
        let busy = Limits {
            requests_per_minute: 500,
            ..LIMITS
        };
        let mut s = UserState::default();
        let allowed = (0..600)
            .filter(|i| s.peek_metered(T0 + i, &busy).0.refusal.is_none())
            .count();
        assert_eq!(allowed, 500);
    }

    /// Random sequences of admissions, settlements (some repeated, some lost and resent),
    /// lapses and restarts (memory lost back to the last stored state): every ticket whose
    /// settlement arrives is charged exactly once, a lapsed one at least its reservation, and
    /// no id is issued twice.
    #[test]
    fn every_settlement_charges_once_whatever_happens() {
        let mut seen = std::collections::HashMap::<String, usize>::new();
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let limits = Limits {
                requests_per_minute: u64::MAX,
                tokens_per_day: u64::MAX,
                concurrent_streams: u64::MAX,
            };
            let mut now = T0;
            let mut memory = UserState::restore(None, now);
            let mut stored: Option<UserState> = None;
            // id -> (reserved, settled with)
            let mut issued: Vec<(u64, u64, Option<u64>)> = Vec::new();
            let mut expected: u64 = 0;
            for _ in 0..60 {
                now += rng.u64(1..40_000);
                match rng.u8(0..10) {
                    0..=3 => {
                        let tokens = rng.u64(1..100);
                        let (d, lapses) = memory.admit(now, &limits, tokens, rng.bool());
                        let id = d.ticket.expect("unlimited");
                        assert!(issued.iter().all(|(i, ..)| *i != id), "id {id} reused");
                        issued.push((id, tokens, None));
                        if lapses > 0 {
                            stored = Some(memory.clone());
                        }
                    }
                    4..=7 if !issued.is_empty() => {
                        let k = rng.usize(0..issued.len());
                        let tokens = issued[k].2.unwrap_or_else(|| rng.u64(0..150));
                        let (done, lapses) = memory.settle(now, issued[k].0, tokens);
                        *seen.entry(format!("{done:?}")).or_default() += 1;
                        if done.charged() || lapses > 0 {
                            stored = Some(memory.clone());
                        }
                        issued[k].2 = Some(tokens);
                    }
                    8 => {
                        memory = UserState::restore(stored.clone(), now);
                    }
                    _ => {
                        if memory.peek(now, &limits).1 > 0 {
                            stored = Some(memory.clone());
                        }
                    }
                }
            }
            // Whatever is still held settles now, then what lapsed or got lost is resent.
            for (id, _, settled) in issued.iter_mut() {
                let tokens = settled.unwrap_or(1);
                memory.settle(now, *id, tokens);
                *settled = Some(tokens);
            }
            for (id, _, settled) in &issued {
                memory.settle(now, *id, settled.unwrap_or(1));
                expected += settled.unwrap_or(1);
            }
            assert_eq!(memory.used, expected, "seed {seed}");
            assert!(memory.tickets.is_empty(), "seed {seed}");
        }
        // The sequences reached every kind of settlement.
        for kind in ["Held", "AfterLapse", "Recovered", "Repeated"] {
            assert!(
                seen.get(kind).copied().unwrap_or(0) > 10,
                "{kind}: {seen:?}"
            );
        }
    }
}
