//! Resumable streams: the ids, the numbered event log and the Durable Object's store, on the
//! host.
//!
//! A streamed answer gets an id ([`stream_id`], sent as `x-storycad-stream-id`) and its events
//! SSE ids, 1, 2, 3... ([`EventLog::number`]). While its caller reads it to the end nothing
//! else happens: the events are kept in the request's memory only, and dropped with it. When
//! the caller goes away first, the request keeps reading the provider and hands the events,
//! from the first it kept, to the user's Durable Object ([`Streams`]), which keeps them for the
//! window after the last one and answers `GET /v1/chat/completions/streams/{id}` with
//! `Last-Event-ID: n`: the events after `n`, then the rest as it comes.
//!
//! The object is the user's own (one per `sub`), so another user's resume never finds the
//! stream; the id's tag ([`belongs_to`]) lets the Worker refuse it without asking the object.

use std::collections::HashMap;
use std::io::Write as _;

use sha2::{Digest, Sha256};
use storycad_protocol::{codes, ErrorBody};

/// `RESUME_WINDOW_SECONDS` when unset.
pub const DEFAULT_WINDOW_SECONDS: u64 = 300;
/// Most bytes of events a stream keeps; beyond, the oldest go (a resume from before what is
/// kept is refused rather than answered with a hole).
pub const MAX_KEPT_BYTES: usize = 4 << 20;
/// Longest stream id accepted on a resume.
const MAX_ID_LEN: usize = 64;

/// A new stream's id: `<start ms, hex>-<random, 16 hex>-<tag of the user, 16 hex>`.
pub fn stream_id(sub: &str, started_ms: u64, random: u64) -> String {
    let head = format!("{started_ms:x}-{random:016x}");
    let tag = tag(sub, &head);
    format!("{head}-{tag}")
}

/// Whether `id` is a stream id made for `sub` (well formed, and tagged for that user).
pub fn belongs_to(id: &str, sub: &str) -> bool {
    if id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return false;
    }
    match id.rsplit_once('-') {
        Some((head, tag_part)) => head.contains('-') && tag(sub, head) == tag_part,
        None => false,
    }
}

fn tag(sub: &str, head: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"storycad-stream\0");
    hash.update(sub.as_bytes());
    hash.update(b"\0");
    hash.update(head.as_bytes());
    let mut id = String::with_capacity(16);
    crate::push_hex(&mut id, &hash.finalize()[..8]);
    id
}

/// `Last-Event-ID`: a whole number (absent means 0: from the first event).
pub fn last_event_id(header: Option<&str>) -> Option<u64> {
    match header.map(str::trim) {
        None | Some("") => Some(0),
        Some(text) => text.parse().ok(),
    }
}

/// The value of `name` in a URL's query (the object's calls carry ids and numbers only: no
/// percent-decoding).
pub fn query_param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why events could not be kept or answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogError {
    /// The events asked for, or handed over, do not follow on from what is kept.
    Gap,
    /// Handed-over bytes that are not numbered events.
    Malformed,
}

/// A stream's events, numbered, in the order sent: the bytes as the caller got them and where
/// each event starts.
#[derive(Debug, Clone)]
pub struct EventLog {
    bytes: Vec<u8>,
    /// Where each kept event starts in `bytes`.
    starts: Vec<usize>,
    /// The first kept event's number.
    first: u64,
    /// The next event's number.
    next: u64,
    max: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(MAX_KEPT_BYTES)
    }
}

impl EventLog {
    /// An empty log keeping at most about `max` bytes.
    pub fn new(max: usize) -> Self {
        EventLog {
            bytes: Vec::new(),
            starts: Vec::new(),
            first: 1,
            next: 1,
            max,
        }
    }

