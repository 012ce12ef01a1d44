//! Resumable streams: which events of a stream to take ([`EventCursor`], plain logic), and what
//! a [`ChatStream`](crate::ChatStream) needs to ask for the rest after its connection broke
//! ([`Resume`]).
//!
//! The server numbers the events of a resumable stream 1, 2, 3, ... (SSE `id:`). After a break
//! the client asks for the events after the last one it took (`Last-Event-ID`); the server may
//! replay some it already sent, which are skipped, but it must not leave any out.

use std::{fmt, future::Future, pin::Pin};

use reqwest::{header::HeaderMap, Response};

use crate::{client::Client, error::Result};

/// Longest stream id the client resumes (the Worker's are shorter).
const MAX_STREAM_ID_LEN: usize = 64;

/// Whether `id` (an `x-storycad-stream-id`) is one the client may put in a URL: 1 to 64 ASCII
/// letters, digits, `-` and `_`.
pub(crate) fn valid_stream_id(id: &str) -> bool {
    (1..=MAX_STREAM_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What to do with one event of a resumable stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next event (this id): use it, then [`EventCursor::take`] it.
    Next(u64),
    /// An event without an id of its own, before any resume: use it and `take` it; the stream
    /// can no longer be resumed, since where it stands is unknown.
    Untracked,
    /// Taken already, before the connection broke: skip it.
    Duplicate,
    /// Events are missing before this one: refuse the stream rather than yield a hole.
    Gap(Gap),
}

/// Events missing from a resumed stream: after event `after` came `got` (`None`: an event
/// without an id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) after: u64,
    pub(crate) got: Option<u64>,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the resumed stream misses events: after event {} came ",
            self.after
        )?;
        match self.got {
            Some(id) => write!(f, "event {id}"),
            None => f.write_str("an event without an id"),
        }
    }
}

impl std::error::Error for Gap {}

/// Where a resumable stream stands: the id of the last event taken, and whether that is known.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventCursor {
    /// The id of the last event taken (0: none yet).
    last: u64,
    /// The id the previous event of this connection carried. SSE keeps the last `id:` for the
    /// events that have none, so an event carrying the same id as the one before it has none
    /// of its own.
    previous_on_connection: String,
    /// The stream was resumed at least once.
    resumed: bool,
    /// An event without an id was taken: the position is unknown.
    lost: bool,
}

impl EventCursor {
    /// The id of the last event taken (0: none): the resume's `Last-Event-ID`.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// Whether the stream can be resumed from where it stands.
    pub(crate) fn resumable(&self) -> bool {
        !self.lost
    }

    /// A new connection (a resume) starts; its first event carries its own id or none.
    pub(crate) fn reconnected(&mut self) {
        self.resumed = true;
        self.previous_on_connection.clear();
    }

    /// Judges an event by the id the SSE parser gives it (`""` when none was ever sent on
    /// this connection).
    pub(crate) fn judge(&mut self, id: &str) -> Verdict {
        let own = id != self.previous_on_connection;
        self.previous_on_connection.clear();
        self.previous_on_connection.push_str(id);
        let parsed = if own {
            id.trim().parse::<u64>().ok()
        } else {
            None
        };
        match parsed {
            None if self.resumed => Verdict::Gap(Gap {
                after: self.last,
                got: None,
            }),
            None => Verdict::Untracked,
            Some(n) if n <= self.last => Verdict::Duplicate,
            Some(n) if n == self.last + 1 => Verdict::Next(n),
            Some(n) => Verdict::Gap(Gap {
                after: self.last,
                got: Some(n),
            }),
        }
    }

    /// Records that the event judged `verdict` was used. Whether the stream moved on.
    pub(crate) fn take(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Next(n) => {
                self.last = n;
                true
            }
            Verdict::Untracked => {
                self.lost = true;
                true
            }
            Verdict::Duplicate | Verdict::Gap(_) => false,
        }
    }
}

/// The request that picks a stream up again: the response (body unread) and the retries of
/// the policy counted so far.
pub(crate) type Reconnect = Pin<Box<dyn Future<Output = Result<(Response, u32)>> + Send>>;

/// What a resumable [`ChatStream`](crate::ChatStream) keeps to resume itself.
pub(crate) struct Resume {
    pub(crate) cursor: EventCursor,
    pub(crate) client: Client,
    /// `{base}/chat/completions/streams/{id}`.
    pub(crate) url: String,
    /// The call's [`RequestOptions`](crate::RequestOptions) headers, sent again.
    pub(crate) extra: HeaderMap,
    /// Retries of the policy spent since the stream last moved on: the policy's maximum bounds
    /// the attempts at one break, not over the stream's life (the retry budget does that).
    pub(crate) retries: u32,
    /// A resume under way, and the error of the break it repairs.
    pub(crate) pending: Option<(Reconnect, crate::Error)>,
}

