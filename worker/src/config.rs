//! The Worker's configuration: every `[vars]` entry parsed and checked once per isolate.
//!
//! [`Config::from_lookup`] takes a function that returns a variable's text (the wasm glue reads
//! it from `Env`; tests pass a map), so all parsing and validation runs on the host. Secrets are
//! not read here: a provider names the secret that holds its key and the glue reads it when the
//! provider is used, so the key never sits in a long-lived struct.

use std::fmt;

use serde_json::{Map, Value};

use crate::auth::{parse_algorithms, Algorithm, KeySet, Verifier};
use crate::named::Named;

/// `OPENAI_BASE_URL` when unset.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// `ANTHROPIC_BASE_URL` when unset.
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// `MAX_BODY_BYTES` when unset: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// `UPSTREAM_TIMEOUT_MS` when unset: how long the upstream may take to answer, and the longest
/// silence allowed inside a stream.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 60_000;

/// `STREAM_COALESCE_MS` when unset: events that come within this long of the last write to the
/// caller go out together, at most this much later. A provider's tokens come tens of ms apart
/// and each goes out at once; a burst (a provider sending faster than that) costs one write per
/// window instead of one per event (each write is work for the runtime, counted as CPU time).
pub const DEFAULT_STREAM_COALESCE_MS: u64 = 10;

/// The longest `RESUME_WINDOW_SECONDS` accepted: the events wait in the user's Durable Object's
/// memory that long.
pub const MAX_RESUME_WINDOW_SECONDS: u64 = 3_600;

/// The longest `STREAM_COALESCE_MS` accepted: a longer hold would show as stutter.
pub const MAX_STREAM_COALESCE_MS: u64 = 250;
/// `UPSTREAM_ANSWER_TIMEOUT_MS` when unset: how long a complete (non-stream) answer may take
/// to begin (a provider sends its headers only when the whole answer is ready, and a long one
/// takes minutes). Below the client SDK's 300 s wait for headers, so the Worker's answer (504,
/// not worth retrying) comes first.
pub const DEFAULT_UPSTREAM_ANSWER_TIMEOUT_MS: u64 = 240_000;
/// `CACHE_TTL_SECONDS` when unset (0 disables the cache).
pub const DEFAULT_CACHE_TTL_SECONDS: u64 = 0;

/// The name of the built-in OpenAI provider.
pub const OPENAI: &str = "openai";
/// The name of the built-in Anthropic provider.
pub const ANTHROPIC: &str = "anthropic";

/// A variable that is missing or malformed. The message names the variable and what is wrong,
/// never its value (a misplaced key must not end up in a log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable's name.
    pub var: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(var: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration variable {}: {}", self.var, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// How the Worker talks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI Chat Completions, passed through (OpenAI and every compatible endpoint).
    OpenAiCompatible,
    /// Anthropic Messages (needs translation).
    Anthropic,
}

/// One upstream provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Its name, as used in `ROUTES` (`openai`, `anthropic`, or a `PROVIDERS` key).
    pub name: String,
    /// The API's wire format.
    pub kind: ProviderKind,
    /// Base URL without a trailing slash; the endpoint path is appended to it.
    pub base_url: String,
    /// The name of the secret that holds this provider's key.
    pub key_secret: String,
}

/// One entry of a route's fallback chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// A provider name (a key of [`Config::providers`]).
    pub provider: String,
    /// The provider's model name.
    pub model: String,
}

/// JWT verification settings. Exactly one of `keys` and `jwks_url` is set.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `JWT_PUBLIC_JWK`: one JWK or a JWKS, parsed.
    pub keys: Option<KeySet>,
    /// `JWT_JWKS_URL`: where to fetch the issuer's JWKS.
    pub jwks_url: Option<String>,
    /// `JWT_ISSUER`.
    pub issuer: String,
    /// `JWT_AUDIENCE`.
    pub audience: String,
    /// `JWT_ALGORITHMS` (default RS256, ES256, EdDSA).
    pub algorithms: Vec<Algorithm>,
    /// `JWT_CACHE_ENTRIES`: verified tokens kept per isolate (0: every request is verified).
    pub cache_entries: usize,
}

