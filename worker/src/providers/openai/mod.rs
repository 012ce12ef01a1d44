//! The request the Worker sends to an OpenAI-compatible provider, and the complete (non-stream)
//! answer it passes back.
//!
//! The upstream request is built from nothing: the caller's headers are never copied, so the
//! caller's `Authorization` (our JWT), cookies, `cf-*` and `x-forwarded-*` headers cannot reach
//! the provider. Only the body travels, with `model` replaced.

pub mod rewrite;
pub mod stream;

pub use stream::OpenAiStream;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use storycad_protocol::Usage;

use self::rewrite::RawObject;
use crate::caller::request::ChatCall;
use crate::error::UpstreamError;
use crate::providers::routing::Route;

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

/// The end-user id the Worker gives providers for user `sub`: a keyed hash (HMAC-SHA256 under
/// `key`, the secret `USER_HASH_KEY`, else the provider key), so a provider's abuse report
/// names a user the operator can find (by hashing their users' ids) and the provider cannot
/// tell who it is.
pub fn end_user_id(key: &[u8], sub: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes a key of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(b"storycad-end-user\0");
    mac.update(sub.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut id = String::with_capacity(34);
    id.push_str("u-");
    crate::push_hex(&mut id, &digest[..16]);
    id
}

/// Builds the Chat Completions request for `route` from the caller's validated `call`; the
/// end-user field is `end_user` (OpenAI's `safety_identifier`, the `user` of other
/// OpenAI-compatible providers), whatever the caller sent.
pub fn chat_request(
    route: &Route<'_>,
    call: &ChatCall,
    key: &str,
    end_user: &str,
    prompt_cache: bool,
) -> UpstreamRequest {
    let is_openai = route.provider.name == crate::config::OPENAI;
    // OpenAI caches long prompts by itself; the key keeps one user's session on one cache.
    // Other OpenAI-compatible providers may refuse a field they do not know.
    let cache_key = (prompt_cache && is_openai && !call.body.contains_key("prompt_cache_key"))
        .then(|| crate::providers::prompt_cache::cache_key(end_user, route.alias));
    let body = provider_body(
        &call.body,
        route.model,
        end_user,
        is_openai,
        cache_key,
        call.stream,
    );
    let accept = if call.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut request = UpstreamRequest {
        url: route.endpoint(),
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("accept", accept.to_owned()),
            ("authorization", ["Bearer ", key].concat()),
            ("user-agent", USER_AGENT.to_owned()),
        ],
        body,
    };
    // OpenAI logs a caller-supplied id (`X-Client-Request-Id`, ASCII, at most 512 characters)
    // beside its own; other OpenAI-compatible providers document no such header.
    if let Some(id) = call.correlation.as_deref() {
        if route.provider.name == crate::config::OPENAI {
            request.headers.push((CLIENT_REQUEST_ID, id.to_owned()));
        }
    }
    request
}

/// The caller's body as the provider gets it: `model` the route's; the end user's id as
/// `safety_identifier` (OpenAI) or `user` (the caller's own of either left out); OpenAI's prompt
/// cache key when given; in a stream, usage asked for (the relay drops the usage chunk when the
/// caller did not ask for it).
///
/// Written straight from the caller's map, its members in their order with these in their
/// place, as the map with them inserted would be written: not a copy of the map (every message
/// of a long story context, copied again for each route tried).
fn provider_body(
    body: &Map<String, Value>,
    model: &str,
    end_user: &str,
    is_openai: bool,
    prompt_cache_key: Option<String>,
    stream: bool,
) -> Vec<u8> {
    // In name order, as the map orders its members.
    let mut set = vec![("model", Value::String(model.to_owned()))];
    if let Some(key) = prompt_cache_key {
        set.push(("prompt_cache_key", Value::String(key)));
    }
    if is_openai {
        set.push(("safety_identifier", Value::String(end_user.to_owned())));
    }
    if stream {
        let mut options = match body.get("stream_options") {
            Some(Value::Object(o)) => o.clone(),
            _ => Map::new(),
        };
        options.insert("include_usage".to_owned(), Value::Bool(true));
        set.push(("stream_options", Value::Object(options)));
    }
    if !is_openai {
        set.push(("user", Value::String(end_user.to_owned())));
    }
    let merged = Merged {
        body,
        set,
        omit: ["safety_identifier", "user"],
    };
    // A map of JSON values always serialises.
    serde_json::to_vec(&merged).unwrap_or_default()
}

