//! The per-request fault marker: the last user message's text starting with `fault:<name>`.

use std::time::Duration;

/// The content of one piece of a `fault:big` stream, in bytes.
pub const BIG_PIECE: usize = 1000;

/// What the fake provider does wrong for one request.
///
/// Chosen per request by the first word of the last user message: `fault:<name>` or
/// `fault:<name>=<arg>` (the Worker forwards the messages, not the caller's headers, so a marker
/// in the body is the one that reaches the provider). `fault@<model>:<name>` applies only to
/// requests for that provider model (to fail one entry of a fallback chain). Any other text
/// gets the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `fault:429[=<seconds>]`: 429 with `retry-after` (default 1) and `retry-after-ms`.
    RateLimited {
        /// The `retry-after` value, in seconds.
        retry_after_secs: u64,
    },
    /// `fault:429-no-retry-after`: 429 without any retry header.
    RateLimitedNoRetryAfter,
    /// `fault:400`: the provider's invalid-request error.
    BadRequest,
    /// `fault:400-leaky`: a 400 whose message quotes the API key the provider received and its
    /// own URL (as some providers' messages quote keys), to test that the proxy scrubs them.
    BadRequestLeaky,
    /// `fault:401`: the provider rejects the key.
    Unauthorized,
    /// `fault:500`: internal server error.
    ServerError,
    /// `fault:503`: service unavailable.
    Unavailable,
    /// `fault:529`: overloaded. Anthropic: 529 `overloaded_error` with `x-should-retry: true`;
    /// OpenAI never sends 529, so its path answers its own overload: 503 "engine is currently
    /// overloaded".
    Overloaded,
    /// `fault:redirect`: 307 to the request's own path (a client that follows it sends the
    /// same request, with its key, again: to a place the proxy was never configured with, in
    /// real life).
    Redirect,
    /// `fault:reset`: read the request, close the socket without answering.
    Reset,
    /// `fault:cut`: start the answer (headers and the first events, or half a JSON body), then
    /// close the socket without finishing it.
    Cut,
    /// `fault:cut-clean`: a stream's first events, then a properly ended body without the
    /// stream's own end (`[DONE]` / `message_stop`): the upstream "finished" early.
    CutClean,
    /// `fault:slow[=<ms>]`: the normal answer, one content event per interval (default 1000 ms);
    /// a non-streamed answer is delayed by interval x chunk count.
    Slow {
        /// The pause before each content event.
        interval: Duration,
    },
    /// `fault:stall`: headers (and, streamed, the role event), then nothing until the bound.
    Stall,
    /// `fault:bad-sse`: a 200 event stream of garbage lines and broken JSON, ended cleanly.
    BadSse,
    /// `fault:bad-json`: a 200 `application/json` answer whose body is not JSON.
    BadJson,
    /// `fault:stream-error`: a stream with some content, then the provider's error event.
    StreamError,
    /// `fault:tool-call`: not a fault but a tool call: the answer calls the request's first
    /// tool (`echo` when it defines none) with arguments `{"text":"<the message after the
    /// marker>"}`, streamed as three argument pieces; finish `tool_calls` (OpenAI) /
    /// `tool_use` (Anthropic).
    ToolCall,
    /// `fault:hang`: read the request, never answer (until the provider stops or the bound).
    Hang,
    /// `fault:delay=<ms>`: the normal answer, after a silence of that long before its headers.
    Delay {
        /// The silence before the headers.
        before: Duration,
    },
    /// `fault:gate=<n>`: the normal answer, once the test opens gate `n`
    /// ([`crate::fake_provider::FakeProvider::open_gate`]; at most the hang limit later): the
    /// requests held at one gate are answered together.
    Gate {
        /// The gate's number.
        gate: u64,
    },
    /// `fault:big=<bytes>`: a stream of that many bytes of content (as fast as the reader takes
    /// them) in pieces of [`BIG_PIECE`] bytes, each one token; the bytes written so far are
    /// counted ([`crate::fake_provider::FakeProvider::bytes_sent`]). A JSON answer is one piece.
    Big {
        /// Content bytes to send.
        bytes: u64,
    },
    /// `fault:<anything else>`: answered 400 by the fake itself, so a typo fails loudly.
    Unknown(String),
}

