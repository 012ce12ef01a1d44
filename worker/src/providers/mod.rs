//! The provider adapters behind one interface, so the glue treats every route the same way:
//! the upstream request for a route ([`upstream_request`]), its error answers classified
//! ([`error_from_response`]), its complete answers made ready for the caller ([`complete`]),
//! and its stream relay ([`Relay`]).
//!
//! - [`openai`]: OpenAI-compatible providers (`openai` and every `PROVIDERS` entry), passed
//!   through.
//! - [`anthropic`]: Anthropic, translated. Its error answers go through
//!   [`anthropic::map_error`] and land in the same [`UpstreamError`] classes as OpenAI's, so a
//!   caller sees the same status and code for the same failure whichever provider answered
//!   (429 keeps `retry-after`; 529 and 503 become 503 with `retry-after` when sent).

//! - [`routing`]: an alias's chain of routes; [`sse`]: the SSE framer both relays use.

pub mod anthropic;
pub mod openai;
pub mod prompt_cache;
pub mod routing;
pub mod sse;

use storycad_protocol::{codes, ChatRequest, ErrorBody, Usage};

use self::anthropic::AnthropicStream;
use self::openai::{
    chat_request, completion, Completion, OpenAiStream, UpstreamRequest, USER_AGENT,
};
use self::prompt_cache::PromptCache;
use self::routing::Route;
use crate::caller::request::ChatCall;
use crate::config::ProviderKind;
use crate::error::{scrub_message, shorten, AppError, UpstreamError};

/// How the stream ended (or that it has not yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still relaying.
    Open,
    /// `[DONE]` was relayed.
    Done,
    /// The upstream ended without `[DONE]`; a `stream_truncated` error event was sent.
    Truncated,
    /// The upstream sent an error event, or failed; an error event with this code was sent.
    Failed(String),
}

/// The output-token cap sent to Anthropic (which requires one) when the caller set none.
///
/// Hook for plans: the glue passes the caller's plan's `max_output_tokens` instead when the
/// plan sets one; this constant is the fallback when it does not.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;

/// Builds the upstream request for `route`. `default_max_tokens`: the output cap Anthropic gets
/// when the caller set none; `end_user`: the end-user id the provider gets (see
/// [`crate::providers::openai::end_user_id`]). A request Anthropic cannot honour is a 400 naming the
/// field.
pub fn upstream_request(
    route: &Route<'_>,
    call: &ChatCall,
    key: &str,
    default_max_tokens: u32,
    end_user: &str,
    cache: Option<&PromptCache>,
) -> Result<UpstreamRequest, AppError> {
    match route.provider.kind {
        ProviderKind::OpenAiCompatible => {
            Ok(chat_request(route, call, key, end_user, cache.is_some()))
        }
        ProviderKind::Anthropic => {
            // parse_chat validated this same body against ChatRequest.
            let mut typed: ChatRequest =
                crate::caller::located::from_object(&call.body).map_err(|_| AppError::Internal)?;
            // Anthropic's `metadata.user_id`.
            typed.user = Some(end_user.to_owned());
            let mut translated =
                anthropic::to_messages_request(&typed, route.model, default_max_tokens).map_err(
                    |e| AppError::InvalidRequest {
                        param: Some(e.param),
                        message: e.message,
                    },
                )?;
            if let Some(cache) = cache {
                translated.place_breakpoints(cache.min_tokens(route.model));
            }
            // String keys only: serialising cannot fail, but never panic in the Worker.
            let body = serde_json::to_vec(&translated).map_err(|_| AppError::Internal)?;
            let mut headers: Vec<(&'static str, String)> = anthropic::request_headers(key)
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect();
            let accept = if call.stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            headers.push(("accept", accept.to_owned()));
            headers.push(("user-agent", USER_AGENT.to_owned()));
            Ok(UpstreamRequest {
                url: anthropic::messages_url(&route.provider.base_url),
                headers,
                body,
            })
        }
    }
}

/// Classifies a non-2xx upstream answer. `header` returns a response header by lower-case
/// name; `scrub` lists strings that must never reach the caller (the key, the base URL).
pub fn error_from_response<'h>(
    kind: ProviderKind,
    status: u16,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    scrub: &[&str],
) -> UpstreamError {
    match kind {
        ProviderKind::OpenAiCompatible => UpstreamError::from_response(status, header, body, scrub),
        ProviderKind::Anthropic => {
            let (mapped, error) = anthropic::map_error(status, body);
            let retry_after = header(storycad_protocol::headers::RETRY_AFTER)
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 40 && v.is_ascii())
                .map(str::to_owned);
            from_mapped(mapped, &error, status, retry_after, scrub)
        }
    }
}