impl JwtConfig {
    /// The token verifier these settings describe.
    pub fn verifier(&self) -> Verifier {
        match &self.keys {
            Some(keys) => Verifier::new(
                keys.clone(),
                self.issuer.clone(),
                self.audience.clone(),
                self.algorithms.clone(),
            ),
            None => Verifier::with_remote_keys(
                self.issuer.clone(),
                self.audience.clone(),
                self.algorithms.clone(),
            ),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// JWT verification settings.
    pub jwt: JwtConfig,
    /// Providers by name: `openai`, `anthropic` and those of `PROVIDERS`.
    pub providers: Named<Provider>,
    /// Alias -> fallback chain (never empty).
    pub routes: Named<Vec<RouteTarget>>,
    /// `PLANS`, with `DEFAULT_PLAN` and `LIMITS_ENABLED`.
    pub plans: crate::plans::Plans,
    /// `CACHE_TTL_SECONDS`.
    pub cache_ttl_seconds: u64,
    /// `PROMPT_CACHE` and `PROMPT_CACHE_MIN_TOKENS`: provider prompt caching.
    pub prompt_cache: crate::providers::prompt_cache::PromptCache,
    /// `CACHE_SCOPE`: `user` (default) or `shared`.
    pub cache_scope: crate::cache::Scope,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: u64,
    /// `UPSTREAM_TIMEOUT_MS`: a stream's wait for headers and longest silence (the provider's,
    /// or a caller's that stopped reading).
    pub upstream_timeout_ms: u64,
    /// `UPSTREAM_ANSWER_TIMEOUT_MS`: a complete answer's wait for headers.
    pub answer_timeout_ms: u64,
    /// `STREAM_COALESCE_MS`: a stream's events that come within this long of its last write to
    /// the caller wait and go out together (0: each piece at once).
    pub stream_coalesce_ms: u64,
    /// `RESUME_WINDOW_SECONDS`: how long a stream whose caller left before its end can be
    /// resumed, counted from its last event (0: streams are not resumable).
    pub resume_window_seconds: u64,
}

impl Config {
    /// Reads and checks every variable through `var`, which returns a variable's text or `None`
    /// when it is not set. An empty (or all-blank) value counts as not set.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());

        let jwks_url = get("JWT_JWKS_URL")
            .map(|u| parse_url("JWT_JWKS_URL", &u))
            .transpose()?;
        let keys = match (get("JWT_PUBLIC_JWK"), &jwks_url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "JWT_PUBLIC_JWK",
                    "set JWT_PUBLIC_JWK or JWT_JWKS_URL, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "JWT_PUBLIC_JWK",
                    "one of JWT_PUBLIC_JWK or JWT_JWKS_URL must be set",
                ))
            }
            // KeyError's text names a key by kid or position, never its material.
            (Some(text), None) => Some(
                KeySet::from_json(&text)
                    .map_err(|e| ConfigError::new("JWT_PUBLIC_JWK", e.to_string()))?,
            ),
            (None, Some(_)) => None,
        };
        let jwt = JwtConfig {
            keys,
            jwks_url,
            issuer: get("JWT_ISSUER")
                .map(|s| s.trim().to_owned())
                .ok_or_else(|| ConfigError::new("JWT_ISSUER", "is required"))?,
            audience: get("JWT_AUDIENCE")
                .map(|s| s.trim().to_owned())
                .ok_or_else(|| ConfigError::new("JWT_AUDIENCE", "is required"))?,
            algorithms: match get("JWT_ALGORITHMS") {
                Some(text) => parse_algorithms(&text)
                    .map_err(|e| ConfigError::new("JWT_ALGORITHMS", e.to_string()))?,
                None => Algorithm::DEFAULT.to_vec(),
            },
            cache_entries: usize::try_from(parse_u64(
                "JWT_CACHE_ENTRIES",
                get("JWT_CACHE_ENTRIES"),
                crate::auth::DEFAULT_CACHE_ENTRIES as u64,
                0,
            )?)
            .map_err(|_| ConfigError::new("JWT_CACHE_ENTRIES", "is too large"))?,
        };

        let mut providers = Named::new();
        let openai_base = get("OPENAI_BASE_URL").unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.into());
        providers.insert(
            OPENAI.to_owned(),
            Provider {
                name: OPENAI.to_owned(),
                kind: ProviderKind::OpenAiCompatible,
                base_url: parse_url("OPENAI_BASE_URL", &openai_base)?,
                key_secret: "OPENAI_API_KEY".to_owned(),
            },
        );
        let anthropic_base =
            get("ANTHROPIC_BASE_URL").unwrap_or_else(|| DEFAULT_ANTHROPIC_BASE_URL.into());
        providers.insert(
            ANTHROPIC.to_owned(),
            Provider {
                name: ANTHROPIC.to_owned(),
                kind: ProviderKind::Anthropic,
                base_url: parse_url("ANTHROPIC_BASE_URL", &anthropic_base)?,
                key_secret: "ANTHROPIC_API_KEY".to_owned(),
            },
        );
        if let Some(text) = get("PROVIDERS") {
            for (name, spec) in parse_providers(&text)? {
                providers.insert(name, spec);
            }
        }

        let routes = match get("ROUTES") {
            Some(text) => parse_routes(&text, &providers)?,
            None => return Err(ConfigError::new("ROUTES", "is required")),
        };

        let plans = crate::plans::Plans::parse(
            get("PLANS").as_deref(),
            get("DEFAULT_PLAN").as_deref(),
            get("LIMITS_ENABLED").as_deref(),
            &routes,
        )?;

        Ok(Config {
            jwt,
            providers,
            routes,
            plans,
            cache_scope: crate::cache::Scope::parse(get("CACHE_SCOPE").as_deref())
                .map_err(|reason| ConfigError::new("CACHE_SCOPE", reason))?,
            prompt_cache: crate::providers::prompt_cache::PromptCache::parse(
                get("PROMPT_CACHE").as_deref(),
                get("PROMPT_CACHE_MIN_TOKENS").as_deref(),
            )?,
            cache_ttl_seconds: parse_u64(
                "CACHE_TTL_SECONDS",
                get("CACHE_TTL_SECONDS"),
                DEFAULT_CACHE_TTL_SECONDS,
                0,
            )?,
            max_body_bytes: parse_u64(
                "MAX_BODY_BYTES",
                get("MAX_BODY_BYTES"),
                DEFAULT_MAX_BODY_BYTES,
                1,
            )?,
            upstream_timeout_ms: parse_u64(
                "UPSTREAM_TIMEOUT_MS",
                get("UPSTREAM_TIMEOUT_MS"),
                DEFAULT_UPSTREAM_TIMEOUT_MS,
                1,
            )?,
            answer_timeout_ms: parse_u64(
                "UPSTREAM_ANSWER_TIMEOUT_MS",
                get("UPSTREAM_ANSWER_TIMEOUT_MS"),
                DEFAULT_UPSTREAM_ANSWER_TIMEOUT_MS,
                1,
            )?,
            stream_coalesce_ms: parse_u64_at_most(
                "STREAM_COALESCE_MS",
                get("STREAM_COALESCE_MS"),
                DEFAULT_STREAM_COALESCE_MS,
                MAX_STREAM_COALESCE_MS,
            )?,
            resume_window_seconds: parse_u64_at_most(
                "RESUME_WINDOW_SECONDS",
                get("RESUME_WINDOW_SECONDS"),
                crate::resume::DEFAULT_WINDOW_SECONDS,
                MAX_RESUME_WINDOW_SECONDS,
            )?,
        })
    }

    /// The aliases callers may put in `model`, sorted.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.routes.keys()
    }
}

