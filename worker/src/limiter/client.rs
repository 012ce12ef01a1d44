//! What the request pipeline calls: one Durable Object round trip to admit a request before the
//! upstream; its settlement goes along with the user's next call.
//!
//! ```ignore
//! let limiter = Limiter::new(env, &sub, plan, plans.limits_enabled)?;
//! let admission = limiter.admit(ctx, tokens_estimate, stream).await?; // 429 when refused
//! // ... the upstream call ...
//! admission.settle(real_tokens); // or drop it: it settles with its fallback (0 by default)
//! ```
//!
//! An [`Admission`] settles exactly once, on every path: `settle`, or its drop (an error
//! returned with `?`, a stream ended, cut or abandoned by the caller) with the last charge set by
//! [`Admission::set_charge`]. The settlement then waits in the isolate ([`PENDING`], per user)
//! for [`SETTLE_DELAY`]: the user's next admission or usage call from this isolate carries it
//! (one round trip per request instead of two, the DO applies it before deciding); if none
//! comes in time, a `Settle` call sends it. That last step was registered with `wait_until` at
//! admission, so the runtime keeps the request alive until it is done. Other isolates see a
//! settlement at most [`SETTLE_DELAY`] late.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use worker::js_sys::Uint8Array;
use worker::{
    console_log, Context, Date, Delay, Env, Method, ObjectNamespace, Request, RequestInit,
};

use super::{Call, Decision, Limits, Settlement, Snapshot};
use crate::error::AppError;
use crate::plans::Plan;

/// How long a settlement waits in the isolate for the user's next call before it is sent alone.
pub(crate) const SETTLE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

thread_local! {
    /// Settlements not yet sent, per user (`sub`).
    static PENDING: RefCell<HashMap<String, Vec<Settlement>>> = RefCell::new(HashMap::new());
}

/// Takes the settlements waiting for `sub`.
fn take_pending(sub: &str) -> Vec<Settlement> {
    PENDING.with(|p| p.borrow_mut().remove(sub).unwrap_or_default())
}

fn add_pending(sub: &str, settlement: Settlement) {
    PENDING.with(|p| {
        p.borrow_mut()
            .entry(sub.to_owned())
            .or_default()
            .push(settlement);
    });
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
            Some(env.durable_object("LIMITER").map_err(|e| {
                log_failure(sub, "binding", &e);
                AppError::Config(crate::config::ConfigError::new(
                    "LIMITER",
                    "the Durable Object binding is missing",
                ))
            })?)
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
    pub async fn admit(
        &self,
        ctx: &Context,
        tokens_estimate: u64,
        stream: bool,
    ) -> Result<Admission, AppError> {
        let Some(namespace) = &self.namespace else {
            return Ok(Admission::none());
        };
        let started = Date::now().as_millis();
        let decision = call(
            namespace,
            &self.sub,
            &Call::Admit {
                limits: self.limits,
                tokens: tokens_estimate,
                stream,
                settle: take_pending(&self.sub),
            },
        )
        .await?;
        self.admit_ms
            .set(Some(Date::now().as_millis().saturating_sub(started)));
        self.last.set(Some(decision.snapshot));
        if let Some(refusal) = decision.refusal {
            return Err(AppError::Limit(refusal));
        }
        let Some(ticket) = decision.ticket else {
            return Err(AppError::Internal);
        };
        let slot = Rc::new(RefCell::new(Slot::default()));
        let settled = Settled(Rc::clone(&slot));
        let (namespace, sub, limits) = (namespace.clone(), self.sub.clone(), self.limits);
        ctx.wait_until(async move {
            let tokens = settled.await;
            add_pending(&sub, Settlement { ticket, tokens });
            Delay::from(SETTLE_DELAY).await;
            // Taken along by a later call meanwhile, or still here: then it goes alone (a
            // failed call is logged; its tickets lapse in the object).
            let settle = take_pending(&sub);
            if !settle.is_empty() {
                let _ = call(&namespace, &sub, &Call::Settle { limits, settle }).await;
            }
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

    /// Every limit's state now (`None` when limits are off or the object cannot be reached).
    pub async fn peek(&self) -> Option<Snapshot> {
        let namespace = self.namespace.as_ref()?;
        let decision = call(
            namespace,
            &self.sub,
            &Call::Peek {
                limits: self.limits,
                settle: take_pending(&self.sub),
            },
        )
        .await
        .ok()?;
        self.last.set(Some(decision.snapshot));
        Some(decision.snapshot)
    }

    /// The state the answer's `x-ratelimit-*` headers show: the last one seen by this request,
    /// else a fresh `peek`.
    pub async fn for_headers(&self) -> Option<Snapshot> {
        match self.last.get() {
            Some(s) => Some(s),
            None => self.peek().await,
        }
    }
}

async fn call(namespace: &ObjectNamespace, sub: &str, call: &Call) -> Result<Decision, AppError> {
    let result = async {
        let stub = namespace.id_from_name(sub)?.get_stub()?;
        let body = serde_json::to_vec(call).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(Uint8Array::from(body.as_slice()).into()));
        let request = Request::new_with_init("https://limiter/", &init)?;
        let mut response = stub.fetch_with_request(request).await?;
        if response.status_code() != 200 {
            return Err(worker::Error::RustError(format!(
                "status {}",
                response.status_code()
            )));
        }
        response.json::<Decision>().await
    }
    .await;
    result.map_err(|e| {
        log_failure(sub, "call", &e);
        AppError::LimiterUnavailable
    })
}

fn log_failure(sub: &str, what: &str, e: &worker::Error) {
    console_log!(
        "{}",
        serde_json::json!({
            "error": "limiter_unavailable",
            "sub": crate::error::shorten(sub, 64),
            "detail": format!("{what}: {}", crate::error::shorten(&e.to_string(), 200)),
        })
    );
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

    /// What dropping this admission will charge (replaces the previous value): a stream sets it
    /// as it goes, so a stream cut or abandoned is charged what it produced.
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
