//! `UserLimiter`: the Durable Object holding one user's limits (one object per `sub`, bound as
//! `LIMITER`). The runtime delivers its calls one at a time, and each decision is made in memory
//! without an `await` between the check and the update, so admission is exact however many
//! requests of one user arrive at once.
//!
//! State lives in memory (loaded from storage by the first call after the object starts) and in
//! storage, so a restarted object goes on where it stopped. Decisions use the memory copy. The
//! state is written when settlements arrive ([`super::should_write`]): always from a `Settle`
//! (the isolate's flush after the user went quiet) or a `Peek`, at most once a second from an
//! `Admit` that carries them; a write on an admission's path cost about 2 ms of its 4 under
//! workerd. Each write holds everything since the last one, and an object is only evicted when
//! idle (everything settled, flushed, so written); a crash loses at most the last second's
//! settlements and the admissions in flight.

use std::cell::{Cell, RefCell};

use worker::wasm_bindgen::JsValue;
use worker::{durable_object, Date, DurableObject, Env, Request, Response, Result, State};

use super::{apply, should_write, Call, UserState};

/// The storage key of the state (JSON text).
const KEY: &str = "state";

#[durable_object]
pub struct UserLimiter {
    state: State,
    memory: RefCell<Option<UserState>>,
    /// When the state was last written (Unix ms).
    written_at: Cell<u64>,
}

impl DurableObject for UserLimiter {
    fn new(state: State, _env: Env) -> Self {
        UserLimiter {
            state,
            memory: RefCell::new(None),
            written_at: Cell::new(0),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Ok(call) = req.json::<Call>().await else {
            return Response::error("bad limiter call", 400);
        };
        if self.memory.borrow().is_none() {
            let stored = self.state.storage().get::<String>(KEY).await?;
            let loaded = stored
                .and_then(|text| serde_json::from_str::<UserState>(&text).ok())
                .unwrap_or_default();
            // Another call may have loaded it while this one waited.
            self.memory.borrow_mut().get_or_insert(loaded);
        }
        let (decision, text) = {
            let mut memory = self.memory.borrow_mut();
            let state = memory.get_or_insert_with(UserState::default);
            let before = state.clone();
            let now = Date::now().as_millis();
            let decision = apply(state, now, &call);
            let persist =
                *state != before && should_write(&call, &decision, now, self.written_at.get());
            if persist {
                self.written_at.set(now);
            }
            let text = persist.then(|| serde_json::to_string(state).unwrap_or_default());
            (decision, text)
        };
        if let Some(text) = text {
            self.state
                .storage()
                .put_raw(KEY, JsValue::from_str(&text))
                .await?;
        }
        Response::from_json(&decision)
    }
}
