//! [`MixMap`]: a `HashMap` for keys no caller chooses freely, hashed by a multiply-and-rotate
//! of their words (rustc's own "Fx" hash) rather than std's SipHash.
//!
//! SipHash resists a caller who picks keys to collide; the maps here are keyed by the SHA-256 of
//! a verified token (`ClaimsCache`), a verified token's `sub` (the limiter's waiting
//! settlements) and ids the Worker numbers itself (its streams' mailboxes). Their SipHash was
//! ~1.5 KB of wasm that V8 compiled again on the next request whenever any isolate started in
//! the process, and a few hundred ns a lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` hashed by [`MixHasher`].
pub type MixMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

/// An empty [`MixMap`].
pub fn mix_map<K, V>() -> MixMap<K, V> {
    HashMap::default()
}

/// Folds each word in: rotate, xor, multiply by an odd constant (the multiply carries every
/// bit upward, and hashbrown reads a hash's top bits for its tags).
#[derive(Debug, Default, Clone, Copy)]
pub struct MixHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl MixHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn hash<T: std::hash::Hash>(value: &T) -> u64 {
        BuildHasherDefault::<MixHasher>::default().hash_one(value)
    }

    #[test]
    fn equal_keys_hash_equal_and_near_keys_apart() {
        assert_eq!(hash(&"user-1"), hash(&"user-1".to_owned()));
        assert_ne!(hash(&"user-1"), hash(&"user-2"));
        assert_ne!(hash(&[0u8; 32]), hash(&[0u8; 31]));
        assert_ne!(hash(&1u32), hash(&2u32));
    }

    #[test]
    fn sequential_ids_spread_over_the_tags() {
        // hashbrown tags each entry with the hash's top 7 bits: numbered keys must not share one.
        let tags: std::collections::HashSet<u64> = (0..4096u32).map(|i| hash(&i) >> 57).collect();
        assert_eq!(tags.len(), 128);
    }

    #[test]
    fn works_as_a_map() {
        let mut map = mix_map();
        for i in 0..10_000u32 {
            map.insert(i, i * 2);
        }
        assert!((0..10_000u32).all(|i| map.get(&i) == Some(&(i * 2))));
        assert_eq!(map.remove(&7), Some(14));
        assert_eq!(map.len(), 9_999);
    }
}
