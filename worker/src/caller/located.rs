//! A typed value read out of a parsed JSON object, saying where it failed.
//!
//! The chat request is parsed once into a [`Value`] (the fields go upstream as sent) and then
//! checked against the typed [`storycad_protocol::ChatRequest`]; a check that fails names the
//! field in the error's `param` (`messages[0].role`), as OpenAI does. This deserializer reads
//! the tree in place and notes the path of the innermost field an error came out of. It is
//! the only deserializer the request's types are read with (the check here, and the Anthropic
//! translation's read of the same body), so the Worker holds one copy of their code.
//!
//! The request's types read their fields where they stand (`storycad_protocol`'s hand-written
//! `Deserialize` for the objects with an `extra` map and for `stop`, `content` and
//! `tool_choice`), so an error anywhere names its own path (`stop[1]`,
//! `tool_choice.function.name`). A type that derives serde's buffering (an untagged or
//! internally tagged enum, as the tests below do) is read from serde's copy, not from here, so
//! an error inside one names the buffered value itself; a bad tag is named (`...content[1].type`).

use std::cell::RefCell;
use std::fmt;

use serde::de::{
    self, value::BorrowedStrDeserializer, DeserializeSeed, Deserializer, EnumAccess, MapAccess,
    SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Why a value did not fit the type, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `messages[0].role`; `None` when the object itself is wrong (a required field missing).
    pub path: Option<String>,
    /// serde's description (`unknown variant `robot`, expected one of ...`).
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Reads a `T` from `object`.
pub fn from_object<'a, T: Deserialize<'a>>(object: &'a Map<String, Value>) -> Result<T, Invalid> {
    let found = Found::default();
    let root = At {
        value: Node::Object(object),
        segment: Segment::Root,
        found: &found,
    };
    T::deserialize(root).map_err(|Error(message)| Invalid {
        path: found.path.into_inner(),
        message,
    })
}

/// serde's error type here: its message. The path travels beside it, in [`Found`].
#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }

    // As serde_json words it: JSON has `null`, not serde's "unit value".
    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        match unexpected {
            Unexpected::Unit => Error(format!("invalid type: null, expected {expected}")),
            other => Error(format!("invalid type: {other}, expected {expected}")),
        }
    }
}

/// The path of the innermost field an error came out of, once known.
#[derive(Default)]
struct Found {
    path: RefCell<Option<String>>,
}

impl Found {
    /// Notes where an error came out, unless a deeper field already did.
    fn note(&self, segment: &Segment<'_>) {
        let mut path = self.path.borrow_mut();
        if path.is_none() {
            let mut text = String::new();
            segment.write(&mut text);
            *path = (!text.is_empty()).then_some(text);
        }
    }
}

/// Where a value sits: a chain through the stack, written out only for an error.
#[derive(Clone, Copy)]
enum Segment<'p> {
    Root,
    Key(&'p str, &'p Segment<'p>),
    Index(usize, &'p Segment<'p>),
}

impl Segment<'_> {
    fn write(&self, out: &mut String) {
        match self {
            Segment::Root => {}
            Segment::Key(key, parent) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(index, parent) => {
                parent.write(out);
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
        }
    }
}

