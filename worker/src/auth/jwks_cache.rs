//! When to fetch `JWT_JWKS_URL`: the policy, with no I/O, so it is tested on the host.
//!
//! The wasm glue owns one `JwksCache` per isolate and, for each request:
//!
//! ```text
//! let kid = auth::token_kid(token)?;
//! match cache.lookup(now, kid.as_deref()) {
//!     Lookup::Fetch(reason) => match fetch(url).await.and_then(KeySet::from_json) {
//!         Ok(set) => cache.store(now, set),
//!         Err(e) => { cache.fetch_failed(now); log(reason, e) }
//!     },
//!     Lookup::Wait => { wait for the fetch in flight; look up again }
//!     Lookup::Hit | Lookup::Cooldown => {}
//! }
//! let keys = cache.keys(now).ok_or(AuthError::KeysUnavailable)?;
//! verifier.verify_with(keys, token, now)
//! ```
//!
//! (Keep no borrow of the cache across the `await`: take it, ask, release, fetch, take it again.)
//!
//! Policy, with the defaults of [`CachePolicy::default`]:
//! - a fetched set is fresh for `ttl_secs` (10 minutes);
//! - no fetch starts within `cooldown_secs` (30 s) of the previous attempt, successful or not, so
//!   tokens with made-up `kid`s or a failing issuer cost at most one fetch per 30 s per isolate;
//! - a token whose `kid` the fresh set lacks (usable or not) asks for a refetch, within that limit;
//! - a set past its freshness keeps being used while refreshes fail, for at most `max_stale_secs`
//!   (1 hour) past its expiry; after that there are no keys and requests get 503 until a fetch
//!   succeeds.
//!
//! A `Fetch` answer reserves the attempt (it starts the cooldown): requests that want a fetch
//! while it is in flight get `Wait` (they wait for it rather than fail for want of keys, or
//! start their own), for at most [`FETCH_WINDOW_SECS`] after it started.

use super::KeySet;

/// How long a fetch counts as in flight: past it (the fetch's own limit is 5 s), requests stop
/// waiting for it.
pub const FETCH_WINDOW_SECS: u64 = 10;

/// How long keys are trusted and how often the issuer may be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// A fetched set is fresh this long.
    pub ttl_secs: u64,
    /// Least time between two fetch attempts.
    pub cooldown_secs: u64,
    /// How long past its freshness a set may still be used while refreshes fail.
    pub max_stale_secs: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            ttl_secs: 600,
            cooldown_secs: 30,
            max_stale_secs: 3600,
        }
    }
}

/// Why a fetch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    /// No set yet (first request of the isolate, or every fetch so far failed).
    Empty,
    /// The set is older than the TTL.
    Expired,
    /// The token's `kid` is not in the fresh set: the issuer may have rotated keys.
    UnknownKid,
}

impl FetchReason {
    /// For the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Expired => "expired",
            Self::UnknownKid => "unknown_kid",
        }
    }
}

/// What to do before verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The set is fresh and has the token's `kid` (or the token has none): verify with
    /// [`JwksCache::keys`].
    Hit,
    /// Fetch the JWKS now, then call [`JwksCache::store`] or [`JwksCache::fetch_failed`], then
    /// verify with [`JwksCache::keys`].
    Fetch(FetchReason),
    /// A fetch would be wanted and another request's is in flight: wait for it, then look up
    /// again.
    Wait,
    /// A fetch would be wanted but one was attempted less than the cooldown ago: verify with
    /// whatever [`JwksCache::keys`] has (an unknown `kid` then fails as unknown).
    Cooldown,
}

/// Counters for the log or a debug endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered [`Lookup::Hit`].
    pub hits: u64,
    /// Lookups answered [`Lookup::Fetch`] or [`Lookup::Cooldown`].
    pub misses: u64,
    /// Fetches started.
    pub fetches: u64,
    /// Fetches reported failed.
    pub failures: u64,
}

/// The JWKS of one isolate and the times that decide when to fetch it again.
#[derive(Debug, Clone, Default)]
pub struct JwksCache {
    policy: CachePolicy,
    set: Option<KeySet>,
    fetched_at: u64,
    last_attempt: Option<u64>,
    fetching_since: Option<u64>,
    stats: CacheStats,
}

