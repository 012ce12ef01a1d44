//! Header names of the HTTP contract (all lower case, as HTTP/2 sends them).

/// The Worker's id for one request; on every answer.
pub const REQUEST_ID: &str = "x-request-id";
/// The `provider:model` that answered.
pub const ROUTE: &str = "x-storycad-route";
/// `HIT`, `MISS` or `BYPASS` on answers; `on` or `off` on requests.
pub const CACHE: &str = "x-storycad-cache";
/// One key per logical request, the same on each retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Seconds (or an HTTP date) to wait before retrying.
pub const RETRY_AFTER: &str = "retry-after";
/// Milliseconds to wait before retrying (OpenAI's extension).
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// `true` or `false`: the server's own advice on retrying.
pub const SHOULD_RETRY: &str = "x-should-retry";
/// A resumable stream's id, on its answer: `GET /v1/chat/completions/streams/{id}` with
/// [`LAST_EVENT_ID`] picks it up again after a broken connection.
pub const STREAM_ID: &str = "x-storycad-stream-id";
/// The id of the last event the client received (the SSE standard's reconnect header).
pub const LAST_EVENT_ID: &str = "last-event-id";

/// Requests allowed in the window.
pub const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
/// Tokens allowed in the window.
pub const LIMIT_TOKENS: &str = "x-ratelimit-limit-tokens";
/// Requests left in the window.
pub const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
/// Tokens left in the window.
pub const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
/// Time until the request window resets, as OpenAI writes it (`1s`, `6m0s`, `120ms`).
pub const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
/// Time until the token window resets, as OpenAI writes it.
pub const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";

/// The six rate-limit headers, in a fixed order.
pub const RATE_LIMIT_HEADERS: [&str; 6] = [
    LIMIT_REQUESTS,
    LIMIT_TOKENS,
    REMAINING_REQUESTS,
    REMAINING_TOKENS,
    RESET_REQUESTS,
    RESET_TOKENS,
];
