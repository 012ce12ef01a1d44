//! What the request pipeline calls: one Durable Object round trip to admit a request before the
//! upstream; its settlement goes along with the user's next call.
//!
//! ```ignore
//! let limiter = Limiter::new(env, &sub, plan, plans.limits_enabled)?;
//! let mut admission = limiter.admit(ctx, reservation, stream).await?; // 429 when refused
//! admission.set_charge(chat.charge()); // after every step of the request's lifecycle
//! // ... dropped when the request ends, however it ends: it settles with the last charge
//! ```
//!
//! An [`Admission`] settles exactly once, when it is dropped (the request ended, failed, or its
//! task was dropped), with the last charge set by [`Admission::set_charge`]. The settlement
//! then waits in the isolate ([`Pending`], per user) for [`SETTLE_DELAY`]: the user's next
//! admission or usage call from this isolate carries it (one round trip per request instead of
//! two; the object applies it before deciding, and stores it within a second). If none comes in
//! time, or the object has not stored it within
//! [`STORE_WAIT`](crate::limiter::pending::STORE_WAIT), the request's settle task sends
//! it in a `Settle` call (stored before the answer), and again after a failed call, until it is
//! stored or [`SETTLE_DEADLINE`] passes (the runtime ends a request's background work 30 s after
//! its caller left). That task was registered with `wait_until` at admission, so the runtime
//! keeps the request alive until it is done. Other isolates see a settlement at most
//! [`SETTLE_DELAY`] late. A settlement never stored leaves its ticket to lapse in the object,
//! which charges the reservation.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use wasm_bindgen::prelude::*;
use worker::js_sys::Promise;
use worker::{Context, Env, ObjectNamespace};

use super::wake::{settled, sleep};
use super::{apart, now_ms};
use crate::error::AppError;
use crate::limiter::pending::{CallId, Pending, Step};
use crate::limiter::{wire, Call, Decision, Limits, Settlement, Snapshot};
use crate::log::Event;
use crate::mix_map::{mix_map, MixMap};
use crate::plans::Plan;

/// How long a settlement waits in the isolate for the user's next call before it is sent alone.
pub(crate) const SETTLE_DELAY: Duration = Duration::from_millis(100);
/// How long a settle task keeps trying to deliver its settlement.
pub(crate) const SETTLE_DEADLINE: Duration = Duration::from_secs(20);
/// The first pause after a failed settle call (doubled after each, up to a second).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

thread_local! {
    /// Settlements not yet delivered, per user (`sub`).
    static PENDING: RefCell<MixMap<String, Pending>> = RefCell::new(mix_map());
}

fn with_pending<T>(sub: &str, f: impl FnOnce(&mut Pending) -> T) -> T {
    PENDING.with(|p| {
        let mut map = p.borrow_mut();
        let pending = map.entry(sub.to_owned()).or_default();
        let out = f(pending);
        if pending.is_empty() {
            map.remove(sub);
        }
        out
    })
}

/// Makes a call carrying the user's waiting settlements; they are delivered when it is
/// answered with the object's state stored, put back when it fails or is not stored yet.
async fn call_carrying(
    namespace: &ObjectNamespace,
    sub: &str,
    make: impl FnOnce(Vec<Settlement>) -> Call,
) -> Result<Decision, AppError> {
    let (id, settle): (CallId, Vec<Settlement>) = with_pending(sub, Pending::take);
    let result = call(namespace, sub, &make(settle)).await;
    let now = now_ms();
    with_pending(sub, |p| match &result {
        Ok(decision) => p.answered(id, decision.stored, now),
        Err(_) => p.failed(id),
    });
    result
}

