//! `UserLimiter`: the Durable Object holding one user's limits (one object per `sub`, bound as
//! `LIMITER`). The runtime delivers its calls one at a time, and each decision is made in memory
//! without an `await` between the check and the update, so admission is exact however many
//! requests of one user arrive at once.
//!
//! State lives in memory (loaded from storage by the first call after the object starts) and in
//! storage, so a restarted object goes on where it stopped. Decisions use the memory copy. The
//! state is written when a request settles (the settle runs after the caller's answer, in
//! `wait_until`), not when one is admitted: the write cost about 2 ms of the admission's 4 under
//! workerd, and admission is on every request's path. Each write holds everything since the last
//! one, and an object is only evicted when idle (everything settled, so written); a crash with
//! requests in flight forgets their admissions (at most that many requests not counted).

use std::cell::RefCell;

use worker::wasm_bindgen::JsValue;
use worker::{durable_object, Date, DurableObject, Env, Request, Response, Result, State};

use super::{apply, Call, UserState};

/// The storage key of the state (JSON text).
const KEY: &str = "state";

#[durable_object]
pub struct UserLimiter {
    state: State,
    memory: RefCell<Option<UserState>>,
}

impl DurableObject for UserLimiter {
    fn new(state: State, _env: Env) -> Self {
        UserLimiter {
            state,
            memory: RefCell::new(None),
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
            let decision = apply(state, Date::now().as_millis(), &call);
            let persist = matches!(call, Call::Settle { .. }) && *state != before;
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