/// [`anthropic::map_error`]'s answer as an [`UpstreamError`]: its status decides the class,
/// its message (scrubbed) is kept where the caller sees one (400, 413).
fn from_mapped(
    mapped: u16,
    error: &ErrorBody,
    upstream: u16,
    retry_after: Option<String>,
    scrub: &[&str],
) -> UpstreamError {
    match mapped {
        429 => UpstreamError::RateLimited {
            code: codes::RATE_LIMIT_EXCEEDED,
            retry_after,
            retry_after_ms: None,
        },
        400 | 413 => UpstreamError::InvalidRequest {
            status: mapped,
            message: scrub_message(&error.error.message, scrub),
            param: error
                .error
                .param
                .as_deref()
                .map(|p| shorten(&scrub_message(p, scrub), 64)),
        },
        503 => UpstreamError::Failed {
            status: 503,
            retry_after,
        },
        504 => UpstreamError::Failed {
            status: 504,
            retry_after: None,
        },
        _ if (200..300).contains(&upstream) => UpstreamError::BadResponse,
        _ if matches!(upstream, 401 | 403 | 404) => UpstreamError::Rejected { status: upstream },
        _ => UpstreamError::Failed {
            status: 502,
            retry_after: None,
        },
    }
}

/// Reads a 2xx complete answer of `kind` into the OpenAI answer for the caller, `model` set to
/// `alias` (`created`: now, for Anthropic answers, which carry no timestamp).
pub fn complete(
    kind: ProviderKind,
    body: &[u8],
    alias: &str,
    created: u64,
) -> Result<Completion, UpstreamError> {
    match kind {
        ProviderKind::OpenAiCompatible => completion(body, alias),
        ProviderKind::Anthropic => match anthropic::from_messages_response(body, alias, created) {
            Ok(answer) => Ok(Completion {
                body: serde_json::to_vec(&answer).map_err(|_| UpstreamError::BadResponse)?,
                usage: answer.usage,
            }),
            Err((mapped, error)) => Err(from_mapped(mapped, &error, 200, None, &[])),
        },
    }
}

/// The stream relay of either provider kind: upstream SSE bytes in, OpenAI SSE bytes out.
#[derive(Debug)]
pub enum Relay {
    /// OpenAI passthrough.
    OpenAi(OpenAiStream),
    /// Anthropic translation.
    Anthropic(AnthropicStream),
}

impl Relay {
    /// The relay for a `kind` stream answering as `alias`. `include_usage`: the caller asked for
    /// the usage chunk; `scrub`: strings that must never reach the caller; `created`: now.
    pub fn new(
        kind: ProviderKind,
        alias: &str,
        include_usage: bool,
        scrub: Vec<String>,
        created: u64,
    ) -> Self {
        match kind {
            ProviderKind::OpenAiCompatible => {
                Relay::OpenAi(OpenAiStream::new(alias, include_usage, scrub))
            }
            ProviderKind::Anthropic => {
                Relay::Anthropic(AnthropicStream::new(alias, created, include_usage))
            }
        }
    }

