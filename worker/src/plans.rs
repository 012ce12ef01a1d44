//! Plans: what a caller may do, chosen by the token's `plan` claim.
//!
//! `PLANS` maps a plan name to its entitlements:
//!
//! ```json
//! {"free": {"models": ["storycad-fast"], "requests_per_minute": 20, "tokens_per_day": 50000,
//!           "max_output_tokens": 1024, "concurrent_streams": 2}}
//! ```
//!
//! Those five fields are required and unknown fields are refused (a typo must not silently lift
//! a limit). `models` lists aliases of `ROUTES`, or is `["*"]` for all of them. Numbers are
//! whole and at least 1. Optional:
//!
//! - `max_choices` (default 1): the most choices (`n`) one request may ask for; each is paid
//!   for, so the reservation counts every one. Above it: 400 `invalid_value`, param `n`.
//! - `cached_input_weight`, `cache_write_weight` (0 to 10; default: the provider's price ratio,
//!   Anthropic 0.1 and 1.25, OpenAI 0.5 and 1): what a prompt token read from, or written to,
//!   the provider's prompt cache is charged against a fresh one, so the budget tracks the bill.
//! - `allow` (default none): request fields that cost more or keep data at the provider, which
//!   callers of this plan may set: `service_tier`, `store`, `web_search_options`
//!   ([`GATED_FIELDS`]). A plan without one refuses it (400), except at its harmless default
//!   (`store: false`, `service_tier: "auto"` or `"default"`), which is dropped.
//!
//! `DEFAULT_PLAN` names the plan of a token without a `plan` claim; unset, it is `free` if that
//! plan exists, else the only plan. A token naming a plan `PLANS` lacks gets 403 `unknown_plan`.
//! `LIMITS_ENABLED=false` turns the per-user limiter (requests, tokens, streams) off; models and
//! the output cap still apply.

use serde_json::{Map, Value};
use storycad_protocol::{codes, ErrorBody};

use crate::config::{json_problem, Config, ConfigError, RouteTarget};
use crate::error::{shorten, AppError};
use crate::json_read::{Fields, FromJson};
use crate::limiter::Limits;
use crate::named::Named;

/// The error code of a token whose plan is not configured.
pub const UNKNOWN_PLAN: &str = storycad_protocol::codes::UNKNOWN_PLAN;

/// A plan's allowed aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Models {
    /// Every alias of `ROUTES` (`["*"]`).
    All,
    /// These aliases.
    Only(Vec<String>),
}

/// One plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Its name.
    pub name: String,
    /// The aliases it allows.
    pub models: Models,
    /// Requests per minute.
    pub requests_per_minute: u64,
    /// Tokens per UTC day.
    pub tokens_per_day: u64,
    /// The most output tokens one request may ask for.
    pub max_output_tokens: u32,
    /// Streams open at once.
    pub concurrent_streams: u64,
    /// The most choices (`n`) one request may ask for.
    pub max_choices: u64,
    /// The gated request fields ([`GATED_FIELDS`]) callers may set.
    pub allow: Vec<String>,
    /// What a cached input token is charged, against a fresh one (default: the provider's
    /// price ratio, [`crate::providers::prompt_cache::CacheWeights::of`]).
    pub cached_input_weight: Option<f64>,
    /// What a cache-write token is charged (default: the provider's ratio).
    pub cache_write_weight: Option<f64>,
}

/// Request fields a plan must allow: they cost more than their tokens (`service_tier`'s
/// priority tiers, `web_search_options`' per-search fee) or keep the caller's data at the
/// provider (`store`).
pub const GATED_FIELDS: [&str; 3] = ["service_tier", "store", "web_search_options"];

/// A `PLANS` entry as written.
struct PlanSpec {
    models: Vec<String>,
    requests_per_minute: u64,
    tokens_per_day: u64,
    max_output_tokens: u32,
    concurrent_streams: u64,
    max_choices: u64,
    allow: Vec<String>,
    cached_input_weight: Option<f64>,
    cache_write_weight: Option<f64>,
}