    /// The last event's number (0 before the first).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// The first kept event's number.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Nothing kept.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Numbers the complete events of a relay's output (`data: ...\n\n` each), keeps them, and
    /// returns them as the caller gets them (`id: n\n` before each).
    pub fn number(&mut self, out: &[u8]) -> Vec<u8> {
        let mut numbered = Vec::with_capacity(out.len() + 16);
        let mut rest = out;
        while let Some(end) = event_end(rest) {
            let (event, tail) = rest.split_at(end);
            self.starts.push(self.bytes.len() + numbered.len());
            // Into the Vec directly: no String per event.
            let _ = writeln!(numbered, "id: {}", self.next);
            numbered.extend_from_slice(event);
            self.next += 1;
            rest = tail;
        }
        // Relays write whole events; anything else goes out as it is, unnumbered.
        numbered.extend_from_slice(rest);
        self.bytes.extend_from_slice(&numbered);
        self.trim();
        numbered
    }

    /// Keeps events numbered elsewhere (`id: n\n...\n\n` each), skipping those already kept; a
    /// log that holds nothing yet starts at the first one's number. Returns where the new bytes
    /// start in [`EventLog::bytes_from`] terms (the offset before them).
    pub fn append_numbered(&mut self, bytes: &[u8]) -> Result<usize, LogError> {
        // Checked whole first: a bad batch changes nothing.
        let mut events = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let end = event_end(rest).ok_or(LogError::Malformed)?;
            let (event, tail) = rest.split_at(end);
            events.push((event_number(event).ok_or(LogError::Malformed)?, event));
            rest = tail;
        }
        let mut expect = if self.starts.is_empty() && self.first == self.next {
            events.first().map_or(self.next, |(n, _)| *n)
        } else {
            self.next
        };
        for (n, _) in &events {
            if *n > expect {
                return Err(LogError::Gap);
            }
            expect = expect.max(n + 1);
        }
        if self.starts.is_empty() && self.first == self.next {
            if let Some((n, _)) = events.first() {
                self.first = *n;
                self.next = *n;
            }
        }
        let from = self.bytes.len();
        for (n, event) in events {
            if n == self.next {
                self.starts.push(self.bytes.len());
                self.bytes.extend_from_slice(event);
                self.next += 1;
            }
        }
        let dropped = self.trim();
        Ok(from.saturating_sub(dropped))
    }

    /// The kept bytes from `offset` on (as returned by [`EventLog::append_numbered`]).
    pub fn bytes_from(&self, offset: usize) -> &[u8] {
        self.bytes.get(offset..).unwrap_or_default()
    }

    /// The events after number `n`: empty when there are none yet; a gap when some of them are
    /// no longer kept.
    pub fn after(&self, n: u64) -> Result<&[u8], LogError> {
        if n >= self.last() {
            return Ok(&[]);
        }
        if n + 1 < self.first {
            return Err(LogError::Gap);
        }
        let index = usize::try_from(n + 1 - self.first).map_err(|_| LogError::Gap)?;
        let start = self.starts.get(index).copied().ok_or(LogError::Gap)?;
        Ok(&self.bytes[start..])
    }

    /// Adds the closing error event (the stream was cut and nobody will finish it).
    pub fn close_with_error(&mut self, message: &str) -> usize {
        let body = ErrorBody::new(codes::SERVER, codes::STREAM_TRUNCATED, message);
        let json = serde_json::to_string(&body).unwrap_or_default();
        let numbered = self.number(format!("data: {json}\n\n").as_bytes());
        self.bytes.len().saturating_sub(numbered.len())
    }

    /// Drops the oldest events while over the limit (always keeping the last); returns the
    /// bytes dropped.
    fn trim(&mut self) -> usize {
        if self.bytes.len() <= self.max || self.starts.len() < 2 {
            return 0;
        }
        // Down to three quarters, so a long stream trims now and then, not on every event.
        let goal = self.bytes.len() - self.max * 3 / 4;
        let keep_from = self
            .starts
            .iter()
            .position(|s| *s >= goal)
            .unwrap_or(self.starts.len() - 1)
            .min(self.starts.len() - 1);
        let cut = self.starts[keep_from];
        self.bytes.drain(..cut);
        self.starts.drain(..keep_from);
        for s in &mut self.starts {
            *s -= cut;
        }
        self.first += keep_from as u64;
        cut
    }
}

