//! A tiny JWKS endpoint on 127.0.0.1 for the Worker's `JWT_JWKS_URL`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    http::{After, Conn, Request},
    server::Background,
};

/// The path it serves the JWKS on.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

struct State {
    jwks: Mutex<Value>,
    hits: AtomicUsize,
    last_hit: Mutex<Option<Instant>>,
    delay: Mutex<Duration>,
}

/// Serves `GET /.well-known/jwks.json` (anything else is 404) and counts the fetches.
pub struct JwksServer {
    server: Background,
    state: Arc<State>,
}

impl JwksServer {
    /// Starts one on a free port serving `jwks`.
    pub fn start(jwks: Value) -> std::io::Result<JwksServer> {
        let state = Arc::new(State {
            jwks: Mutex::new(jwks),
            hits: AtomicUsize::new(0),
            last_hit: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
        });
        let server = Background::start(0, "jwks-server", state.clone(), handle)?;
        Ok(JwksServer { server, state })
    }

    /// The JWKS URL, for `JWT_JWKS_URL`.
    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.server.addr())
    }

    /// Serves `jwks` from now on (key rotation).
    pub fn set(&self, jwks: Value) {
        *self
            .state
            .jwks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = jwks;
    }

    /// Answers each fetch `delay` late from now on (an issuer that is slow to answer).
    pub fn set_delay(&self, delay: Duration) {
        *self
            .state
            .delay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = delay;
    }

    /// When the JWKS was last fetched.
    pub fn last_hit(&self) -> Option<Instant> {
        *self
            .state
            .last_hit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many times the JWKS was fetched.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for JwksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksServer")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

async fn handle(state: Arc<State>, req: Request, mut conn: Conn) -> (Conn, After) {
    let (status, body) = if req.method == "GET" && req.path == JWKS_PATH {
        state.hits.fetch_add(1, Ordering::SeqCst);
        *state
            .last_hit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let jwks = state
            .jwks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .to_string();
        let delay = *state
            .delay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio::time::sleep(delay).await;
        (200, jwks)
    } else {
        (404, "{\"error\":\"not found\"}".to_owned())
    };
    let headers = [("content-type", "application/json".to_owned())];
    match conn.respond(status, &headers, body.as_bytes()).await {
        Ok(()) => (conn, After::KeepAlive),
        Err(_) => (conn, After::Close),
    }
}