impl FromJson for PlanSpec {
    /// The fields above and no other; `max_choices` defaults to 1, `allow` to none, the
    /// weights to the provider's.
    fn from_json(value: &Value) -> Result<PlanSpec, String> {
        const FIELDS: [&str; 9] = [
            "models",
            "requests_per_minute",
            "tokens_per_day",
            "max_output_tokens",
            "concurrent_streams",
            "max_choices",
            "allow",
            "cached_input_weight",
            "cache_write_weight",
        ];
        let f = Fields::of(value, "a plan")?;
        if let Some(unknown) = f.names().find(|name| !FIELDS.contains(name)) {
            return Err(format!("unknown field `{unknown}`"));
        }
        Ok(PlanSpec {
            models: f.required("models")?,
            requests_per_minute: f.required("requests_per_minute")?,
            tokens_per_day: f.required("tokens_per_day")?,
            max_output_tokens: f.required("max_output_tokens")?,
            concurrent_streams: f.required("concurrent_streams")?,
            max_choices: match f.get("max_choices") {
                Some(_) => f.required("max_choices")?,
                None => 1,
            },
            allow: f.or_default("allow")?,
            cached_input_weight: f.or_default("cached_input_weight")?,
            cache_write_weight: f.or_default("cache_write_weight")?,
        })
    }
}

/// Every plan, the default, and whether the limiter runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plans {
    plans: Named<Plan>,
    default: String,
    /// `LIMITS_ENABLED` (default true).
    pub limits_enabled: bool,
}

/// Why a plan refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The token's `plan` is not in `PLANS` (403 `unknown_plan`).
    UnknownPlan {
        /// The claim (cut short when echoed).
        plan: String,
    },
    /// The alias exists but the plan does not include it (403 `model_not_allowed`).
    ModelNotAllowed {
        /// The alias.
        alias: String,
    },
}

impl PlanError {
    /// 403.
    pub fn status(&self) -> u16 {
        403
    }

    /// `unknown_plan` or `model_not_allowed`.
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::UnknownPlan { .. } => UNKNOWN_PLAN,
            PlanError::ModelNotAllowed { .. } => codes::MODEL_NOT_ALLOWED,
        }
    }

    /// The error body.
    pub fn body(&self) -> ErrorBody {
        match self {
            PlanError::UnknownPlan { plan } => ErrorBody::new(
                codes::PERMISSION,
                UNKNOWN_PLAN,
                format!(
                    "Your token's plan `{}` is not offered by this service.",
                    shorten(plan, 64)
                ),
            ),
            PlanError::ModelNotAllowed { alias } => ErrorBody::new(
                codes::PERMISSION,
                codes::MODEL_NOT_ALLOWED,
                format!(
                    "Your plan does not include the model `{}`; GET /v1/models lists the models \
                     you can use.",
                    shorten(alias, 64)
                ),
            )
            .with_param("model"),
        }
    }
}

impl From<PlanError> for AppError {
    fn from(e: PlanError) -> Self {
        AppError::Plan(e)
    }
}

fn config_error(var: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        reason: reason.into(),
    }
}