impl Resume {
    pub(crate) fn new(client: Client, url: String, extra: HeaderMap) -> Self {
        Resume {
            cursor: EventCursor::default(),
            client,
            url,
            extra,
            retries: 0,
            pending: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Judges and takes each id in turn (as a stream does); the verdicts.
    fn feed(cursor: &mut EventCursor, ids: &[&str]) -> Vec<Verdict> {
        ids.iter()
            .map(|id| {
                let v = cursor.judge(id);
                cursor.take(v);
                v
            })
            .collect()
    }

    #[test]
    fn consecutive_ids_are_taken() {
        let mut c = EventCursor::default();
        assert_eq!(c.last(), 0);
        let v = feed(&mut c, &["1", "2", "3"]);
        assert_eq!(v, [Verdict::Next(1), Verdict::Next(2), Verdict::Next(3)]);
        assert_eq!(c.last(), 3);
        assert!(c.resumable());
    }

    #[test]
    fn a_replay_from_an_earlier_id_is_skipped_up_to_the_last_taken() {
        let mut c = EventCursor::default();
        feed(&mut c, &["1", "2", "3", "4"]);
        c.reconnected();
        let v = feed(&mut c, &["2", "3", "4", "5", "6"]);
        assert_eq!(
            v,
            [
                Verdict::Duplicate,
                Verdict::Duplicate,
                Verdict::Duplicate,
                Verdict::Next(5),
                Verdict::Next(6)
            ]
        );
        assert_eq!(c.last(), 6);
    }

    #[test]
    fn a_gap_is_refused_before_and_after_a_resume() {
        let mut c = EventCursor::default();
        feed(&mut c, &["1", "2"]);
        c.reconnected();
        assert_eq!(
            c.judge("4"),
            Verdict::Gap(Gap {
                after: 2,
                got: Some(4)
            })
        );
        let mut c = EventCursor::default();
        assert_eq!(
            c.judge("2"),
            Verdict::Gap(Gap {
                after: 0,
                got: Some(2)
            })
        );
    }

    #[test]
    fn an_event_without_an_id_after_a_resume_is_a_gap() {
        // At the start of the new connection: no id at all.
        let mut c = EventCursor::default();
        feed(&mut c, &["1", "2"]);
        c.reconnected();
        let gap = Verdict::Gap(Gap {
            after: 2,
            got: None,
        });
        assert_eq!(c.judge(""), gap);
        // Later: SSE hands it the id of the event before it.
        let mut c = EventCursor::default();
        feed(&mut c, &["1", "2"]);
        c.reconnected();
        assert_eq!(feed(&mut c, &["3"]), [Verdict::Next(3)]);
        assert_eq!(
            c.judge("3"),
            Verdict::Gap(Gap {
                after: 3,
                got: None
            })
        );
        // An id that is not a number is no id.
        let mut c = EventCursor::default();
        c.reconnected();
        assert!(matches!(c.judge("abc"), Verdict::Gap(_)));
    }

    #[test]
    fn an_event_without_an_id_before_any_resume_is_taken_and_stops_resuming() {
        let mut c = EventCursor::default();
        let v = feed(&mut c, &["1", "1", "2"]);
        assert_eq!(v, [Verdict::Next(1), Verdict::Untracked, Verdict::Next(2)]);
        assert!(!c.resumable());
        let mut c = EventCursor::default();
        assert_eq!(feed(&mut c, &[""]), [Verdict::Untracked]);
        assert!(!c.resumable());
    }

    #[test]
    fn an_event_judged_but_not_taken_is_asked_for_again() {
        // A cut-off last event: its id was read, its data was not whole.
        let mut c = EventCursor::default();
        feed(&mut c, &["1", "2"]);
        assert_eq!(c.judge("3"), Verdict::Next(3));
        assert_eq!(c.last(), 2);
        c.reconnected();
        assert_eq!(feed(&mut c, &["3"]), [Verdict::Next(3)]);
    }

    #[test]
    fn stream_ids_are_checked_before_going_into_a_url() {
        assert!(valid_stream_id("18f2a-00ab_CD-9"));
        assert!(valid_stream_id(&"a".repeat(64)));
        for bad in ["", "a/b", "a?b", "../x", "a b", "é", &"a".repeat(65)] {
            assert!(!valid_stream_id(bad), "{bad:?}");
        }
    }
}
