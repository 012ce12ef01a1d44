//! The request the Worker sends to an OpenAI-compatible provider, and the complete (non-stream)
//! answer it passes back.
//!
//! The upstream request is built from nothing: the caller's headers are never copied, so the
//! caller's `Authorization` (our JWT), cookies, `cf-*` and `x-forwarded-*` headers cannot reach
//! the provider. Only the body travels, with `model` replaced.

use serde_json::Value;
use storycad_protocol::Usage;

use crate::error::UpstreamError;
use crate::request::ChatCall;
use crate::rewrite::RawObject;
use crate::routing::Route;

/// The `user-agent` the Worker sends upstream.
pub const USER_AGENT: &str = concat!("storycad-llm-proxy/", env!("CARGO_PKG_VERSION"));

/// Longest complete answer accepted from a provider.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// One upstream HTTP request, ready for the runtime's `fetch`.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The endpoint.
    pub url: String,
    /// Every header to send, lower-case names.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

// The authorization (OpenAI) and x-api-key (Anthropic) headers hold the provider key: never
// print them.
impl std::fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            *k,
                            if matches!(*k, "authorization" | "x-api-key") {
                                "[redacted]"
                            } else {
                                v
                            },
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Builds the Chat Completions request for `route` from the caller's validated `call`.
pub fn chat_request(route: &Route<'_>, call: &ChatCall, key: &str) -> UpstreamRequest {
    let mut body = call.body.clone();
    body.insert("model".to_owned(), Value::String(route.model.to_owned()));
    if call.stream {
        // Always ask for usage so the stream can be metered; the relay drops the usage chunk
        // when the caller did not ask for it.
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Default::default()));
        if !options.is_object() {
            *options = Value::Object(Default::default());
        }
        if let Value::Object(o) = options {
            o.insert("include_usage".to_owned(), Value::Bool(true));
        }
    }
    // A map of JSON values always serialises.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let accept = if call.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    UpstreamRequest {
        url: route.endpoint(),
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("accept", accept.to_owned()),
            ("authorization", format!("Bearer {key}")),
            ("user-agent", USER_AGENT.to_owned()),
        ],
        body,
    }
}

/// A complete answer made ready for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The JSON to send, `model` set to the alias.
    pub body: Vec<u8>,
    /// What the provider counted.
    pub usage: Option<Usage>,
}

/// Reads a 2xx non-stream answer: must be a JSON object without `error`; `model` becomes the
/// caller's alias.
pub fn completion(body: &[u8], alias: &str) -> Result<Completion, UpstreamError> {
    let text = std::str::from_utf8(body).map_err(|_| UpstreamError::BadResponse)?;
    let object = RawObject::parse(text).map_err(|_| UpstreamError::BadResponse)?;
    if object.has("error") || !object.has("choices") {
        return Err(UpstreamError::BadResponse);
    }
    Ok(Completion {
        body: object.to_json_with_model(alias).into_bytes(),
        usage: object.usage(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::test_config;
    use crate::config::Config;
    use crate::request::parse_chat;
    use crate::routing::resolve;

    const KEY: &str = "sk-test-provider-key";

    fn config() -> Config {
        test_config(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:4010/v1/"),
            ("ROUTES", r#"{"storycad-fast":["openai:gpt-4o-mini"]}"#),
        ])
    }

    fn build(body: Value) -> (UpstreamRequest, Value) {
        let c = config();
        let call = parse_chat(body.to_string().as_bytes()).unwrap();
        let route = resolve(&c, &call.alias).unwrap();
        let req = chat_request(&route, &call, KEY);
        let sent: Value = serde_json::from_slice(&req.body).unwrap();
        (req, sent)
    }

    #[test]
    fn url_headers_and_key() {
        let (req, _) =
            build(json!({"model":"storycad-fast","messages":[{"role":"user","content":"hi"}]}));
        assert_eq!(req.url, "http://127.0.0.1:4010/v1/chat/completions");
        let names: Vec<_> = req.headers.iter().map(|(k, _)| *k).collect();
        // Exactly these: nothing of the caller's request is copied.
        assert_eq!(
            names,
            ["content-type", "accept", "authorization", "user-agent"]
        );
        let get = |n: &str| {
            req.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("authorization"), Some("Bearer sk-test-provider-key"));
        assert_eq!(get("accept"), Some("application/json"));
        assert_eq!(get("content-type"), Some("application/json"));
        assert!(get("user-agent")
            .unwrap()
            .starts_with("storycad-llm-proxy/"));
        assert!(!format!("{req:?}").contains(KEY));
    }

    #[test]
    fn model_replaced_and_everything_else_kept() {
        let body = json!({
            "model":"storycad-fast",
            "messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x","detail":"low","future":1}}]}],
            "temperature":0.2,"max_tokens":5,"metadata":{"k":"v"},"user":"u1"
        });
        let (_, sent) = build(body.clone());
        assert_eq!(sent["model"], "gpt-4o-mini");
        let mut expected = body;
        expected["model"] = json!("gpt-4o-mini");
        assert_eq!(sent, expected);
    }

    #[test]
    fn streams_always_ask_for_usage() {
        let msgs = json!([{"role":"user","content":"hi"}]);
        for options in [
            None,
            Some(json!({"include_usage": false})),
            Some(json!({"include_usage": true, "other": 1})),
        ] {
            let mut body = json!({"model":"storycad-fast","messages":msgs,"stream":true});
            if let Some(o) = &options {
                body["stream_options"] = o.clone();
            }
            let (req, sent) = build(body);
            assert_eq!(sent["stream_options"]["include_usage"], true, "{options:?}");
            if options.as_ref().is_some_and(|o| o.get("other").is_some()) {
                assert_eq!(sent["stream_options"]["other"], 1);
            }
            let accept = req.headers.iter().find(|(k, _)| *k == "accept").unwrap();
            assert_eq!(accept.1, "text/event-stream");
        }
        let (_, sent) = build(json!({"model":"storycad-fast","messages":msgs}));
        assert!(sent.get("stream_options").is_none());
    }

    #[test]
    fn completion_gets_the_alias_and_usage() {
        let raw = std::fs::read(format!(
            "{}/tests/fixtures/openai/chat_completion.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let c = completion(&raw, "storycad-fast").unwrap();
        let v: Value = serde_json::from_slice(&c.body).unwrap();
        let mut expected: Value = serde_json::from_slice(&raw).unwrap();
        expected["model"] = json!("storycad-fast");
        assert_eq!(v, expected);
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (14, 37));
    }

    #[test]
    fn bad_completions_are_bad_responses() {
        for body in [
            &b"<html>"[..],
            b"[]",
            b"{\"error\":{\"message\":\"x\"}}",
            b"{\"id\":\"x\"}",
            b"\xff\xfe",
        ] {
            assert_eq!(
                completion(body, "a"),
                Err(UpstreamError::BadResponse),
                "{body:?}"
            );
        }
    }
}
