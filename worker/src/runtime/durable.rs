//! `UserLimiter`: the Durable Object holding one user's limits (one object per `sub`, bound as
//! `LIMITER`). The runtime delivers its calls one at a time, and each decision is made in memory
//! without an `await` between the check and the update, so admission is exact however many
//! requests of one user arrive at once.
//!
//! State lives in memory (loaded from storage by the first call after the object starts) and in
//! storage; the logic, what to store and when, is [`Ledger`] (host-tested). Decisions use the
//! memory copy. A restarted object numbers its tickets past any an earlier run could have
//! issued and charges the settlements of admissions it lost when they come
//! ([`UserState::restore`]); an isolate holds every settlement until an answer says it
//! is stored, so none is lost.
//!
//! The same object keeps the user's streams whose caller left before their end, for a resume
//! ([`StreamHouse`]); its alarm deletes them from storage after their window.
//!
//! The class is exported by hand, not through workers-rs' `#[durable_object]`: that glue turns
//! each call's request into a `worker::Request` (a URL parse, a substring search, the method's
//! name matched) and the answer back, ~6 KB of wasm that V8 compiles again on the object's next
//! call whenever any isolate starts in the process. A limiter call reads the body's text and
//! answers text, which needs neither. Steps that most calls do not take (the streams' calls,
//! loading the state after a start, writing it) run in functions of their own ([`apart`]), so a
//! call compiles only what it runs.
//!
//! The bundle exports, as `UserLimiter`, a `DurableObject` (from `cloudflare:workers`) around
//! this class (xtask's `with_rpc_object`): the runtime takes JavaScript RPC calls only for such
//! a class, and a limiter call is one ([`UserLimiter::call`]), cheaper than a fetch. Its
//! `fetch` and `alarm` come here as they are.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use worker::worker_sys::web_sys;
use worker::worker_sys::DurableObjectState;
use worker::{js_sys, State};

use super::resume::StreamHouse;
use super::storage::Storage;
use super::wake::settled;
use super::{apart, now_ms};
use crate::limiter::{wire, Call, Ledger, UserState};

/// The storage key of the state (JSON text).
const KEY: &str = "state";

#[wasm_bindgen]
pub struct UserLimiter {
    state: Rc<State>,
    memory: RefCell<Option<Ledger>>,
    /// The user's streams whose caller left before the end.
    streams: StreamHouse,
}

#[wasm_bindgen(
    wasm_bindgen_futures = worker::wasm_bindgen_futures,
    js_sys = worker::js_sys
)]
impl UserLimiter {
    /// The runtime's constructor: the object's state and the Worker's bindings (unused).
    #[wasm_bindgen(constructor)]
    pub fn new(state: DurableObjectState, _env: JsValue) -> UserLimiter {
        let state = Rc::new(State::from(state));
        UserLimiter {
            streams: StreamHouse::new(state.clone()),
            state,
            memory: RefCell::new(None),
        }
    }

    /// Only the stored streams set the alarm.
    pub async fn alarm(&self) -> Result<JsValue, JsValue> {
        self.streams.alarm().await?;
        Ok(JsValue::UNDEFINED)
    }

    /// A limiter call (its JSON text in, the decision's out), or a streams call.
    pub async fn fetch(&self, req: web_sys::Request) -> Result<JsValue, JsValue> {
        if StreamHouse::handles(&req.url()) {
            return apart(self.streams_call(req)).await;
        }
        // In a header when it fits one (the caller then reads the answer's header), else the
        // body (see `wire::CALL_HEADER`).
        let in_header = req.headers().get(wire::CALL_HEADER).ok().flatten();
        let answer_in_header = in_header.is_some();
        let text = match in_header {
            Some(text) => Some(text),
            None => settled(req.text()?).await?.as_string(),
        };
        match self.decide(text).await? {
            Some(text) => {
                let in_header = answer_in_header && wire::fits_header(&text);
                answer(&text, 200, in_header)
            }
            None => answer("bad limiter call", 400, false),
        }
    }

    /// A limiter call through JavaScript RPC (`stub.call(text)`, where the object's class is
    /// the build's `DurableObject` around this one): its JSON text in, the decision's out, with
    /// no `Request` or `Response` either way. A call that does not parse is refused.
    pub async fn call(&self, text: String) -> Result<JsValue, JsValue> {
        match self.decide(Some(text)).await? {
            Some(decision) => Ok(JsValue::from_str(&decision)),
            None => Err(js_sys::Error::new("bad limiter call").into()),
        }
    }
}

impl UserLimiter {
    /// The decision on the call `text` (`None`: it does not parse), made and, when the ledger
    /// says so, stored.
    async fn decide(&self, text: Option<String>) -> Result<Option<String>, JsValue> {
        // serde_json on the text, not the runtime's JSON: ticket ids are exact 64-bit numbers.
        let Some(call) = text.and_then(|text| wire::from_str::<Call>(&text).ok()) else {
            return Ok(None);
        };
        if self.memory.borrow().is_none() {
            apart(self.load()).await?;
        }
        let now = now_ms();
        let (decision, text) = {
            let mut memory = self.memory.borrow_mut();
            let ledger = memory.get_or_insert_with(|| Ledger::restore(None, now));
            ledger.call(now, &call)
        };
        if let Some(text) = text {
            apart(self.store(text, now)).await?;
        }
        Ok(Some(wire::decision_text(&decision)))
    }

    async fn streams_call(&self, req: web_sys::Request) -> Result<JsValue, JsValue> {
        let answer = self.streams.fetch(req.into()).await?;
        Ok(web_sys::Response::from(answer).into())
    }

    /// The state from storage, into memory (the first call after the object starts).
    async fn load(&self) -> worker::Result<()> {
        let stored = Storage::of(&self.state)?.get_text(KEY).await?;
        let stored = stored.and_then(|text| wire::from_str::<UserState>(&text).ok());
        let restored = Ledger::restore(stored, now_ms());
        // Another call may have loaded it while this one waited.
        self.memory.borrow_mut().get_or_insert(restored);
        Ok(())
    }

    /// Stores `text`, the state as of `now`.
    async fn store(&self, text: String, now: u64) -> worker::Result<()> {
        let written = match Storage::of(&self.state) {
            Ok(storage) => storage.put_text(KEY, &text).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // Memory holds what storage does not: forget it, so the next call starts from
            // storage again and the Worker's resent settlements apply to that.
            self.memory.borrow_mut().take();
            return Err(e);
        }
        if let Some(ledger) = self.memory.borrow_mut().as_mut() {
            ledger.stored(now);
        }
        Ok(())
    }
}

#[wasm_bindgen(inline_js = r#"
export function storycadLimiterAnswer(text, status, header) {
  return header
    ? new Response(null, { status, headers: { [header]: text } })
    : new Response(text, { status });
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadLimiterAnswer, catch)]
    fn js_answer(text: &str, status: u16, header: Option<&str>) -> Result<JsValue, JsValue>;
}

/// An answer of `status` carrying `text`: in [`wire::DECISION_HEADER`] when `in_header`, else
/// as its body.
fn answer(text: &str, status: u16, in_header: bool) -> Result<JsValue, JsValue> {
    js_answer(text, status, in_header.then_some(wire::DECISION_HEADER))
}
