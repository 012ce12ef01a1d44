//! When to try a request again, and how long to wait first.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime},
};

use reqwest::header::HeaderMap;
use storycad_protocol::headers;

/// How the client retries failed requests.
///
/// Retried: connection failures and 408, 409, 429 (unless the code says a budget or quota is
/// spent), 500, 502, 503, 504, 529, plus anything the server marks `x-should-retry: true`;
/// `x-should-retry: false` forbids a retry. The wait is the server's `retry-after-ms` or
/// `retry-after` when given, else a jittered exponential backoff. A server asking for more than
/// `max_server_delay` gets its error returned at once instead of a long sleep.
///
/// The retry budget is a token bucket shared by all requests of one [`Client`](crate::Client):
/// each retry takes `retry_cost`, each success puts back `success_refill`. When a server keeps
/// failing, the bucket empties and requests fail fast instead of multiplying the load.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_server_delay: Duration,
    pub(crate) budget_capacity: u32,
    pub(crate) retry_cost: u32,
    pub(crate) success_refill: u32,
}

impl Default for RetryPolicy {
    /// 2 retries; backoff 0.5 s doubling to 8 s; server delays up to 60 s; a budget of 500 with
    /// a cost of 5 per retry and a refill of 1 per success (smithy's standard numbers).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_server_delay: Duration::from_secs(60),
            budget_capacity: 500,
            retry_cost: 5,
            success_refill: 1,
        }
    }
}

impl RetryPolicy {
    /// Never retry (the 401 refresh-and-retry still happens: it is not a retry of a failure).
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// How many times a request is tried again after the first attempt.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The first backoff; it doubles on each retry (jittered down by up to 25 %).
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// The cap of the exponential backoff.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// The longest server-requested wait the client sleeps; longer ones return the error.
    pub fn max_server_delay(mut self, d: Duration) -> Self {
        self.max_server_delay = d;
        self
    }

    /// The retry budget: a bucket of `capacity` tokens, `retry_cost` taken per retry,
    /// `success_refill` returned per successful request. A cost of 0 disables the budget.
    pub fn budget(mut self, capacity: u32, retry_cost: u32, success_refill: u32) -> Self {
        self.budget_capacity = capacity;
        self.retry_cost = retry_cost;
        self.success_refill = success_refill;
        self
    }

    /// The jittered backoff before retry number `retry` (1-based).
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = 2u32.saturating_pow(retry.saturating_sub(1));
        let base = self
            .initial_backoff
            .saturating_mul(exp)
            .min(self.max_backoff);
        base.mul_f64(1.0 - 0.25 * fastrand::f64())
    }
}

/// The shared token bucket of a [`RetryPolicy`].
#[derive(Debug)]
pub(crate) struct RetryBudget {
    tokens: AtomicU32,
    capacity: u32,
    cost: u32,
    refill: u32,
}

impl RetryBudget {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        RetryBudget {
            tokens: AtomicU32::new(policy.budget_capacity),
            capacity: policy.budget_capacity,
            cost: policy.retry_cost,
            refill: policy.success_refill,
        }
    }

    /// Takes the cost of one retry; false when the bucket cannot pay it.
    pub(crate) fn try_acquire(&self) -> bool {
        if self.cost == 0 {
            return true;
        }
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                t.checked_sub(self.cost)
            })
            .is_ok()
    }

    pub(crate) fn on_success(&self) {
        if self.refill == 0 {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < self.capacity).then(|| t.saturating_add(self.refill).min(self.capacity))
            });
    }

    pub(crate) fn available(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }
}

/// The server's requested wait: `retry-after-ms`, else `retry-after` as seconds or an HTTP date.
pub(crate) fn server_delay(h: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get(headers::RETRY_AFTER_MS).and_then(|v| v.parse::<f64>().ok()) {
        if let Ok(d) = Duration::try_from_secs_f64(ms / 1000.0) {
            return Some(d);
        }
    }
    let v = get(headers::RETRY_AFTER)?;
    if let Ok(secs) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `x-should-retry`: `Some(true)`, `Some(false)` or `None` when absent or unreadable.
pub(crate) fn should_retry_header(h: &HeaderMap) -> Option<bool> {
    match h.get(headers::SHOULD_RETRY)?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let p = RetryPolicy::default();
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(b1 <= Duration::from_millis(500) && b1 >= Duration::from_millis(375));
            let b2 = p.backoff(2);
            assert!(b2 <= Duration::from_secs(1) && b2 >= Duration::from_millis(750));
            let b9 = p.backoff(9);
            assert!(b9 <= Duration::from_secs(8) && b9 >= Duration::from_secs(6));
        }
        assert!(p.backoff(100) <= Duration::from_secs(8));
    }

    #[test]
    fn budget_drains_and_refills() {
        let b = RetryBudget::new(&RetryPolicy::default().budget(10, 5, 1));
        assert!(b.try_acquire());
        assert!(b.try_acquire());
        assert!(!b.try_acquire());
        for _ in 0..5 {
            b.on_success();
        }
        assert!(b.try_acquire());
        for _ in 0..100 {
            b.on_success();
        }
        assert_eq!(b.available(), 10);
    }

    #[test]
    fn server_delay_headers_in_order() {
        let mut h = HeaderMap::new();
        assert_eq!(server_delay(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(server_delay(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(server_delay(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert(
            "retry-after",
            HeaderValue::from_str(&date).expect("header value"),
        );
        let d = server_delay(&h).expect("date parsed");
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(server_delay(&h), None);
    }
}
