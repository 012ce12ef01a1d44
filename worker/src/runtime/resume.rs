//! Resumable streams on the runtime: a request whose caller left hands its events to the user's
//! Durable Object ([`Handoff`]); a resume asks that object for them ([`open`]); the object keeps
//! them and feeds its readers ([`Streams`], in `UserLimiter`). The decisions are
//! [`crate::resume`]'s.
//!
//! The object's calls (all `POST`/`GET` to `https://streams/...` on the `LIMITER` stub):
//! - `POST /append?id=&end=0|1&window=<ms>`: a batch of numbered events (200; 409 when it does
//!   not follow on from what the object holds).
//! - `GET /open?id=&after=<n>&wait=<ms>&idle=<ms>&window=<ms>`: the events after `n` and then
//!   the rest as batches come (200, `text/event-stream`); a stream not handed over yet is
//!   waited for up to `wait`; 404 when it is not kept. A live stream whose batches stop for
//!   `idle` is closed with an error event.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::select;
use worker::js_sys::Uint8Array;
use worker::{Date, Delay, Env, Headers, Method, Request, RequestInit, Response, ResponseBody};

use super::stream::Sink;
use crate::error::AppError;
use crate::resume::{query_param, Lookup, Streams};

/// The binding of the users' objects.
const BINDING: &str = "LIMITER";
/// Tries of one batch before the handoff gives up (the stream can then not be resumed).
const HANDOFF_TRIES: u32 = 3;

/// A stream's way into its user's object.
#[derive(Clone)]
pub(crate) struct Handoff {
    env: Env,
    sub: String,
    id: String,
    window_ms: u64,
}

impl Handoff {
    pub(crate) fn new(env: &Env, sub: &str, id: &str, window_ms: u64) -> Handoff {
        Handoff {
            env: env.clone(),
            sub: sub.to_owned(),
            id: id.to_owned(),
            window_ms,
        }
    }

    /// The stream's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Sends one batch (tried again after a failure); whether the object holds it.
    pub(crate) async fn send(&self, bytes: &[u8], end: bool) -> bool {
        let url = format!(
            "https://streams/append?id={}&end={}&window={}",
            self.id,
            u8::from(end),
            self.window_ms
        );
        let mut pause = Duration::from_millis(50);
        for _ in 0..HANDOFF_TRIES {
            let sent = call(&self.env, &self.sub, &url, Method::Post, Some(bytes)).await;
            match sent {
                Ok(r) if r.status_code() == 200 => return true,
                // Refused as not following on: sending it again changes nothing.
                Ok(r) if r.status_code() == 409 => return false,
                _ => {
                    Delay::from(pause).await;
                    pause *= 2;
                }
            }
        }
        false
    }
}

/// One call to the user's object.
async fn call(
    env: &Env,
    sub: &str,
    url: &str,
    method: Method,
    body: Option<&[u8]>,
) -> worker::Result<Response> {
    let stub = env.durable_object(BINDING)?.id_from_name(sub)?.get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(method);
    if let Some(bytes) = body {
        init.with_body(Some(Uint8Array::from(bytes).into()));
    }
    stub.fetch_with_request(Request::new_with_init(url, &init)?)
        .await
}

/// A resume: the object's answer (its event stream), or why there is none.
pub(crate) async fn open(
    env: &Env,
    sub: &str,
    id: &str,
    after: u64,
    wait_ms: u64,
    idle_ms: u64,
    window_ms: u64,
) -> Result<Response, AppError> {
    let url = format!(
        "https://streams/open?id={id}&after={after}&wait={wait_ms}&idle={idle_ms}&window={window_ms}"
    );
    match call(env, sub, &url, Method::Get, None).await {
        Ok(r) if r.status_code() == 200 => Ok(r),
        Ok(r) if r.status_code() == 404 => Err(AppError::StreamExpired),
        _ => Err(AppError::LimiterUnavailable),
    }
}

/// The object's streams and who reads them.
#[derive(Default)]
struct State {
    streams: Streams,
    /// The bodies of the resumes reading a stream as it comes.
    readers: HashMap<String, Vec<Sink>>,
    /// Resumes waiting for their stream to be handed over, woken by any batch.
    arrivals: Vec<Waker>,
    /// Counts batches: a waiting resume looks again when it moved.
    batches: u64,
}

/// The streams part of a user's object.
#[derive(Clone, Default)]
pub(crate) struct StreamHouse(Rc<RefCell<State>>);

fn now() -> u64 {
    Date::now().as_millis()
}