/// An `https://host...` URL with any trailing slash removed; `http://` only for a loopback host
/// (`localhost`, `127.x.x.x`, `[::1]`: a local model, or a test's fake provider), since anyone
/// on the path of a plain-text request could read the provider key or serve their own keys.
fn parse_url(var: &str, text: &str) -> Result<String, ConfigError> {
    let url = text.trim().trim_end_matches('/');
    let (rest, secure) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("http://")
                .ok_or_else(|| ConfigError::new(var, "must be an https:// URL"))?,
            false,
        ),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(ConfigError::new(var, "the URL has no host"));
    }
    if url.contains(['?', '#', '@']) || url.chars().any(char::is_whitespace) {
        return Err(ConfigError::new(
            var,
            "the URL must not hold a query, a fragment, credentials or spaces",
        ));
    }
    if !secure && !is_loopback(authority) {
        return Err(ConfigError::new(
            var,
            "must be an https:// URL (http:// is allowed only for localhost, 127.0.0.1 or [::1])",
        ));
    }
    Ok(url.to_owned())
}

/// Whether a URL's `host[:port]` names this machine.
fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host == "::1" {
        return true;
    }
    let octets: Vec<&str> = host.split('.').collect();
    octets.len() == 4
        && octets[0] == "127"
        && octets
            .iter()
            .all(|o| !o.is_empty() && o.len() <= 3 && o.parse::<u8>().is_ok())
}

