//! The lifecycle of one admitted chat request: which route to try, when to move on, what the
//! caller is told and what the user is charged. Plain Rust, no I/O and no clock: the wasm glue
//! reports what happened and does what [`Chat`] decides; every decision is tested here.
//!
//! The charging rules (the README's table):
//!
//! | what happened | charged |
//! |---|---|
//! | the provider refused without doing work: an error status (429, 5xx, any 4xx), no connection, a reset before headers, a route whose key is missing | nothing; 429, 5xx, no connection and a missing key move on to the next route |
//! | the provider answered completely | the usage it reported, or the estimate where it reported none |
//! | the provider accepted the work (2xx headers, or the request went out and no answer came in time) and then it failed, or the caller hung up | the reservation, unless the provider had already reported its final usage; never moved to the next route, and the error says `x-should-retry: false` |
//! | the caller hung up before a request went out | nothing |
//!
//! [`Chat::charge`] is always what settling now would charge, so the glue can hand it to the
//! admission at every step: whenever the glue stops (the caller went away, the runtime
//! cancelled it), the admission settles with the right amount. From the moment a request may
//! be on its way to a provider until its fate is known, that is the reservation.

use storycad_protocol::{codes, Usage};

use crate::error::{AppError, UpstreamError};
use crate::log::Attempt;
use crate::log::RequestLog;
use crate::providers::prompt_cache::{weighted_tokens, CacheWeights};
use crate::providers::Outcome;

/// The tokens a finished answer costs: the provider's counts when it reported them (prompt
/// plus completion, the prompt's cache reads and writes at their `weights`), else
/// `prompt_estimate` plus `produced_estimate` (a quarter of a complete answer's bytes, or the
/// chunks of a stream).
pub fn usage_charge(
    usage: Option<&Usage>,
    weights: CacheWeights,
    prompt_estimate: u64,
    produced_estimate: u64,
) -> u64 {
    match usage {
        Some(u) => weighted_tokens(u, weights),
        None => prompt_estimate.saturating_add(produced_estimate),
    }
}

/// How one attempt ended before any answer body: what the glue saw.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    /// Nothing was sent: the route is unusable (its key is missing) or the request cannot be
    /// made for it (a 400 from translation).
    NotSent(AppError),
    /// The connection failed, or was reset before any headers.
    NoConnection,
    /// The request went out and no headers came in time.
    NoAnswer,
    /// The provider answered with an error status (`error` classifies it).
    Refused {
        /// The provider's status.
        status: u16,
        /// What it means for the caller.
        error: UpstreamError,
    },
    /// The provider answered 2xx: it has the work.
    Accepted {
        /// The provider's status.
        status: u16,
    },
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Try the route at this index of the chain.
    Try(usize),
    /// Read the answer (2xx).
    Read,
    /// Answer the caller with this error.
    Fail(AppError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Admitted; no route tried yet, or the last one failed without work.
    Idle,
    /// A request to the route at this index may be on its way.
    Sending(usize),
    /// The provider accepted the work; its answer is being read or relayed.
    Answering,
    /// Over: the charge is final.
    Ended,
}

/// One admitted chat request.
#[derive(Debug, Clone)]
pub struct Chat {
    routes: Vec<String>,
    next: usize,
    prompt_estimate: u64,
    reservation: u64,
    stage: Stage,
    charge: u64,
    /// Per route, what its provider's cached input costs ([`Chat::with_cache_weights`]).
    weights: Vec<CacheWeights>,
    /// The route tried last.
    current: usize,
}

impl Chat {
    /// A request admitted with `reservation` tokens (its prompt estimate plus every choice's
    /// capped output), to be tried on `routes` (`provider:model` labels) in order.
    pub fn new(routes: Vec<String>, prompt_estimate: u64, reservation: u64) -> Chat {
        Chat {
            routes,
            next: 0,
            prompt_estimate,
            reservation,
            stage: Stage::Idle,
            charge: 0,
            weights: Vec::new(),
            current: 0,
        }
    }