impl Plans {
    /// Parses `PLANS` (`text`), checking every plan's aliases against `routes`, with
    /// `DEFAULT_PLAN` and `LIMITS_ENABLED` (each `None` when unset). [`Config::from_lookup`]
    /// calls it: the plans are parsed once, with the rest of the configuration.
    pub fn parse(
        text: Option<&str>,
        default_plan: Option<&str>,
        limits_enabled: Option<&str>,
        routes: &Named<Vec<RouteTarget>>,
    ) -> Result<Plans, ConfigError> {
        const VAR: &str = "PLANS";
        let specs: Map<String, Value> = match text {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                config_error(
                    VAR,
                    format!(
                        "must be a JSON object of plan -> settings ({})",
                        json_problem(&e)
                    ),
                )
            })?,
            None => Map::new(),
        };
        if specs.is_empty() {
            return Err(config_error(VAR, "is required and must define a plan"));
        }
        let mut plans = Named::new();
        for (name, value) in specs {
            if !value.is_object() {
                return Err(config_error(
                    VAR,
                    format!("plan {:?} must be a JSON object", shorten(&name, 64)),
                ));
            }
            let spec = PlanSpec::from_json(&value).map_err(|e| {
                config_error(
                    VAR,
                    format!(
                        "plan {:?}: needs models, requests_per_minute, tokens_per_day, \
                         max_output_tokens, concurrent_streams, and may have max_choices, \
                         allow, cached_input_weight and cache_write_weight, nothing else ({})",
                        shorten(&name, 64),
                        shorten(&e, 120)
                    ),
                )
            })?;
            let plan = Plan::from_spec(&name, spec, routes)?;
            plans.insert(name, plan);
        }
        let default = match default_plan {
            Some(name) => {
                let name = name.trim().to_owned();
                if !plans.contains_key(&name) {
                    return Err(config_error(
                        "DEFAULT_PLAN",
                        "names a plan that PLANS does not define",
                    ));
                }
                name
            }
            None if plans.contains_key("free") => "free".to_owned(),
            None if plans.len() == 1 => plans.keys().next().unwrap_or_default().to_owned(),
            None => {
                return Err(config_error(
                    "DEFAULT_PLAN",
                    "is required when PLANS has several plans and none is called \"free\"",
                ))
            }
        };
        let limits_enabled = match limits_enabled.map(|v| v.trim().to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "true" || v == "1" => true,
            Some(v) if v == "false" || v == "0" => false,
            Some(_) => return Err(config_error("LIMITS_ENABLED", "must be true or false")),
        };
        Ok(Plans {
            plans,
            default,
            limits_enabled,
        })
    }

    /// The plan of a token: its `plan` claim, or the default.
    pub fn for_claim(&self, claim: Option<&str>) -> Result<&Plan, PlanError> {
        let name = claim.unwrap_or(&self.default);
        self.plans.get(name).ok_or_else(|| PlanError::UnknownPlan {
            plan: name.to_owned(),
        })
    }

    /// The default plan's name.
    pub fn default_plan(&self) -> &str {
        &self.default
    }
}

impl Plan {
    fn from_spec(
        name: &str,
        spec: PlanSpec,
        routes: &Named<Vec<RouteTarget>>,
    ) -> Result<Plan, ConfigError> {
        let bad = |why: String| config_error("PLANS", format!("plan {name:?}: {why}"));
        for (field, n) in [
            ("requests_per_minute", spec.requests_per_minute),
            ("tokens_per_day", spec.tokens_per_day),
            ("max_output_tokens", u64::from(spec.max_output_tokens)),
            ("concurrent_streams", spec.concurrent_streams),
            ("max_choices", spec.max_choices),
        ] {
            if n == 0 {
                return Err(bad(format!("{field} must be at least 1")));
            }
        }
        let models = if spec.models.iter().any(|m| m == "*") {
            if spec.models.len() != 1 {
                return Err(bad("\"*\" must be the only entry of models".to_owned()));
            }
            Models::All
        } else {
            for alias in &spec.models {
                if !routes.contains_key(alias) {
                    return Err(bad(format!(
                        "model {:?} is not an alias of ROUTES",
                        shorten(alias, 64)
                    )));
                }
            }
            Models::Only(spec.models)
        };
        if let Some(field) = spec
            .allow
            .iter()
            .find(|f| !GATED_FIELDS.contains(&f.as_str()))
        {
            return Err(bad(format!(
                "allow: {:?} is not one of {}",
                shorten(field, 64),
                GATED_FIELDS.join(", ")
            )));
        }
        for (field, w) in [
            ("cached_input_weight", spec.cached_input_weight),
            ("cache_write_weight", spec.cache_write_weight),
        ] {
            if w.is_some_and(|w| !(0.0..=10.0).contains(&w)) {
                return Err(bad(format!("{field} must be a number from 0 to 10")));
            }
        }
        Ok(Plan {
            name: name.to_owned(),
            models,
            requests_per_minute: spec.requests_per_minute,
            tokens_per_day: spec.tokens_per_day,
            max_output_tokens: spec.max_output_tokens,
            concurrent_streams: spec.concurrent_streams,
            max_choices: spec.max_choices,
            allow: spec.allow,
            cached_input_weight: spec.cached_input_weight,
            cache_write_weight: spec.cache_write_weight,
        })
    }