fn parse_u64(var: &str, text: Option<String>, default: u64, min: u64) -> Result<u64, ConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(var, "must be a whole number"))?;
    if n < min {
        return Err(ConfigError::new(var, format!("must be at least {min}")));
    }
    Ok(n)
}

/// [`parse_u64`] from 0 to `max`.
fn parse_u64_at_most(
    var: &str,
    text: Option<String>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match parse_u64(var, text, default, 0)? {
        n if n > max => Err(ConfigError::new(var, format!("must be at most {max}"))),
        n => Ok(n),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn parse_providers(text: &str) -> Result<Vec<(String, Provider)>, ConfigError> {
    const VAR: &str = "PROVIDERS";
    let shape = |problem: String| {
        ConfigError::new(
            VAR,
            format!("must be a JSON object of name -> {{\"base_url\",\"key_secret\"}} ({problem})"),
        )
    };
    let specs: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| shape(json_problem(&e)))?;
    let mut out = Vec::with_capacity(specs.len());
    for (name, spec) in specs {
        if !is_name(&name) {
            return Err(ConfigError::new(
                VAR,
                format!("provider name {name:?} must be letters, digits, '-', '_' or '.'"),
            ));
        }
        if name == OPENAI || name == ANTHROPIC {
            return Err(ConfigError::new(
                VAR,
                format!("provider {name:?} is built in; set its *_BASE_URL instead"),
            ));
        }
        // Exactly the two fields, both strings (checked here rather than by a derived
        // `Deserialize`: this is the whole of it, in less code).
        let (base_url, key_secret) = match &spec {
            Value::Object(fields) if fields.len() == 2 => {
                match (fields.get("base_url"), fields.get("key_secret")) {
                    (Some(Value::String(url)), Some(Value::String(secret))) => (url, secret),
                    _ => return Err(shape(format!("wrong shape: provider {name:?}"))),
                }
            }
            _ => return Err(shape(format!("wrong shape: provider {name:?}"))),
        };
        let base_url = parse_url(&format!("{VAR}.{name}.base_url"), base_url)?;
        let key_secret = key_secret.trim().to_owned();
        if key_secret.is_empty()
            || !key_secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::new(
                VAR,
                format!("provider {name:?}: key_secret must name a secret (letters, digits, '_')"),
            ));
        }
        out.push((
            name.clone(),
            Provider {
                name,
                kind: ProviderKind::OpenAiCompatible,
                base_url,
                key_secret,
            },
        ));
    }
    Ok(out)
}

fn parse_routes(
    text: &str,
    providers: &Named<Provider>,
) -> Result<Named<Vec<RouteTarget>>, ConfigError> {
    const VAR: &str = "ROUTES";
    let shape = |problem: String| {
        ConfigError::new(
            VAR,
            format!("must be a JSON object of alias -> [\"provider:model\", ...] ({problem})"),
        )
    };
    let raw: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| shape(json_problem(&e)))?;
    if raw.is_empty() {
        return Err(ConfigError::new(VAR, "defines no alias"));
    }
    let mut routes = Named::new();
    for (alias, chain) in raw {
        if !is_name(&alias) {
            return Err(ConfigError::new(
                VAR,
                format!("alias {alias:?} must be letters, digits, '-', '_' or '.'"),
            ));
        }
        let Value::Array(chain) = chain else {
            return Err(shape(format!("wrong shape: alias {alias:?}")));
        };
        if chain.is_empty() {
            return Err(ConfigError::new(
                VAR,
                format!("alias {alias:?} has an empty chain"),
            ));
        }
        let mut targets = Vec::with_capacity(chain.len());
        for entry in &chain {
            let Value::String(entry) = entry else {
                return Err(shape(format!("wrong shape: alias {alias:?}")));
            };
            let Some((provider, model)) = entry.split_once(':') else {
                return Err(ConfigError::new(
                    VAR,
                    format!("alias {alias:?}: {entry:?} is not \"provider:model\""),
                ));
            };
            let (provider, model) = (provider.trim(), model.trim());
            if !providers.contains_key(provider) {
                return Err(ConfigError::new(
                    VAR,
                    format!("alias {alias:?}: unknown provider {provider:?}"),
                ));
            }
            if model.is_empty() {
                return Err(ConfigError::new(
                    VAR,
                    format!("alias {alias:?}: {entry:?} has no model"),
                ));
            }
            targets.push(RouteTarget {
                provider: provider.to_owned(),
                model: model.to_owned(),
            });
        }
        routes.insert(alias, targets);
    }
    Ok(routes)
}

