//! Verified tokens of one isolate, so a caller's next requests skip the signature check.
//!
//! A token is verified once; its [`Claims`] are then kept, keyed by the SHA-256 of the token's
//! exact text (the token itself is never stored), until the token expires. A hit is only ever
//! the same bytes that were verified, under the same configuration (the cache lives with it in
//! the isolate), and the lifetime checks are re-run on every hit with the verifier's leeway, so
//! a cached token is accepted exactly when a fresh verification would accept it, except for
//! one case: a key withdrawn from the JWKS. So each entry names the key that verified it
//! ([`KeyId`]); when the glue stores a fetched key set it drops the entries of keys the set no
//! longer has ([`ClaimsCache::retain_keys`]), and it serves a hit only while its key set is
//! fresh (refreshing it first otherwise): a withdrawn key's tokens stop working within the
//! JWKS refresh interval, and a refresh for a made-up `kid` drops nobody else's entries.
//!
//! The cache is bounded ([`ClaimsCache::new`]'s capacity; `JWT_CACHE_ENTRIES`, 0 turns it
//! off): when full, expired entries go first, then the entry nearest its expiry.

use sha2::{Digest, Sha256};

use super::{Claims, KeyId, LEEWAY_SECS};
use crate::mix_map::{mix_map, MixMap};

/// Entries kept when `JWT_CACHE_ENTRIES` is unset: a few MB at most, far more callers than
/// one isolate serves between two of its tokens' expiries.
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;

/// The SHA-256 of a token's text.
type TokenHash = [u8; 32];

/// Claims of verified tokens, by token hash.
#[derive(Debug)]
pub struct ClaimsCache {
    capacity: usize,
    entries: MixMap<TokenHash, (Claims, KeyId)>,
    hits: u64,
}

impl ClaimsCache {
    /// An empty cache holding at most `capacity` tokens (0: nothing is ever kept).
    pub fn new(capacity: usize) -> Self {
        ClaimsCache {
            capacity,
            entries: mix_map(),
            hits: 0,
        }
    }

    /// The hash a token is kept under.
    pub fn key(token: &str) -> TokenHash {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of a token verified before and still within its lifetime at `now` (Unix
    /// seconds); `None` otherwise (an entry found expired is dropped).
    pub fn get(&mut self, key: &TokenHash, now: u64) -> Option<Claims> {
        let (claims, _) = self.entries.get(key)?;
        if !within_lifetime(claims, now) {
            self.entries.remove(key);
            return None;
        }
        self.hits += 1;
        Some(claims.clone())
    }

    /// Keeps the claims of a token that `signer` has just verified.
    pub fn insert(&mut self, key: TokenHash, claims: Claims, signer: KeyId, now: u64) {
        if self.capacity == 0 || !within_lifetime(&claims, now) {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (c, _)| within_lifetime(c, now));
            if self.entries.len() >= self.capacity {
                if let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (c, _))| c.exp)
                    .map(|(k, _)| *k)
                {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, (claims, signer));
    }

    /// Keeps only the tokens verified by a key `keep` accepts (a new key set: the keys it has).
    pub fn retain_keys(&mut self, keep: impl Fn(&KeyId) -> bool) {
        self.entries.retain(|_, (_, signer)| keep(signer));
    }

    /// Tokens kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

/// The verifier's lifetime rule: not expired and not before `nbf`, each with the leeway.
fn within_lifetime(claims: &Claims, now: u64) -> bool {
    let not_expired = now <= claims.exp.saturating_add(LEEWAY_SECS);
    let started = claims
        .nbf
        .is_none_or(|nbf| nbf <= now.saturating_add(LEEWAY_SECS));
    not_expired && started
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.to_owned(),
            exp,
            iat: None,
            nbf: None,
            plan: Some("pro".to_owned()),
        }
    }

    const K1: KeyId = [1; 32];
    const K2: KeyId = [2; 32];

    #[test]
    fn a_verified_token_is_found_by_its_exact_text_only() {
        let mut cache = ClaimsCache::new(8);
        cache.insert(ClaimsCache::key("a.b.c"), claims("u1", 2_000), K1, 1_000);
        assert_eq!(
            cache.get(&ClaimsCache::key("a.b.c"), 1_500),
            Some(claims("u1", 2_000))
        );
        assert_eq!(cache.get(&ClaimsCache::key("a.b.d"), 1_500), None);
        assert_eq!(cache.get(&ClaimsCache::key("a.b.c "), 1_500), None);
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn an_entry_lives_until_expiry_plus_the_leeway_then_is_dropped() {
        let mut cache = ClaimsCache::new(8);
        let key = ClaimsCache::key("t");
        cache.insert(key, claims("u", 2_000), K1, 1_000);
        assert!(cache.get(&key, 2_000 + LEEWAY_SECS).is_some());
        assert!(cache.get(&key, 2_001 + LEEWAY_SECS).is_none());
        assert!(cache.is_empty(), "an expired entry is removed when seen");
        // Re-inserting an expired token keeps nothing.
        cache.insert(key, claims("u", 2_000), K1, 3_000);
        assert!(cache.is_empty());
    }

    #[test]
    fn not_before_is_checked_on_every_hit() {
        let mut cache = ClaimsCache::new(8);
        let key = ClaimsCache::key("t");
        let mut c = claims("u", 10_000);
        c.nbf = Some(5_000);
        // Verified at 4_950 thanks to the leeway; kept; a hit at an earlier clock is refused.
        cache.insert(key, c, K1, 4_950);
        assert!(cache.get(&key, 4_000).is_none());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut cache = ClaimsCache::new(0);
        cache.insert(ClaimsCache::key("t"), claims("u", 2_000), K1, 1_000);
        assert!(cache.is_empty());
        assert!(cache.get(&ClaimsCache::key("t"), 1_000).is_none());
    }

    #[test]
    fn when_full_expired_entries_then_the_soonest_to_expire_go() {
        let mut cache = ClaimsCache::new(3);
        cache.insert(ClaimsCache::key("old"), claims("a", 1_100), K1, 1_000);
        cache.insert(ClaimsCache::key("mid"), claims("b", 5_000), K1, 1_000);
        cache.insert(ClaimsCache::key("far"), claims("c", 9_000), K1, 1_000);
        // At 2_000 "old" has expired: it makes the room.
        cache.insert(ClaimsCache::key("new"), claims("d", 8_000), K1, 2_000);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&ClaimsCache::key("mid"), 2_000).is_some());
        // Nothing expired now: the one nearest its expiry ("mid") goes.
        cache.insert(ClaimsCache::key("newer"), claims("e", 7_000), K1, 2_000);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&ClaimsCache::key("mid"), 2_000).is_none());
        for kept in ["far", "new", "newer"] {
            assert!(
                cache.get(&ClaimsCache::key(kept), 2_000).is_some(),
                "{kept}"
            );
        }
    }

    #[test]
    fn a_withdrawn_key_takes_its_tokens_with_it_and_no_others() {
        let mut cache = ClaimsCache::new(4);
        cache.insert(ClaimsCache::key("a"), claims("a", 2_000), K1, 1_000);
        cache.insert(ClaimsCache::key("b"), claims("b", 2_000), K2, 1_000);
        // A new set that still has K2 only.
        cache.retain_keys(|k| *k == K2);
        assert!(cache.get(&ClaimsCache::key("a"), 1_000).is_none());
        assert!(cache.get(&ClaimsCache::key("b"), 1_000).is_some());
    }
}
