//! [`Named`]: the configuration's maps from a name to a value (providers, routes, plans).
//!
//! They hold a handful of entries, are built once per isolate and read on every request. A
//! vector kept sorted by name does that in a fraction of the code of a `BTreeMap` per value type:
//! in the wasm, ~30 KB less before optimisation, which is also code the first request of an
//! isolate no longer has to compile.

use std::ops::Index;

/// Values by name, iterated in name order. Inserting costs a shift of the entries after it, so
/// this is for small maps built once, as the configuration's are.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for Named<V> {
    fn default() -> Self {
        Named {
            entries: Vec::new(),
        }
    }
}

impl<V> Named<V> {
    /// An empty map.
    pub fn new() -> Self {
        Named::default()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// Sets `name`'s value, returning the one it replaced.
    pub fn insert(&mut self, name: String, value: V) -> Option<V> {
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name, value));
                None
            }
        }
    }

    /// `name`'s value.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.get_key_value(name).map(|(_, v)| v)
    }

    /// `name` as stored, and its value.
    pub fn get_key_value(&self, name: &str) -> Option<(&str, &V)> {
        let (k, v) = &self.entries[self.position(name).ok()?];
        Some((k, v))
    }

    /// Whether `name` has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The names and values, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many names have a value.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name has a value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<V> Index<&str> for Named<V> {
    type Output = V;

    /// `name`'s value; panics when it has none (for tests: the Worker uses [`Named::get`]).
    fn index(&self, name: &str) -> &V {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no entry named {name:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Named;

    #[test]
    fn keeps_names_sorted_and_one_value_per_name() {
        let mut m = Named::new();
        assert!(m.is_empty());
        for (name, v) in [("b", 2), ("a", 1), ("c", 3), ("", 0)] {
            assert_eq!(m.insert(name.to_owned(), v), None);
        }
        assert_eq!(m.insert("b".to_owned(), 20), Some(2));
        assert_eq!(m.len(), 4);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["", "a", "b", "c"]);
        assert_eq!(m.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [0, 1, 20, 3]);
        assert_eq!(m.get("b"), Some(&20));
        assert_eq!(m.get_key_value("c"), Some(("c", &3)));
        assert_eq!(m.get("d"), None);
        assert_eq!(m.get("B"), None);
        assert!(m.contains_key(""));
        assert!(!m.contains_key("ab"));
        assert_eq!(m["a"], 1);
    }

    #[test]
    fn finds_every_name_of_a_larger_map() {
        let mut m = Named::new();
        // Inserted out of order, as a JSON object's keys may come.
        for i in (0..100u32).rev().step_by(2).chain((0..100).step_by(2)) {
            m.insert(format!("n{i:03}"), i);
        }
        assert_eq!(m.len(), 100);
        for i in 0..100 {
            assert_eq!(m.get(&format!("n{i:03}")), Some(&i));
        }
        let keys: Vec<_> = m.keys().collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
