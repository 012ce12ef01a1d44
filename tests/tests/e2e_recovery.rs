//! An exception thrown through the Worker's wasm (what a trap is to the glue, and a Rust panic
//! too, built with `panic = "abort"`) fails the request it happens in, not the isolate: the
//! next request re-creates the wasm instance and is served, limiter, metering and log line
//! included. No request can make the Worker throw so (it never panics on any input, and the
//! other suites check that): this binary edits its glue before it runs, and nothing else in
//! it changes. On `/__trap` the `fetch` method hands the wasm export `null` for the request,
//! so the wasm throws as it first reads it; `/__instance` answers, from JavaScript, how many
//! wasm instances workers-rs' start function has counted.
//!
//! What re-creates the instance is wasm-bindgen's glue: an export call that throws marks the
//! instance terminated and runs workers-rs' abort handler, which schedules a reinit that the
//! next export call carries out. (workers-rs' entrypoint wrapper re-creates it too, but only
//! after a `WebAssembly.RuntimeError` it sees, and a throw inside a wake of a Rust task reaches
//! no handler of it.) The limiter's object instances are re-created with it by that wrapper.

#![allow(clippy::unwrap_used)]

mod support;

use std::{process::ExitCode, sync::Arc};

use storycad_e2e::tokens::{self, Alg};
use support::resume::{charged_down_to, remaining};
use support::{chat_body, Suite, SuiteConfig, OPENAI_ALIAS};

/// The entrypoint's `fetch` method as worker-build writes it, up to its parameter's name.
const METHOD: &str = ".prototype.fetch=function(";

fn main() -> ExitCode {
    support::run(
        SuiteConfig {
            name: "e2e_recovery",
            edit_glue: Some(with_trap),
            jwks_url: false,
            extra_secrets: vec![],
            extra_vars: vec![],
        },
        cases![a_throw_in_the_wasm_fails_its_request_and_the_next_is_served],
    )
}

/// The glue with the two test paths in the entrypoint's `fetch` method (`None`: no single
/// method of the shape `C.prototype.fetch=function(t){return f.call(...)}` there).
fn with_trap(glue: &str) -> Option<String> {
    let [(at, _)] = glue.match_indices(METHOD).collect::<Vec<_>>()[..] else {
        return None;
    };
    let rest = &glue[at + METHOD.len()..];
    let param = &rest[..rest.find(')')?];
    let body = at + METHOD.len() + param.len() + "){".len();
    if param.is_empty() || !glue[body..].starts_with("return ") {
        return None;
    }
    Some(format!(
        "{}const path=new URL({param}.url).pathname;if(path===\"/__instance\")return new \
         Response(String(globalThis.__worker_init_state.instanceId));if(path===\"/__trap\")\
         {param}=null;{}",
        &glue[..body],
        &glue[body..]
    ))
}

async fn instance(s: &Suite) -> u64 {
    let seen = s.send(s.http.get(s.at("/__instance"))).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    seen.text().parse().unwrap()
}

async fn a_throw_in_the_wasm_fails_its_request_and_the_next_is_served(s: Arc<Suite>) {
    let first = s.ask(OPENAI_ALIAS, &s.nonce(), false).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let before = instance(&s).await;

    let trapped = s.send(s.http.get(s.at("/__trap"))).await;
    assert_eq!(trapped.status, 500, "{}", trapped.text());
    // The instance is re-created by the next call into the wasm, not before.
    assert_eq!(instance(&s).await, before);

    // A user of its own, so that what the object charges is exactly these rounds.
    let token = tokens::mint(
        s.keys.get(Alg::EdDSA),
        &s.claims(&format!("recovery-{}", s.nonce())),
    );
    let budget = remaining(&s, &token).await;
    let mut total = 0;
    for round in 0..3 {
        let nonce = s.nonce();
        let seen = s
            .chat(Some(&token), &chat_body(OPENAI_ALIAS, &nonce, false))
            .await;
        assert_eq!(seen.status, 200, "round {round}: {}", seen.text());
        let usage = &seen.json()["usage"];
        let tokens = usage["total_tokens"].as_u64().unwrap();
        assert!(tokens > 0, "{usage}");
        total += tokens;
        assert_eq!(s.provider.requests_containing(&nonce).len(), 1);
        let id = seen.header("x-request-id").unwrap();
        let line = s.log_line(id).await;
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["prompt_tokens"], usage["prompt_tokens"], "{line}");
    }
    assert_eq!(instance(&s).await, before + 1, "one new instance, once");

    // The limiter's object, whose instance lived in the old wasm instance too, charges them
    // exactly (each settles within about a second).
    charged_down_to(&s, &token, budget - total, "after the throw").await;
}