/// Where the event at the start of `bytes` ends (after its blank line).
fn event_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The number in an event's leading `id: n` line.
fn event_number(event: &[u8]) -> Option<u64> {
    let rest = event.strip_prefix(b"id: ")?;
    let line = &rest[..rest.iter().position(|b| *b == b'\n')?];
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// One handed-over stream in the object.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// Its events.
    pub log: EventLog,
    /// Its last event came (`[DONE]` or an error event): nothing more will.
    pub ended: bool,
    /// When the last batch came.
    pub updated_ms: u64,
}

/// What a resume finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Never handed over here (yet).
    Unknown,
    /// Handed over, and its window has passed.
    Expired,
    /// Some of the events asked for are no longer kept.
    Gap,
    /// The events after the one asked for, and whether the stream has ended.
    Events {
        /// The bytes to send.
        bytes: &'a [u8],
        /// Nothing will follow them.
        ended: bool,
    },
}

/// The handed-over streams of one user (the Durable Object's memory).
#[derive(Debug, Default)]
pub struct Streams {
    entries: HashMap<String, Entry>,
    /// Streams whose window passed, until twice the window: their resumes are answered at
    /// once.
    expired: HashMap<String, u64>,
}

impl Streams {
    /// Keeps a batch of a stream's events (creating the stream); returns the offset of what is
    /// new in its log. `end` marks its last batch.
    pub fn append(
        &mut self,
        id: &str,
        bytes: &[u8],
        end: bool,
        now: u64,
        window_ms: u64,
    ) -> Result<usize, LogError> {
        self.sweep(now, window_ms);
        let entry = self.entries.entry(id.to_owned()).or_default();
        if entry.ended {
            return Ok(entry.log.len());
        }
        let from = entry.log.append_numbered(bytes)?;
        entry.updated_ms = now;
        entry.ended = end;
        Ok(from)
    }

    /// The stream `id`, after event `n`.
    pub fn open(&mut self, id: &str, n: u64, now: u64, window_ms: u64) -> Lookup<'_> {
        self.sweep(now, window_ms);
        if self.expired.contains_key(id) {
            return Lookup::Expired;
        }
        match self.entries.get(id) {
            None => Lookup::Unknown,
            Some(entry) => match entry.log.after(n) {
                Ok(bytes) => Lookup::Events {
                    bytes,
                    ended: entry.ended,
                },
                Err(_) => Lookup::Gap,
            },
        }
    }

    /// The stream `id`, if kept.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Ends a stream whose batches stopped coming (the request feeding it was ended by the
    /// platform): an error event closes it. Returns the offset of that event.
    pub fn cut(&mut self, id: &str, now: u64) -> Option<usize> {
        let entry = self.entries.get_mut(id).filter(|e| !e.ended)?;
        entry.ended = true;
        entry.updated_ms = now;
        Some(
            entry
                .log
                .close_with_error("The stream stopped before its end while nobody was connected."),
        )
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No stream held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets what is past its window.
    fn sweep(&mut self, now: u64, window_ms: u64) {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.updated_ms) > window_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.entries.remove(&id);
            self.expired.insert(id, now + window_ms);
        }
        self.expired.retain(|_, until| *until >= now);
    }
}

