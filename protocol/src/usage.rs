//! `GET /v1/usage`: the caller's plan, its limits and what is left now.

use serde::{Deserialize, Serialize};

/// The body of `GET /v1/usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UsageReport {
    /// `"usage"`.
    #[serde(default)]
    pub object: String,
    /// The caller's plan.
    pub plan: String,
    /// The aliases the plan allows.
    #[serde(default)]
    pub models: Vec<String>,
    /// The output-token cap applied to each request.
    #[serde(default)]
    pub max_output_tokens: u32,
    /// Requests in the current minute.
    pub requests: LimitStatus,
    /// Tokens in the current day (UTC).
    pub tokens: LimitStatus,
    /// Streams open at once.
    pub streams: LimitStatus,
}

/// One limit: its size, what is left, and when it resets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LimitStatus {
    /// The limit.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Seconds until it resets fully (0 when it is full).
    #[serde(default)]
    pub reset_seconds: f64,
}

impl UsageReport {
    /// The report of `plan` with its three limits; no models and no output cap yet.
    pub fn new(
        plan: impl Into<String>,
        requests: LimitStatus,
        tokens: LimitStatus,
        streams: LimitStatus,
    ) -> Self {
        UsageReport {
            object: "usage".to_owned(),
            plan: plan.into(),
            models: Vec::new(),
            max_output_tokens: 0,
            requests,
            tokens,
            streams,
        }
    }
}

impl LimitStatus {
    /// A limit of `limit`, `remaining` left, full again in `reset_seconds`.
    pub fn new(limit: u64, remaining: u64, reset_seconds: f64) -> Self {
        LimitStatus {
            limit,
            remaining,
            reset_seconds,
        }
    }
}