/// A value, or the root object (which the caller holds as a map, not inside a `Value`).
#[derive(Clone, Copy)]
enum Node<'a> {
    Value(&'a Value),
    Object(&'a Map<String, Value>),
}

/// The deserializer: a value and where it sits.
struct At<'a, 'p> {
    value: Node<'a>,
    segment: Segment<'p>,
    found: &'p Found,
}

impl<'a, 'p> At<'a, 'p> {
    /// Reads `value`, this one's child at `segment`, noting where an error came out.
    fn read_child<'s, T>(
        &'s self,
        value: &'a Value,
        segment: Segment<'s>,
        read: impl FnOnce(At<'a, 's>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let found = self.found;
        let at = At {
            value: Node::Value(value),
            segment,
            found,
        };
        read(at).inspect_err(|_| found.note(&segment))
    }

    fn unexpected(&self) -> Unexpected<'a> {
        match self.value {
            Node::Object(_) | Node::Value(Value::Object(_)) => Unexpected::Map,
            Node::Value(Value::Null) => Unexpected::Unit,
            Node::Value(Value::Bool(b)) => Unexpected::Bool(*b),
            Node::Value(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Unexpected::Unsigned(u),
                (_, Some(i)) => Unexpected::Signed(i),
                _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Node::Value(Value::String(s)) => Unexpected::Str(s),
            Node::Value(Value::Array(_)) => Unexpected::Seq,
        }
    }
}

impl<'de, 'p> Deserializer<'de> for At<'de, 'p> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = match self.value {
            Node::Object(map) => return visitor.visit_map(Fields::new(map, &self)),
            Node::Value(value) => value,
        };
        match value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    // Without serde_json's arbitrary_precision a number is one of the three.
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
                parent: &self,
            }),
            Value::Object(map) => visitor.visit_map(Fields::new(map, &self)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Node::Value(Value::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // As serde_json: `"variant"`, or `{"variant": content}`.
        let (variant, content) = match self.value {
            Node::Value(Value::String(s)) => (s.as_str(), None),
            Node::Value(Value::Object(map)) | Node::Object(map) if map.len() == 1 => {
                match map.iter().next() {
                    Some((k, v)) => (k.as_str(), Some(v)),
                    None => return Err(de::Error::invalid_length(0, &"one variant")),
                }
            }
            _ => {
                return Err(de::Error::invalid_type(
                    self.unexpected(),
                    &"a string or an object of one field",
                ))
            }
        };
        visitor.visit_enum(Variant {
            variant,
            content,
            parent: &self,
        })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// An object's fields, each read where it sits.
struct Fields<'a, 'p, 'q> {
    fields: serde_json::map::Iter<'a>,
    value: Option<(&'a str, &'a Value)>,
    parent: &'q At<'a, 'p>,
}

impl<'a, 'p, 'q> Fields<'a, 'p, 'q> {
    fn new(map: &'a Map<String, Value>, parent: &'q At<'a, 'p>) -> Self {
        Fields {
            fields: map.iter(),
            value: None,
            parent,
        }
    }
}

impl<'de> MapAccess<'de> for Fields<'de, '_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.fields.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
            .inspect_err(|_| {
                let at = Segment::Key(key, &self.parent.segment);
                self.parent.found.note(&at);
            })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.value.take() else {
            return Err(de::Error::custom("a value asked for before its key"));
        };
        let parent = self.parent;
        parent.read_child(value, Segment::Key(key, &parent.segment), |at| {
            seed.deserialize(at)
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// An array's items, each read where it sits.
struct Items<'a, 'p, 'q> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
    parent: &'q At<'a, 'p>,
}

impl<'de> SeqAccess<'de> for Items<'de, '_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((index, value)) = self.items.next() else {
            return Ok(None);
        };
        let parent = self.parent;
        parent
            .read_child(value, Segment::Index(index, &parent.segment), |at| {
                seed.deserialize(at)
            })
            .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An enum's variant: its name, and what it holds.
struct Variant<'a, 'p, 'q> {
    variant: &'a str,
    content: Option<&'a Value>,
    parent: &'q At<'a, 'p>,
}

impl<'de, 'p, 'q> EnumAccess<'de> for Variant<'de, 'p, 'q> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let variant = seed.deserialize(BorrowedStrDeserializer::new(self.variant))?;
        Ok((variant, self))
    }
}

impl<'de> Variant<'de, '_, '_> {
    /// The variant's content, read where it sits (under the variant's name).
    fn content<T>(
        &self,
        read: impl FnOnce(At<'de, '_>) -> Result<T, Error>,
        expected: &str,
    ) -> Result<T, Error> {
        let Some(value) = self.content else {
            return Err(de::Error::invalid_type(Unexpected::UnitVariant, &expected));
        };
        let parent = self.parent;
        parent.read_child(value, Segment::Key(self.variant, &parent.segment), read)
    }
}

