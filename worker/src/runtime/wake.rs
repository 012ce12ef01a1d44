//! The runtime's callbacks into the Worker by number: a timer ([`sleep`]), a promise's outcome
//! ([`settled`]) and a request's abort signal ([`AbortWatch`]). Two wasm-bindgen closures serve
//! the whole isolate; each timer, promise or watch is a number in a table and JavaScript arrow
//! functions around it.
//!
//! workers-rs' `Delay`, wasm-bindgen-futures' `JsFuture` (two, resolve and reject) and a
//! `Closure` per watch made wasm-bindgen closures each time: a wasm table slot, its JavaScript
//! wrapper registered with a `FinalizationRegistry`, and the unregistering when dropped. A JSON
//! request armed two timers (the provider's headers, then its body), awaited the provider's
//! fetch, watched its caller's signal, and with the limiter on awaited its call and armed its
//! settlement's timer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::js_sys::{Function, Promise};
use worker::web_sys;

use crate::caller::body::Hangup;
use crate::mix_map::{mix_map, MixMap};

#[wasm_bindgen(inline_js = r#"
export function storycadSleep(ms, id, wake) {
  return setTimeout(() => wake(id), ms);
}
export function storycadAwait(promise, id, settle) {
  promise.then((value) => settle(id, value, true), (error) => settle(id, error, false));
}
export function storycadClearTimer(timer) {
  clearTimeout(timer);
}
export function storycadWatchAbort(request, id, wake) {
  const signal = request.signal;
  if (!signal) return 0;
  if (signal.aborted) return 1;
  signal.onabort = () => wake(id);
  return 2;
}
export function storycadUnwatchAbort(request) {
  const signal = request.signal;
  if (signal) signal.onabort = null;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadSleep)]
    fn js_sleep(ms: u32, id: u32, wake: &Function) -> JsValue;
    #[wasm_bindgen(js_name = storycadAwait)]
    fn js_await(promise: &Promise, id: u32, settle: &Function);
    #[wasm_bindgen(js_name = storycadClearTimer)]
    fn js_clear_timer(timer: &JsValue);
    #[wasm_bindgen(js_name = storycadWatchAbort)]
    fn js_watch_abort(request: &JsValue, id: u32, wake: &Function) -> u32;
    #[wasm_bindgen(js_name = storycadUnwatchAbort)]
    fn js_unwatch_abort(request: &JsValue);
}

/// What a number stands for until the runtime calls back with it.
enum Waiting {
    /// A [`Sleep`] armed and not yet done: the task to wake.
    Timer(Option<Waker>),
    /// An [`AbortWatch`]: what to raise.
    Abort(Hangup),
    /// A [`Settled`]: the task to wake, then the promise's outcome until it is taken.
    Promise {
        waker: Option<Waker>,
        outcome: Option<Result<JsValue, JsValue>>,
    },
}

thread_local! {
    static WAITING: RefCell<MixMap<u32, Waiting>> = RefCell::new(mix_map());
    static NEXT: Cell<u32> = const { Cell::new(1) };
    /// The callback of timers and watches: `wake(id)`. Never dropped.
    static WAKE: Function = {
        let wake = Closure::<dyn FnMut(u32)>::new(wake);
        let f: Function = wake.as_ref().unchecked_ref::<Function>().clone();
        wake.forget();
        f
    };
    /// The callback of promises: `settle(id, value, fulfilled)`. Never dropped.
    static SETTLE: Function = {
        let settle = Closure::<dyn FnMut(u32, JsValue, bool)>::new(settle);
        let f: Function = settle.as_ref().unchecked_ref::<Function>().clone();
        settle.forget();
        f
    };
}

fn settle(id: u32, value: JsValue, fulfilled: bool) {
    let waker = WAITING.with(|w| match w.borrow_mut().get_mut(&id) {
        Some(Waiting::Promise { waker, outcome }) => {
            *outcome = Some(if fulfilled { Ok(value) } else { Err(value) });
            waker.take()
        }
        _ => None,
    });
    waker.into_iter().for_each(Waker::wake);
}

fn wake(id: u32) {
    // Out of the table before anything runs: what it wakes may arm or drop others. (A
    // promise's number is not a timer's or a watch's: left to its `settle`.)
    let waiting = WAITING.with(|w| {
        let mut table = w.borrow_mut();
        match table.get(&id) {
            Some(Waiting::Timer(_) | Waiting::Abort(_)) => table.remove(&id),
            Some(Waiting::Promise { .. }) | None => None,
        }
    });
    match waiting {
        Some(Waiting::Timer(waker)) => waker.into_iter().for_each(Waker::wake),
        Some(Waiting::Abort(hangup)) => hangup.raise(),
        Some(Waiting::Promise { .. }) | None => {}
    }
}

/// A number no entry of the table holds, entered with `waiting`.
fn enter(waiting: Waiting) -> u32 {
    WAITING.with(|w| {
        let mut table = w.borrow_mut();
        let id = NEXT.with(|n| {
            let mut id = n.get();
            while id == 0 || table.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            n.set(id.wrapping_add(1));
            id
        });
        table.insert(id, waiting);
        id
    })
}