/// A stream kept in the object's storage once it ended, so that a resume finds it for the
/// whole window even if the runtime evicted the object from memory meanwhile (it does so some
/// time after the last call). One record per stream, under [`Stored::key`]: when it was last
/// fed, its window and how many chunks of events it has (under [`Stored::chunk_key`], at most
/// [`STORED_CHUNK`] bytes each: a storage value's limit is 128 KiB). At the window's end the
/// chunks are deleted and the record kept with no chunks for one more window, so a late resume
/// is refused at once, as from memory; then the record goes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// When the stream's last batch came.
    pub updated_ms: u64,
    /// Its window.
    pub window_ms: u64,
    /// Chunks of its events (0 once its window passed).
    pub chunks: usize,
}

/// Most bytes in one stored chunk of a stream's events.
pub const STORED_CHUNK: usize = 128 * 1024 - 1024;
// Under the storage's limit for one value.
const _: () = assert!(STORED_CHUNK < 128 * 1024);

/// What to do with a stored stream at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Keep it; look again then.
    KeepUntil(u64),
    /// Its window passed: delete its chunks, keep the record without them until then.
    DropEvents(u64),
    /// Past twice its window: delete the record.
    Forget,
}

impl Stored {
    /// The record's key.
    pub fn key(id: &str) -> String {
        format!("{STORED_PREFIX}{id}")
    }

    /// A chunk's key.
    pub fn chunk_key(id: &str, index: usize) -> String {
        format!("stream-events/{id}/{index}")
    }

    /// The keys of a stream's first `chunks` chunks.
    pub fn chunk_keys(id: &str, chunks: usize) -> Vec<String> {
        (0..chunks).map(|i| Stored::chunk_key(id, i)).collect()
    }

    /// The stream's id, from a record's key.
    pub fn id_of(key: &str) -> Option<&str> {
        key.strip_prefix(STORED_PREFIX)
    }

    /// The record for `bytes` of events.
    pub fn new(updated_ms: u64, window_ms: u64, bytes: usize) -> Stored {
        Stored {
            updated_ms,
            window_ms,
            chunks: bytes.div_ceil(STORED_CHUNK),
        }
    }

    /// The record as stored: `<updated ms> <window ms> <chunks>`.
    pub fn to_text(self) -> String {
        format!("{} {} {}", self.updated_ms, self.window_ms, self.chunks)
    }

    /// A record read back (`None` if it is not one).
    pub fn from_text(text: &str) -> Option<Stored> {
        let mut parts = text.split(' ');
        let mut next = || parts.next()?.parse::<u64>().ok();
        let stored = Stored {
            updated_ms: next()?,
            window_ms: next()?,
            chunks: usize::try_from(next()?).ok()?,
        };
        parts.next().is_none().then_some(stored)
    }

    /// Whether its events may still be resumed at `now`.
    pub fn resumable(&self, now: u64) -> bool {
        self.chunks > 0 && now.saturating_sub(self.updated_ms) <= self.window_ms
    }

    /// Until when the stream is remembered as expired once its window passed: a second window.
    pub fn forget_at(&self) -> u64 {
        self.updated_ms
            .saturating_add(self.window_ms)
            .saturating_add(self.window_ms)
    }

    /// What is due at `now`.
    pub fn due(&self, now: u64) -> Due {
        let window_end = self.updated_ms.saturating_add(self.window_ms);
        let forget_at = self.forget_at();
        if now > forget_at {
            Due::Forget
        } else if now > window_end && self.chunks > 0 {
            Due::DropEvents(forget_at.saturating_add(1))
        } else if now > window_end {
            Due::KeepUntil(forget_at.saturating_add(1))
        } else {
            Due::KeepUntil(window_end.saturating_add(1))
        }
    }
}

/// The prefix of the stored streams' records (listed by the object's alarm).
pub const STORED_PREFIX: &str = "stream/";