impl<'de> VariantAccess<'de> for Variant<'de, '_, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.content {
            None | Some(Value::Null) => Ok(()),
            Some(_) => Err(de::Error::invalid_type(Unexpected::Map, &"a unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        self.content(|at| seed.deserialize(at), "a newtype variant")
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.content(|at| at.deserialize_seq(visitor), "a tuple variant")
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.content(|at| at.deserialize_map(visitor), "a struct variant")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn read<'a, T: Deserialize<'a>>(value: &'a Value) -> Result<T, Invalid> {
        from_object(value.as_object().expect("an object"))
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Plain,
        Boxed(u8),
        Pair(u8, u8),
        Named { inner: u8 },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", rename_all = "lowercase")]
    enum Part {
        Text { text: String },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Newtype(u32);

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        kind: Kind,
        #[serde(default)]
        parts: Vec<Part>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Outer {
        name: String,
        count: Option<u32>,
        ratio: f64,
        offset: i64,
        flag: bool,
        id: Newtype,
        stop: Option<OneOrMany>,
        items: Vec<Inner>,
        #[serde(flatten)]
        rest: BTreeMap<String, Value>,
    }

    fn good() -> Value {
        json!({
            "name": "n", "count": null, "ratio": 0.5, "offset": -3, "flag": true, "id": 7,
            "stop": ["a", "b"],
            "items": [
                {"kind": "plain"},
                {"kind": {"boxed": 4}, "parts": [{"type": "text", "text": "t"}]},
                {"kind": {"pair": [1, 2]}},
                {"kind": {"named": {"inner": 9}}}
            ],
            "extra": {"k": [1, "v"]}
        })
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let value = good();
        let ours: Outer = read(&value).unwrap();
        let theirs: Outer = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours.items[1].kind, Kind::Boxed(4));
        assert_eq!(ours.items[3].kind, Kind::Named { inner: 9 });
        assert_eq!(ours.rest["extra"], json!({"k": [1, "v"]}));
        assert_eq!(
            ours.stop,
            Some(OneOrMany::Many(vec!["a".into(), "b".into()]))
        );
    }

    /// Every error names the field it came out of, and says what serde_json would say.
    #[test]
    fn errors_name_the_innermost_field() {
        let cases: [(&str, Value, Option<&str>); 13] = [
            ("/items/0", json!({}), Some("items[0]")),
            ("/name", json!(1), Some("name")),
            ("/count", json!(-1), Some("count")),
            ("/count", json!(1u64 << 40), Some("count")),
            ("/ratio", json!("x"), Some("ratio")),
            ("/flag", Value::Null, Some("flag")),
            ("/id", json!(1.5), Some("id")),
            ("/stop", json!([1]), Some("stop")),
            ("/items/2/kind", json!("robot"), Some("items[2].kind")),
            (
                "/items/1/kind",
                json!({"boxed": "x"}),
                Some("items[1].kind.boxed"),
            ),
            (
                "/items/3/kind",
                json!({"named": {}}),
                Some("items[3].kind.named"),
            ),
            (
                "/items/1/parts/0/type",
                json!("image"),
                Some("items[1].parts[0].type"),
            ),
            ("/items/1/parts/0/text", json!(3), Some("items[1].parts[0]")),
        ];
        for (pointer, bad, path) in cases {
            let mut value = good();
            *value.pointer_mut(pointer).unwrap() = bad;
            let ours = read::<Outer>(&value).unwrap_err();
            let theirs = serde_json::from_value::<Outer>(value).unwrap_err();
            assert_eq!(ours.path.as_deref(), path, "{pointer}");
            assert_eq!(ours.message, theirs.to_string(), "{pointer}");
        }
    }

    #[test]
    fn a_missing_field_of_the_object_itself_has_no_path() {
        let mut value = good();
        value.as_object_mut().unwrap().remove("name");
        let e = read::<Outer>(&value).unwrap_err();
        assert_eq!(e.path, None);
        assert_eq!(e.message, "missing field `name`");
        assert_eq!(e.to_string(), "missing field `name`");
    }

    #[test]
    fn enum_shapes_serde_json_refuses_are_refused() {
        for (kind, path) in [
            (json!(["plain"]), "items[0].kind"),
            (json!({"plain": 1, "boxed": 2}), "items[0].kind"),
            (json!({}), "items[0].kind"),
            (json!({"plain": 1}), "items[0].kind"),
            (json!({"boxed": null}), "items[0].kind.boxed"),
            (json!("boxed"), "items[0].kind"),
        ] {
            let mut value = good();
            value["items"][0]["kind"] = kind.clone();
            let e = read::<Outer>(&value).unwrap_err();
            assert_eq!(e.path.as_deref(), Some(path), "{kind}");
            assert!(serde_json::from_value::<Outer>(value).is_err(), "{kind}");
        }
    }
}
