//! Reading the objects that keep unknown fields, and the enums whose JSON shape decides the
//! variant, without serde's buffering.
//!
//! `#[serde(flatten)]`, `#[serde(untagged)]` and `#[serde(tag = "...")]` derive code that first
//! copies the input into serde's private `Content` tree and then reads the copy: a second
//! deserializer for every type involved, ~65 KB of the Worker's wasm before optimisation, and a
//! copy of every request body. Here each field is read once, where it stands: the modelled ones
//! into their types, the others into the `extra` map; and a part or a stop list is told apart by
//! the JSON it starts with. What the derives accepted is accepted, with the same errors
//! (`missing field`, `duplicate field`, the type's own), and an error inside a stop list or a
//! content array now names the element it came from.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::chat::{
    CacheControl, Content, ContentPart, ImageUrl, NamedToolChoice, Stop, ToolChoice,
};

/// An object's key: borrowed from the input when it can be.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// `Deserialize` for a struct of named fields and an `extra: Extra` that takes every other
/// field, as `#[serde(flatten)] extra` did. Each field is `required` (absent: `missing field`)
/// or `default` (absent: its type's default); a field named twice is an error. The struct's
/// field names are its JSON keys.
macro_rules! open_struct {
    ($ty:ident { $($field:ident: $presence:ident),* $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct OpenVisitor;

                impl<'de> serde::de::Visitor<'de> for OpenVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("struct ", stringify!($ty)))
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        $(let mut $field = None;)*
                        let mut extra = $crate::Extra::new();
                        while let Some($crate::de::Key(key)) = map.next_key()? {
                            match &*key {
                                $(stringify!($field) => {
                                    if $field.is_some() {
                                        return Err(serde::de::Error::duplicate_field(
                                            stringify!($field),
                                        ));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: serde_json::Value = map.next_value()?;
                                    extra.insert(key.into_owned(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: open_struct!(@take $field, $presence),)*
                            extra,
                        })
                    }
                }

                deserializer.deserialize_map(OpenVisitor)
            }
        }
    };
    (@take $field:ident, required) => {
        $field.ok_or_else(|| serde::de::Error::missing_field(stringify!($field)))?
    };
    (@take $field:ident, default) => {
        $field.unwrap_or_default()
    };
}

pub(crate) use open_struct;

/// A string or an array: `stop`, and a message's `content`.
struct StringOr<T, E> {
    expecting: &'static str,
    one: fn(String) -> T,
    many: fn(Vec<E>) -> T,
}

impl<'de, T, E: Deserialize<'de>> Visitor<'de> for StringOr<T, E> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
        Ok((self.one)(v.to_owned()))
    }

    fn visit_string<Er: de::Error>(self, v: String) -> Result<T, Er> {
        Ok((self.one)(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok((self.many)(items))
    }
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOr {
            expecting: "a string or an array of strings",
            one: Stop::One,
            many: Stop::Many,
        })
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOr {
            expecting: "a string or an array of content parts",
            one: Content::Text,
            many: Content::Parts,
        })
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;

        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = ToolChoice;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"none\", \"auto\", \"required\" or a named function")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ToolChoice, E> {
                Ok(ToolChoice::Mode(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<ToolChoice, E> {
                Ok(ToolChoice::Mode(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ToolChoice, A::Error> {
                NamedToolChoice::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ToolChoice::Named)
            }
        }

        deserializer.deserialize_any(ChoiceVisitor)
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    /// Any JSON is a part: a `text`, `image_url` or `refusal` object whose fields fit is that
    /// variant (other fields dropped); anything else is kept whole as [`ContentPart::Other`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(known_part(&value).unwrap_or(ContentPart::Other(value)))
    }
}

/// The modelled part `value` is, if it is one.
fn known_part(value: &Value) -> Option<ContentPart> {
    let part = value.as_object()?;
    match part.get("type")?.as_str()? {
        "text" => Some(ContentPart::Text {
            text: text(part, "text")?,
            cache_control: match part.get("cache_control") {
                None | Some(Value::Null) => None,
                Some(c) => {
                    let c = c.as_object()?;
                    Some(CacheControl {
                        kind: text(c, "type")?,
                        ttl: optional_text(c, "ttl")?,
                    })
                }
            },
        }),
        "image_url" => {
            let image = part.get("image_url")?.as_object()?;
            Some(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: text(image, "url")?,
                    detail: optional_text(image, "detail")?,
                },
            })
        }
        "refusal" => Some(ContentPart::Refusal {
            refusal: text(part, "refusal")?,
        }),
        _ => None,
    }
}

/// A required string field.
fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key)?.as_str().map(str::to_owned)
}

/// An optional string field: `Some(None)` when absent or null, `None` when not a string.
fn optional_text(object: &Map<String, Value>, key: &str) -> Option<Option<String>> {
    match object.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_str().map(|s| Some(s.to_owned())),
    }
}