    /// Whether the plan includes `alias`.
    pub fn allows(&self, alias: &str) -> bool {
        match &self.models {
            Models::All => true,
            Models::Only(list) => list.iter().any(|m| m == alias),
        }
    }

    /// The aliases of `ROUTES` this plan allows, sorted.
    pub fn allowed_aliases<'c>(&self, config: &'c Config) -> Vec<&'c str> {
        config.aliases().filter(|a| self.allows(a)).collect()
    }

    /// Refuses an alias of `ROUTES` the plan lacks. An alias `ROUTES` does not know passes:
    /// routing answers it 404 `model_not_found`.
    pub fn check_model(&self, config: &Config, alias: &str) -> Result<(), PlanError> {
        if config.routes.contains_key(alias) && !self.allows(alias) {
            return Err(PlanError::ModelNotAllowed {
                alias: alias.to_owned(),
            });
        }
        Ok(())
    }

    /// The limiter's view of the plan.
    pub fn limits(&self) -> Limits {
        Limits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_day: self.tokens_per_day,
            concurrent_streams: self.concurrent_streams,
        }
    }

    /// Refuses what the plan does not allow in a request body: more choices than `max_choices`,
    /// a gated field it does not list in `allow` (one at its harmless default is dropped).
    pub fn check_request(&self, body: &mut Map<String, Value>) -> Result<(), AppError> {
        let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
        if n > self.max_choices {
            return Err(AppError::InvalidRequest {
                param: Some("n".to_owned()),
                message: format!(
                    "Your plan allows at most {} choice(s) per request (`n`).",
                    self.max_choices
                ),
            });
        }
        for field in GATED_FIELDS {
            if self.allow.iter().any(|a| a == field) {
                continue;
            }
            let Some(value) = body.get(field) else {
                continue;
            };
            let harmless = match (field, value) {
                (_, Value::Null) => true,
                ("store", Value::Bool(false)) => true,
                ("service_tier", Value::String(tier)) => tier == "auto" || tier == "default",
                _ => false,
            };
            if !harmless {
                return Err(AppError::InvalidRequest {
                    param: Some(field.to_owned()),
                    message: format!("Your plan does not allow `{field}`."),
                });
            }
            body.remove(field);
        }
        Ok(())
    }

    /// Applies the output cap to a request body: `max_tokens` and `max_completion_tokens` above
    /// the plan's maximum are lowered to it; when neither is set, `max_completion_tokens` (the
    /// current OpenAI name) is set to it. Returns the output tokens the request may produce per
    /// choice.
    pub fn cap_output(&self, body: &mut Map<String, Value>) -> u64 {
        let cap = u64::from(self.max_output_tokens);
        let mut effective = None::<u64>;
        for field in ["max_completion_tokens", "max_tokens"] {
            if let Some(value) = body.get_mut(field) {
                if value.is_null() {
                    continue;
                }
                // The request was validated: a present value is a whole number.
                let asked = value.as_u64().unwrap_or(cap);
                let granted = asked.min(cap);
                if asked != granted || !value.is_u64() {
                    *value = Value::from(granted);
                }
                effective = Some(effective.map_or(granted, |e| e.min(granted)));
            }
        }
        match effective {
            Some(e) => e,
            None => {
                body.insert("max_completion_tokens".to_owned(), Value::from(cap));
                cap
            }
        }
    }
}