/// Where the JSON went wrong, without quoting the text (it may hold a secret pasted by mistake).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax | Category::Eof => "invalid JSON",
        Category::Data => "wrong shape",
        Category::Io => "unreadable",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// The test-only public key the unit tests configure.
#[cfg(test)]
pub(crate) const TEST_JWK: &str =
    include_str!("../../fixtures/keys/test-only-eddsa.public.jwk.json");

/// The `PLANS` of [`test_config`] unless the test sets its own: one plan of every alias.
#[cfg(test)]
pub(crate) const TEST_PLANS: &str = r#"{"free":{"models":["*"],"requests_per_minute":60,
    "tokens_per_day":100000,"max_output_tokens":1024,"concurrent_streams":2}}"#;

/// A configuration for unit tests: valid JWT settings and plans, the given variables on top.
#[cfg(test)]
pub(crate) fn test_config(vars: &[(&str, &str)]) -> Config {
    let base = [
        ("JWT_PUBLIC_JWK", TEST_JWK),
        ("JWT_ISSUER", "iss"),
        ("JWT_AUDIENCE", "aud"),
        ("PLANS", TEST_PLANS),
    ];
    Config::from_lookup(|n| {
        vars.iter()
            .chain(base.iter())
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    })
    .expect("test configuration")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ROUTES: &str = r#"{"storycad-fast":["openai:gpt-4o-mini","anthropic:claude-haiku-4-5"],
                             "storycad-local":["local:llama3"]}"#;
    const PROVIDERS: &str =
        r#"{"local":{"base_url":"http://127.0.0.1:9000/v1/","key_secret":"LOCAL_API_KEY"}}"#;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("JWT_PUBLIC_JWK", TEST_JWK.to_owned()),
            ("JWT_ISSUER", "https://issuer.example".to_owned()),
            ("JWT_AUDIENCE", "storycad".to_owned()),
            ("ROUTES", ROUTES.to_owned()),
            ("PROVIDERS", PROVIDERS.to_owned()),
            ("PLANS", TEST_PLANS.to_owned()),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    fn err_with(var: &'static str, value: &str) -> ConfigError {
        let mut vars = base();
        vars.insert(var, value.to_owned());
        load(&vars).expect_err(value)
    }

    #[test]
    fn good_config_with_defaults() {
        let c = load(&base()).unwrap();
        assert_eq!(c.providers[OPENAI].base_url, DEFAULT_OPENAI_BASE_URL);
        assert_eq!(c.providers[OPENAI].key_secret, "OPENAI_API_KEY");
        assert_eq!(c.providers[ANTHROPIC].base_url, DEFAULT_ANTHROPIC_BASE_URL);
        assert_eq!(c.providers[ANTHROPIC].kind, ProviderKind::Anthropic);
        assert_eq!(c.providers["local"].base_url, "http://127.0.0.1:9000/v1");
        assert_eq!(c.providers["local"].key_secret, "LOCAL_API_KEY");
        assert_eq!(c.routes["storycad-fast"].len(), 2);
        assert_eq!(
            c.routes["storycad-fast"][1],
            RouteTarget {
                provider: "anthropic".into(),
                model: "claude-haiku-4-5".into()
            }
        );
        assert_eq!(
            c.aliases().collect::<Vec<_>>(),
            ["storycad-fast", "storycad-local"]
        );
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.cache_ttl_seconds, 0);
        assert_eq!(c.upstream_timeout_ms, 60_000);
        assert_eq!(c.stream_coalesce_ms, DEFAULT_STREAM_COALESCE_MS);
        assert_eq!(
            c.resume_window_seconds,
            crate::resume::DEFAULT_WINDOW_SECONDS
        );
        assert_eq!(c.answer_timeout_ms, 240_000);
        assert_eq!(c.jwt.algorithms, Algorithm::DEFAULT);
        assert_eq!(c.jwt.keys.as_ref().map(KeySet::usable_len), Some(1));
        assert_eq!(c.jwt.issuer, "https://issuer.example");
        assert_eq!(c.jwt.audience, "storycad");
        assert_eq!(c.jwt.cache_entries, crate::auth::DEFAULT_CACHE_ENTRIES);
        assert_eq!(c.plans.default_plan(), "free");
        assert!(c.plans.limits_enabled);
    }

    #[test]
    fn plain_http_only_reaches_this_machine() {
        for (var, url) in [
            ("OPENAI_BASE_URL", "http://127.0.0.1:4010/v1"),
            ("OPENAI_BASE_URL", "http://127.1.2.3/v1"),
            ("ANTHROPIC_BASE_URL", "http://localhost:8080"),
            ("ANTHROPIC_BASE_URL", "http://LOCALHOST"),
            ("ANTHROPIC_BASE_URL", "http://[::1]:9000/"),
            ("OPENAI_BASE_URL", "https://api.example.com/v1"),
        ] {
            let mut vars = base();
            vars.insert(var, url.to_owned());
            assert!(load(&vars).is_ok(), "{url}");
        }
        for (var, url) in [
            ("OPENAI_BASE_URL", "http://api.openai.com/v1"),
            ("ANTHROPIC_BASE_URL", "http://10.0.0.7:8080"),
            ("OPENAI_BASE_URL", "http://127.0.0.1.evil.example/v1"),
            ("OPENAI_BASE_URL", "http://localhost.evil.example"),
            ("OPENAI_BASE_URL", "http://[::2]/v1"),
            (
                "JWT_JWKS_URL",
                "http://issuer.example/.well-known/jwks.json",
            ),
        ] {
            let mut vars = base();
            if var == "JWT_JWKS_URL" {
                vars.remove("JWT_PUBLIC_JWK");
            }
            vars.insert(var, url.to_owned());
            let e = load(&vars).expect_err(url);
            assert_eq!(e.var, var, "{url}");
            assert!(e.reason.contains("https://"), "{url}: {e}");
        }
        let e = err_with("OPENAI_BASE_URL", "http://127.0.0.1@evil.example/v1");
        assert!(e.reason.contains("credentials"), "{e}");
        let e = err_with(
            "PROVIDERS",
            r#"{"far":{"base_url":"http://10.1.1.1/v1","key_secret":"K"}}"#,
        );
        assert_eq!(e.var, "PROVIDERS.far.base_url");
        // A JWKS on this machine (a test's) is fine over http.
        let mut vars = base();
        vars.remove("JWT_PUBLIC_JWK");
        vars.insert("JWT_JWKS_URL", "http://127.0.0.1:7000/jwks".to_owned());
        assert!(load(&vars).is_ok());
    }

    #[test]
    fn explicit_values_are_used() {
        let mut vars = base();
        vars.insert("OPENAI_BASE_URL", "http://127.0.0.1:4010/v1/".into());
        vars.insert("MAX_BODY_BYTES", "2048".into());
        vars.insert("CACHE_TTL_SECONDS", " 300 ".into());
        vars.insert("UPSTREAM_TIMEOUT_MS", "1500".into());
        vars.insert("JWT_ALGORITHMS", "EdDSA".into());
        vars.insert("JWT_CACHE_ENTRIES", "0".into());
        vars.insert("PLANS", TEST_PLANS.replace(":60,", ":10,"));
        let c = load(&vars).unwrap();
        assert_eq!(c.jwt.cache_entries, 0);
        assert_eq!(c.providers[OPENAI].base_url, "http://127.0.0.1:4010/v1");
        assert_eq!(c.max_body_bytes, 2048);
        assert_eq!(c.cache_ttl_seconds, 300);
        assert_eq!(c.upstream_timeout_ms, 1500);
        assert_eq!(c.jwt.algorithms, [Algorithm::EdDSA]);
        assert_eq!(c.plans.for_claim(None).unwrap().requests_per_minute, 10);
        // PLANS is required, and parsed here with the rest.
        vars.remove("PLANS");
        assert_eq!(load(&vars).unwrap_err().var, "PLANS");
        vars.insert("PLANS", r#"{"free":{"requests_per_minute":10}}"#.into());
        assert_eq!(load(&vars).unwrap_err().var, "PLANS");
    }

    #[test]
    fn blank_values_count_as_unset() {
        let mut vars = base();
        vars.insert("OPENAI_BASE_URL", "  ".into());
        vars.insert("MAX_BODY_BYTES", "".into());
        let c = load(&vars).unwrap();
        assert_eq!(c.providers[OPENAI].base_url, DEFAULT_OPENAI_BASE_URL);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn jwks_url_alone_is_enough() {
        let mut vars = base();
        vars.remove("JWT_PUBLIC_JWK");
        vars.insert(
            "JWT_JWKS_URL",
            "https://issuer.example/.well-known/jwks.json".into(),
        );
        let c = load(&vars).unwrap();
        assert_eq!(
            c.jwt.jwks_url.as_deref(),
            Some("https://issuer.example/.well-known/jwks.json")
        );
        assert!(c.jwt.keys.is_none());
    }

    #[test]
    fn jwt_keys_and_algorithms_are_checked() {
        let mut vars = base();
        vars.insert("JWT_JWKS_URL", "https://issuer.example/jwks".into());
        let e = load(&vars).unwrap_err();
        assert_eq!(e.var, "JWT_PUBLIC_JWK");
        assert!(e.reason.contains("not both"));
        for bad in ["not json", r#"{"kty":"OKP"}"#, r#"{"keys":3}"#] {
            assert_eq!(
                err_with("JWT_PUBLIC_JWK", bad).var,
                "JWT_PUBLIC_JWK",
                "{bad}"
            );
        }
        for bad in ["HS256", "none", "RS256,PS512", ","] {
            assert_eq!(
                err_with("JWT_ALGORITHMS", bad).var,
                "JWT_ALGORITHMS",
                "{bad}"
            );
        }
        // A private JWK pasted by mistake is refused without echoing its material.
        let private = include_str!("../../fixtures/keys/test-only-eddsa.private.jwk.json");
        let e = err_with("JWT_PUBLIC_JWK", private);
        let d: serde_json::Value = serde_json::from_str(private).unwrap();
        assert!(!e.to_string().contains(d["d"].as_str().unwrap()), "{e}");
    }

    #[test]
    fn missing_required_vars_are_named() {
        for var in ["JWT_ISSUER", "JWT_AUDIENCE", "ROUTES"] {
            let mut vars = base();
            vars.remove(var);
            let e = load(&vars).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(var));
        }
        let mut vars = base();
        vars.remove("JWT_PUBLIC_JWK");
        assert_eq!(load(&vars).unwrap_err().var, "JWT_PUBLIC_JWK");
    }

    #[test]
    fn bad_urls() {
        for bad in [
            "api.openai.com/v1",
            "ftp://x",
            "https://",
            "https://a b",
            "https://x/v1?k=1",
        ] {
            assert_eq!(
                err_with("OPENAI_BASE_URL", bad).var,
                "OPENAI_BASE_URL",
                "{bad}"
            );
        }
        assert_eq!(
            err_with("ANTHROPIC_BASE_URL", "nope").var,
            "ANTHROPIC_BASE_URL"
        );
        assert_eq!(err_with("JWT_JWKS_URL", "nope").var, "JWT_JWKS_URL");
    }

    #[test]
    fn bad_numbers() {
        for var in [
            "MAX_BODY_BYTES",
            "CACHE_TTL_SECONDS",
            "UPSTREAM_TIMEOUT_MS",
            "JWT_CACHE_ENTRIES",
            "STREAM_COALESCE_MS",
            "RESUME_WINDOW_SECONDS",
        ] {
            for bad in ["-1", "1.5", "lots", "1e3"] {
                assert_eq!(err_with(var, bad).var, var, "{var}={bad}");
            }
        }
        assert_eq!(err_with("MAX_BODY_BYTES", "0").var, "MAX_BODY_BYTES");
        assert_eq!(
            err_with("STREAM_COALESCE_MS", "251").var,
            "STREAM_COALESCE_MS"
        );
        for ok in ["0", "250"] {
            let mut vars = base();
            vars.insert("STREAM_COALESCE_MS", ok.to_owned());
            assert_eq!(load(&vars).unwrap().stream_coalesce_ms.to_string(), ok);
        }
        assert_eq!(
            err_with("RESUME_WINDOW_SECONDS", "3601").var,
            "RESUME_WINDOW_SECONDS"
        );
        for ok in ["0", "3600"] {
            let mut vars = base();
            vars.insert("RESUME_WINDOW_SECONDS", ok.to_owned());
            assert_eq!(load(&vars).unwrap().resume_window_seconds.to_string(), ok);
        }
        assert_eq!(
            err_with("UPSTREAM_TIMEOUT_MS", "0").var,
            "UPSTREAM_TIMEOUT_MS"
        );
        assert_eq!(err_with("CACHE_SCOPE", "everyone").var, "CACHE_SCOPE");
        let mut vars = base();
        vars.insert("CACHE_SCOPE", "shared".into());
        assert_eq!(
            load(&vars).unwrap().cache_scope,
            crate::cache::Scope::Shared
        );
        assert_eq!(
            load(&base()).unwrap().cache_scope,
            crate::cache::Scope::User
        );
        // 0 is meaningful for the cache: it disables it.
        let mut vars = base();
        vars.insert("CACHE_TTL_SECONDS", "0".into());
        assert_eq!(load(&vars).unwrap().cache_ttl_seconds, 0);
    }

    #[test]
    fn bad_routes() {
        let cases = [
            ("not json", "invalid JSON"),
            (r#"["openai:gpt-4o"]"#, "wrong shape"),
            (r#"{"a":"openai:gpt-4o"}"#, "wrong shape"),
            (r#"{"a":["openai:gpt-4o",1]}"#, "wrong shape"),
            (r#"{"a":null}"#, "wrong shape"),
            ("{}", "no alias"),
            (r#"{"a":[]}"#, "empty chain"),
            (r#"{"a":["gpt-4o"]}"#, "is not \"provider:model\""),
            (r#"{"a":["nobody:gpt-4o"]}"#, "unknown provider"),
            (r#"{"a":["openai:"]}"#, "no model"),
            (r#"{"bad alias":["openai:gpt-4o"]}"#, "alias"),
        ];
        for (text, why) in cases {
            let e = err_with("ROUTES", text);
            assert_eq!(e.var, "ROUTES");
            assert!(e.reason.contains(why), "{text}: {}", e.reason);
        }
    }

    #[test]
    fn bad_providers() {
        let cases = [
            ("[]", "wrong shape"),
            (r#"{"x":{"base_url":"https://h"}}"#, "wrong shape"),
            (
                r#"{"x":{"base_url":"https://h","key_secret":7}}"#,
                "wrong shape",
            ),
            (r#"{"x":"https://h"}"#, "wrong shape"),
            (
                r#"{"x":{"base_url":"https://h","key_secret":"K","extra":1}}"#,
                "wrong shape",
            ),
            (r#"{"x":{"base_url":"h","key_secret":"K"}}"#, "http"),
            (
                r#"{"x":{"base_url":"https://h","key_secret":"not a name"}}"#,
                "key_secret",
            ),
            (
                r#"{"openai":{"base_url":"https://h","key_secret":"K"}}"#,
                "built in",
            ),
            (
                r#"{"a/b":{"base_url":"https://h","key_secret":"K"}}"#,
                "provider name",
            ),
        ];
        for (text, why) in cases {
            let e = err_with("PROVIDERS", text);
            assert!(e.var.starts_with("PROVIDERS"), "{text}: {e}");
            assert!(e.reason.contains(why), "{text}: {}", e.reason);
        }
    }

    #[test]
    fn bad_plans() {
        assert_eq!(err_with("PLANS", "[1]").var, "PLANS");
        assert_eq!(err_with("PLANS", r#"{"free":3}"#).var, "PLANS");
        assert_eq!(err_with("PLANS", "{").var, "PLANS");
    }

    #[test]
    fn errors_never_quote_the_value() {
        let secret = concat!("sk-", "live-SECRET-VALUE-123");
        for var in [
            "ROUTES",
            "PROVIDERS",
            "PLANS",
            "MAX_BODY_BYTES",
            "OPENAI_BASE_URL",
        ] {
            let e = err_with(var, &format!("{{\"{secret}\": oops"));
            assert!(!e.to_string().contains(secret), "{var}: {e}");
        }
    }
}
