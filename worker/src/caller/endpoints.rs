//! The Worker's routes, matched without the runtime so 404 and 405 are tested on the host.

use storycad_protocol::{Model, ModelList};

use crate::config::Config;
use crate::error::AppError;
use crate::plans::Plan;

/// A route of the HTTP contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `GET /v1/models`
    Models,
    /// `GET /v1/usage`
    Usage,
    /// `GET /healthz`
    Health,
    /// `GET /v1/chat/completions/streams/{id}`: a stream picked up again.
    ResumeStream,
}

/// The path of a stream's resume, before its id.
pub const STREAMS_PATH: &str = "/v1/chat/completions/streams/";

/// The path of a request's URL as the runtime gives it (serialized, absolute): from the first
/// `/` after the host to the query or fragment. In a serialized `http(s)` URL the path is never
/// empty and holds no unescaped `?` or `#`.
pub fn url_path(url: &str) -> &str {
    // Byte by byte: `str::find` with a `&str` pattern brings in a substring searcher's code,
    // compiled by a request only for this.
    let after_scheme = url
        .as_bytes()
        .windows(3)
        .position(|w| w == b"://")
        .map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let Some(start) = rest
        .find(['/', '?', '#'])
        .filter(|&i| rest[i..].starts_with('/'))
    else {
        return "/";
    };
    let path = &rest[start..];
    &path[..path.find(['?', '#']).unwrap_or(path.len())]
}

/// Matches a request line: 404 for an unknown path, 405 (with `allow`) for a wrong method.
/// `HEAD` is served wherever `GET` is.
pub fn match_route(method: &str, path: &str) -> Result<Endpoint, AppError> {
    let (endpoint, allow) = match path {
        "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
        "/v1/models" => (Endpoint::Models, "GET, HEAD"),
        "/v1/usage" => (Endpoint::Usage, "GET, HEAD"),
        "/healthz" => (Endpoint::Health, "GET, HEAD"),
        p if p.len() > STREAMS_PATH.len() && p.starts_with(STREAMS_PATH) => {
            (Endpoint::ResumeStream, "GET")
        }
        _ => return Err(AppError::NotFound),
    };
    let ok = match endpoint {
        Endpoint::ChatCompletions => method == "POST",
        Endpoint::ResumeStream => method == "GET",
        Endpoint::Models | Endpoint::Usage | Endpoint::Health => {
            method == "GET" || method == "HEAD"
        }
    };
    if ok {
        Ok(endpoint)
    } else {
        Err(AppError::MethodNotAllowed { allow })
    }
}

/// `GET /v1/models`: the aliases of `ROUTES` the caller's plan allows, in OpenAI's list shape.
pub fn model_list(config: &Config, plan: &Plan) -> ModelList {
    ModelList::new(
        plan.allowed_aliases(config)
            .into_iter()
            .map(|alias| Model::new(alias, "storycad"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_config;

    #[test]
    fn the_path_of_a_url_is_between_its_host_and_its_query() {
        for (url, path) in [
            (
                "https://proxy.example/v1/chat/completions",
                "/v1/chat/completions",
            ),
            ("http://127.0.0.1:8787/v1/models?x=1", "/v1/models"),
            ("https://proxy.example/healthz#top", "/healthz"),
            ("https://proxy.example/", "/"),
            ("https://proxy.example", "/"),
            ("https://proxy.example?q=/v1/models", "/"),
            (
                "https://proxy.example/v1/chat/completions/streams/abc?after=3",
                "/v1/chat/completions/streams/abc",
            ),
            ("https://proxy.example/a%3Fb/c", "/a%3Fb/c"),
            ("/v1/usage", "/v1/usage"),
        ] {
            assert_eq!(url_path(url), path, "{url}");
        }
    }

    #[test]
    fn routes_methods_and_unknown_paths() {
        assert_eq!(
            match_route("POST", "/v1/chat/completions"),
            Ok(Endpoint::ChatCompletions)
        );
        assert_eq!(match_route("GET", "/v1/models"), Ok(Endpoint::Models));
        assert_eq!(match_route("GET", "/v1/usage"), Ok(Endpoint::Usage));
        assert_eq!(
            match_route("POST", "/v1/usage"),
            Err(AppError::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(match_route("HEAD", "/healthz"), Ok(Endpoint::Health));
        assert_eq!(
            match_route("GET", "/v1/chat/completions"),
            Err(AppError::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            match_route("DELETE", "/v1/models"),
            Err(AppError::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(
            match_route("GET", "/v1/chat/completions/streams/abc"),
            Ok(Endpoint::ResumeStream)
        );
        assert_eq!(
            match_route("POST", "/v1/chat/completions/streams/abc"),
            Err(AppError::MethodNotAllowed { allow: "GET" })
        );
        for path in [
            "/",
            "/v1",
            "/v1/chat/completions/",
            "/v1/chat/completions/streams/",
            "/V1/models",
            "/healthz/x",
        ] {
            assert_eq!(match_route("GET", path), Err(AppError::NotFound), "{path}");
        }
    }

    #[test]
    fn model_list_shows_aliases_only() {
        let config = test_config(&[
            (
                "ROUTES",
                r#"{"b":["openai:gpt-4o"],"a":["anthropic:claude-haiku-4-5"],"c":["openai:o3"]}"#,
            ),
            (
                "PLANS",
                r#"{"free":{"models":["a","b"],"requests_per_minute":1,"tokens_per_day":1,
                    "max_output_tokens":1,"concurrent_streams":1},
                   "pro":{"models":["*"],"requests_per_minute":1,"tokens_per_day":1,
                    "max_output_tokens":1,"concurrent_streams":1}}"#,
            ),
        ]);
        let plans = &config.plans;
        let pro = model_list(&config, plans.for_claim(Some("pro")).unwrap());
        let ids: Vec<_> = pro.data.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // The plan's list, not every alias.
        let list = model_list(&config, plans.for_claim(None).unwrap());
        assert_eq!(list.object, "list");
        let ids: Vec<_> = list.data.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let text = serde_json::to_string(&list).unwrap();
        assert!(
            !text.contains("gpt-4o") && !text.contains("claude"),
            "{text}"
        );
        assert!(list
            .data
            .iter()
            .all(|m| m.object == "model" && m.owned_by == "storycad"));
    }
}