    /// Each route's cache weights, in the order of the routes (a route without one is charged
    /// cached input like fresh input).
    pub fn with_cache_weights(mut self, weights: Vec<CacheWeights>) -> Chat {
        self.weights = weights;
        self
    }

    fn weights(&self) -> CacheWeights {
        self.weights
            .get(self.current)
            .copied()
            .unwrap_or(CacheWeights::FLAT)
    }

    /// What settling now charges.
    pub fn charge(&self) -> u64 {
        self.charge
    }

    /// The reservation.
    pub fn reservation(&self) -> u64 {
        self.reservation
    }

    /// Whether the charge is final (the request is over).
    pub fn is_over(&self) -> bool {
        self.stage == Stage::Ended
    }

    /// Whether the provider has the work (a 2xx is being read or relayed).
    pub fn is_answering(&self) -> bool {
        self.stage == Stage::Answering
    }

    /// The first route to try: `None` if the chain is empty (refused by configuration).
    pub fn start(&mut self, log: &mut RequestLog) -> Option<usize> {
        self.begin(0, log)
    }

    fn begin(&mut self, i: usize, log: &mut RequestLog) -> Option<usize> {
        let label = self.routes.get(i)?;
        log.route = Some(label.clone());
        self.next = i + 1;
        self.current = i;
        // From here the request may reach the provider before the glue hears back.
        self.stage = Stage::Sending(i);
        self.charge = self.reservation;
        Some(i)
    }

    /// The attempt in flight ended as `end`: try the next route, read the answer, or fail.
    pub fn attempt_ended(&mut self, end: AttemptEnd, log: &mut RequestLog) -> Next {
        let Stage::Sending(i) = self.stage else {
            // Nothing in flight (the caller left meanwhile): nothing more to do.
            return Next::Fail(AppError::Internal);
        };
        let label = self.routes.get(i).cloned().unwrap_or_default();
        let (error, status, moves_on) = match end {
            AttemptEnd::Accepted { status } => {
                log.upstream_status = Some(status);
                log.attempts.push(Attempt::answered(label, status));
                self.stage = Stage::Answering;
                return Next::Read;
            }
            AttemptEnd::NoAnswer => {
                let error = AppError::AfterWork(UpstreamError::Timeout);
                log.attempts.push(Attempt::failed(label, None, &error));
                return self.fail_after_work(error);
            }
            AttemptEnd::NotSent(error) => {
                let moves_on = matches!(error, AppError::MissingSecret { .. });
                (error, None, moves_on)
            }
            AttemptEnd::NoConnection => (UpstreamError::Network.into(), None, true),
            AttemptEnd::Refused { status, error } => {
                let moves_on = status == 429 || status >= 500;
                (AppError::Upstream(error), Some(status), moves_on)
            }
        };
        // The provider did no work: nothing is charged for this attempt.
        log.upstream_status = status.or(log.upstream_status);
        log.attempts.push(Attempt::failed(label, status, &error));
        self.charge = 0;
        self.stage = Stage::Idle;
        if moves_on {
            if let Some(next) = self.begin(self.next, log) {
                return Next::Try(next);
            }
        }
        self.stage = Stage::Ended;
        Next::Fail(error)
    }

    /// The complete answer was read: charged the provider's usage (or the estimate).
    pub fn answered(
        &mut self,
        usage: Option<&Usage>,
        produced_estimate: u64,
        log: &mut RequestLog,
    ) {
        if self.stage != Stage::Answering {
            return;
        }
        log.set_usage(usage);
        self.end(usage_charge(
            usage,
            self.weights(),
            self.prompt_estimate,
            produced_estimate,
        ));
    }

    /// Reading the accepted answer failed (cut, oversized, not JSON, too slow): the caller's
    /// error, charged the reservation.
    pub fn answer_failed(&mut self, error: UpstreamError) -> AppError {
        match self.fail_after_work(AppError::AfterWork(error)) {
            Next::Fail(e) => e,
            _ => AppError::Internal,
        }
    }

