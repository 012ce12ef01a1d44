//! A JSON object read as an ordered list of raw members, so the Worker can change `model` and read
//! `usage` while every other member reaches the caller byte for byte, in the provider's order.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use storycad_protocol::Usage;

/// A JSON object's members in their order, each value kept as its raw text.
#[derive(Debug)]
pub struct RawObject<'a> {
    members: Vec<(String, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// Parses `text`, which must be one JSON object.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The members in their order, each as sent (a name sent twice is there twice).
    pub fn members(&self) -> impl Iterator<Item = (&str, &'a RawValue)> + '_ {
        self.members
            .iter()
            .map(|(key, value)| (key.as_str(), *value))
    }

    /// The raw values of the members named in `names`, in that order (other members are left
    /// out); `None` when one of them is sent twice, which serde's derived visitors refused.
    pub fn named<const N: usize>(&self, names: [&str; N]) -> Option<[Option<&'a RawValue>; N]> {
        let mut found = [None; N];
        for (key, value) in &self.members {
            if let Some(i) = names.iter().position(|name| name == key) {
                if found[i].replace(*value).is_some() {
                    return None;
                }
            }
        }
        Some(found)
    }

    /// The raw value of member `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Whether member `key` is present and not `null`.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.get().trim() != "null")
    }

    /// `usage`, when present, not null and readable.
    pub fn usage(&self) -> Option<Usage> {
        self.get("usage").and_then(|v| read_usage(v.get()))
    }

    /// Whether `choices` is present and an empty array (OpenAI's final usage-only chunk).
    pub fn has_no_choices(&self) -> bool {
        self.get("choices")
            .and_then(|v| serde_json::from_str::<Vec<IgnoredAny>>(v.get()).ok())
            .is_some_and(|c| c.is_empty())
    }

    /// The object written back with `model` set to `model` (added at the end when absent).
    pub fn to_json_with_model(&self, model: &str) -> String {
        let mut out = String::with_capacity(
            self.members
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + model.len()
                + 12,
        );
        let mut seen_model = false;
        out.push('{');
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::json_write::push_string(&mut out, key);
            out.push(':');
            if key == "model" {
                seen_model = true;
                crate::json_write::push_string(&mut out, model);
            } else {
                out.push_str(value.get());
            }
        }
        if !seen_model {
            if !self.members.is_empty() {
                out.push(',');
            }
            out.push_str("\"model\":");
            crate::json_write::push_string(&mut out, model);
        }
        out.push('}');
        out
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(RawObject { members })
            }
        }
        d.deserialize_map(V)
    }
}

/// `usage`'s text as serde's typed read of `Option<Usage>` takes it (`null`, or an object whose
/// counts are whole non-negative numbers, each modelled member once; any other member kept),
/// read through this object's parse and serde_json's `Value`, whose code every request runs
/// anyway: a typed visitor of its own would be compiled again whenever the runtime drops the
/// wasm's baseline code. The tests hold the two reads equal.
fn read_usage(text: &str) -> Option<Usage> {
    const MODELLED: [&str; 5] = [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    ];
    // OpenAI-style streams may carry `"usage": null` on every chunk: no parse for those.
    if text.trim() == "null" {
        return None;
    }
    let object = RawObject::parse(text).ok()?;
    // A modelled member named twice is an error to the typed read: no usage.
    let [prompt, completion, total, prompt_details, completion_details] = object.named(MODELLED)?;
    let value = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).ok();
    let count = |raw: Option<&RawValue>| raw.map_or(Some(0), |raw| value(raw)?.as_u64());
    let details = |raw: Option<&RawValue>| match raw {
        None => Some(None),
        Some(raw) => value(raw).map(|v| Some(v).filter(|v| !v.is_null())),
    };
    let mut usage = Usage::default();
    usage.prompt_tokens = count(prompt)?;
    usage.completion_tokens = count(completion)?;
    usage.total_tokens = count(total)?;
    usage.prompt_tokens_details = details(prompt_details)?;
    usage.completion_tokens_details = details(completion_details)?;
    for (key, raw) in object.members() {
        if !MODELLED.contains(&key) {
            usage.extra.insert(key.to_owned(), value(raw)?);
        }
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_as_the_typed_read_reads_it() {
        // serde's typed read (`Option<Usage>`) is the oracle.
        let typed = |text: &str| serde_json::from_str::<Option<Usage>>(text).ok().flatten();
        let values = [
            "null",
            "0",
            "7",
            "-1",
            "1.0",
            "2.5",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            r#""12""#,
            "true",
            "[]",
            "[1,2]",
            "{}",
            r#"{"cached_tokens":3}"#,
            r#"{"a":{"b":null}}"#,
        ];
        let keys = [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
            "cost",
            "pro\\u006dpt_tokens",
        ];
        let mut pick = crate::picker(0x2545_F491_4F6C_DD1Du64);
        let (mut some, mut none) = (0, 0);
        for _ in 0..20_000 {
            let members: Vec<String> = (0..pick(5))
                .map(|_| {
                    format!(
                        r#""{}": {}"#,
                        keys[pick(keys.len())],
                        values[pick(values.len())]
                    )
                })
                .collect();
            let text = match pick(12) {
                0 => values[pick(values.len())].to_owned(),
                _ => format!("{{{}}}", members.join(",")),
            };
            let read = read_usage(&text);
            assert_eq!(read, typed(&text), "{text}");
            if read.is_some() {
                some += 1;
            } else {
                none += 1;
            }
        }
        assert!(some > 2_000 && none > 2_000, "{some} / {none}");
    }

    #[test]
    fn rewrites_model_and_keeps_everything_else_in_order() {
        let text = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"a \"model\": b"},"logprobs":null,"finish_reason":null}],"x":{"model":"inner"}}"#;
        let o = RawObject::parse(text).unwrap();
        let out = o.to_json_with_model("storycad-fast");
        assert_eq!(
            out,
            text.replace(
                "\"model\":\"gpt-4o-2024-08-06\"",
                "\"model\":\"storycad-fast\""
            )
        );
        assert!(!o.has_no_choices());
        assert_eq!(o.usage(), None);
    }

    #[test]
    fn adds_model_when_absent() {
        let o = RawObject::parse(r#"{"a":1}"#).unwrap();
        assert_eq!(o.to_json_with_model("m\"x"), r#"{"a":1,"model":"m\"x"}"#);
        let o = RawObject::parse("{}").unwrap();
        assert_eq!(o.to_json_with_model("m"), r#"{"model":"m"}"#);
    }

    #[test]
    fn reads_usage_and_empty_choices() {
        let o = RawObject::parse(
            r#"{"choices":[ ],"usage":{"prompt_tokens":14,"completion_tokens":30,"total_tokens":44}}"#,
        )
        .unwrap();
        assert!(o.has_no_choices());
        let u = o.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (14, 30));
        let o = RawObject::parse(r#"{"choices":[],"usage":null}"#).unwrap();
        assert_eq!(o.usage(), None);
        assert!(!o.has("usage"));
    }

    #[test]
    fn rejects_non_objects() {
        for text in ["[]", "1", "\"x\"", "{", "{\"a\":}", ""] {
            assert!(RawObject::parse(text).is_err(), "{text}");
        }
    }
}