/// The tokens to reserve for a request: the prompt estimated as a quarter of the body's bytes
/// (rounded up), plus `output_cap` for each of the `n` choices asked for. Returns
/// `(prompt_estimate, total)`.
pub fn estimate_tokens(
    body_bytes: usize,
    output_cap: u64,
    body: &Map<String, Value>,
) -> (u64, u64) {
    let prompt = (body_bytes as u64).div_ceil(4);
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 128);
    (prompt, prompt.saturating_add(output_cap.saturating_mul(n)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::test_config;

    const ROUTES: &str = r#"{"fast":["openai:gpt-4o-mini"],"smart":["openai:gpt-4o"]}"#;

    fn plan(models: &str) -> String {
        format!(
            r#"{{"models":{models},"requests_per_minute":10,"tokens_per_day":1000,
                "max_output_tokens":100,"concurrent_streams":2}}"#
        )
    }

    fn plans_with(plans: &str, vars: &[(&str, &str)]) -> Result<Plans, ConfigError> {
        let routes = test_config(&[("ROUTES", ROUTES)]).routes;
        let var = |n: &str| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        Plans::parse(
            Some(plans),
            var("DEFAULT_PLAN").as_deref(),
            var("LIMITS_ENABLED").as_deref(),
            &routes,
        )
    }

    #[test]
    fn parses_plans_and_picks_the_default() {
        let text = format!(
            r#"{{"free":{},"pro":{}}}"#,
            plan(r#"["fast"]"#),
            plan(r#"["*"]"#)
        );
        let p = plans_with(&text, &[]).unwrap();
        assert_eq!(p.default_plan(), "free");
        assert!(p.limits_enabled);
        let free = p.for_claim(None).unwrap();
        assert_eq!(free.name, "free");
        assert_eq!(
            free.limits(),
            Limits {
                requests_per_minute: 10,
                tokens_per_day: 1000,
                concurrent_streams: 2
            }
        );
        assert!(free.allows("fast") && !free.allows("smart"));
        let pro = p.for_claim(Some("pro")).unwrap();
        assert_eq!(pro.models, Models::All);
        let config = test_config(&[("ROUTES", ROUTES), ("PLANS", &text)]);
        assert_eq!(pro.allowed_aliases(&config), ["fast", "smart"]);
        assert_eq!(free.allowed_aliases(&config), ["fast"]);

        let p = plans_with(
            &text,
            &[("DEFAULT_PLAN", "pro"), ("LIMITS_ENABLED", "false")],
        )
        .unwrap();
        assert_eq!(p.for_claim(None).unwrap().name, "pro");
        assert!(!p.limits_enabled);
        // The optional fields: integer weights are numbers too; a null weight is the default.
        let p = plans_with(
            &format!(
                r#"{{"free":{}}}"#,
                plan(r#"["fast"]"#).replace(
                    "}",
                    r#","max_choices":3,"allow":["store"],"cached_input_weight":1,"cache_write_weight":null}"#
                )
            ),
            &[],
        )
        .unwrap();
        let free = p.for_claim(None).unwrap();
        assert_eq!(free.max_choices, 3);
        assert_eq!(free.allow, ["store"]);
        assert_eq!(
            (free.cached_input_weight, free.cache_write_weight),
            (Some(1.0), None)
        );
        assert_eq!(
            plans_with(&format!(r#"{{"free":{}}}"#, plan("[]")), &[])
                .unwrap()
                .for_claim(None)
                .unwrap()
                .max_choices,
            1
        );
        // One plan, whatever its name, is the default.
        let p = plans_with(&format!(r#"{{"gold":{}}}"#, plan("[]")), &[]).unwrap();
        assert_eq!(p.default_plan(), "gold");
    }

    #[test]
    fn unknown_plan_is_403() {
        let p = plans_with(&format!(r#"{{"free":{}}}"#, plan("[]")), &[]).unwrap();
        let e = p.for_claim(Some("platinum")).unwrap_err();
        assert_eq!((e.status(), e.code()), (403, "unknown_plan"));
        assert!(e.body().error.message.contains("platinum"));
        assert_eq!(e.body().error.kind.as_deref(), Some("permission_error"));
        let long = "p".repeat(5000);
        let e = p.for_claim(Some(&long)).unwrap_err();
        assert!(e.body().error.message.len() < 200);
    }

    #[test]
    fn bad_plans_are_config_errors() {
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            ("{}".into(), vec![], "PLANS", "required"),
            (
                r#"{"free":{"models":[],"requests_per_minute":1}}"#.into(),
                vec![],
                "PLANS",
                "needs models",
            ),
            (
                format!(
                    r#"{{"free":{}}}"#,
                    plan(r#"["fast"]"#).replace("\"concurrent_streams\"", "\"concurent_streams\"")
                ),
                vec![],
                "PLANS",
                "unknown field `concurent_streams`",
            ),
            (
                format!(
                    r#"{{"free":{}}}"#,
                    plan("[]").replace(":100,", ":4294967296,")
                ),
                vec![],
                "PLANS",
                "(field `max_output_tokens`)",
            ),
            (
                format!(
                    r#"{{"free":{}}}"#,
                    plan("[]").replace("}", r#","max_choices":null}"#)
                ),
                vec![],
                "PLANS",
                "(field `max_choices`)",
            ),
            (
                format!(
                    r#"{{"free":{}}}"#,
                    plan("[]").replace("}", r#","allow":"store"}"#)
                ),
                vec![],
                "PLANS",
                "(field `allow`)",
            ),
            (
                format!(r#"{{"free":{}}}"#, plan("[1]")),
                vec![],
                "PLANS",
                "(field `models`)",
            ),
            (
                format!(r#"{{"free":{}}}"#, plan(r#"["nope"]"#)),
                vec![],
                "PLANS",
                "not an alias",
            ),
            (
                format!(r#"{{"free":{}}}"#, plan(r#"["*","fast"]"#)),
                vec![],
                "PLANS",
                "only entry",
            ),
            (
                format!(r#"{{"free":{}}}"#, plan("[]").replace(":10,", ":0,")),
                vec![],
                "PLANS",
                "at least 1",
            ),
            (
                format!(r#"{{"free":{}}}"#, plan("[]").replace(":1000,", ":-5,")),
                vec![],
                "PLANS",
                "needs models",
            ),
            (
                format!(r#"{{"a":{},"b":{}}}"#, plan("[]"), plan("[]")),
                vec![],
                "DEFAULT_PLAN",
                "required",
            ),
            (
                format!(r#"{{"free":{}}}"#, plan("[]")),
                vec![("DEFAULT_PLAN", "gold")],
                "DEFAULT_PLAN",
                "does not define",
            ),
            (
                format!(r#"{{"free":{}}}"#, plan("[]")),
                vec![("LIMITS_ENABLED", "maybe")],
                "LIMITS_ENABLED",
                "true or false",
            ),
        ];
        for (text, vars, var, why) in cases {
            let e = plans_with(&text, &vars).unwrap_err();
            assert_eq!(e.var, var, "{text}: {e}");
            assert!(e.reason.contains(why), "{text}: {}", e.reason);
        }
    }

    #[test]
    fn models_outside_the_plan_are_403_unknown_ones_pass_to_routing() {
        let text = format!(r#"{{"free":{}}}"#, plan(r#"["fast"]"#));
        let config = test_config(&[("ROUTES", ROUTES), ("PLANS", &text)]);
        let free = config.plans.for_claim(None).unwrap();
        assert!(free.check_model(&config, "fast").is_ok());
        let e = free.check_model(&config, "smart").unwrap_err();
        assert_eq!((e.status(), e.code()), (403, "model_not_allowed"));
        assert_eq!(e.body().error.param.as_deref(), Some("model"));
        assert!(free.check_model(&config, "no-such-alias").is_ok());
        let app: AppError = e.into();
        assert_eq!((app.status(), app.code()), (403, "model_not_allowed"));
    }

    #[test]
    fn choices_and_gated_fields_follow_the_plan() {
        let text = format!(
            r#"{{"free":{},"pro":{}}}"#,
            plan("[]"),
            plan("[]").replace(
                "\"concurrent_streams\":2",
                r#""concurrent_streams":2,"max_choices":4,"allow":["store","service_tier"]"#
            )
        );
        let p = plans_with(&text, &[]).unwrap();
        let free = p.for_claim(None).unwrap();
        let pro = p.for_claim(Some("pro")).unwrap();
        assert_eq!((free.max_choices, free.allow.len()), (1, 0));
        assert_eq!(pro.max_choices, 4);
        let check = |plan: &Plan, body: Value| {
            let Value::Object(mut map) = body else {
                panic!()
            };
            plan.check_request(&mut map).map(|()| Value::Object(map))
        };
        // n: one by default, up to max_choices.
        assert!(check(free, json!({"n": 1})).is_ok());
        let e = check(free, json!({"n": 2})).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "invalid_value"));
        assert_eq!(e.body().error.param.as_deref(), Some("n"));
        assert!(check(pro, json!({"n": 4})).is_ok());
        assert!(check(pro, json!({"n": 5})).is_err());
        // Gated fields: refused unless allowed; their harmless defaults are dropped.
        for (field, value) in [
            ("store", json!(true)),
            ("service_tier", json!("priority")),
            ("service_tier", json!("flex")),
            ("web_search_options", json!({})),
        ] {
            let e = check(free, json!({ field: value })).unwrap_err();
            assert_eq!(e.body().error.param.as_deref(), Some(field), "{field}");
        }
        for (field, value) in [
            ("store", json!(false)),
            ("service_tier", json!("auto")),
            ("service_tier", json!("default")),
            ("web_search_options", Value::Null),
        ] {
            let body = check(free, json!({ field: value, "model": "m" })).unwrap();
            assert_eq!(body, json!({"model": "m"}), "{field}");
        }
        let body = check(pro, json!({"store": true, "service_tier": "priority"})).unwrap();
        assert_eq!(body, json!({"store": true, "service_tier": "priority"}));
        assert!(check(pro, json!({"web_search_options": {}})).is_err());
        // A plan may only allow the gated fields, and max_choices is at least 1.
        for (bad, why) in [
            (r#""allow":["temperature"]"#, "not one of"),
            (r#""max_choices":0"#, "at least 1"),
        ] {
            let text = format!(
                r#"{{"free":{}}}"#,
                plan("[]").replace(
                    "\"concurrent_streams\":2",
                    &format!(r#""concurrent_streams":2,{bad}"#)
                )
            );
            let e = plans_with(&text, &[]).unwrap_err();
            assert!(e.reason.contains(why), "{bad}: {e}");
        }
    }

    fn capped(body: Value) -> (u64, Value) {
        let text = format!(r#"{{"free":{}}}"#, plan("[]"));
        let p = plans_with(&text, &[]).unwrap();
        let Value::Object(mut map) = body else {
            panic!()
        };
        let e = p.for_claim(None).unwrap().cap_output(&mut map);
        (e, Value::Object(map))
    }

    #[test]
    fn output_cap_lowers_or_sets_max_tokens() {
        let (e, b) = capped(json!({"model":"fast","max_tokens":5000}));
        assert_eq!((e, b["max_tokens"].clone()), (100, json!(100)));
        assert!(b.get("max_completion_tokens").is_none());
        let (e, b) = capped(json!({"max_completion_tokens":5000,"max_tokens":40}));
        assert_eq!(e, 40);
        assert_eq!(b["max_completion_tokens"], 100);
        assert_eq!(b["max_tokens"], 40);
        let (e, b) = capped(json!({"max_completion_tokens":30}));
        assert_eq!((e, b["max_completion_tokens"].clone()), (30, json!(30)));
        let (e, b) = capped(json!({"model":"fast"}));
        assert_eq!((e, b["max_completion_tokens"].clone()), (100, json!(100)));
        assert!(b.get("max_tokens").is_none());
        let (e, b) = capped(json!({"max_tokens":null}));
        assert_eq!((e, b["max_completion_tokens"].clone()), (100, json!(100)));
    }

    #[test]
    fn estimates() {
        let one = Map::new();
        assert_eq!(estimate_tokens(401, 100, &one), (101, 201));
        assert_eq!(estimate_tokens(0, 100, &one), (0, 100));
        let Value::Object(three) = json!({"n":3}) else {
            panic!()
        };
        assert_eq!(estimate_tokens(40, 100, &three), (10, 310));
        let Value::Object(huge) = json!({"n":100000}) else {
            panic!()
        };
        assert_eq!(estimate_tokens(0, 1, &huge), (0, 128));
    }
}