    fn fail_after_work(&mut self, error: AppError) -> Next {
        self.end(self.reservation);
        Next::Fail(error)
    }

    /// A relayed stream ended as `outcome`; `usage` is what the provider reported, `last` says
    /// whether that count is final, `produced_estimate` the chunks relayed. A complete stream is
    /// charged its usage (or the estimate); one that failed, its final usage if the provider
    /// sent it, else the reservation.
    pub fn stream_ended(
        &mut self,
        outcome: &Outcome,
        usage: Option<&Usage>,
        last: bool,
        produced_estimate: u64,
        log: &mut RequestLog,
    ) {
        if self.stage != Stage::Answering {
            return;
        }
        log.set_usage(usage);
        match outcome {
            Outcome::Done | Outcome::Open => {
                self.end(usage_charge(
                    usage,
                    self.weights(),
                    self.prompt_estimate,
                    produced_estimate,
                ));
            }
            Outcome::Truncated => {
                log.error = Some(codes::STREAM_TRUNCATED.to_owned());
                self.end_failed(usage.filter(|_| last));
            }
            Outcome::Failed(code) => {
                log.error = Some(code.clone());
                self.end_failed(usage.filter(|_| last));
            }
        }
    }

    /// The caller went away. Before anything went out: nothing is charged. While a request may
    /// be with a provider, or its answer is being relayed: the reservation (the glue stops the
    /// upstream). Over already: nothing changes.
    pub fn caller_gone(&mut self, log: &mut RequestLog) {
        match self.stage {
            Stage::Ended => return,
            Stage::Idle => self.end(0),
            Stage::Sending(_) | Stage::Answering => self.end(self.reservation),
        }
        log.error.get_or_insert_with(|| CLIENT_CLOSED.to_owned());
    }

    fn end_failed(&mut self, final_usage: Option<&Usage>) {
        let charge = match final_usage {
            Some(u) => usage_charge(Some(u), self.weights(), 0, 0),
            None => self.reservation,
        };
        self.end(charge);
    }

    fn end(&mut self, charge: u64) {
        self.charge = charge;
        self.stage = Stage::Ended;
    }
}

