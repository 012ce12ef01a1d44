//! Writing JSON by hand, for the text every request writes whatever it carries: its log line
//! ([`crate::log`]), the limiter's calls, decisions and stored state ([`crate::limiter::wire`])
//! and a name or model put into an answer. serde's derived writer instantiates its generic code
//! once per field type (a dozen functions for the log line alone), and V8
//! compiles each function a request runs on its first call, again whenever the runtime drops
//! the wasm's baseline code (`docs/operations.md`, "After another isolate starts"): those
//! dozen functions were ~0.1 ms of such a request. serde_json stays the writer of JSON values
//! (a provider's body).
//!
//! The output is serde_json's, byte for byte: the tests hold it equal.

use storycad_protocol::ratelimit::push_decimal;

/// `s` as a JSON string, quotes included, escaped as serde_json escapes it: `"` and `\`, the
/// control characters (`\b`, `\t`, `\n`, `\f`, `\r` by name, the others as `\u00XX`); all
/// else as it is.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            crate::push_hex(out, &[b]);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// One JSON object, written member by member; names are written as they are (the callers'
/// are plain ASCII words).
pub struct Object {
    out: String,
    empty: bool,
}

impl Object {
    /// An object with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Object {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Object { out, empty: true }
    }

    fn name(&mut self, name: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        &mut self.out
    }

    /// `"name":"value"`.
    pub fn string(&mut self, name: &str, value: &str) {
        push_string(self.name(name), value);
    }

    /// `"name":"value"` when there is a value.
    pub fn some_string(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.string(name, value);
        }
    }

    /// `"name":n`.
    pub fn number(&mut self, name: &str, value: u64) {
        push_decimal(self.name(name), value);
    }

    /// `"name":n` when there is a number.
    pub fn some_number(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.number(name, value);
        }
    }

    /// `"name":true` or `false`.
    pub fn boolean(&mut self, name: &str, value: bool) {
        self.name(name)
            .push_str(if value { "true" } else { "false" });
    }

    /// `"name":null`.
    pub fn null(&mut self, name: &str) {
        self.name(name).push_str("null");
    }

    /// `"name":{...}`, its members written by `write`.
    pub fn object(&mut self, name: &str, write: impl FnOnce(&mut Object)) {
        self.name(name);
        self.inner(write);
    }

    /// `"name":[n,...]`.
    pub fn numbers(&mut self, name: &str, items: &[u64]) {
        let out = self.name(name);
        out.push('[');
        for (i, n) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_decimal(out, *n);
        }
        out.push(']');
    }

    /// `"name":[...]`, each item written by `write` as an object of its own.
    pub fn objects<T>(&mut self, name: &str, items: &[T], write: impl Fn(&mut Object, &T)) {
        self.name(name).push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.inner(|o| write(o, item));
        }
        self.out.push(']');
    }

    /// An object written by `write` where the text is.
    fn inner(&mut self, write: impl FnOnce(&mut Object)) {
        let mut inner = Object {
            out: std::mem::take(&mut self.out),
            empty: true,
        };
        inner.out.push('{');
        write(&mut inner);
        inner.out.push('}');
        self.out = inner.out;
    }

    /// The object's text.
    pub fn end(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut pick = crate::picker(0x9E37_79B9_7F4A_7C15);
        let alphabet = [
            "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}",
            "\u{1f}", "\u{7f}", "é", "ß", "日本", "🙂", "\u{2028}", "\u{feff}",
        ];
        for _ in 0..5_000 {
            let s: String = (0..pick(12))
                .map(|_| alphabet[pick(alphabet.len())])
                .collect();
            let mut ours = String::new();
            push_string(&mut ours, &s);
            assert_eq!(ours, serde_json::to_string(&s).unwrap(), "{s:?}");
        }
        for b in 0u8..0x80 {
            let s = char::from(b).to_string();
            let mut ours = String::new();
            push_string(&mut ours, &s);
            assert_eq!(ours, serde_json::to_string(&s).unwrap(), "{b:#x}");
        }
    }

    #[test]
    fn objects_are_written_member_by_member() {
        assert_eq!(Object::with_capacity(0).end(), "{}");
        let mut o = Object::with_capacity(8);
        o.string("a", "x\"y");
        o.some_string("b", None);
        o.some_number("c", Some(7));
        o.boolean("d", false);
        o.objects("e", &[1u64, 2], |o, n| o.number("n", *n));
        o.objects("f", &[] as &[u64], |o, n| o.number("n", *n));
        o.null("g");
        o.object("h", |o| {
            o.object("i", |_| {});
            o.numbers("j", &[3, 4]);
            o.numbers("k", &[]);
        });
        assert_eq!(
            o.end(),
            r#"{"a":"x\"y","c":7,"d":false,"e":[{"n":1},{"n":2}],"f":[],"g":null,"h":{"i":{},"j":[3,4],"k":[]}}"#
        );
    }
}
