//! Model alias -> provider, provider model and endpoint: the alias's fallback chain.
//!
//! `ROUTES` maps an alias to an ordered chain of `provider:model`. The Worker tries them in
//! order and moves on only where the provider did no billable work ([`crate::lifecycle`]
//! decides, and its table says what is charged):
//!
//! | failure | next route? |
//! |---|---|
//! | no connection, or a reset before headers | yes |
//! | 429 (the provider's rate limit or quota) | yes |
//! | 5xx, and Anthropic's 529 | yes |
//! | the provider's key secret is not set | yes (that provider is unusable; the log says why) |
//! | any other 4xx (401/403/404 included: the route or key is wrong, logged) | no |
//! | the request cannot be translated for the provider (400) | no: the caller's request |
//! | no headers in time after the request went out | no: the provider may be working on it |
//! | anything after 2xx headers (a cut or bad body, a stream that fails) | no: the provider has the work |
//!
//! 4xx answers other than 429 are final: they describe the caller's request (or a broken
//! route the operator must fix), and the next provider would most likely say the same.
//! When every route fails, the caller gets the last failure, mapped as usual (OpenAI error
//! shape, no upstream URL), and `x-storycad-route` names the last route tried.

use crate::config::{Config, Provider, ProviderKind};
use crate::error::AppError;

/// Where one request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The alias the caller asked for (answers carry it back as `model`).
    pub alias: &'a str,
    /// The provider.
    pub provider: &'a Provider,
    /// The provider's model name (sent upstream as `model`).
    pub model: &'a str,
}

impl Route<'_> {
    /// `provider:model`, the value of `x-storycad-route` and of the log's `route`.
    pub fn label(&self) -> String {
        // Joined rather than `format!`ted: a request runs no formatter code (compiled anew
        // whenever the runtime drops the wasm's baseline code).
        [self.provider.name.as_str(), ":", self.model].concat()
    }

    /// The upstream endpoint, following each SDK's convention for its base URL.
    pub fn endpoint(&self) -> String {
        let path = match self.provider.kind {
            ProviderKind::OpenAiCompatible => "/chat/completions",
            ProviderKind::Anthropic => "/v1/messages",
        };
        [self.provider.base_url.as_str(), path].concat()
    }

    /// The name of the secret holding the provider's key.
    pub fn key_secret(&self) -> &str {
        &self.provider.key_secret
    }
}

/// The whole fallback chain for `alias`, in order; `model_not_found` when there is none.
pub fn chain<'a>(config: &'a Config, alias: &str) -> Result<Vec<Route<'a>>, AppError> {
    let (alias, targets) =
        config
            .routes
            .get_key_value(alias)
            .ok_or_else(|| AppError::ModelNotFound {
                alias: alias.to_owned(),
            })?;
    targets
        .iter()
        .map(|t| {
            // Config::from_lookup checked that every provider exists; a miss here means the
            // config was built some other way, which is our bug, not the caller's.
            let provider = config
                .providers
                .get(&t.provider)
                .ok_or(AppError::Internal)?;
            Ok(Route {
                alias,
                provider,
                model: &t.model,
            })
        })
        .collect()
}

/// The first entry of `alias`'s chain: the tests' shortcut to one route (a request takes the
/// whole [`chain`], falling back along it).
#[cfg(test)]
pub(crate) fn resolve<'a>(config: &'a Config, alias: &str) -> Result<Route<'a>, AppError> {
    chain(config, alias)?
        .into_iter()
        .next()
        .ok_or(AppError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_config;

    fn config() -> Config {
        test_config(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:4010/v1"),
            (
                "ROUTES",
                r#"{"fast":["openai:gpt-4o-mini","anthropic:claude-haiku-4-5"],
                    "claude":["anthropic:claude-sonnet-4-5"],
                    "local":["ollama:llama3"]}"#,
            ),
            (
                "PROVIDERS",
                r#"{"ollama":{"base_url":"http://127.0.0.1:11434/v1","key_secret":"OLLAMA_KEY"}}"#,
            ),
        ])
    }

    #[test]
    fn resolves_the_first_entry() {
        let c = config();
        let r = resolve(&c, "fast").unwrap();
        assert_eq!(r.alias, "fast");
        assert_eq!(r.model, "gpt-4o-mini");
        assert_eq!(r.label(), "openai:gpt-4o-mini");
        assert_eq!(r.endpoint(), "http://127.0.0.1:4010/v1/chat/completions");
        assert_eq!(r.key_secret(), "OPENAI_API_KEY");
    }

    #[test]
    fn keeps_the_whole_chain_in_order() {
        let c = config();
        let labels: Vec<_> = chain(&c, "fast")
            .unwrap()
            .iter()
            .map(Route::label)
            .collect();
        assert_eq!(labels, ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"]);
    }

    #[test]
    fn each_provider_kind_has_its_endpoint_and_secret() {
        let c = config();
        let claude = resolve(&c, "claude").unwrap();
        assert_eq!(claude.endpoint(), "https://api.anthropic.com/v1/messages");
        assert_eq!(claude.key_secret(), "ANTHROPIC_API_KEY");
        let local = resolve(&c, "local").unwrap();
        assert_eq!(
            local.endpoint(),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert_eq!(local.key_secret(), "OLLAMA_KEY");
        assert_eq!(local.label(), "ollama:llama3");
    }

    #[test]
    fn unknown_alias_is_model_not_found() {
        let c = config();
        for alias in ["gpt-4o-mini", "FAST", "", "openai:gpt-4o-mini"] {
            let e = resolve(&c, alias).unwrap_err();
            assert_eq!(e.status(), 404);
            assert_eq!(e.code(), "model_not_found");
        }
    }
}