impl Fault {
    /// The fault named by `text` (the last user message), if it starts with `fault:` or
    /// `fault@<model>:` (whatever the model).
    pub fn parse(text: &str) -> Option<Fault> {
        Fault::parse_scoped(text).map(|(_, f)| f)
    }

    /// The fault `text` names for a request for `model`: a `fault:` marker always applies, a
    /// `fault@<model>:` marker only when the model is that one.
    pub fn parse_for(text: &str, model: &str) -> Option<Fault> {
        match Fault::parse_scoped(text)? {
            (Some(scope), _) if scope != model => None,
            (_, f) => Some(f),
        }
    }

    fn parse_scoped(text: &str) -> Option<(Option<&str>, Fault)> {
        let word = text.split_whitespace().next()?;
        let (scope, spec) = match word.strip_prefix("fault:") {
            Some(spec) => (None, spec),
            None => {
                let (model, spec) = word.strip_prefix("fault@")?.split_once(':')?;
                (Some(model), spec)
            }
        };
        Some((scope, Fault::from_spec(spec)))
    }

    fn from_spec(spec: &str) -> Fault {
        let (name, arg) = match spec.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let num = |default: u64| arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(default);
        match name {
            "429" => Fault::RateLimited {
                retry_after_secs: num(1),
            },
            "429-no-retry-after" => Fault::RateLimitedNoRetryAfter,
            "400" => Fault::BadRequest,
            "400-leaky" => Fault::BadRequestLeaky,
            "401" => Fault::Unauthorized,
            "500" => Fault::ServerError,
            "503" => Fault::Unavailable,
            "529" => Fault::Overloaded,
            "redirect" => Fault::Redirect,
            "reset" => Fault::Reset,
            "cut" => Fault::Cut,
            "cut-clean" => Fault::CutClean,
            "slow" => Fault::Slow {
                interval: Duration::from_millis(num(1000)),
            },
            "stall" => Fault::Stall,
            "bad-sse" => Fault::BadSse,
            "bad-json" => Fault::BadJson,
            "stream-error" => Fault::StreamError,
            "tool-call" => Fault::ToolCall,
            "hang" => Fault::Hang,
            "delay" => Fault::Delay {
                before: Duration::from_millis(num(1000)),
            },
            "gate" => Fault::Gate { gate: num(0) },
            "big" => Fault::Big {
                bytes: num(1 << 20),
            },
            other => Fault::Unknown(other.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers() {
        assert_eq!(Fault::parse("hello"), None);
        assert_eq!(Fault::parse(""), None);
        assert_eq!(Fault::parse("say fault:500"), None);
        assert_eq!(Fault::parse("fault:500 please"), Some(Fault::ServerError));
        assert_eq!(Fault::parse("fault:redirect 17"), Some(Fault::Redirect));
        assert_eq!(
            Fault::parse("fault:429"),
            Some(Fault::RateLimited {
                retry_after_secs: 1
            })
        );
        assert_eq!(
            Fault::parse("  fault:429=7"),
            Some(Fault::RateLimited {
                retry_after_secs: 7
            })
        );
        assert_eq!(
            Fault::parse("fault:slow=250 x"),
            Some(Fault::Slow {
                interval: Duration::from_millis(250)
            })
        );
        assert_eq!(
            Fault::parse("fault:nope"),
            Some(Fault::Unknown("nope".into()))
        );
        assert_eq!(
            Fault::parse_for("fault@gpt-4o-mini:503 x", "gpt-4o-mini"),
            Some(Fault::Unavailable)
        );
        assert_eq!(Fault::parse_for("fault@gpt-4o-mini:503 x", "claude"), None);
        assert_eq!(
            Fault::parse_for("fault:503", "claude"),
            Some(Fault::Unavailable)
        );
        assert_eq!(Fault::parse("fault@m:reset"), Some(Fault::Reset));
        assert_eq!(
            Fault::parse("fault:gate=42 x"),
            Some(Fault::Gate { gate: 42 })
        );
        assert_eq!(
            Fault::parse("fault:delay=2000 x"),
            Some(Fault::Delay {
                before: Duration::from_millis(2000)
            })
        );
        assert_eq!(
            Fault::parse("fault:big=10000000"),
            Some(Fault::Big { bytes: 10_000_000 })
        );
    }
}