impl Streams {
    /// Takes back a stream read from storage (its events, whole, as [`EventLog::bytes_from`]
    /// gave them): ended, last fed at `stored.updated_ms`. A stream past its window is
    /// remembered as expired instead.
    pub fn restore(
        &mut self,
        id: &str,
        stored: Stored,
        bytes: &[u8],
        now: u64,
    ) -> Result<(), LogError> {
        if !stored.resumable(now) {
            self.expired.insert(id.to_owned(), stored.forget_at());
            return Ok(());
        }
        let mut log = EventLog::default();
        log.append_numbered(bytes)?;
        self.entries.insert(
            id.to_owned(),
            Entry {
                log,
                ended: true,
                updated_ms: stored.updated_ms,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_stream_reads_back_as_it_was() {
        let mut held = Streams::default();
        held.append("s", &events(3..=9), true, 1_000, 60_000)
            .unwrap();
        let kept = held.get("s").unwrap();
        let bytes = kept.log.bytes_from(0).to_vec();
        let stored = Stored::new(kept.updated_ms, 60_000, bytes.len());
        assert_eq!(stored.chunks, 1);
        let text = stored.to_text();
        assert_eq!(Stored::from_text(&text), Some(stored));
        // Split as stored, joined as read.
        let joined: Vec<u8> = bytes.chunks(STORED_CHUNK).flatten().copied().collect();
        let mut restored = Streams::default();
        restored.restore("s", stored, &joined, 30_000).unwrap();
        for n in [0, 2, 5, 9] {
            assert_eq!(
                restored.open("s", n, 30_000, 60_000),
                held.open("s", n, 30_000, 60_000),
                "{n}"
            );
        }
        assert!(matches!(
            restored.open("s", 4, 30_000, 60_000),
            Lookup::Events { ended: true, .. }
        ));
    }

    #[test]
    fn a_stored_stream_past_its_window_is_expired_at_once() {
        let stored = Stored::new(1_000, 60_000, 10);
        let mut streams = Streams::default();
        streams.restore("s", stored, b"not read", 61_001).unwrap();
        assert_eq!(streams.open("s", 0, 61_001, 60_000), Lookup::Expired);
        let dropped = Stored {
            chunks: 0,
            ..stored
        };
        let mut streams = Streams::default();
        streams.restore("s", dropped, b"", 2_000).unwrap();
        assert_eq!(streams.open("s", 0, 2_000, 60_000), Lookup::Expired);
        // A broken record is refused, not half taken.
        let mut streams = Streams::default();
        assert_eq!(
            streams.restore("s", stored, b"id: 1\ndata: x", 2_000),
            Err(LogError::Malformed)
        );
        assert_eq!(streams.open("s", 0, 2_000, 60_000), Lookup::Unknown);
    }

    #[test]
    fn stored_records_parse_strictly() {
        for text in ["", "1 2", "1 2 3 4", "a 2 3", "1 2 -3", "1  2 3", " 1 2 3"] {
            assert_eq!(Stored::from_text(text), None, "{text:?}");
        }
        assert_eq!(
            Stored::from_text("5 6 7"),
            Some(Stored {
                updated_ms: 5,
                window_ms: 6,
                chunks: 7
            })
        );
        assert_eq!(Stored::new(0, 0, 0).chunks, 0);
        assert_eq!(Stored::new(0, 0, STORED_CHUNK).chunks, 1);
        assert_eq!(Stored::new(0, 0, STORED_CHUNK + 1).chunks, 2);
        assert_eq!(Stored::new(0, 0, MAX_KEPT_BYTES + STORED_CHUNK).chunks, 34);
        assert_eq!(Stored::id_of(&Stored::key("a-b")), Some("a-b"));
        assert_eq!(Stored::id_of("state"), None);
    }

    #[test]
    fn stored_streams_fall_due_in_two_steps() {
        let stored = Stored::new(1_000, 100, 1);
        assert_eq!(stored.due(1_000), Due::KeepUntil(1_101));
        assert_eq!(stored.due(1_100), Due::KeepUntil(1_101));
        assert!(stored.resumable(1_100));
        assert!(!stored.resumable(1_101));
        assert_eq!(stored.due(1_101), Due::DropEvents(1_201));
        let dropped = Stored {
            chunks: 0,
            ..stored
        };
        assert_eq!(dropped.due(1_101), Due::KeepUntil(1_201));
        assert_eq!(dropped.due(1_200), Due::KeepUntil(1_201));
        assert_eq!(dropped.due(1_201), Due::Forget);
        assert_eq!(stored.due(5_000), Due::Forget);
        assert_eq!(
            Stored::new(u64::MAX - 1, u64::MAX, 1).due(0),
            Due::KeepUntil(u64::MAX)
        );
    }

    fn events(range: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for n in range {
            out.extend_from_slice(format!("id: {n}\ndata: {{\"n\":{n}}}\n\n").as_bytes());
        }
        out
    }

    #[test]
    fn ids_belong_to_their_user_only() {
        let id = stream_id("alice", 1_700_000_000_000, 42);
        assert!(id.len() <= MAX_ID_LEN, "{id}");
        assert!(belongs_to(&id, "alice"));
        assert!(!belongs_to(&id, "bob"));
        assert!(!belongs_to(&id.replace('-', "_"), "alice"));
        assert!(!belongs_to("", "alice"));
        assert!(!belongs_to("abc", "alice"));
        assert!(!belongs_to(&format!("{id}0"), "alice"));
        assert!(!belongs_to(&"a".repeat(500), "alice"));
        assert_ne!(id, stream_id("alice", 1_700_000_000_000, 43));
    }

    #[test]
    fn query_params() {
        let url = "https://streams/open?id=a-b&after=7&wait=&x";
        assert_eq!(query_param(url, "id"), Some("a-b"));
        assert_eq!(query_param(url, "after"), Some("7"));
        assert_eq!(query_param(url, "wait"), Some(""));
        assert_eq!(query_param(url, "x"), None);
        assert_eq!(query_param(url, "missing"), None);
        assert_eq!(query_param("https://streams/open", "id"), None);
        assert_eq!(query_param("https://s/?id=1#id=2", "id"), Some("1"));
    }

    #[test]
    fn last_event_id_is_a_number_or_absent() {
        assert_eq!(last_event_id(None), Some(0));
        assert_eq!(last_event_id(Some(" 7 ")), Some(7));
        assert_eq!(last_event_id(Some("")), Some(0));
        assert_eq!(last_event_id(Some("-1")), None);
        assert_eq!(last_event_id(Some("x")), None);
    }

    #[test]
    fn events_are_numbered_across_pieces() {
        let mut log = EventLog::default();
        let a = log.number(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
        let b = log.number(b"");
        let c = log.number(b"data: [DONE]\n\n");
        assert_eq!(
            String::from_utf8(a).unwrap(),
            "id: 1\ndata: {\"a\":1}\n\nid: 2\ndata: {\"b\":2}\n\n"
        );
        assert!(b.is_empty());
        assert_eq!(String::from_utf8(c).unwrap(), "id: 3\ndata: [DONE]\n\n");
        assert_eq!(log.last(), 3);
        assert_eq!(
            log.after(1).unwrap(),
            b"id: 2\ndata: {\"b\":2}\n\nid: 3\ndata: [DONE]\n\n"
        );
        assert_eq!(log.after(3).unwrap(), b"");
        assert_eq!(log.after(99).unwrap(), b"");
        assert_eq!(log.after(0).unwrap().len(), log.len());
    }

    #[test]
    fn a_handed_over_log_skips_repeats_and_refuses_gaps() {
        let mut log = EventLog::default();
        assert_eq!(log.append_numbered(&events(1..=3)), Ok(0));
        // A batch sent again (its answer was lost) adds nothing.
        let len = log.len();
        assert_eq!(log.append_numbered(&events(2..=3)), Ok(len));
        assert_eq!(log.len(), len);
        // Overlapping: only what is new.
        log.append_numbered(&events(3..=5)).unwrap();
        assert_eq!(log.last(), 5);
        assert_eq!(log.after(4).unwrap(), events(5..=5).as_slice());
        // A hole is refused, and changes nothing.
        assert_eq!(log.append_numbered(&events(7..=8)), Err(LogError::Gap));
        assert_eq!(log.last(), 5);
        assert_eq!(
            log.append_numbered(b"data: no id\n\n"),
            Err(LogError::Malformed)
        );
        assert_eq!(
            log.append_numbered(b"id: 6\ndata: cut"),
            Err(LogError::Malformed)
        );
        assert_eq!(log.last(), 5);
    }

    #[test]
    fn a_log_may_start_past_one() {
        let mut log = EventLog::default();
        log.append_numbered(&events(40..=42)).unwrap();
        assert_eq!((log.first(), log.last()), (40, 42));
        assert_eq!(log.after(41).unwrap(), events(42..=42).as_slice());
        assert_eq!(log.after(39).unwrap(), events(40..=42).as_slice());
        assert_eq!(log.after(10), Err(LogError::Gap));
    }

    #[test]
    fn the_oldest_events_go_past_the_limit() {
        let mut log = EventLog::new(200);
        let mut all = Vec::new();
        for _ in 0..40 {
            all.extend(log.number(b"data: {\"content\":\"0123456789\"}\n\n"));
        }
        assert!(log.len() <= 200, "{}", log.len());
        assert_eq!(log.last(), 40);
        assert!(log.first() > 1);
        // What is kept is the end of what was sent, whole events.
        assert!(all.ends_with(log.after(0).unwrap_or_default()) || log.after(0).is_err());
        let kept = log.after(log.first() - 1).unwrap();
        assert!(all.ends_with(kept));
        assert!(kept.starts_with(format!("id: {}\n", log.first()).as_bytes()));
        assert_eq!(log.after(0), Err(LogError::Gap));
    }

    #[test]
    fn a_cut_stream_closes_with_an_error_event() {
        let mut store = Streams::default();
        store.append("s", &events(1..=2), false, 0, 1_000).unwrap();
        let from = store.cut("s", 10).unwrap();
        let entry = store.get("s").unwrap();
        assert!(entry.ended);
        let tail = std::str::from_utf8(entry.log.bytes_from(from)).unwrap();
        assert!(tail.starts_with("id: 3\ndata: {\"error\":"), "{tail}");
        assert!(tail.contains("stream_truncated"), "{tail}");
        assert_eq!(store.cut("s", 11), None);
    }

    #[test]
    fn the_store_answers_within_the_window_only() {
        let mut store = Streams::default();
        let window = 1_000;
        assert_eq!(store.open("s", 0, 0, window), Lookup::Unknown);
        store
            .append("s", &events(1..=3), false, 100, window)
            .unwrap();
        let Lookup::Events { bytes, ended } = store.open("s", 1, 200, window) else {
            panic!("kept");
        };
        assert_eq!(bytes, events(2..=3).as_slice());
        assert!(!ended);
        store
            .append("s", &events(4..=4), true, 500, window)
            .unwrap();
        assert!(matches!(
            store.open("s", 4, 1_400, window),
            Lookup::Events {
                bytes: b"",
                ended: true
            }
        ));
        // The window counts from the last batch.
        assert_eq!(store.open("s", 0, 1_501, window), Lookup::Expired);
        assert!(store.is_empty());
        // Said at once for another window, then forgotten.
        assert_eq!(store.open("s", 0, 2_400, window), Lookup::Expired);
        assert_eq!(store.open("s", 0, 2_600, window), Lookup::Unknown);
        // A batch after the end adds nothing.
        store.append("t", &events(1..=1), true, 0, window).unwrap();
        store.append("t", &events(2..=2), false, 0, window).unwrap();
        assert_eq!(store.get("t").unwrap().log.last(), 1);
        assert!(store.get("t").unwrap().ended);
    }
}