/// Keeps the polling task's waker in `slot` (unless the one there already wakes it).
fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// Takes `id` out of the table; whether it was still there (the runtime had not called back).
fn leave(id: u32) -> bool {
    WAITING.with(|w| w.borrow_mut().remove(&id)).is_some()
}

/// The runtime's clearTimeout, for a timer set by this module or by the stream's helper.
pub(super) fn clear_timer(timer: &JsValue) {
    js_clear_timer(timer);
}

/// Done `after` this long (from its first poll, as workers-rs' `Delay`); the runtime's timer is
/// cleared if it is dropped before.
pub(crate) fn sleep(after: Duration) -> Sleep {
    Sleep {
        // Not `as_millis`: its u128 division is 1 KB of wasm.
        ms: timer_ms(
            after
                .as_secs()
                .saturating_mul(1000)
                .saturating_add(u64::from(after.subsec_millis())),
        ),
        armed: None,
        done: false,
    }
}

/// `ms` as `setTimeout` takes it: at most 2^31 - 1 (the runtime fires a longer delay at once).
pub(super) fn timer_ms(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX).min(i32::MAX as u32)
}

/// See [`sleep`].
pub(crate) struct Sleep {
    ms: u32,
    /// The table's number and the runtime's timer, once armed.
    armed: Option<(u32, JsValue)>,
    done: bool,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let Some((id, _)) = self.armed else {
            let id = enter(Waiting::Timer(Some(cx.waker().clone())));
            let timer = WAKE.with(|wake| js_sleep(self.ms, id, wake));
            self.armed = Some((id, timer));
            return Poll::Pending;
        };
        let pending = WAITING.with(|w| match w.borrow_mut().get_mut(&id) {
            Some(Waiting::Timer(waker)) => {
                remember(waker, cx);
                true
            }
            _ => false,
        });
        if pending {
            return Poll::Pending;
        }
        self.done = true;
        self.armed = None;
        Poll::Ready(())
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((id, timer)) = self.armed.take() {
            if leave(id) {
                js_clear_timer(&timer);
            }
        }
    }
}

/// `promise`'s outcome, as wasm-bindgen-futures' `JsFuture` gives it: its value, or what it was
/// rejected with. Its `then` is called now.
pub(crate) fn settled(promise: Promise) -> Settled {
    let id = enter(Waiting::Promise {
        waker: None,
        outcome: None,
    });
    SETTLE.with(|settle| js_await(&promise, id, settle));
    Settled { id: Some(id) }
}

/// See [`settled`].
pub(crate) struct Settled {
    /// The table's number, until the outcome is taken.
    id: Option<u32>,
}

impl Future for Settled {
    type Output = Result<JsValue, JsValue>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(id) = self.id else {
            return Poll::Ready(Err(JsValue::from_str("polled after its outcome")));
        };
        let outcome = WAITING.with(|w| {
            let mut table = w.borrow_mut();
            match table.get_mut(&id) {
                Some(Waiting::Promise {
                    outcome: outcome @ Some(_),
                    ..
                }) => {
                    let outcome = outcome.take();
                    table.remove(&id);
                    outcome
                }
                Some(Waiting::Promise { waker, .. }) => {
                    remember(waker, cx);
                    None
                }
                _ => Some(Err(JsValue::from_str("no such promise"))),
            }
        });
        match outcome {
            Some(outcome) => {
                self.id = None;
                Poll::Ready(outcome)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Settled {
    fn drop(&mut self) {
        // Its outcome, if it comes, finds no number.
        if let Some(id) = self.id.take() {
            leave(id);
        }
    }
}

/// Raises a hangup when the runtime aborts a request's signal (its caller disconnected); stops
/// watching when dropped.
pub(crate) struct AbortWatch {
    request: JsValue,
    id: u32,
}

impl AbortWatch {
    /// Watches `request`'s signal for `hangup`. `None` when there is nothing to watch: the
    /// signal is missing (without the compatibility flag; then only the body's cancellation
    /// tells), or already aborted, and then `hangup` is raised now.
    pub(crate) fn new(request: &web_sys::Request, hangup: &Hangup) -> Option<AbortWatch> {
        // (`web_sys::Request::clone` is the runtime's `clone()`, a copy of the request.)
        let request: &JsValue = request.as_ref();
        let id = enter(Waiting::Abort(hangup.clone()));
        let watching = WAKE.with(|wake| js_watch_abort(request, id, wake));
        if watching == 2 {
            return Some(AbortWatch {
                request: request.clone(),
                id,
            });
        }
        leave(id);
        if watching == 1 {
            hangup.raise();
        }
        None
    }
}

impl Drop for AbortWatch {
    fn drop(&mut self) {
        if leave(self.id) {
            js_unwatch_abort(&self.request);
        }
    }
}
