//! `GET /v1/usage`: the caller's plan, its limits and what is left now.

use serde::{Deserialize, Serialize};

/// The body of `GET /v1/usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
pub struct LimitStatus {
    /// The limit.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Seconds until it resets fully (0 when it is full).
    #[serde(default)]
    pub reset_seconds: f64,
}
