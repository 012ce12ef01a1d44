//! `UserLimiter`: the Durable Object that will hold one user's rate limits, token budget and
//! open streams (one object per `sub`, bound as `LIMITER`).
//!
//! This step only declares it, because wrangler refuses a `[[durable_objects.bindings]]` whose
//! class the Worker does not export. It answers a JSON status so the binding can be checked end
//! to end; the next step (plans and limits) fills in admit/settle.

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

#[durable_object]
pub struct UserLimiter {
    state: State,
}

impl DurableObject for UserLimiter {
    fn new(state: State, _env: Env) -> Self {
        UserLimiter { state }
    }

    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::from_json(&serde_json::json!({
            "object": "limiter",
            "id": self.state.id().to_string(),
            "limits": "not enforced yet",
        }))
    }
}
