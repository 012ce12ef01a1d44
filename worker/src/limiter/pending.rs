//! The settlements one isolate holds for one user until the user's Durable Object has stored
//! them.
//!
//! A request's settlement waits here briefly so that the user's next call from this isolate
//! (an admission, a usage report) carries it, saving a round trip; if none comes, the request's
//! own settle task sends it. It leaves this list only when a call that carried it is answered
//! with the object's state stored ([`super::Decision::stored`]): a call that fails, or that the
//! object answered without storing yet, leaves it here to be carried again. The object applies
//! a settlement once however many times it arrives, so sending it again is always safe, and a
//! restarted object that lost it in memory gets it again.
//!
//! No I/O here: the glue (`client`) makes the calls and reports how they went.

use std::time::Duration;

use super::Settlement;

/// How long a settlement the object applied may wait for the object's next write before its
/// settle task asks for one (the object writes at least once a second while calls come).
pub const STORE_WAIT: Duration = Duration::from_millis(1_200);
/// How often a settle task looks again while a call carries its settlement (answered soon).
pub const CARRIED_PAUSE: Duration = Duration::from_millis(20);

/// What a settle task does next, its settlement found where it is at `now` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stored: nothing left to do.
    Done,
    /// Look again after this long.
    Wait(Duration),
    /// Send it in a `Settle` call of its own.
    Send,
}

impl Where {
    /// The settle task's next step. An applied settlement waits on one timer, to the time it
    /// should have been stored by ([`STORE_WAIT`]): calls that carry it meanwhile make no
    /// difference to that, and a timer per look cost the isolate ~8 wakes per request.
    pub fn step(self, now: u64) -> Step {
        let store_by = |at: u64| at.saturating_add(STORE_WAIT.as_millis() as u64);
        match self {
            Where::Delivered => Step::Done,
            Where::Carried => Step::Wait(CARRIED_PAUSE),
            Where::Applied(at) if now < store_by(at) => {
                Step::Wait(Duration::from_millis(store_by(at) - now))
            }
            Where::Waiting | Where::Applied(_) => Step::Send,
        }
    }
}

/// One call's claim on the settlements it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId(u64);

/// Where a settlement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// Waiting for a call to carry it; not applied yet.
    Waiting,
    /// Applied by the object at this time (ms) but not yet stored; waiting to be carried again.
    Applied(u64),
    /// Carried by a call not yet answered.
    Carried,
    /// Stored by the object (or never added).
    Delivered,
}

#[derive(Debug)]
struct Entry {
    settlement: Settlement,
    carried_by: Option<CallId>,
    applied_at: Option<u64>,
}

/// The settlements of one user not yet stored by the object.
#[derive(Debug, Default)]
pub struct Pending {
    entries: Vec<Entry>,
    calls: u64,
}

impl Pending {
    /// Adds a request's settlement.
    pub fn add(&mut self, settlement: Settlement) {
        self.entries.push(Entry {
            settlement,
            carried_by: None,
            applied_at: None,
        });
    }

    /// Every settlement not carried by a call in flight, now carried by the call this returns
    /// the id of.
    pub fn take(&mut self) -> (CallId, Vec<Settlement>) {
        self.calls += 1;
        let call = CallId(self.calls);
        let mut out = Vec::new();
        for e in self.entries.iter_mut().filter(|e| e.carried_by.is_none()) {
            e.carried_by = Some(call);
            out.push(e.settlement);
        }
        (call, out)
    }