impl JwksCache {
    /// An empty cache with the default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache with this policy.
    pub fn with_policy(policy: CachePolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Decides whether to fetch before verifying a token with this `kid` at `now` (seconds since
    /// the epoch). A [`Lookup::Fetch`] answer records the attempt.
    pub fn lookup(&mut self, now: u64, kid: Option<&str>) -> Lookup {
        let want = match &self.set {
            None => Some(FetchReason::Empty),
            Some(_) if !self.is_fresh(now) => Some(FetchReason::Expired),
            Some(set) => match kid {
                Some(kid) if !set.contains_kid(kid) => Some(FetchReason::UnknownKid),
                _ => None,
            },
        };
        let Some(reason) = want else {
            self.stats.hits += 1;
            return Lookup::Hit;
        };
        self.stats.misses += 1;
        if self
            .fetching_since
            .is_some_and(|since| now.abs_diff(since) < FETCH_WINDOW_SECS)
        {
            return Lookup::Wait;
        }
        if self.in_cooldown(now) {
            return Lookup::Cooldown;
        }
        self.last_attempt = Some(now);
        self.fetching_since = Some(now);
        self.stats.fetches += 1;
        Lookup::Fetch(reason)
    }

    /// Keeps a freshly fetched set (fetch started at or before `now`).
    pub fn store(&mut self, now: u64, set: KeySet) {
        self.set = Some(set);
        self.fetched_at = now;
        self.fetching_since = None;
    }

    /// Records that the fetch [`JwksCache::lookup`] asked for failed; the current set, if any,
    /// stays in use within `max_stale_secs`, and the next attempt waits for the cooldown.
    pub fn fetch_failed(&mut self, _now: u64) {
        self.stats.failures += 1;
        self.fetching_since = None;
    }

    /// The keys to verify with now: the stored set while it is fresh or at most
    /// `max_stale_secs` past its freshness; `None` before the first successful fetch or after
    /// that.
    pub fn keys(&self, now: u64) -> Option<&KeySet> {
        let limit = self
            .fetched_at
            .saturating_add(self.policy.ttl_secs)
            .saturating_add(self.policy.max_stale_secs);
        self.set.as_ref().filter(|_| now < limit)
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Whether the set is within its freshness (a cached verification may be served without
    /// asking the issuer again).
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.fetched_at.saturating_add(self.policy.ttl_secs)
    }

    fn in_cooldown(&self, now: u64) -> bool {
        // A clock that went backwards counts as "just attempted" only within the cooldown
        // window; it never blocks fetches for longer.
        self.last_attempt
            .is_some_and(|last| now.abs_diff(last) < self.policy.cooldown_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_signer::fixture;

    fn jwks() -> KeySet {
        KeySet::from_json(fixture("test-only-jwks.public.json")).unwrap()
    }

    fn eddsa_only() -> KeySet {
        KeySet::from_json(fixture("test-only-eddsa.public.jwk.json")).unwrap()
    }

    const T0: u64 = 1_800_000_000;

    #[test]
    fn first_lookup_fetches_and_then_hits_for_ten_minutes() {
        let mut cache = JwksCache::new();
        assert!(cache.keys(T0).is_none());
        assert_eq!(
            cache.lookup(T0, Some("test-rs256")),
            Lookup::Fetch(FetchReason::Empty)
        );
        cache.store(T0, jwks());
        assert_eq!(cache.lookup(T0 + 1, Some("test-rs256")), Lookup::Hit);
        assert_eq!(cache.lookup(T0 + 599, None), Lookup::Hit);
        assert!(cache.keys(T0 + 599).is_some());
        assert_eq!(
            cache.lookup(T0 + 600, Some("test-rs256")),
            Lookup::Fetch(FetchReason::Expired)
        );
        cache.store(T0 + 600, jwks());
        assert_eq!(cache.lookup(T0 + 601, Some("test-rs256")), Lookup::Hit);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 3,
                misses: 2,
                fetches: 2,
                failures: 0
            }
        );
    }

    #[test]
    fn unknown_kid_refetches_at_most_once_per_30_seconds() {
        let mut cache = JwksCache::new();
        assert_eq!(cache.lookup(T0, None), Lookup::Fetch(FetchReason::Empty));
        cache.store(T0, eddsa_only());
        // Within 30 s of the fetch: no refetch, whatever the kid.
        assert_eq!(cache.lookup(T0 + 10, Some("rotated")), Lookup::Cooldown);
        assert_eq!(cache.lookup(T0 + 29, Some("rotated")), Lookup::Cooldown);
        assert_eq!(
            cache.lookup(T0 + 30, Some("rotated")),
            Lookup::Fetch(FetchReason::UnknownKid)
        );
        // The issuer still lacks it: the next 30 s answer from the cache.
        cache.store(T0 + 30, eddsa_only());
        for t in 31..60 {
            assert_eq!(
                cache.lookup(T0 + t, Some("made-up")),
                Lookup::Cooldown,
                "t={t}"
            );
        }
        assert_eq!(
            cache.lookup(T0 + 60, Some("made-up")),
            Lookup::Fetch(FetchReason::UnknownKid)
        );
        // A rotation that brings the kid in turns it into a hit.
        cache.store(T0 + 60, jwks());
        assert_eq!(cache.lookup(T0 + 61, Some("test-es256")), Lookup::Hit);
        // Known kids never refetch, even right after.
        assert_eq!(cache.lookup(T0 + 61, Some("test-eddsa")), Lookup::Hit);
    }

    #[test]
    fn a_kid_of_a_skipped_key_does_not_refetch() {
        let text = format!(
            r#"{{"keys":[{},{}]}}"#,
            fixture("test-only-p384.public.jwk.json"),
            fixture("test-only-eddsa.public.jwk.json")
        );
        let mut cache = JwksCache::new();
        assert!(matches!(cache.lookup(T0, None), Lookup::Fetch(_)));
        cache.store(T0, KeySet::from_json(&text).unwrap());
        assert_eq!(cache.lookup(T0 + 100, Some("test-es384")), Lookup::Hit);
    }

    #[test]
    fn failed_fetches_are_retried_after_the_cooldown_and_stale_keys_stay_for_an_hour() {
        let mut cache = JwksCache::new();
        // Issuer down from the start: one attempt per 30 s, and no keys meanwhile.
        assert_eq!(cache.lookup(T0, None), Lookup::Fetch(FetchReason::Empty));
        cache.fetch_failed(T0);
        assert_eq!(cache.lookup(T0 + 5, None), Lookup::Cooldown);
        assert!(cache.keys(T0 + 5).is_none());
        assert_eq!(
            cache.lookup(T0 + 30, None),
            Lookup::Fetch(FetchReason::Empty)
        );
        cache.store(T0 + 30, jwks());
        // Expired and the issuer is down again: the stale set serves, one retry per 30 s.
        let expired = T0 + 30 + 600;
        assert_eq!(
            cache.lookup(expired, None),
            Lookup::Fetch(FetchReason::Expired)
        );
        cache.fetch_failed(expired);
        assert_eq!(cache.lookup(expired + 1, None), Lookup::Cooldown);
        assert!(cache.keys(expired + 1).is_some());
        assert!(cache.keys(expired + 3599).is_some());
        assert!(cache.keys(expired + 3600).is_none());
        assert_eq!(cache.stats().failures, 2);
    }

    #[test]
    fn a_backwards_clock_does_not_block_fetching_for_long() {
        let mut cache = JwksCache::new();
        assert!(matches!(cache.lookup(T0, None), Lookup::Fetch(_)));
        cache.fetch_failed(T0);
        assert_eq!(cache.lookup(T0 - 10, None), Lookup::Cooldown);
        assert!(matches!(cache.lookup(T0 - 100, None), Lookup::Fetch(_)));
    }

    #[test]
    fn requests_during_a_fetch_wait_for_it() {
        let mut cache = JwksCache::new();
        assert_eq!(cache.lookup(T0, None), Lookup::Fetch(FetchReason::Empty));
        // While it is in flight every request that needs keys waits, whatever its kid.
        assert_eq!(cache.lookup(T0, None), Lookup::Wait);
        assert_eq!(cache.lookup(T0 + 1, Some("test-eddsa")), Lookup::Wait);
        cache.store(T0 + 1, jwks());
        assert_eq!(cache.lookup(T0 + 1, Some("test-eddsa")), Lookup::Hit);
        // A failed fetch ends the wait too: the next request meets the cooldown.
        let expired = T0 + 1 + 600;
        assert_eq!(
            cache.lookup(expired, None),
            Lookup::Fetch(FetchReason::Expired)
        );
        assert_eq!(cache.lookup(expired, None), Lookup::Wait);
        cache.fetch_failed(expired + 1);
        assert_eq!(cache.lookup(expired + 1, None), Lookup::Cooldown);
        // A fetch that never reports back stops holding requests after the window.
        let mut lost = JwksCache::new();
        assert!(matches!(lost.lookup(T0, None), Lookup::Fetch(_)));
        assert_eq!(lost.lookup(T0 + FETCH_WINDOW_SECS - 1, None), Lookup::Wait);
        assert_eq!(lost.lookup(T0 + FETCH_WINDOW_SECS, None), Lookup::Cooldown);
        assert!(!lost.is_fresh(T0));
        assert!(cache.is_fresh(T0 + 2));
    }

    #[test]
    fn custom_policy_is_honoured() {
        let mut cache = JwksCache::with_policy(CachePolicy {
            ttl_secs: 5,
            cooldown_secs: 1,
            max_stale_secs: 0,
        });
        assert!(matches!(cache.lookup(T0, None), Lookup::Fetch(_)));
        cache.store(T0, jwks());
        assert_eq!(cache.lookup(T0 + 4, None), Lookup::Hit);
        assert_eq!(
            cache.lookup(T0 + 5, None),
            Lookup::Fetch(FetchReason::Expired)
        );
        assert!(cache.keys(T0 + 5).is_none());
    }
}
