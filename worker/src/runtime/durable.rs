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

use std::cell::RefCell;
use std::rc::Rc;

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::now_ms;
use super::resume::StreamHouse;
use super::storage::Storage;
use crate::limiter::{wire, Call, Ledger, UserState};

/// The storage key of the state (JSON text).
const KEY: &str = "state";

#[durable_object]
pub struct UserLimiter {
    state: Rc<State>,
    memory: RefCell<Option<Ledger>>,
    /// The user's streams whose caller left before the end.
    streams: StreamHouse,
}

impl DurableObject for UserLimiter {
    fn new(state: State, _env: Env) -> Self {
        let state = Rc::new(state);
        UserLimiter {
            streams: StreamHouse::new(state.clone()),
            state,
            memory: RefCell::new(None),
        }
    }

    /// Only the stored streams set the alarm.
    async fn alarm(&self) -> Result<Response> {
        self.streams.alarm().await?;
        Response::ok("")
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if StreamHouse::handles(&req.inner().url()) {
            return self.streams.fetch(req).await;
        }
        // serde_json on the text, not the runtime's JSON: ticket ids are exact 64-bit numbers.
        let text = req.text().await?;
        let Ok(call) = wire::from_str::<Call>(&text) else {
            return Response::error("bad limiter call", 400);
        };
        if self.memory.borrow().is_none() {
            let stored = Storage::of(&self.state)?.get_text(KEY).await?;
            let stored = stored.and_then(|text| wire::from_str::<UserState>(&text).ok());
            let restored = Ledger::restore(stored, now_ms());
            // Another call may have loaded it while this one waited.
            self.memory.borrow_mut().get_or_insert(restored);
        }
        let now = now_ms();
        let (decision, text) = {
            let mut memory = self.memory.borrow_mut();
            let ledger = memory.get_or_insert_with(|| Ledger::restore(None, now));
            ledger.call(now, &call)
        };
        if let Some(text) = text {
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
        }
        let mut response = Response::ok(serde_json::to_string(&decision).unwrap_or_default())?;
        response
            .headers_mut()
            .set("content-type", "application/json")?;
        Ok(response)
    }
}