/// Delivers the settlement of `ticket` (already added to [`PENDING`]): after [`SETTLE_DELAY`],
/// unless another call took it along (and the object stored it within
/// [`STORE_WAIT`](crate::limiter::pending::STORE_WAIT)), in a `Settle` call of its own, resent
/// after failures until [`SETTLE_DEADLINE`].
async fn deliver(namespace: ObjectNamespace, sub: String, limits: Limits, ticket: u64) {
    sleep(SETTLE_DELAY).await;
    let deadline = now_ms() + SETTLE_DEADLINE.as_millis() as u64;
    let mut pause = RETRY_PAUSE;
    loop {
        let now = now_ms();
        // Another call carries it, or the object applied it and will store it with its next
        // write: wait (on a timer of this request's own: a request may not await another's
        // I/O).
        match with_pending(&sub, |p| p.find(ticket)).step(now) {
            Step::Done => return,
            Step::Wait(wait) => sleep(wait).await,
            Step::Send => {
                let sent =
                    call_carrying(&namespace, &sub, |settle| Call::Settle { limits, settle }).await;
                if sent.is_err() {
                    sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        if now_ms() >= deadline {
            let event = Event::new("settlement_undelivered")
                .for_user(&sub)
                .with_detail(&format!(
                    "ticket {ticket}: the limiter could not be reached; the ticket's lease will \
                 lapse and charge its reservation"
                ));
            super::log_line(&event.to_line());
            return;
        }
    }
}

/// The limiter of one request's caller.
pub(crate) struct Limiter {
    namespace: Option<ObjectNamespace>,
    sub: String,
    limits: Limits,
    last: Cell<Option<Snapshot>>,
    admit_ms: Cell<Option<u64>>,
}

impl Limiter {
    /// The limiter of user `sub` on `plan`; `enabled: false` (`LIMITS_ENABLED=false`) admits
    /// everything without a round trip.
    pub fn new(env: &Env, sub: &str, plan: &Plan, enabled: bool) -> Result<Limiter, AppError> {
        let namespace = if enabled {
            // Read as the runtime holds it, not through workers-rs' `durable_object`, whose check
            // of the binding's type (its constructor's name, two calls into JavaScript and a
            // string) ran on every request. A binding of another type fails the object's call.
            let binding = super::binding(env, "LIMITER").filter(|b| b.is_object());
            let Some(binding) = binding else {
                log_failure(sub, "binding", &"LIMITER is not bound");
                return Err(AppError::Config(crate::config::ConfigError::new(
                    "LIMITER",
                    "the Durable Object binding is missing",
                )));
            };
            Some(binding.unchecked_into::<ObjectNamespace>())
        } else {
            None
        };
        Ok(Limiter {
            namespace,
            sub: sub.to_owned(),
            limits: plan.limits(),
            last: Cell::new(None),
            admit_ms: Cell::new(None),
        })
    }

    /// Whether limits are enforced.
    pub fn enabled(&self) -> bool {
        self.namespace.is_some()
    }

    /// Admits a request reserving `tokens_estimate` (0 for one that costs no tokens, e.g. a
    /// cached answer), holding a stream slot if `stream`. Refused: `AppError::Limit` (429).
    /// The object's round trip runs in a function of its own ([`apart`]): where limits are off,
    /// its code is never compiled.
    pub async fn admit(
        &self,
        ctx: &Context,
        tokens_estimate: u64,
        stream: bool,
    ) -> Result<Admission, AppError> {
        match &self.namespace {
            None => Ok(Admission::none()),
            Some(namespace) => apart(self.admit_at(namespace, ctx, tokens_estimate, stream)).await,
        }
    }

    async fn admit_at(
        &self,
        namespace: &ObjectNamespace,
        ctx: &Context,
        tokens_estimate: u64,
        stream: bool,
    ) -> Result<Admission, AppError> {
        let started = now_ms();
        let (limits, sub) = (self.limits, self.sub.as_str());
        let decision = call_carrying(namespace, sub, |settle| Call::Admit {
            limits,
            tokens: tokens_estimate,
            stream,
            settle,
        })
        .await?;
        self.admit_ms.set(Some(now_ms().saturating_sub(started)));
        self.last.set(Some(decision.snapshot));
        if let Some(refusal) = decision.refusal {
            return Err(AppError::Limit(refusal));
        }
        let Some(ticket) = decision.ticket else {
            return Err(AppError::Internal);
        };
        let slot = Rc::new(RefCell::new(Slot::default()));
        let settled = Settled(Rc::clone(&slot));
        let (namespace, sub) = (namespace.clone(), self.sub.clone());
        ctx.wait_until(async move {
            let tokens = settled.await;
            with_pending(&sub, |p| p.add(Settlement { ticket, tokens }));
            deliver(namespace, sub, limits, ticket).await;
        });
        Ok(Admission {
            slot: Some(slot),
            charge: 0,
        })
    }

    /// How long the last admission took (the round trip to the Durable Object), if any.
    pub fn admit_ms(&self) -> Option<u64> {
        self.admit_ms.get()
    }

    /// Every limit's state now, for a usage report (`None` when limits are off). Usage reports
    /// have a rate limit of their own (`AppError::Limit`); an object that cannot be reached is
    /// `AppError::LimiterUnavailable`, as for an admission.
    pub async fn peek(&self) -> Result<Option<Snapshot>, AppError> {
        match &self.namespace {
            None => Ok(None),
            Some(namespace) => apart(self.peek_at(namespace)).await,
        }
    }

    async fn peek_at(&self, namespace: &ObjectNamespace) -> Result<Option<Snapshot>, AppError> {
        let limits = self.limits;
        let decision =
            call_carrying(namespace, &self.sub, |settle| Call::Peek { limits, settle }).await?;
        self.last.set(Some(decision.snapshot));
        match decision.refusal {
            Some(refusal) => Err(AppError::Limit(refusal)),
            None => Ok(Some(decision.snapshot)),
        }
    }

    /// The state the answer's `x-ratelimit-*` headers show: the last one seen by this request,
    /// else a fresh `peek` (none when it fails or is refused).
    pub async fn for_headers(&self) -> Option<Snapshot> {
        match self.last.get() {
            Some(s) => Some(s),
            None => {
                let _ = self.peek().await;
                self.last.get()
            }
        }
    }
}

// The round trip in one call to the runtime: a JavaScript RPC call, `call(text)`, which the
// object answers with the decision's text. No `Request` or `Response` is made either way: in a
// side-by-side try with two JavaScript Workers, an object's round trip added 0.007 ms of CPU to
// a request through RPC and 0.042 through `fetch`.
//
// An object of an earlier release has no RPC (its class did not extend `DurableObject`); the
// runtime says so before any of the object's code runs, so the call is made again as a fetch
// and nothing is admitted twice, and this isolate sends its later calls as fetches. Such a
// call goes as the body, and in a header too when it fits one: an object of this release
// answers it in a header, one of an earlier release in its body, read as text here
// (`wire::CALL_HEADER`). (Through workers-rs, the answer was read as a stream, a promise per
// piece, and its reader's release made the runtime build an error with a stack trace: 2% of
// the process's CPU samples under load.)
#[wasm_bindgen(inline_js = r#"
let rpc = true;
export async function storycadLimiterCall(namespace, sub, text, callHeader, decisionHeader) {
  const stub = namespace.get(namespace.idFromName(sub));
  if (rpc) {
    try {
      return await stub.call(text);
    } catch (e) {
      if (!String(e?.message).includes("does not support RPC")) throw e;
      rpc = false;
    }
  }
  const init = { method: "POST", body: text };
  if (callHeader) init.headers = { [callHeader]: text };
  const answer = await stub.fetch("https://limiter/", init);
  const decision = answer.headers.get(decisionHeader);
  const body = decision === null ? await answer.text() : decision;
  if (answer.status !== 200) throw new Error(`status ${answer.status}`);
  return body;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadLimiterCall)]
    fn js_limiter_call(
        namespace: &JsValue,
        sub: &str,
        text: &str,
        call_header: Option<&str>,
        decision_header: &str,
    ) -> Promise;
}

async fn call(namespace: &ObjectNamespace, sub: &str, call: &Call) -> Result<Decision, AppError> {
    let result = async {
        let text = wire::call_text(call);
        let in_header = wire::fits_header(&text).then_some(wire::CALL_HEADER);
        let promise = js_limiter_call(
            namespace.as_ref(),
            sub,
            &text,
            in_header,
            wire::DECISION_HEADER,
        );
        let text = settled(promise)
            .await?
            .as_string()
            .ok_or_else(|| worker::Error::RustError("not text".to_owned()))?;
        wire::from_str::<Decision>(&text).map_err(worker::Error::RustError)
    }
    .await;
    result.map_err(|e| {
        log_failure(sub, "call", &e);
        AppError::LimiterUnavailable
    })
}

fn log_failure(sub: &str, what: &str, e: &dyn std::fmt::Display) {
    let event = Event::new("limiter_unavailable")
        .for_user(sub)
        .with_detail(&format!("{what}: {e}"));
    super::log_line(&event.to_line());
}

/// An admitted request: settles once, when settled or dropped.
pub(crate) struct Admission {
    slot: Option<Rc<RefCell<Slot>>>,
    charge: u64,
}

impl Admission {
    fn none() -> Admission {
        Admission {
            slot: None,
            charge: 0,
        }
    }

    /// What dropping this admission will charge (replaces the previous value): the request's
    /// lifecycle sets it at every step, so however the request ends it is charged as it stands.
    pub fn set_charge(&mut self, tokens: u64) {
        self.charge = tokens;
    }

    /// Settles with the tokens the request really cost (0 for a cached answer).
    pub fn settle(mut self, tokens: u64) {
        self.charge = tokens;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut slot = slot.borrow_mut();
            slot.tokens = Some(self.charge);
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }
}

/// A one-value channel from an [`Admission`] to its settle task.
#[derive(Default)]
struct Slot {
    tokens: Option<u64>,
    waker: Option<Waker>,
}

struct Settled(Rc<RefCell<Slot>>);

impl Future for Settled {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<u64> {
        let mut slot = self.0.borrow_mut();
        match slot.tokens {
            Some(tokens) => Poll::Ready(tokens),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
