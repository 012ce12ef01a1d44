//! OpenAI's `x-ratelimit-*` headers: parsing and formatting.

use std::time::Duration;

use crate::headers;

/// What the six rate-limit headers said; each is `None` when absent or unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct RateLimitInfo {
    /// Requests allowed in the window.
    pub limit_requests: Option<u64>,
    /// Tokens allowed in the window.
    pub limit_tokens: Option<u64>,
    /// Requests left.
    pub remaining_requests: Option<u64>,
    /// Tokens left.
    pub remaining_tokens: Option<u64>,
    /// Until the request window resets.
    pub reset_requests: Option<Duration>,
    /// Until the token window resets.
    pub reset_tokens: Option<Duration>,
}

impl RateLimitInfo {
    /// Reads the headers through `get`, which returns a header's value by its lower-case name.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let num = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        let dur = |name: &str| get(name).and_then(parse_duration);
        RateLimitInfo {
            limit_requests: num(headers::LIMIT_REQUESTS),
            limit_tokens: num(headers::LIMIT_TOKENS),
            remaining_requests: num(headers::REMAINING_REQUESTS),
            remaining_tokens: num(headers::REMAINING_TOKENS),
            reset_requests: dur(headers::RESET_REQUESTS),
            reset_tokens: dur(headers::RESET_TOKENS),
        }
    }

    /// Whether any header was present.
    pub fn is_empty(&self) -> bool {
        *self == RateLimitInfo::default()
    }

    /// The headers to send, as (name, value) pairs, skipping the unknown ones.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(6);
        let mut num = |name, v: Option<u64>| {
            if let Some(v) = v {
                out.push((name, decimal(v)));
            }
        };
        num(headers::LIMIT_REQUESTS, self.limit_requests);
        num(headers::LIMIT_TOKENS, self.limit_tokens);
        num(headers::REMAINING_REQUESTS, self.remaining_requests);
        num(headers::REMAINING_TOKENS, self.remaining_tokens);
        if let Some(d) = self.reset_requests {
            out.push((headers::RESET_REQUESTS, format_duration(d)));
        }
        if let Some(d) = self.reset_tokens {
            out.push((headers::RESET_TOKENS, format_duration(d)));
        }
        out
    }
}

/// Parses OpenAI's reset durations: `"1s"`, `"6m0s"`, `"120ms"`, `"1h2m3.5s"`, or a bare number
/// of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Formats a duration the way OpenAI does: `"120ms"` under a second, else `"6m0s"`, `"1.5s"`.
pub fn format_duration(d: Duration) -> String {
    // Whole milliseconds, in integers: what `{}` of the seconds as a float wrote (the shortest
    // decimal), without the float formatter's code, which a Worker would compile on every
    // answer that carries these headers. In u64: `as_millis`' u128 would bring in the 128-bit
    // division's code.
    let (secs, millis) = (d.as_secs(), u64::from(d.subsec_millis()));
    if secs == 0 {
        let mut out = decimal(millis);
        out.push_str("ms");
        return out;
    }
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&decimal(hours));
        out.push('h');
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&decimal(minutes));
        out.push('m');
    }
    out.push_str(&decimal(seconds));
    if millis > 0 {
        // `.5`, `.25`, `.125`: three digits without their trailing zeros.
        let digits = decimal(1000 + millis);
        out.push('.');
        out.push_str(digits[1..].trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// `v` in decimal digits (as `v.to_string()` writes it, without the formatter).
fn decimal(v: u64) -> String {
    let mut out = String::new();
    push_decimal(&mut out, v);
    out
}

/// `v` in decimal digits, appended to `out` (as `v.to_string()` writes it, without the
/// formatter: the Worker's wasm compiles no formatting code for its headers and log lines).
pub fn push_decimal(out: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit: `v % 10` is below 10.
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_reset_formats() {
        assert_eq!(parse_duration("120ms"), Some(Duration::from_millis(120)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(
            parse_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_duration("17"), Some(Duration::from_secs(17)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("-1"), None);
    }

    /// The float formatting this file used before `decimal` replaced it: the oracle.
    fn format_duration_float(d: Duration) -> String {
        let ms = d.as_millis();
        if ms < 1000 {
            return format!("{ms}ms");
        }
        let total_secs = d.as_secs_f64();
        let hours = (total_secs / 3600.0).floor();
        let minutes = ((total_secs - hours * 3600.0) / 60.0).floor();
        let seconds = total_secs - hours * 3600.0 - minutes * 60.0;
        let seconds = (seconds * 1000.0).round() / 1000.0;
        let mut out = String::new();
        if hours > 0.0 {
            out.push_str(&format!("{hours}h"));
        }
        if hours > 0.0 || minutes > 0.0 {
            out.push_str(&format!("{minutes}m"));
        }
        out.push_str(&format!("{seconds}s"));
        out
    }

    #[test]
    fn whole_milliseconds_are_written_as_the_float_formatting_wrote_them() {
        let samples = (0..200_000u64)
            .chain((0..100_000u64).map(|i| i * 997))
            .chain([
                3_599_999,
                3_600_000,
                3_600_001,
                86_399_999,
                86_400_000,
                u64::MAX / 1_000_000,
            ]);
        for ms in samples {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), format_duration_float(d), "{ms} ms");
        }
        for v in [0u64, 7, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(decimal(v), v.to_string());
        }
    }

    #[test]
    fn formats_round_trip() {
        for ms in [
            0u64, 5, 120, 999, 1000, 1500, 59_000, 60_000, 360_000, 3_723_500,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Some(d), "{ms} ms");
        }
        assert_eq!(format_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_duration(Duration::from_millis(120)), "120ms");
    }

    #[test]
    fn headers_round_trip() {
        let info = RateLimitInfo {
            limit_requests: Some(500),
            limit_tokens: Some(30000),
            remaining_requests: Some(499),
            remaining_tokens: Some(11072),
            reset_requests: Some(Duration::from_millis(120)),
            reset_tokens: Some(Duration::from_secs(61)),
        };
        let pairs = info.to_headers();
        let back = RateLimitInfo::from_headers(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        });
        assert_eq!(back, info);
        assert!(RateLimitInfo::from_headers(|_| None).is_empty());
    }
}