/// `body`'s members with `set`'s written in their place or beside them (both in name order),
/// `omit`'s left out.
struct Merged<'a> {
    body: &'a Map<String, Value>,
    set: Vec<(&'static str, Value)>,
    omit: [&'static str; 2],
}

impl Serialize for Merged<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let mut set = self.set.iter().peekable();
        for (name, value) in self.body {
            while let Some((added, value)) = set.next_if(|(added, _)| *added < name.as_str()) {
                map.serialize_entry(added, value)?;
            }
            if let Some((set_name, value)) = set.next_if(|(added, _)| *added == name.as_str()) {
                map.serialize_entry(set_name, value)?;
            } else if !self.omit.contains(&name.as_str()) {
                map.serialize_entry(name, value)?;
            }
        }
        for (added, value) in set {
            map.serialize_entry(added, value)?;
        }
        map.end()
    }
}

/// OpenAI's header for the caller's own request id.
pub const CLIENT_REQUEST_ID: &str = "x-client-request-id";

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
    use crate::caller::request::parse_chat;
    use crate::config::test_config;
    use crate::config::Config;
    use crate::providers::routing::resolve;

    const KEY: &str = "sk-test-provider-key";
    const END_USER: &str = "u-0123456789abcdef0123456789abcdef";

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
        let req = chat_request(&route, &call, KEY, END_USER, false);
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
        // The caller's `user` gives way to the Worker's end-user id.
        expected.as_object_mut().unwrap().remove("user");
        expected["safety_identifier"] = json!(END_USER);
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
    fn the_end_user_id_is_a_keyed_hash_of_the_user() {
        let a = end_user_id(b"key-1", "alice@example.com");
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("u-") && a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!a.contains("alice"));
        assert_eq!(a, end_user_id(b"key-1", "alice@example.com"), "stable");
        assert_ne!(a, end_user_id(b"key-2", "alice@example.com"), "keyed");
        assert_ne!(a, end_user_id(b"key-1", "bob@example.com"));
        // RFC 4231 case 2's key and data, to pin the construction (HMAC-SHA256, first 16 bytes).
        let mut mac_input = Vec::from(&b"storycad-end-user\0"[..]);
        mac_input.extend_from_slice(b"what do ya want for nothing?");
        assert_eq!(
            end_user_id(b"Jefe", "what do ya want for nothing?"),
            format!("u-{}", hex16(&hmac_sha256(b"Jefe", &mac_input)))
        );
    }

    /// A plain HMAC-SHA256 (RFC 2104) to check the one above against.
    fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let inner: Vec<u8> = k
            .iter()
            .map(|b| b ^ 0x36)
            .chain(data.iter().copied())
            .collect();
        let inner = Sha256::digest(&inner);
        let outer: Vec<u8> = k
            .iter()
            .map(|b| b ^ 0x5c)
            .chain(inner.iter().copied())
            .collect();
        Sha256::digest(&outer).into()
    }

    fn hex16(bytes: &[u8]) -> String {
        bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn other_providers_get_the_end_user_as_user() {
        let c = test_config(&[
            (
                "PROVIDERS",
                r#"{"local":{"base_url":"http://127.0.0.1:9/v1","key_secret":"K"}}"#,
            ),
            ("ROUTES", r#"{"l":["local:llama"]}"#),
        ]);
        let call = parse_chat(
            br#"{"model":"l","user":"me","safety_identifier":"x","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let route = resolve(&c, "l").unwrap();
        let sent: Value =
            serde_json::from_slice(&chat_request(&route, &call, KEY, END_USER, false).body)
                .unwrap();
        assert_eq!(sent["user"], END_USER);
        assert!(sent.get("safety_identifier").is_none());
        // Nor a prompt_cache_key: a field such a provider may refuse.
        let cached: Value =
            serde_json::from_slice(&chat_request(&route, &call, KEY, END_USER, true).body).unwrap();
        assert!(cached.get("prompt_cache_key").is_none());
    }

    #[test]
    fn the_callers_request_id_reaches_openai_only() {
        let header = |req: &UpstreamRequest| {
            req.headers
                .iter()
                .find(|(k, _)| *k == CLIENT_REQUEST_ID)
                .map(|(_, v)| v.clone())
        };
        let c = test_config(&[
            (
                "PROVIDERS",
                r#"{"local":{"base_url":"http://127.0.0.1:9/v1","key_secret":"K"}}"#,
            ),
            (
                "ROUTES",
                r#"{"storycad-fast":["openai:gpt-4o-mini"],"l":["local:llama"]}"#,
            ),
        ]);
        for (alias, expected) in [("storycad-fast", Some("req-7")), ("l", None)] {
            let body =
                format!(r#"{{"model":"{alias}","messages":[{{"role":"user","content":"hi"}}]}}"#);
            let mut call = parse_chat(body.as_bytes()).unwrap();
            let route = resolve(&c, alias).unwrap();
            assert_eq!(
                header(&chat_request(&route, &call, KEY, END_USER, false)),
                None
            );
            call.correlation = Some("req-7".to_owned());
            let req = chat_request(&route, &call, KEY, END_USER, false);
            assert_eq!(header(&req).as_deref(), expected, "{alias}");
        }
    }

    #[test]
    fn completion_gets_the_alias_and_usage() {
        let raw = crate::fixture("openai/chat_completion.json");
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

/// The copy-and-insert writing that [`provider_body`] replaced, kept as its oracle.
#[cfg(test)]
mod provider_body_oracle {
    use serde_json::{json, Map, Value};

    use super::provider_body;

    fn copied(
        body: &Map<String, Value>,
        model: &str,
        end_user: &str,
        is_openai: bool,
        prompt_cache_key: Option<String>,
        stream: bool,
    ) -> Vec<u8> {
        let mut body = body.clone();
        body.insert("model".to_owned(), Value::String(model.to_owned()));
        body.remove("user");
        body.remove("safety_identifier");
        let field = if is_openai {
            "safety_identifier"
        } else {
            "user"
        };
        body.insert(field.to_owned(), Value::String(end_user.to_owned()));
        if let Some(key) = prompt_cache_key {
            body.insert("prompt_cache_key".to_owned(), Value::String(key));
        }
        if stream {
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
        serde_json::to_vec(&body).unwrap_or_default()
    }

    #[test]
    fn bodies_are_written_as_the_copied_map_wrote_them() {
        // Names around and equal to the ones set or left out, in and out of their order.
        let names = [
            "",
            "Model",
            "a",
            "messages",
            "model",
            "model_",
            "prompt_cache_key",
            "safety",
            "safety_identifier",
            "stream",
            "stream_options",
            "streams",
            "temperature",
            "user",
            "user_",
            "zzz",
            "\u{e9}",
        ];
        let values = [
            json!(null),
            json!(true),
            json!(7),
            json!("text \"quoted\" \u{1}"),
            json!([{"role": "user", "content": "hi"}]),
            json!({}),
            json!({"include_usage": false, "other": 1}),
            json!("stream_options as text"),
        ];
        let mut pick = crate::picker(0x9E37_79B9_7F4A_7C15u64);
        // Bodies holding a member that is replaced or left out: the merge's every branch runs.
        let mut touched = 0;
        for round in 0..20_000 {
            let body: Map<String, Value> = (0..pick(8))
                .map(|_| {
                    let name = names[pick(names.len())].to_owned();
                    (name, values[pick(values.len())].clone())
                })
                .collect();
            let (is_openai, stream) = (round % 2 == 0, round % 3 == 0);
            let key = (round % 5 == 0).then(|| format!("sc-{round}"));
            let ours = provider_body(&body, "gpt-x", "end-user", is_openai, key.clone(), stream);
            let theirs = copied(&body, "gpt-x", "end-user", is_openai, key, stream);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{body:?} openai {is_openai} stream {stream}"
            );
            let set = [
                "model",
                "prompt_cache_key",
                "safety_identifier",
                "stream_options",
                "user",
            ];
            if set.iter().any(|name| body.contains_key(*name)) {
                touched += 1;
            }
        }
        assert!(touched > 5_000, "{touched}");
    }
}