    /// `call` was answered at `now`: what it carried is delivered if the object says its state
    /// is stored, else applied and waiting to be carried again.
    pub fn answered(&mut self, call: CallId, stored: bool, now: u64) {
        if stored {
            self.entries.retain(|e| e.carried_by != Some(call));
            return;
        }
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.carried_by == Some(call))
        {
            e.carried_by = None;
            e.applied_at.get_or_insert(now);
        }
    }

    /// `call` failed: what it carried waits again.
    pub fn failed(&mut self, call: CallId) {
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.carried_by == Some(call))
        {
            e.carried_by = None;
        }
    }

    /// Where the settlement of `ticket` is.
    pub fn find(&self, ticket: u64) -> Where {
        match self.entries.iter().find(|e| e.settlement.ticket == ticket) {
            None => Where::Delivered,
            Some(Entry {
                carried_by: Some(_),
                ..
            }) => Where::Carried,
            Some(Entry {
                applied_at: Some(at),
                ..
            }) => Where::Applied(*at),
            Some(_) => Where::Waiting,
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::core::{Limits, UserState};
    use crate::limiter::{Call, Ledger, WRITE_INTERVAL_MS};

    fn s(ticket: u64, tokens: u64) -> Settlement {
        Settlement { ticket, tokens }
    }

    #[test]
    fn a_settle_task_waits_once_for_the_store_and_sends_when_it_is_late() {
        let ms = Duration::from_millis;
        assert_eq!(Where::Delivered.step(5), Step::Done);
        assert_eq!(Where::Waiting.step(5), Step::Send);
        assert_eq!(Where::Carried.step(5), Step::Wait(CARRIED_PAUSE));
        // Applied at 1,000: one wait, to 2,200; at or after it, sent.
        assert_eq!(Where::Applied(1_000).step(1_100), Step::Wait(ms(1_100)));
        assert_eq!(Where::Applied(1_000).step(2_199), Step::Wait(ms(1)));
        assert_eq!(Where::Applied(1_000).step(2_200), Step::Send);
        assert_eq!(Where::Applied(u64::MAX).step(0), Step::Wait(ms(u64::MAX)));

        // Carried again after it was applied (not stored by that call): the first application
        // still sets the time, so a settlement never waits past it for a store.
        let mut p = Pending::default();
        p.add(s(7, 1));
        let (first, _) = p.take();
        p.answered(first, false, 1_000);
        let (second, carried) = p.take();
        assert_eq!(carried, vec![s(7, 1)]);
        assert_eq!(p.find(7).step(1_500), Step::Wait(CARRIED_PAUSE));
        p.answered(second, false, 1_900);
        assert_eq!(p.find(7).step(2_000), Step::Wait(ms(200)));
        assert_eq!(p.find(7).step(2_200), Step::Send);
        let (third, _) = p.take();
        p.answered(third, true, 2_300);
        assert_eq!(p.find(7).step(2_300), Step::Done);
    }

    #[test]
    fn a_settlement_leaves_only_when_a_call_carrying_it_is_answered_stored() {
        let mut p = Pending::default();
        p.add(s(1, 10));
        p.add(s(2, 20));
        let (a, carried) = p.take();
        assert_eq!(carried, [s(1, 10), s(2, 20)]);
        assert_eq!(p.find(1), Where::Carried);
        // A call meanwhile carries only what arrived since.
        p.add(s(3, 30));
        let (b, carried) = p.take();
        assert_eq!(carried, [s(3, 30)]);
        // The first call fails: its settlements wait again; the second is answered, stored.
        p.failed(a);
        p.answered(b, true, 100);
        assert_eq!(
            (p.find(1), p.find(2), p.find(3)),
            (Where::Waiting, Where::Waiting, Where::Delivered)
        );
        // Answered but not stored yet: applied, and carried again by the next call.
        let (c, carried) = p.take();
        assert_eq!(carried, [s(1, 10), s(2, 20)]);
        p.answered(c, false, 200);
        assert_eq!(p.find(1), Where::Applied(200));
        let (d, carried) = p.take();
        assert_eq!(carried, [s(1, 10), s(2, 20)]);
        p.answered(d, false, 300);
        assert_eq!(p.find(2), Where::Applied(200), "applied first at 200");
        let (e, _) = p.take();
        p.answered(e, true, 400);
        assert!(p.is_empty());
        assert_eq!(p.find(1), Where::Delivered);
    }

    /// Random interleavings of requests settling, calls carrying settlements, the Durable
    /// Object answering stored or not, failing in every way (the call never arriving, its answer
    /// lost after it was applied) and restarting (its memory back to what it stored), with
    /// settle tasks sending until delivered: every request is charged exactly once.
    #[test]
    fn every_settlement_is_charged_once_whatever_the_object_does() {
        const LIMITS: Limits = Limits {
            requests_per_minute: u64::MAX,
            tokens_per_day: u64::MAX,
            concurrent_streams: u64::MAX,
        };
        struct Object {
            ledger: Ledger,
            stored: Option<UserState>,
        }
        impl Object {
            fn call(&mut self, now: u64, call: &Call) -> super::super::Decision {
                let (decision, text) = self.ledger.call(now, call);
                if let Some(text) = text {
                    self.stored = Some(crate::limiter::wire::from_str(&text).unwrap());
                    self.ledger.stored(now);
                }
                decision
            }
            fn restart(&mut self, now: u64) {
                self.ledger = Ledger::restore(self.stored.clone(), now);
            }
        }
        let mut outcomes = [0usize; 4];
        for seed in 0..2_000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut now = 1_000_000u64;
            let mut object = Object {
                ledger: Ledger::restore(None, now),
                stored: None,
            };
            let mut pending = Pending::default();
            let mut in_flight: Vec<(CallId, Vec<Settlement>)> = Vec::new();
            let mut owed = 0u64;
            let mut tickets = Vec::new();
            for _ in 0..40 {
                now += rng.u64(1..400);
                match rng.u8(0..6) {
                    0 | 1 => {
                        let admit = Call::Admit {
                            limits: LIMITS,
                            tokens: 100,
                            stream: false,
                            settle: Vec::new(),
                        };
                        let ticket = object.call(now, &admit).ticket.expect("unlimited");
                        let tokens = rng.u64(0..100);
                        owed += tokens;
                        tickets.push(ticket);
                        pending.add(s(ticket, tokens));
                    }
                    // A call leaves with what waits; it is answered later, or fails.
                    2 => in_flight.push(pending.take()),
                    3 if !in_flight.is_empty() => {
                        let (id, settle) = in_flight.swap_remove(rng.usize(0..in_flight.len()));
                        let outcome = rng.usize(0..4);
                        outcomes[outcome] += 1;
                        let call = Call::Peek {
                            limits: LIMITS,
                            settle,
                        };
                        match outcome {
                            // Answered.
                            0 | 1 => {
                                let d = object.call(now, &call);
                                pending.answered(id, d.stored, now);
                            }
                            // Never arrived.
                            2 => pending.failed(id),
                            // Applied, but the answer was lost.
                            _ => {
                                object.call(now, &call);
                                pending.failed(id);
                            }
                        }
                    }
                    4 => object.restart(now),
                    _ => {}
                }
            }
            // Calls still in flight fail; then each settle task sends a Settle call (which
            // stores) until its ticket is delivered, the object failing now and then.
            for (id, _) in in_flight.drain(..) {
                pending.failed(id);
            }
            for t in &tickets {
                let mut tries = 0;
                while pending.find(*t) != Where::Delivered {
                    now += WRITE_INTERVAL_MS;
                    let (id, settle) = pending.take();
                    let call = Call::Settle {
                        limits: LIMITS,
                        settle,
                    };
                    if rng.u8(0..4) == 0 {
                        pending.failed(id);
                        object.restart(now);
                    } else {
                        let d = object.call(now, &call);
                        assert!(d.stored, "a Settle call stores");
                        pending.answered(id, d.stored, now);
                    }
                    tries += 1;
                    assert!(tries < 1_000, "seed {seed}");
                }
            }
            assert!(pending.is_empty(), "seed {seed}");
            // What the object stored, which is what a restart would come back to.
            object.restart(now);
            assert_eq!(object.ledger.state().used, owed, "seed {seed}");
        }
        assert!(outcomes.iter().all(|n| *n > 1_000), "{outcomes:?}");
    }
}
