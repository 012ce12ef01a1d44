//! Reading JSON by field, through [`serde_json::Value`]: for types whose derived serde reader
//! would cost more wasm than it is worth (one field matcher, map visitor and sequence visitor
//! per type, ~2-5 KB each before optimisation; a reader here is a few hundred bytes).
//!
//! The rules are serde's derive's: unknown fields are ignored; a missing field is an error
//! unless read with a default ([`Fields::or_default`], which also serves `Option` fields: missing
//! or `null` is `None`); a field of the wrong type is an error naming it. Integers keep all 64
//! bits. Unlike serde's reader, a duplicate field is not refused (the last one counts): where
//! that matters (a token's claims) keep serde's.

use serde_json::{Map, Value};

/// A value read from JSON by field.
pub trait FromJson: Sized {
    /// `value` as this type, or why it is not one.
    fn from_json(value: &Value) -> Result<Self, String>;
}

/// Parses `text` as a `T`.
pub fn from_str<T: FromJson>(text: &str) -> Result<T, String> {
    T::from_json(&parse(text)?)
}

// The generic functions here are one copy per type read: what does not depend on the type is
// kept out of them, in functions of one copy.

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn in_field(e: String, name: &str) -> String {
    format!("{e} (field `{name}`)")
}

/// Why `value` is not `expected`, in serde's words.
pub fn invalid(value: &Value, expected: &str) -> String {
    let what = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    match value {
        Value::Number(n) => format!("invalid value: {n}, expected {expected}"),
        _ => format!("invalid type: {what}, expected {expected}"),
    }
}

impl FromJson for u64 {
    fn from_json(value: &Value) -> Result<u64, String> {
        value
            .as_u64()
            .ok_or_else(|| invalid(value, "an unsigned integer"))
    }
}

impl FromJson for u32 {
    fn from_json(value: &Value) -> Result<u32, String> {
        value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid(value, "an unsigned 32-bit integer"))
    }
}

impl FromJson for f64 {
    fn from_json(value: &Value) -> Result<f64, String> {
        value.as_f64().ok_or_else(|| invalid(value, "a number"))
    }
}

impl FromJson for bool {
    fn from_json(value: &Value) -> Result<bool, String> {
        value.as_bool().ok_or_else(|| invalid(value, "a boolean"))
    }
}

impl<T: FromJson> FromJson for Option<T> {
    fn from_json(value: &Value) -> Result<Option<T>, String> {
        match value {
            Value::Null => Ok(None),
            v => T::from_json(v).map(Some),
        }
    }
}

impl<T: FromJson> FromJson for Vec<T> {
    fn from_json(value: &Value) -> Result<Vec<T>, String> {
        match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(T::from_json(item)?);
                }
                Ok(out)
            }
            v => Err(invalid(v, "an array")),
        }
    }
}

/// An object's fields, read by name.
pub struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn of(value: &'a Value, what: &str) -> Result<Fields<'a>, String> {
        match value {
            Value::Object(map) => Ok(Fields(map)),
            v => Err(invalid(v, what)),
        }
    }

    /// The field `name`, as sent (`None` when missing).
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name)
    }

    /// The names of the fields, as sent.
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.0.keys().map(String::as_str)
    }

    /// A string field that may be missing or `null` (`None`), borrowed.
    pub fn str_or_none(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(in_field(invalid(v, "a string"), name)),
        }
    }

    /// A string field that must be there, borrowed.
    pub fn str(&self, name: &str) -> Result<&'a str, String> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(in_field(invalid(v, "a string"), name)),
            None => Err(format!("missing field `{name}`")),
        }
    }

    /// A field that must be there.
    pub fn required<T: FromJson>(&self, name: &str) -> Result<T, String> {
        match self.0.get(name) {
            Some(value) => T::from_json(value).map_err(|e| in_field(e, name)),
            None => Err(format!("missing field `{name}`")),
        }
    }

    /// A field that may be missing (then its default), or an `Option` field (missing: `None`).
    pub fn or_default<T: FromJson + Default>(&self, name: &str) -> Result<T, String> {
        match self.0.get(name) {
            Some(value) => T::from_json(value).map_err(|e| in_field(e, name)),
            None => Ok(T::default()),
        }
    }
}

impl FromJson for String {
    fn from_json(value: &Value) -> Result<String, String> {
        match value {
            Value::String(s) => Ok(s.clone()),
            v => Err(invalid(v, "a string")),
        }
    }
}

impl FromJson for Value {
    fn from_json(value: &Value) -> Result<Value, String> {
        Ok(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_follow_serdes_rules() {
        let v = json!({"s": "x", "n": 7, "null": null, "list": [1, 2], "obj": {"a": 1}});
        let f = Fields::of(&v, "a test object").unwrap();
        assert_eq!(f.str("s"), Ok("x"));
        assert_eq!(f.str_or_none("s"), Ok(Some("x")));
        assert_eq!(f.str_or_none("null"), Ok(None));
        assert_eq!(f.str_or_none("missing"), Ok(None));
        assert_eq!(f.str("missing"), Err("missing field `missing`".to_owned()));
        assert_eq!(
            f.str("n"),
            Err("invalid value: 7, expected a string (field `n`)".to_owned())
        );
        assert_eq!(
            f.str_or_none("list"),
            Err("invalid type: an array, expected a string (field `list`)".to_owned())
        );
        assert_eq!(f.required::<u64>("n"), Ok(7));
        assert_eq!(f.required::<Vec<u64>>("list"), Ok(vec![1, 2]));
        assert_eq!(f.or_default::<Vec<u64>>("missing"), Ok(Vec::new()));
        assert_eq!(f.or_default::<Option<String>>("null"), Ok(None));
        assert_eq!(
            f.or_default::<Option<String>>("s"),
            Ok(Some("x".to_owned()))
        );
        assert_eq!(f.required::<Value>("obj"), Ok(json!({"a": 1})));
        assert!(f.required::<u64>("s").unwrap_err().contains("field `s`"));
        assert!(f.or_default::<bool>("n").is_err());
        assert_eq!(
            Fields::of(&json!([1]), "a test object").err(),
            Some("invalid type: an array, expected a test object".to_owned())
        );
        assert_eq!(
            from_str::<Vec<u64>>("[1, 18446744073709551615]"),
            Ok(vec![1, u64::MAX])
        );
        assert!(from_str::<u64>("1.0").is_err());
        assert!(from_str::<u64>("{").is_err());
    }
}