/// The log's `error` for a request whose caller went away before its answer ended.
pub const CLIENT_CLOSED: &str = "client_closed";

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: u64 = 40;
    const RESERVED: u64 = 40 + 2 * 100;

    fn chat(routes: usize) -> (Chat, RequestLog) {
        let labels = (0..routes).map(|i| format!("p{i}:m")).collect();
        (
            Chat::new(labels, PROMPT, RESERVED),
            RequestLog::new("id", "POST", "/v1/chat/completions"),
        )
    }

    fn refused(status: u16) -> AttemptEnd {
        AttemptEnd::Refused {
            status,
            error: UpstreamError::from_response(status, |_| None, b"{}", &[]),
        }
    }

    #[test]
    fn a_complete_answer_is_charged_its_usage() {
        let (mut c, mut log) = chat(1);
        assert_eq!(c.charge(), 0, "admitted, nothing sent");
        assert_eq!(c.start(&mut log), Some(0));
        assert_eq!(c.charge(), RESERVED, "on its way: the reservation");
        assert_eq!(
            c.attempt_ended(AttemptEnd::Accepted { status: 200 }, &mut log),
            Next::Read
        );
        assert_eq!(c.charge(), RESERVED);
        c.answered(Some(&Usage::new(12, 30)), 999, &mut log);
        assert_eq!(c.charge(), 42);
        assert!(c.is_over());
        assert_eq!(log.route.as_deref(), Some("p0:m"));
        assert_eq!(log.upstream_status, Some(200));
        assert_eq!(log.prompt_tokens, Some(12));
        // Without usage: the estimate.
        let (mut c, mut log) = chat(1);
        c.start(&mut log);
        c.attempt_ended(AttemptEnd::Accepted { status: 200 }, &mut log);
        c.answered(None, 25, &mut log);
        assert_eq!(c.charge(), PROMPT + 25);
    }

    #[test]
    fn cached_input_is_charged_at_the_weights_of_the_route_that_answered() {
        let weights = vec![
            CacheWeights {
                read: 0.5,
                write: 1.0,
            },
            CacheWeights {
                read: 0.1,
                write: 1.25,
            },
        ];
        let mut usage = Usage::new(1000, 10);
        usage.prompt_tokens_details =
            Some(serde_json::json!({"cached_tokens": 800, "cache_write_tokens": 100}));
        for (first_refuses, expected) in
            [(false, 100 + 400 + 100 + 10), (true, 100 + 80 + 125 + 10)]
        {
            let (c, mut log) = chat(2);
            let mut c = c.with_cache_weights(weights.clone());
            c.start(&mut log);
            if first_refuses {
                assert_eq!(c.attempt_ended(refused(503), &mut log), Next::Try(1));
            }
            c.attempt_ended(AttemptEnd::Accepted { status: 200 }, &mut log);
            c.answered(Some(&usage), 0, &mut log);
            assert_eq!(c.charge(), expected, "first refuses: {first_refuses}");
        }
        // A stream cut after its final usage: that usage, weighted.
        let (c, mut log) = chat(1);
        let mut c = c.with_cache_weights(weights[1..].to_vec());
        c.start(&mut log);
        c.attempt_ended(AttemptEnd::Accepted { status: 200 }, &mut log);
        c.stream_ended(&Outcome::Truncated, Some(&usage), true, 0, &mut log);
        assert_eq!(c.charge(), 100 + 80 + 125 + 10);
    }

    #[test]
    fn refusals_without_work_move_on_and_charge_nothing() {
        for end in [
            refused(429),
            refused(500),
            refused(503),
            refused(529),
            AttemptEnd::NoConnection,
            AttemptEnd::NotSent(AppError::MissingSecret { name: "K".into() }),
        ] {
            let (mut c, mut log) = chat(2);
            c.start(&mut log);
            assert_eq!(
                c.attempt_ended(end.clone(), &mut log),
                Next::Try(1),
                "{end:?}"
            );
            assert_eq!(c.charge(), RESERVED, "the next route is on its way");
            assert_eq!(log.route.as_deref(), Some("p1:m"));
            // The last route fails the same way: the caller gets that error, charged nothing.
            match c.attempt_ended(end.clone(), &mut log) {
                Next::Fail(e) => assert!(!matches!(e, AppError::AfterWork(_)), "{e:?}"),
                other => panic!("{end:?}: {other:?}"),
            }
            assert_eq!(c.charge(), 0, "{end:?}");
            assert!(c.is_over());
            assert_eq!(log.attempts.len(), 2);
        }
    }

    #[test]
    fn caller_errors_do_not_move_on() {
        for end in [
            refused(400),
            refused(401),
            refused(404),
            AttemptEnd::NotSent(AppError::InvalidRequest {
                param: Some("n".into()),
                message: "no".into(),
            }),
        ] {
            let (mut c, mut log) = chat(2);
            c.start(&mut log);
            assert!(
                matches!(c.attempt_ended(end.clone(), &mut log), Next::Fail(_)),
                "{end:?}"
            );
            assert_eq!(c.charge(), 0);
            assert_eq!(log.attempts.len(), 1);
        }
    }

    #[test]
    fn work_accepted_then_failed_is_charged_the_reservation_and_never_rerun() {
        // No headers in time: the provider may be working on it.
        let (mut c, mut log) = chat(2);
        c.start(&mut log);
        let Next::Fail(e) = c.attempt_ended(AttemptEnd::NoAnswer, &mut log) else {
            panic!()
        };
        assert_eq!((e.status(), e.code()), (504, "upstream_timeout"));
        assert!(e
            .headers()
            .contains(&("x-should-retry", "false".to_owned())));
        assert_eq!(c.charge(), RESERVED);
        assert_eq!(log.attempts.len(), 1, "the second route was not tried");
        // A 2xx whose body failed.
        for error in [
            UpstreamError::BadResponse,
            UpstreamError::Network,
            UpstreamError::Timeout,
        ] {
            let (mut c, mut log) = chat(2);
            c.start(&mut log);
            assert_eq!(
                c.attempt_ended(AttemptEnd::Accepted { status: 200 }, &mut log),
                Next::Read
            );
            let e = c.answer_failed(error.clone());
            assert_eq!(e, AppError::AfterWork(error));
            assert!(e
                .headers()
                .contains(&("x-should-retry", "false".to_owned())));
            assert_eq!(c.charge(), RESERVED);
            assert!(c.is_over());
        }
    }

    #[test]
    fn streams_are_charged_their_usage_or_the_reservation() {
        let usage = Usage::new(10, 5);
        let cases: [(Outcome, Option<&Usage>, bool, u64); 5] = [
            (Outcome::Done, Some(&usage), true, 15),
            (Outcome::Done, None, false, PROMPT + 7),
            (Outcome::Truncated, None, false, RESERVED),
            // Anthropic's running count of a cut stream is not final: the reservation.
            (
                Outcome::Failed("upstream_timeout".into()),
                Some(&usage),
                false,
                RESERVED,
            ),
            // The usage chunk came, then the stream was cut before [DONE].
            (Outcome::Truncated, Some(&usage), true, 15),
        ];
        for (outcome, usage, last, charged) in cases {
            let (mut c, mut log) = chat(1);
            c.start(&mut log);
            c.attempt_ended(AttemptEnd::Accepted { status: 200 }, &mut log);
            c.stream_ended(&outcome, usage, last, 7, &mut log);
            assert_eq!(c.charge(), charged, "{outcome:?} {usage:?}");
            // Anything after the end changes nothing.
            c.caller_gone(&mut log);
            assert_eq!(c.charge(), charged);
            let error = match &outcome {
                Outcome::Done => None,
                Outcome::Truncated => Some("stream_truncated"),
                Outcome::Failed(code) => Some(code.as_str()),
                Outcome::Open => unreachable!(),
            };
            assert_eq!(log.error.as_deref(), error);
        }
    }

    #[test]
    fn a_caller_who_leaves_is_charged_for_what_went_out() {
        let (mut c, mut log) = chat(2);
        c.caller_gone(&mut log);
        assert_eq!(c.charge(), 0, "nothing went out");
        assert_eq!(log.error.as_deref(), Some("client_closed"));
        let (mut c, mut log) = chat(2);
        c.start(&mut log);
        c.caller_gone(&mut log);
        assert_eq!(c.charge(), RESERVED, "the request may be with the provider");
        assert!(c.is_over());
        // The attempt's late news changes nothing.
        assert!(matches!(
            c.attempt_ended(refused(503), &mut log),
            Next::Fail(AppError::Internal)
        ));
        assert_eq!(c.charge(), RESERVED);
        let (mut c, mut log) = chat(1);
        c.start(&mut log);
        c.attempt_ended(AttemptEnd::Accepted { status: 200 }, &mut log);
        c.caller_gone(&mut log);
        assert_eq!(c.charge(), RESERVED, "mid-answer");
    }

    /// What the provider did for one attempt, as the model below tracks it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Work {
        /// Nothing (refused, unreachable, not sent).
        None,
        /// Maybe something, at most the reservation.
        Unknown,
        /// A complete answer of this many tokens.
        Complete(u64),
    }

    /// Random runs through the machine, with the glue modelled as the admission it drives: it
    /// settles once, with [`Chat::charge`], when the request ends or when the glue is dropped
    /// (the caller left and the runtime stopped polling) at a random step. Every run settles
    /// exactly once; what it is charged covers what reached a provider, and no more than one
    /// provider call.
    #[test]
    fn every_admission_is_settled_once_for_what_reached_a_provider() {
        let mut endings = std::collections::HashMap::<&str, usize>::new();
        for seed in 0..5_000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let routes = rng.usize(1..4);
            let (mut c, mut log) = chat(routes);
            let mut settlements: Vec<u64> = Vec::new();
            let mut work: Vec<Work> = Vec::new();
            // The step at which the glue stops being polled (never, for some runs).
            let drop_at = rng.usize(0..12);
            // Whether a request was on its way when the glue stopped.
            let mut in_flight = false;
            let mut next = c.start(&mut log).map(Next::Try);
            for step in 1.. {
                if step == drop_at {
                    // The glue is dropped: the machine hears the caller left, and the admission
                    // settles with the charge as it then stands.
                    in_flight = matches!(next, Some(Next::Try(_)));
                    c.caller_gone(&mut log);
                    settlements.push(c.charge());
                    *endings.entry("dropped").or_default() += 1;
                    break;
                }
                match next.take() {
                    Some(Next::Try(_)) => {
                        let end = match rng.u8(0..7) {
                            0 => AttemptEnd::NoConnection,
                            1 => AttemptEnd::NoAnswer,
                            2 => refused([400, 429, 500, 503][rng.usize(0..4)]),
                            3 => AttemptEnd::NotSent(AppError::MissingSecret { name: "K".into() }),
                            _ => AttemptEnd::Accepted { status: 200 },
                        };
                        work.push(match end {
                            AttemptEnd::NoAnswer | AttemptEnd::Accepted { .. } => Work::Unknown,
                            _ => Work::None,
                        });
                        next = Some(c.attempt_ended(end, &mut log));
                    }
                    Some(Next::Read) => {
                        let tokens = rng.u64(1..RESERVED);
                        let usage = Usage::new(0, tokens);
                        let complete = match rng.u8(0..4) {
                            0 => {
                                c.answered(Some(&usage), 0, &mut log);
                                true
                            }
                            1 => {
                                c.stream_ended(&Outcome::Done, Some(&usage), true, 0, &mut log);
                                true
                            }
                            2 => {
                                c.answer_failed(UpstreamError::BadResponse);
                                false
                            }
                            _ => {
                                c.stream_ended(&Outcome::Truncated, None, false, 3, &mut log);
                                false
                            }
                        };
                        if complete {
                            *work.last_mut().expect("an attempt") = Work::Complete(tokens);
                        }
                        // The glue settles when the answer ends, and a late hang-up changes
                        // nothing.
                        settlements.push(c.charge());
                        c.caller_gone(&mut log);
                        assert_eq!(c.charge(), settlements[0], "seed {seed}");
                        *endings.entry("answered").or_default() += 1;
                        break;
                    }
                    Some(Next::Fail(_)) | None => {
                        settlements.push(c.charge());
                        *endings.entry("failed").or_default() += 1;
                        break;
                    }
                }
            }
            assert_eq!(settlements.len(), 1, "seed {seed}");
            let charged = settlements[0];
            let worked: Vec<Work> = work.iter().copied().filter(|w| *w != Work::None).collect();
            assert!(worked.len() <= 1, "seed {seed}: rerun after work: {work:?}");
            // Charged at least what reached a provider (a request on its way may have)...
            let owed = match worked.first() {
                Some(Work::Complete(tokens)) => *tokens,
                Some(_) => RESERVED,
                None if in_flight => RESERVED,
                None => 0,
            };
            assert!(
                charged >= owed,
                "seed {seed}: charged {charged} for {work:?}"
            );
            // ...and never more than one provider call's worth.
            let most = match worked.first() {
                Some(Work::Complete(tokens)) => *tokens,
                _ => RESERVED,
            };
            assert!(
                charged <= most,
                "seed {seed}: charged {charged} for {work:?}"
            );
        }
        for ending in ["dropped", "answered", "failed"] {
            assert!(
                endings.get(ending).copied().unwrap_or(0) > 100,
                "{endings:?}"
            );
        }
    }
}