    /// Upstream bytes in; the bytes to send now out.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Relay::OpenAi(r) => r.feed(bytes),
            Relay::Anthropic(r) => r.feed(bytes),
        }
    }

    /// The upstream body ended; the last bytes out (an error event unless the stream was whole).
    pub fn finish(&mut self) -> Vec<u8> {
        match self {
            Relay::OpenAi(r) => r.finish(),
            Relay::Anthropic(r) => r.finish(),
        }
    }

    /// The upstream failed mid-stream; the error event out. A connection lost mid-body
    /// ([`UpstreamError::Network`]) is a cut stream: it ends like a body that stopped early
    /// ([`Relay::finish`]: a last whole event still counts, then `stream_truncated`).
    pub fn fail(&mut self, error: &UpstreamError) -> Vec<u8> {
        if *error == UpstreamError::Network {
            return self.finish();
        }
        match self {
            Relay::OpenAi(r) => r.fail(error),
            Relay::Anthropic(r) => r.fail(error.body()),
        }
    }

    /// Whether nothing more will be sent.
    pub fn is_closed(&self) -> bool {
        match self {
            Relay::OpenAi(r) => r.is_closed(),
            Relay::Anthropic(r) => r.is_closed(),
        }
    }

    /// Tokens the provider reported (Anthropic: so far, estimated for a cut stream).
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Relay::OpenAi(r) => r.usage().cloned(),
            Relay::Anthropic(r) => r.usage(),
        }
    }

    /// Whether [`Relay::usage`] is the provider's final count (OpenAI's usage chunk, Anthropic's
    /// `message_delta`), not a running count or an estimate.
    pub fn usage_is_final(&self) -> bool {
        match self {
            Relay::OpenAi(r) => r.usage().is_some(),
            Relay::Anthropic(r) => r.translator().usage_is_final(),
        }
    }

    /// Chunks relayed (OpenAI; 0 for Anthropic, whose [`Relay::usage`] already estimates a cut
    /// stream's output).
    pub fn chunks(&self) -> u64 {
        match self {
            Relay::OpenAi(r) => r.chunks(),
            Relay::Anthropic(_) => 0,
        }
    }

    /// How the stream ended, the same way for both kinds.
    pub fn outcome(&self) -> Outcome {
        match self {
            Relay::OpenAi(r) => r.outcome().clone(),
            Relay::Anthropic(r) => match (r.is_closed(), r.error()) {
                (false, _) => Outcome::Open,
                (true, None) => Outcome::Done,
                (true, Some(e)) => match e.error.code.as_deref() {
                    Some(codes::STREAM_TRUNCATED) => Outcome::Truncated,
                    Some(code) => Outcome::Failed(code.to_owned()),
                    None => Outcome::Failed(codes::UPSTREAM_ERROR.to_owned()),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::caller::request::parse_chat;
    use crate::config::{test_config, Config};
    use crate::fixture;
    use crate::providers::routing::chain;

    const KEY: &str = concat!("sk-", "ant-test-key-0123456789");

    fn config() -> Config {
        test_config(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:4010/v1"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:4011/"),
            (
                "ROUTES",
                r#"{"fast":["openai:gpt-4o-mini","anthropic:claude-haiku-4-5"]}"#,
            ),
        ])
    }

    fn build(body: Value, default_max: u32) -> Result<(UpstreamRequest, Value), AppError> {
        let c = config();
        let call = parse_chat(body.to_string().as_bytes()).unwrap();
        let routes = chain(&c, "fast").unwrap();
        let req = upstream_request(&routes[1], &call, KEY, default_max, "u-test", None)?;
        let sent = serde_json::from_slice(&req.body).unwrap();
        Ok((req, sent))
    }

    #[test]
    fn anthropic_request_url_headers_and_body() {
        let (req, sent) = build(
            json!({"model":"fast","stream":true,"messages":[
                {"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}),
            1024,
        )
        .unwrap();
        assert_eq!(req.url, "http://127.0.0.1:4011/v1/messages");
        let get = |n: &str| {
            req.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-api-key"), Some(KEY));
        assert_eq!(get("anthropic-version"), Some(anthropic::ANTHROPIC_VERSION));
        assert_eq!(get("accept"), Some("text/event-stream"));
        assert!(get("authorization").is_none());
        assert!(!format!("{req:?}").contains(KEY), "{req:?}");
        assert_eq!(sent["model"], "claude-haiku-4-5");
        assert_eq!(sent["max_tokens"], 1024, "the default cap when none is set");
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["system"], "be brief");
        assert_eq!(sent["metadata"]["user_id"], "u-test", "the end-user id");
        // The caller's own cap wins over the default.
        let (_, sent) = build(
            json!({"model":"fast","max_tokens":77,"messages":[{"role":"user","content":"hi"}]}),
            1024,
        )
        .unwrap();
        assert_eq!(sent["max_tokens"], 77);
    }

    #[test]
    fn untranslatable_request_is_a_400_naming_the_field() {
        let e = build(
            json!({"model":"fast","n":2,"messages":[{"role":"user","content":"hi"}]}),
            1024,
        )
        .unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "invalid_value"));
        assert_eq!(e.body().error.param.as_deref(), Some("n"));
        let e = build(
            json!({"model":"fast","messages":[{"role":"user","content":[
                {"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]}),
            1024,
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e
            .body()
            .error
            .param
            .unwrap()
            .starts_with("messages[0].content"));
    }

    #[test]
    fn openai_routes_pass_through() {
        let c = config();
        let call =
            parse_chat(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let routes = chain(&c, "fast").unwrap();
        let req = upstream_request(&routes[0], &call, "sk-openai", 1024, "u-test", None).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:4010/v1/chat/completions");
        let sent: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini");
        assert!(sent.get("max_tokens").is_none(), "no cap added for OpenAI");
    }

    /// The body sent for `body` on route `i` of `fast`, with prompt caching as configured.
    fn sent_with_cache(body: Value, i: usize, cache: Option<&PromptCache>) -> Value {
        let c = config();
        let call = parse_chat(body.to_string().as_bytes()).unwrap();
        let routes = chain(&c, "fast").unwrap();
        let req = upstream_request(&routes[i], &call, KEY, 1024, "u-test", cache).unwrap();
        serde_json::from_slice(&req.body).unwrap()
    }

    /// A writer's session: a long story context, a turn, and the newest question.
    fn session(system: Value) -> Value {
        json!({"model":"fast","messages":[
            {"role":"system","content":system},
            {"role":"user","content":"Draft the opening."},
            {"role":"assistant","content":"The lamp went out at midnight."},
            {"role":"user","content":[
                {"type":"text","text":"Go on.","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]})
    }

    #[test]
    fn anthropic_gets_breakpoints_where_the_session_repeats_itself() {
        let story = "The keeper's daughter counts the ships. ".repeat(800);
        let on = PromptCache::default();
        let sent = sent_with_cache(session(json!(story)), 1, Some(&on));
        assert_eq!(sent["system"][0]["text"], json!(story));
        assert_eq!(
            sent["system"][0]["cache_control"],
            json!({"type":"ephemeral"})
        );
        assert_eq!(
            sent["messages"][1]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        // The caller's own breakpoint on the newest turn is kept, as a 5-minute one: an hour's
        // write costs twice the input price, which the ledger does not price.
        assert_eq!(
            sent["messages"][2]["content"][0]["cache_control"],
            json!({"type":"ephemeral"})
        );
        // Off: only the caller's.
        let off = sent_with_cache(session(json!(story)), 1, None);
        assert!(off["system"].is_string());
        assert!(off["messages"][1]["content"][0]
            .get("cache_control")
            .is_none());
        assert_eq!(
            off["messages"][2]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        // A short context is not worth a breakpoint (claude-haiku-4-5 caches from 4,096).
        let short = sent_with_cache(session(json!("Be terse.")), 1, Some(&on));
        assert!(short["system"].is_string());
    }

    #[test]
    fn a_callers_breakpoint_in_the_system_prompt_marks_its_end() {
        let system = json!([{"type":"text","text":"Rules."},
            {"type":"text","text":"Story.","cache_control":{"type":"ephemeral"}}]);
        for cache in [None, Some(&PromptCache::default())] {
            let sent = sent_with_cache(session(system.clone()), 1, cache);
            assert_eq!(sent["system"][0]["text"], "Rules.\n\nStory.");
            assert_eq!(sent["system"][0]["cache_control"]["type"], "ephemeral");
        }
    }

    #[test]
    fn openai_gets_a_cache_key_per_user_and_alias_unless_the_caller_set_one() {
        let on = PromptCache::default();
        let body = json!({"model":"fast","messages":[{"role":"user","content":"hi"}]});
        let sent = sent_with_cache(body.clone(), 0, Some(&on));
        assert_eq!(
            sent["prompt_cache_key"],
            prompt_cache::cache_key("u-test", "fast")
        );
        assert!(sent_with_cache(body, 0, None)
            .get("prompt_cache_key")
            .is_none());
        let own = json!({"model":"fast","prompt_cache_key":"mine",
            "messages":[{"role":"user","content":"hi"}]});
        assert_eq!(
            sent_with_cache(own, 0, Some(&on))["prompt_cache_key"],
            "mine"
        );
    }

    fn anthropic_error(status: u16, body: &[u8], retry_after: Option<&str>) -> UpstreamError {
        error_from_response(
            ProviderKind::Anthropic,
            status,
            |n| (n == "retry-after").then_some(retry_after).flatten(),
            body,
            &[KEY],
        )
    }

    #[test]
    fn anthropic_errors_land_in_the_same_classes() {
        let e = anthropic_error(
            429,
            &fixture("anthropic/error_429_rate_limit_error.json"),
            Some("7"),
        );
        assert_eq!(e.status(), 429);
        assert_eq!(e.code(), "rate_limit_exceeded");
        let app = AppError::Upstream(e);
        assert!(app.headers().contains(&("retry-after", "7".to_owned())));

        let e = anthropic_error(
            529,
            &fixture("anthropic/error_529_overloaded_error.json"),
            Some("3"),
        );
        assert_eq!(e.status(), 503);
        assert!(AppError::Upstream(e)
            .headers()
            .contains(&("retry-after", "3".to_owned())));

        let e = anthropic_error(
            400,
            &fixture("anthropic/error_400_invalid_request_error.json"),
            None,
        );
        assert_eq!((e.status(), e.code()), (400, "invalid_value"));
        assert!(e.body().error.message.starts_with("Anthropic rejected"));

        let e = anthropic_error(
            401,
            &fixture("anthropic/error_401_authentication_error.json"),
            None,
        );
        assert_eq!(e, UpstreamError::Rejected { status: 401 });
        assert_eq!(e.status(), 502);

        for status in [500, 502] {
            let e = anthropic_error(status, b"<html>oops</html>", None);
            assert_eq!((e.status(), e.code()), (502, "upstream_error"), "{status}");
        }
        let e = anthropic_error(504, b"", None);
        assert_eq!(e.status(), 504);
    }

    #[test]
    fn a_leaky_anthropic_400_is_scrubbed() {
        let body = format!(
            r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"bad key {KEY} at http://10.0.0.1:9/v1/messages"}}}}"#
        );
        let e = anthropic_error(400, body.as_bytes(), None);
        let text = serde_json::to_string(&e.body()).unwrap();
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains("10.0.0.1"), "{text}");
    }

    #[test]
    fn anthropic_complete_answers() {
        let c = complete(
            ProviderKind::Anthropic,
            &fixture("anthropic/messages_response_tool_use.json"),
            "fast",
            1_700_000_000,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(v["model"], "fast");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(c.usage.is_some());
        assert_eq!(
            complete(ProviderKind::Anthropic, b"{not json", "fast", 1),
            Err(UpstreamError::BadResponse)
        );
        let openai = complete(
            ProviderKind::OpenAiCompatible,
            &fixture("openai/chat_completion.json"),
            "fast",
            1,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&openai.body).unwrap();
        assert_eq!(v["model"], "fast");
    }

    fn run(relay: &mut Relay, input: &[u8]) -> String {
        let mut out = relay.feed(input);
        out.extend(relay.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn both_relays_report_the_same_outcomes() {
        let mut a = Relay::new(ProviderKind::Anthropic, "fast", true, vec![], 1);
        let out = run(&mut a, &fixture("anthropic/messages_stream_text.sse"));
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert_eq!(a.outcome(), Outcome::Done);
        assert!(a.usage().is_some());

        let text = fixture("anthropic/messages_stream_text.sse");
        let mut cut = Relay::new(ProviderKind::Anthropic, "fast", false, vec![], 1);
        run(&mut cut, &text[..text.len() / 2]);
        assert_eq!(cut.outcome(), Outcome::Truncated);

        let mut failed = Relay::new(ProviderKind::Anthropic, "fast", false, vec![], 1);
        failed.feed(&text[..text.len() / 2]);
        let out = String::from_utf8(failed.fail(&UpstreamError::Timeout)).unwrap();
        assert!(out.contains("upstream_timeout"), "{out}");
        assert_eq!(failed.outcome(), Outcome::Failed("upstream_timeout".into()));
        assert!(failed.is_closed());

        let mut o = Relay::new(ProviderKind::OpenAiCompatible, "fast", false, vec![], 1);
        run(&mut o, &fixture("openai/chat_stream_text_usage.sse"));
        assert_eq!(o.outcome(), Outcome::Done);
        assert_eq!(o.usage().unwrap().completion_tokens, 30);
    }

    fn kinds() -> [(ProviderKind, Vec<u8>); 2] {
        [
            (
                ProviderKind::OpenAiCompatible,
                fixture("openai/chat_stream_text_usage.sse"),
            ),
            (
                ProviderKind::Anthropic,
                fixture("anthropic/messages_stream_text.sse"),
            ),
        ]
    }

    /// The last `data:` payload of an SSE text, as JSON.
    fn last_event(out: &[u8]) -> Value {
        let text = std::str::from_utf8(out).unwrap();
        let last = text.split("\n\n").filter(|e| !e.is_empty()).last().unwrap();
        serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap()
    }

    #[test]
    fn a_connection_lost_mid_stream_is_a_truncation() {
        for (kind, text) in kinds() {
            let mut r = Relay::new(kind, "fast", false, vec![], 1);
            let first = r.feed(&text[..text.len() / 2]);
            assert!(!first.is_empty(), "{kind:?}");
            let out = r.fail(&UpstreamError::Network);
            assert_eq!(
                last_event(&out)["error"]["code"],
                "stream_truncated",
                "{kind:?}"
            );
            assert_eq!(r.outcome(), Outcome::Truncated, "{kind:?}");
            assert!(r.fail(&UpstreamError::Network).is_empty());
            // Any other failure keeps its own code.
            let mut r = Relay::new(kind, "fast", false, vec![], 1);
            r.feed(&text[..text.len() / 2]);
            let out = r.fail(&UpstreamError::BadResponse);
            assert_eq!(last_event(&out)["error"]["code"], "upstream_error");
        }
        // Lost after the whole stream came (the last blank line missing): nothing is lost.
        let text = fixture("openai/chat_stream_text_usage.sse");
        let mut r = Relay::new(ProviderKind::OpenAiCompatible, "fast", false, vec![], 1);
        r.feed(&text[..text.len() - 2]);
        let out = String::from_utf8(r.fail(&UpstreamError::Network)).unwrap();
        assert_eq!(out, "data: [DONE]\n\n");
        assert_eq!(r.outcome(), Outcome::Done);
    }

    #[test]
    fn a_body_that_is_not_an_event_stream_is_an_upstream_error() {
        let bodies: [&[u8]; 3] = [
            br#"{"id":"chatcmpl-x","object":"chat.completion","choices":[{"message":"#,
            b"{\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n",
            b"<html>\n<body>bad gateway</body>\n</html>\n",
        ];
        for (kind, _) in kinds() {
            for body in bodies {
                let mut r = Relay::new(kind, "fast", false, vec![], 1);
                let mut out = r.feed(body);
                out.extend(r.finish());
                assert_eq!(
                    last_event(&out)["error"]["code"],
                    "upstream_error",
                    "{kind:?} {body:?}"
                );
                assert_eq!(
                    r.outcome(),
                    Outcome::Failed("upstream_error".into()),
                    "{kind:?}"
                );
            }
            // An empty body, or a stream cut short, is still a truncation.
            let mut r = Relay::new(kind, "fast", false, vec![], 1);
            r.finish();
            assert_eq!(r.outcome(), Outcome::Truncated, "{kind:?}");
        }
    }
}
