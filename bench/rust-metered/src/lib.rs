//! A baseline of `cargo xtask bench proxy`: the JS metering Worker (`bench/metered`) written as
//! a plain workers-rs Worker, the way its documentation shows. It forwards the request with the
//! provider's key, reads a JSON answer whole, takes the usage out of it, writes one log line and
//! answers with the bytes it read (a stream is handed through unread). No JWT, no limits, no
//! routing. Beside the JS one, it shows what running as Rust compiled to wasm costs on this
//! runtime before any work of ours: what is left of our Worker's cost above it is our code.
//!
//! With `HAND_THROUGH` set it is the JS passthrough (`bench/passthrough`) in workers-rs
//! instead: the answer is handed back unread, nothing is logged. Beside the JS passthrough, that
//! is the least any workers-rs Worker costs a request on this runtime.
#![cfg(target_arch = "wasm32")]

use serde::Deserialize;
use worker::{
    console_log, event, Context, Date, Env, Fetch, Request, RequestInit, Response, Result,
};

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Answer {
    usage: Option<Usage>,
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let started = Date::now().as_millis();
    let path = req.path();
    if path == "/healthz" {
        return Response::from_bytes(br#"{"status":"ok"}"#.to_vec());
    }
    let hand_through = env.var("HAND_THROUGH").is_ok();
    let key = env.secret("OPENAI_API_KEY")?.to_string();
    let base = env.var("OPENAI_BASE_URL")?.to_string();
    let upstream = format!("{base}{}", path.strip_prefix("/v1").unwrap_or(&path));
    let headers = req.headers().clone();
    headers.set("authorization", &format!("Bearer {key}"))?;
    let mut init = RequestInit::new();
    init.with_method(req.method()).with_headers(headers);
    if let Some(body) = req.inner().body() {
        init.with_body(Some(body.into()));
    }
    let mut answer = Fetch::Request(Request::new_with_init(&upstream, &init)?)
        .send()
        .await?;
    if hand_through {
        return Ok(answer);
    }
    let streamed = answer
        .headers()
        .get("content-type")?
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if streamed {
        return Ok(answer);
    }
    let text = answer.text().await?;
    let usage = serde_json::from_str::<Answer>(&text)
        .ok()
        .and_then(|a| a.usage);
    let (input, output) = usage.map_or((None, None), |u| (u.prompt_tokens, u.completion_tokens));
    let status = answer.status_code();
    console_log!(
        "{}",
        serde_json::json!({
            "level": "info",
            "event": "request",
            "method": req.method().to_string(),
            "path": path,
            "status": status,
            "total_ms": Date::now().as_millis().saturating_sub(started),
            "input_tokens": input,
            "output_tokens": output,
        })
    );
    let headers = answer.headers().clone();
    Ok(Response::from_bytes(text.into_bytes())?
        .with_status(status)
        .with_headers(headers))
}
