//! An isolate of this release and limiter objects of an earlier one, as during a deploy: the
//! object's class is wasm-bindgen's own, not the build's `DurableObject` around it, so it takes
//! no RPC. The runtime refuses the isolate's RPC call before any of the object's code runs, the
//! isolate makes the call again as a fetch (and its later ones), and the limits hold exactly:
//! a plan's requests per minute, and what the provider reported, charged once. The glue is
//! edited before the Worker runs so that it exports that class (nothing else changes); the
//! fetch path it then takes is the one an isolate of an earlier release uses with an object of
//! this release.

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc};

use serde_json::json;
use storycad_e2e::tokens::{self, Alg};
use support::resume::{charged_down_to, remaining};
use support::{chat_body, Suite, SuiteConfig, OPENAI_ALIAS};

/// Requests per minute of the `rpm5` plan.
const RPM: usize = 5;

/// The build's export of the limiter's class, and where its class takes the wasm class.
const EXPORT: &str = "__storycadUserLimiter as UserLimiter";
const CORE: &str = "this.core=new ";

fn main() -> ExitCode {
    let mut plans = support::plans();
    plans["rpm5"] = json!({
        "models": [OPENAI_ALIAS],
        "requests_per_minute": RPM,
        "tokens_per_day": 1_000_000_000u64,
        "max_output_tokens": 4096,
        "concurrent_streams": 64
    });
    support::run(
        SuiteConfig {
            name: "e2e_limiter_skew",
            edit_glue: Some(without_rpc_object),
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![("PLANS".into(), plans.to_string())],
        },
        cases![
            an_object_without_rpc_charges_exactly_what_the_provider_reported,
            an_object_without_rpc_admits_exactly_the_rate_limit,
        ],
    )
}

/// The glue exporting the wasm class itself as `UserLimiter` (`None`: not the build's export).
fn without_rpc_object(glue: &str) -> Option<String> {
    if glue.matches(EXPORT).count() != 1 {
        return None;
    }
    let at = glue.find(CORE)? + CORE.len();
    let core = &glue[at..at + glue[at..].find('(')?];
    Some(glue.replacen(EXPORT, &format!("{core} as UserLimiter"), 1))
}

fn token_of(s: &Suite, name: &str, plan: Option<&str>) -> String {
    let mut claims = s.claims(&format!("skew-{name}-{}", s.nonce()));
    if let Some(plan) = plan {
        claims["plan"] = json!(plan);
    }
    tokens::mint(s.keys.get(Alg::EdDSA), &claims)
}

async fn an_object_without_rpc_charges_exactly_what_the_provider_reported(s: Arc<Suite>) {
    let token = token_of(&s, "charge", None);
    let budget = remaining(&s, &token).await;
    let mut total = 0;
    for round in 0..3 {
        let nonce = s.nonce();
        let seen = s
            .chat(Some(&token), &chat_body(OPENAI_ALIAS, &nonce, round == 1))
            .await;
        assert_eq!(seen.status, 200, "round {round}: {}", seen.text());
        let id = seen.header("x-request-id").unwrap();
        let line = s.log_line(id).await;
        let tokens =
            line["prompt_tokens"].as_u64().unwrap() + line["completion_tokens"].as_u64().unwrap();
        assert!(tokens > 0, "{line}");
        total += tokens;
        assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
    }
    charged_down_to(&s, &token, budget - total, "through fetch").await;
}

async fn an_object_without_rpc_admits_exactly_the_rate_limit(s: Arc<Suite>) {
    let token = token_of(&s, "rpm", Some("rpm5"));
    let mut admitted = 0;
    for _ in 0..RPM + 3 {
        let seen = s
            .chat(Some(&token), &chat_body(OPENAI_ALIAS, &s.nonce(), false))
            .await;
        match seen.status {
            200 => admitted += 1,
            429 => {
                seen.assert_error(429, "rate_limit_exceeded");
            }
            other => panic!("{other}: {}", seen.text()),
        }
    }
    assert_eq!(admitted, RPM);
}
