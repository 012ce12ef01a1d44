//! Resumable streams on the runtime: a request whose caller left hands its events to the user's
//! Durable Object ([`Handoff`]); a resume asks that object for them ([`open`]); the object keeps
//! them and feeds its readers ([`Streams`], in `UserLimiter`), and writes each stream that ended
//! to its storage so that a resume still finds it after the runtime evicted the object from
//! memory; its alarm deletes it after the window ([`Stored`]). The decisions are
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
use worker::js_sys::{Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Env, Headers, Request, Response, ResponseBody};

use super::now_ms;
use super::storage::Storage;
use super::stream::Sink;
use super::wake::sleep;
use crate::error::AppError;
use crate::log::Event;
use crate::resume::{query_param, Due, Lookup, Stored, Streams, STORED_CHUNK, STORED_PREFIX};

/// The binding of the users' objects.
const BINDING: &str = "LIMITER";
/// Tries of one batch before the handoff gives up (the stream can then not be resumed).
const HANDOFF_TRIES: u32 = 3;
/// Keys per storage call (the runtime takes at most 128).
const KEYS_PER_CALL: usize = 64;

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
            let sent = call(&self.env, &self.sub, &url, "POST", Some(bytes)).await;
            match sent {
                Ok(r) if r.status_code() == 200 => return true,
                // Refused as not following on: sending it again changes nothing.
                Ok(r) if r.status_code() == 409 => return false,
                _ => {
                    sleep(pause).await;
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
    method: &str,
    body: Option<&[u8]>,
) -> worker::Result<Response> {
    let stub = env.durable_object(BINDING)?.id_from_name(sub)?.get_stub()?;
    stub.fetch_with_request(super::new_request(url, method, None, body)?)
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
    match call(env, sub, &url, "GET", None).await {
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
#[derive(Clone)]
pub(crate) struct StreamHouse {
    state: Rc<RefCell<State>>,
    /// The object's own state: its storage.
    object: Rc<worker::State>,
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
    pub(crate) fn new(object: Rc<worker::State>) -> StreamHouse {
        StreamHouse {
            state: Rc::default(),
            object,
        }
    }

    fn storage(&self) -> worker::Result<Storage> {
        Storage::of(&self.object)
    }

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
                .await
        } else if path.starts_with("/open?") {
            let after = number(&url, "after");
            let wait = number(&url, "wait");
            let idle = number(&url, "idle").max(1);
            self.open(id, after, wait, idle, window).await
        } else {
            Response::error("no such call", 404)
        }
    }

    async fn append(
        &self,
        id: &str,
        bytes: &[u8],
        end: bool,
        window: u64,
    ) -> worker::Result<Response> {
        {
            let mut state = self.state.borrow_mut();
            let was_ended = state.streams.get(id).is_some_and(|e| e.ended);
            let appended = state.streams.append(id, bytes, end, now_ms(), window);
            let Ok(from) = appended else {
                return Response::error("does not follow on", 409);
            };
            state.batches += 1;
            for waker in std::mem::take(&mut state.arrivals) {
                waker.wake();
            }
            state.feed(id, from);
            if was_ended || !end {
                return Response::ok("");
            }
        }
        // Its last batch: kept in storage before the answer, so the handoff's end means stored.
        self.store(id, window).await;
        Response::ok("")
    }

    /// Writes an ended stream to storage (see [`Stored`]) and has the alarm delete it in time.
    /// A failure is logged: memory still holds the stream, for as long as the object lives.
    async fn store(&self, id: &str, window: u64) {
        let (bytes, updated_ms) = {
            let state = self.state.borrow();
            let Some(entry) = state.streams.get(id) else {
                return;
            };
            (entry.log.bytes_from(0).to_vec(), entry.updated_ms)
        };
        let stored = Stored::new(updated_ms, window, bytes.len());
        if let Err(e) = write_stored(&self.object, id, stored, &bytes).await {
            let event = Event::new("stream_store_failed").with_detail(&format!("{id}: {e}"));
            super::log_line(&event.to_line());
        }
    }

    /// A stream this object wrote to storage before it was evicted from memory: taken back
    /// into memory (or remembered as expired). Whether one was found.
    async fn restore(&self, id: &str) -> bool {
        let Ok(found) = read_stored(&self.object, id).await else {
            return false;
        };
        let Some((stored, bytes)) = found else {
            return false;
        };
        let mut state = self.state.borrow_mut();
        if state.streams.get(id).is_some() {
            return true; // handed over again while this read
        }
        state.streams.restore(id, stored, &bytes, now_ms()).is_ok()
    }

    /// The object's alarm: deletes the stored streams whose time is up, and sets itself again
    /// for the next one.
    pub(crate) async fn alarm(&self) -> worker::Result<()> {
        let storage = self.storage()?;
        let records = storage.list_prefix(STORED_PREFIX).await?;
        let now = now_ms();
        let mut next: Option<u64> = None;
        for entry in records.entries() {
            let Ok(pair) = entry.map(|e| e.unchecked_into::<worker::js_sys::Array>()) else {
                continue;
            };
            let (Some(key), Some(text)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
                continue;
            };
            let (Some(id), Some(stored)) = (Stored::id_of(&key), Stored::from_text(&text)) else {
                storage.delete(&key).await?;
                continue;
            };
            match stored.due(now) {
                Due::KeepUntil(at) => next = Some(next.map_or(at, |n| n.min(at))),
                Due::DropEvents(at) => {
                    // The chunks first: a record never names chunks that are gone while its
                    // window is open.
                    delete_chunks(&storage, id, stored.chunks).await?;
                    let dropped = Stored {
                        chunks: 0,
                        ..stored
                    };
                    storage.put_text(&key, &dropped.to_text()).await?;
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                Due::Forget => {
                    delete_chunks(&storage, id, stored.chunks).await?;
                    storage.delete(&key).await?;
                }
            }
        }
        if let Some(at) = next {
            storage
                .set_alarm(Duration::from_millis(at.saturating_sub(now).max(1)))
                .await?;
        }
        Ok(())
    }

    async fn open(
        &self,
        id: String,
        after: u64,
        wait: u64,
        idle: u64,
        window: u64,
    ) -> worker::Result<Response> {
        let deadline = now_ms().saturating_add(wait);
        let mut looked_in_storage = false;
        loop {
            let seen = {
                let mut state = self.state.borrow_mut();
                let answer = match state.streams.open(&id, after, now_ms(), window) {
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
                        Some(self.live(&mut state, &id, &bytes, idle, window))
                    }
                };
                if let Some(answer) = answer {
                    return answer;
                }
                state.batches
            };
            // Unknown here: the object may have stored it before it was evicted from memory.
            if !looked_in_storage {
                looked_in_storage = true;
                if self.restore(&id).await {
                    continue;
                }
            }
            let left = deadline.saturating_sub(now_ms());
            if left == 0 {
                return Response::error("not kept", 404);
            }
            let arrival = Arrival {
                house: self.clone(),
                seen,
            };
            let _ = select(arrival, sleep(Duration::from_millis(left))).await;
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
        window: u64,
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
                sleep(Duration::from_millis(idle)).await;
                {
                    let mut state = house.state.borrow_mut();
                    let Some(entry) = state.streams.get(&id) else {
                        state.readers.remove(&id);
                        return;
                    };
                    if entry.ended {
                        return;
                    }
                    if now_ms().saturating_sub(entry.updated_ms) < idle {
                        continue;
                    }
                    if let Some(from) = state.streams.cut(&id, now_ms()) {
                        state.feed(&id, from);
                    }
                }
                house.store(&id, window).await;
                return;
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

/// Writes a stream's chunks, then its record (a record always has its chunks), and sets the
/// object's alarm for it unless one is due sooner.
async fn write_stored(
    object: &worker::State,
    id: &str,
    stored: Stored,
    bytes: &[u8],
) -> worker::Result<()> {
    let storage = Storage::of(object)?;
    for (group, part) in bytes.chunks(STORED_CHUNK * KEYS_PER_CALL).enumerate() {
        let values = Object::new();
        for (i, chunk) in part.chunks(STORED_CHUNK).enumerate() {
            let key = Stored::chunk_key(id, group * KEYS_PER_CALL + i);
            Reflect::set(&values, &key.into(), &Uint8Array::from(chunk).into())?;
        }
        storage.put_all(values).await?;
    }
    storage
        .put_text(&Stored::key(id), &stored.to_text())
        .await?;
    let now = now_ms();
    let at = match stored.due(now) {
        Due::KeepUntil(at) | Due::DropEvents(at) => at,
        Due::Forget => now,
    };
    let sooner = storage.alarm().await?.is_some_and(|set| set <= at as f64);
    if !sooner {
        storage
            .set_alarm(Duration::from_millis(at.saturating_sub(now).max(1)))
            .await?;
    }
    Ok(())
}

/// Deletes a stored stream's chunks.
async fn delete_chunks(storage: &Storage, id: &str, chunks: usize) -> worker::Result<()> {
    for group in Stored::chunk_keys(id, chunks).chunks(KEYS_PER_CALL) {
        storage.delete_all(group).await?;
    }
    Ok(())
}

/// A stored stream: its record and its events, joined (`None` when there is no record; a
/// record past its window comes without its events).
async fn read_stored(
    object: &worker::State,
    id: &str,
) -> worker::Result<Option<(Stored, Vec<u8>)>> {
    let storage = Storage::of(object)?;
    let record = storage.get_text(&Stored::key(id)).await?;
    let Some(stored) = record.as_deref().and_then(Stored::from_text) else {
        return Ok(None);
    };
    if !stored.resumable(now_ms()) {
        return Ok(Some((stored, Vec::new())));
    }
    let mut bytes = Vec::new();
    for group in Stored::chunk_keys(id, stored.chunks).chunks(KEYS_PER_CALL) {
        let chunks = storage.get_all(group).await?;
        for key in group {
            let value = chunks.get(&JsValue::from_str(key));
            let Some(chunk) = value.dyn_ref::<Uint8Array>() else {
                return Err(worker::Error::RustError(format!("{key} is missing")));
            };
            bytes.extend_from_slice(&chunk.to_vec());
        }
    }
    Ok(Some((stored, bytes)))
}

/// Resolves when a batch has come since `seen`.
struct Arrival {
    house: StreamHouse,
    seen: u64,
}

impl Future for Arrival {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.house.state.borrow_mut();
        if state.batches != self.seen {
            return Poll::Ready(());
        }
        state.arrivals.push(cx.waker().clone());
        Poll::Pending
    }
}
