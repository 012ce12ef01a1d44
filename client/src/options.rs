//! [`RequestOptions`]: what one call sends beside its body.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{Error, Result};

/// Headers the client sets itself; an option cannot replace them.
const RESERVED: [&str; 10] = [
    "authorization",
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "idempotency-key",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Extra headers for one call, such as `x-storycad-cache: off`, and the caller's own ids for
/// it: `x-request-id` and a W3C `traceparent`. The Worker logs those beside its own request id
/// and passes the id to the provider where it has a header for it (OpenAI's
/// `X-Client-Request-Id`), so one id finds the request in the app's, the Worker's and the
/// provider's logs.
///
/// ```
/// use storycad_client::RequestOptions;
///
/// let options = RequestOptions::new()
///     .request_id("chapter-7-draft-2")
///     .header("x-storycad-cache", "off");
/// assert_eq!(options.headers().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    headers: Vec<(String, String)>,
}

impl RequestOptions {
    /// No extra header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header, replacing an earlier one of the same name. A name or value HTTP does not
    /// allow, or a header the client sets itself (`authorization`, `content-type`, `accept`,
    /// `idempotency-key`, ...), fails the call with [`Error::Config`] before anything is sent.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// `x-request-id`: the caller's id for this request (the Worker keeps at most 128 of
    /// `A-Z a-z 0-9 - _ . : / + = @`, and ignores anything else).
    pub fn request_id(self, id: impl Into<String>) -> Self {
        self.header("x-request-id", id)
    }

    /// `traceparent` (W3C Trace Context): the Worker logs its trace id.
    pub fn traceparent(self, value: impl Into<String>) -> Self {
        self.header("traceparent", value)
    }

    /// The headers, in the order given.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The headers as sent, checked.
    pub(crate) fn header_map(&self) -> Result<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Config(format!("{name:?} is not a valid header name")))?;
            if RESERVED.contains(&parsed.as_str()) {
                return Err(Error::Config(format!(
                    "the client sets the {parsed} header itself; it cannot be a request option"
                )));
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                Error::Config(format!(
                    "the value of the {parsed} header is not valid in HTTP"
                ))
            })?;
            map.insert(parsed, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_headers_replace_earlier_ones_of_the_same_name() {
        let o = RequestOptions::new()
            .header("X-Thing", "a")
            .request_id("r1")
            .header("x-thing", "b");
        assert_eq!(
            o.headers(),
            [
                ("x-request-id".to_owned(), "r1".to_owned()),
                ("x-thing".to_owned(), "b".to_owned())
            ]
        );
        let map = o.header_map().expect("valid");
        assert_eq!(map.get("x-thing").map(|v| v.as_bytes()), Some(&b"b"[..]));
    }

    #[test]
    fn bad_or_reserved_headers_are_config_errors_that_keep_the_value_out() {
        for (name, value) in [
            ("Authorization", "Bearer other-users-token"),
            ("idempotency-key", "dup-123"),
            ("bad name", "value-9"),
            ("x-ok", "line\r\nbreak"),
        ] {
            let e = RequestOptions::new().header(name, value).header_map();
            let Err(Error::Config(m)) = e else {
                panic!("{name}: {e:?}")
            };
            assert!(!m.contains(value), "{m}");
        }
    }
}