fn number(url: &str, name: &str) -> u64 {
    query_param(url, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sse(body: Response) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream; charset=utf-8")?;
    headers.set("cache-control", "no-cache")?;
    Ok(body.with_headers(headers))
}

impl StreamHouse {
    /// Whether a call to the object (its URL) is a streams call.
    pub(crate) fn handles(url: &str) -> bool {
        url.starts_with("https://streams/")
    }

    pub(crate) async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let url = req.inner().url();
        let Some(id) = query_param(&url, "id").map(str::to_owned) else {
            return Response::error("no id", 400);
        };
        let window = number(&url, "window");
        let path = url.trim_start_matches("https://streams");
        if path.starts_with("/append?") {
            let bytes = req.bytes().await?;
            self.append(&id, &bytes, number(&url, "end") == 1, window)
        } else if path.starts_with("/open?") {
            let after = number(&url, "after");
            let wait = number(&url, "wait");
            let idle = number(&url, "idle").max(1);
            self.open(id, after, wait, idle, window).await
        } else {
            Response::error("no such call", 404)
        }
    }

    fn append(&self, id: &str, bytes: &[u8], end: bool, window: u64) -> worker::Result<Response> {
        let mut state = self.0.borrow_mut();
        let appended = state.streams.append(id, bytes, end, now(), window);
        let Ok(from) = appended else {
            return Response::error("does not follow on", 409);
        };
        state.batches += 1;
        for waker in std::mem::take(&mut state.arrivals) {
            waker.wake();
        }
        state.feed(id, from);
        Response::ok("")
    }

    async fn open(
        &self,
        id: String,
        after: u64,
        wait: u64,
        idle: u64,
        window: u64,
    ) -> worker::Result<Response> {
        let deadline = now().saturating_add(wait);
        loop {
            let seen = {
                let mut state = self.0.borrow_mut();
                let answer = match state.streams.open(&id, after, now(), window) {
                    Lookup::Unknown => None,
                    Lookup::Expired | Lookup::Gap => Some(Response::error("not kept", 404)),
                    Lookup::Events { bytes, ended: true } => {
                        Some(Response::from_bytes(bytes.to_vec()).and_then(sse))
                    }
                    Lookup::Events {
                        bytes,
                        ended: false,
                    } => {
                        let bytes = bytes.to_vec();
                        Some(self.live(&mut state, &id, &bytes, idle))
                    }
                };
                if let Some(answer) = answer {
                    return answer;
                }
                state.batches
            };
            let left = deadline.saturating_sub(now());
            if left == 0 {
                return Response::error("not kept", 404);
            }
            let arrival = Arrival {
                house: self.clone(),
                seen,
            };
            let _ = select(arrival, Delay::from(Duration::from_millis(left))).await;
        }
    }

    /// A resume of a stream still coming: what is kept now, then each batch as it comes; a
    /// watch closes the stream with an error event if its batches stop for `idle` (the request
    /// feeding it was ended by the platform).
    fn live(
        &self,
        state: &mut State,
        id: &str,
        bytes: &[u8],
        idle: u64,
    ) -> worker::Result<Response> {
        let (mut sink, body) = Sink::new().map_err(worker::Error::from)?;
        if !bytes.is_empty() {
            sink.write(bytes);
        }
        state.readers.entry(id.to_owned()).or_default().push(sink);
        let house = self.clone();
        let id = id.to_owned();
        worker::wasm_bindgen_futures::spawn_local(async move {
            loop {
                Delay::from(Duration::from_millis(idle)).await;
                let mut state = house.0.borrow_mut();
                let Some(entry) = state.streams.get(&id) else {
                    state.readers.remove(&id);
                    return;
                };
                if entry.ended {
                    return;
                }
                if now().saturating_sub(entry.updated_ms) >= idle {
                    if let Some(from) = state.streams.cut(&id, now()) {
                        state.feed(&id, from);
                    }
                    return;
                }
            }
        });
        Response::from_body(ResponseBody::Stream(body)).and_then(sse)
    }
}

impl State {
    /// Hands what is new in `id`'s log (from `from`) to its readers; closes them at the end.
    fn feed(&mut self, id: &str, from: usize) {
        let Some(entry) = self.streams.get(id) else {
            return;
        };
        let bytes = entry.log.bytes_from(from);
        let ended = entry.ended;
        let Some(readers) = self.readers.get_mut(id) else {
            return;
        };
        if !bytes.is_empty() {
            for sink in readers.iter_mut() {
                sink.write(bytes);
            }
        }
        if ended {
            // Dropping a sink closes its body.
            self.readers.remove(id);
        }
    }
}

/// Resolves when a batch has come since `seen`.
struct Arrival {
    house: StreamHouse,
    seen: u64,
}

impl Future for Arrival {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.house.0.borrow_mut();
        if state.batches != self.seen {
            return Poll::Ready(());
        }
        state.arrivals.push(cx.waker().clone());
        Poll::Pending
    }
}
