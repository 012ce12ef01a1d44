//! The settlements one isolate holds for one user until the user's Durable Object has them.
//!
//! A request's settlement waits here briefly so that the user's next call from this isolate
//! (an admission, a usage report) carries it, saving a round trip; if none comes, the request's
//! own settle task sends it. Either way it leaves this list only when a call that carried it
//! was answered: a call that fails puts what it carried back, and the settle task sends it
//! again. The object applies a settlement once whatever number of times it arrives (a call
//! whose answer was lost may have been applied), so resending is always safe.
//!
//! No I/O here: the glue (`client`) makes the calls and reports how they went.

use super::Settlement;

/// One call's claim on the settlements it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId(u64);

/// Where a settlement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// Waiting for a call to carry it.
    Waiting,
    /// Carried by a call not yet answered.
    Carried,
    /// Delivered (or never added).
    Delivered,
}

#[derive(Debug)]
struct Entry {
    settlement: Settlement,
    carried_by: Option<CallId>,
}

/// The settlements of one user not yet delivered.
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
        });
    }

    /// Every waiting settlement, now carried by the call this returns the id of.
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

    /// `call` was answered: what it carried is delivered.
    pub fn delivered(&mut self, call: CallId) {
        self.entries.retain(|e| e.carried_by != Some(call));
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
            Some(Entry {
                carried_by: None, ..
            }) => Where::Waiting,
            Some(_) => Where::Carried,
            None => Where::Delivered,
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
    use crate::limiter::{apply, Call};

    fn s(ticket: u64, tokens: u64) -> Settlement {
        Settlement { ticket, tokens }
    }

    #[test]
    fn a_settlement_leaves_only_when_a_call_carrying_it_is_answered() {
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
        // The first call fails: its settlements wait again; the second is answered.
        p.failed(a);
        p.delivered(b);
        assert_eq!(
            (p.find(1), p.find(2), p.find(3)),
            (Where::Waiting, Where::Waiting, Where::Delivered)
        );
        let (c, carried) = p.take();
        assert_eq!(carried, [s(1, 10), s(2, 20)]);
        p.delivered(c);
        assert!(p.is_empty());
        assert_eq!(p.find(1), Where::Delivered);
    }

    /// Random interleavings of requests settling, calls carrying settlements, and the Durable
    /// Object failing in every way (the call never arriving, or its answer lost after it was
    /// applied), with settle tasks resending until delivered: every request is charged exactly
    /// once.
    #[test]
    fn every_settlement_is_charged_once_whatever_the_object_does() {
        const LIMITS: Limits = Limits {
            requests_per_minute: u64::MAX,
            tokens_per_day: u64::MAX,
            concurrent_streams: u64::MAX,
        };
        let mut outcomes = [0usize; 3];
        for seed in 0..2_000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut object = UserState::default();
            let mut pending = Pending::default();
            let mut in_flight: Vec<CallId> = Vec::new();
            let mut owed = 0u64;
            let mut tickets = Vec::new();
            let now = 1_000;
            let mut call =
                |object: &mut UserState, pending: &mut Pending, rng: &mut fastrand::Rng| {
                    let (id, settle) = pending.take();
                    let outcome = rng.usize(0..3);
                    outcomes[outcome] += 1;
                    match outcome {
                        // Answered.
                        0 => {
                            apply(
                                object,
                                now,
                                &Call::Settle {
                                    limits: LIMITS,
                                    settle,
                                },
                            );
                            pending.delivered(id);
                        }
                        // Never arrived.
                        1 => pending.failed(id),
                        // Applied, but the answer was lost.
                        _ => {
                            apply(
                                object,
                                now,
                                &Call::Settle {
                                    limits: LIMITS,
                                    settle,
                                },
                            );
                            pending.failed(id);
                        }
                    }
                };
            for _ in 0..40 {
                match rng.u8(0..4) {
                    0 => {
                        let (d, _) = object.admit(now, &LIMITS, 100, false);
                        let ticket = d.ticket.expect("unlimited");
                        let tokens = rng.u64(0..100);
                        owed += tokens;
                        tickets.push(ticket);
                        pending.add(s(ticket, tokens));
                    }
                    // Another request's call carries what waits, answered later or not.
                    1 => {
                        let (id, settle) = pending.take();
                        apply(
                            &mut object,
                            now,
                            &Call::Settle {
                                limits: LIMITS,
                                settle,
                            },
                        );
                        in_flight.push(id);
                    }
                    2 if !in_flight.is_empty() => {
                        let id = in_flight.swap_remove(rng.usize(0..in_flight.len()));
                        if rng.bool() {
                            pending.delivered(id);
                        } else {
                            pending.failed(id);
                        }
                    }
                    _ => call(&mut object, &mut pending, &mut rng),
                }
            }
            // Calls still in flight end, then each settle task resends until its ticket is
            // delivered.
            for id in in_flight.drain(..) {
                pending.failed(id);
            }
            for t in &tickets {
                let mut tries = 0;
                while pending.find(*t) != Where::Delivered {
                    call(&mut object, &mut pending, &mut rng);
                    tries += 1;
                    assert!(tries < 1_000, "seed {seed}");
                }
            }
            assert!(pending.is_empty(), "seed {seed}");
            assert_eq!(object.used, owed, "seed {seed}");
        }
        assert!(outcomes.iter().all(|n| *n > 1_000), "{outcomes:?}");
    }
}
