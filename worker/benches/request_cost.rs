//! The Worker's CPU cost per request, on the host (criterion).
//!
//! ```sh
//! cargo bench -p storycad-worker --bench request_cost
//! ```
//!
//! Each figure lands in `target/criterion/<group>/<bench>/new/estimates.json`:
//!
//! - `config/parse`: what an isolate does once: `Config::from_lookup` over wrangler.toml's
//!   top-level `[vars]` plus `JWT_PUBLIC_JWK` (the three-key fixture JWKS: RSA-2048, P-256,
//!   Ed25519), `PLANS` with it.
//! - `jwt/RS256`, `jwt/ES256`, `jwt/EdDSA`: one valid token verified by the configured
//!   verifier, as a request with a token not in the isolate's cache does (the token is signed
//!   once, outside the timing). The signature is checked by the host's RustCrypto here; the
//!   Worker hands that step to the runtime's WebCrypto (native code), so in the Worker only the
//!   rest (header, key choice, claims) is its own CPU.
//! - `request/openai`, `request/anthropic`: a typical StoryCAD chat body through `parse_chat`,
//!   the plan (`check_model`, `cap_output`, `estimate_tokens`), `routing::chain` and
//!   `upstream_request` for the route of that provider.
//! - `relay/openai_200_chunks`, `relay/anthropic_200_chunks`: a 200-content-chunk upstream
//!   stream, built from the recorded shapes in the workspace's `fixtures/`, fed through the provider `Relay` in network-sized pieces, then
//!   `finish`.
//! - `total/openai_stream`, `total/anthropic_stream`: the per-request path with the
//!   configuration already parsed: RS256 verification + plan + request build + relay of the
//!   200-chunk stream.
//!
//! Host figures: workerd runs the same code as wasm, typically a few times slower.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use storycad_worker::auth::{Claims, ClaimsCache, Verifier};
use storycad_worker::caller::request::parse_chat;
use storycad_worker::config::{Config, ProviderKind};
use storycad_worker::plans::{estimate_tokens, Plans};
use storycad_worker::providers::openai::UpstreamRequest;
use storycad_worker::providers::routing::chain;
use storycad_worker::providers::Outcome;
use storycad_worker::providers::{upstream_request, Relay};

#[allow(dead_code)]
#[path = "../src/auth/test_signer.rs"]
mod test_signer;

use test_signer::{fixture, sign, TestKey};

/// The Worker's own wrangler.toml: the bench parses what a deployment parses.
const WRANGLER_TOML: &str = include_str!("../wrangler.toml");
const OPENAI_STREAM: &str = include_str!("../../fixtures/openai/chat_stream_text_usage.sse");
const ANTHROPIC_STREAM: &str = include_str!("../../fixtures/anthropic/messages_stream_text.sse");

/// Content chunks per relayed stream.
const CONTENT_CHUNKS: usize = 200;
/// Sizes the upstream bytes are cut into, in turn: a TCP segment's payload (1448), two, and
/// odd sizes, so events are split across reads as they are on a real connection.
const PIECES: [usize; 5] = [1448, 731, 2896, 397, 1448];
/// A placeholder provider key (only its presence matters).
const PROVIDER_KEY: &str = concat!("sk-", "bench-0000000000000000");
/// The alias the typical request asks for (`storycad-fast`: OpenAI first, then Anthropic).
const ALIAS: &str = "storycad-fast";

/// The top-level `[vars]` of wrangler.toml, as `(name, value)` (basic or literal strings).
fn wrangler_vars() -> Vec<(String, String)> {
    let mut vars = Vec::new();
    let mut inside = false;
    for line in WRANGLER_TOML.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[vars]";
            continue;
        }
        if !inside || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let unquoted = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')));
        if let Some(v) = unquoted {
            vars.push((name.trim().to_owned(), v.to_owned()));
        }
    }
    assert!(
        vars.iter().any(|(n, _)| n == "ROUTES") && vars.iter().any(|(n, _)| n == "PLANS"),
        "wrangler.toml's [vars] lost ROUTES or PLANS"
    );
    vars.push((
        "JWT_PUBLIC_JWK".to_owned(),
        fixture("test-only-jwks.public.json").to_owned(),
    ));
    vars
}

fn lookup(vars: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

fn load(vars: &[(String, String)]) -> Config {
    Config::from_lookup(lookup(vars)).expect("wrangler.toml's vars parse")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token as the issuer would mint it: the configured issuer and audience, the `pro` plan.
fn token(config: &Config, key: TestKey) -> String {
    let now = now();
    let claims = json!({
        "iss": config.jwt.issuer, "aud": config.jwt.audience, "sub": "user-7f3a9c21",
        "iat": now, "nbf": now, "exp": now + 3600, "plan": "pro"
    });
    sign(
        key,
        &json!({"alg": key.alg(), "kid": key.kid(), "typ": "JWT"}),
        &claims,
    )
}

/// A typical StoryCAD Collaborator request: a system prompt, one earlier exchange, the
/// question; streamed with usage.
fn chat_body() -> Vec<u8> {
    json!({
        "model": ALIAS,
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0.7,
        "max_tokens": 800,
        "messages": [
            {"role": "system", "content": "You are StoryCAD's writing collaborator. You help a \
                fiction writer develop characters, settings, scenes and plot problems. Answer \
                in plain prose, concretely, in the voice of a patient editor. Keep to the \
                story's established facts: the protagonist is Mara Quill, a lighthouse keeper \
                on a northern island in 1911; the antagonist is the shipping magnate Edwin \
                Halloway; the central problem is a wreck Mara believes was deliberate."},
            {"role": "user", "content": "Suggest three ways Mara could first suspect that \
                the wreck of the Corvina was not an accident."},
            {"role": "assistant", "content": "1. The lamp log shows the light was lit, yet \
                the survivors swear they saw no beam. 2. A cargo manifest washes ashore listing \
                crates that were never loaded. 3. Halloway's agent arrives on the island a day \
                before the storm, asking about the tides."},
            {"role": "user", "content": "I like the second one. Write a short scene where \
                she finds the manifest on the rocks at dawn, and end it on a question she \
                cannot answer yet."}
        ]
    })
    .to_string()
    .into_bytes()
}

/// The recorded events of `text` (blank-line separated, each with its blank line).
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| format!("{e}\n\n"))
        .collect()
}

/// `event` with the JSON string that follows `marker` replaced by `text`.
fn with_text(event: &str, marker: &str, text: &str) -> String {
    let start = event.find(marker).expect("marker in the template event") + marker.len();
    let len = event[start..].find('"').expect("the string ends");
    format!("{}{text}{}", &event[..start], &event[start + len..])
}

/// The recording's events before its first content event, `CONTENT_CHUNKS` content events made
/// from the first one (with varied words), and the events after its last one.
fn grow(text: &str, is_content: impl Fn(&str) -> bool, marker: &str) -> Vec<u8> {
    let all = events(text);
    let first = all.iter().position(|e| is_content(e)).expect("content");
    let last = all.iter().rposition(|e| is_content(e)).expect("content");
    let template = &all[first];
    let words: Vec<String> =
        "The tide had left the paper folded twice, its ink bled into blue ghosts of numbers."
            .split(' ')
            .map(|w| format!(" {w}"))
            .collect();
    let mut out = String::new();
    for e in &all[..first] {
        out.push_str(e);
    }
    for i in 0..CONTENT_CHUNKS {
        out.push_str(&with_text(template, marker, &words[i % words.len()]));
    }
    for e in &all[last + 1..] {
        out.push_str(e);
    }
    out.into_bytes()
}

/// A 200-content-chunk OpenAI stream in the recorded shape (role, content..., finish, usage,
/// `[DONE]`).
fn openai_stream() -> Vec<u8> {
    grow(
        OPENAI_STREAM,
        |e| e.contains(r#""delta":{"content":""#),
        r#""delta":{"content":""#,
    )
}

/// A 200-content-chunk Anthropic stream in the recorded shape (message_start,
/// content_block_start, ping, deltas..., content_block_stop, message_delta, message_stop).
fn anthropic_stream() -> Vec<u8> {
    grow(
        ANTHROPIC_STREAM,
        |e| e.starts_with("event: content_block_delta"),
        r#""type":"text_delta","text":""#,
    )
}

/// `bytes` cut into [`PIECES`] sizes, in turn.
fn pieces(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(PIECES[i % PIECES.len()].min(rest.len()));
        out.push(piece);
        rest = tail;
        i += 1;
    }
    out
}

/// One request's work from the body to the upstream request, for the route of `kind`.
/// A writer's session at its tenth turn: a ~6,000-token story context in the system prompt and
/// nine exchanges before the newest question (what prompt caching is for).
fn session_body() -> Vec<u8> {
    let story: String = (0..600)
        .map(|i| format!("Mara checks lamp {i} and writes the tide in the log. "))
        .collect();
    let mut messages = vec![json!({"role": "system", "content": story})];
    for turn in 0..9 {
        messages.push(json!({"role": "user", "content": format!("Turn {turn}: what next?")}));
        messages.push(
            json!({"role": "assistant", "content": "She climbs the stairs again. ".repeat(20)}),
        );
    }
    messages.push(json!({"role": "user", "content": "And then?"}));
    json!({"model": ALIAS, "stream": true, "max_tokens": 800, "messages": messages})
        .to_string()
        .into_bytes()
}

fn build_request(
    config: &Config,
    plans: &Plans,
    claims: &Claims,
    body: &[u8],
    kind: ProviderKind,
) -> (UpstreamRequest, bool) {
    let plan = plans.for_claim(claims.plan.as_deref()).expect("plan");
    let mut call = parse_chat(body).expect("valid body");
    plan.check_model(config, &call.alias)
        .expect("model in plan");
    plan.check_request(&mut call.body)
        .expect("allowed by the plan");
    let output_cap = plan.cap_output(&mut call.body);
    black_box(estimate_tokens(body.len(), output_cap, &call.body));
    let routes = chain(config, &call.alias).expect("alias routed");
    let route = routes
        .iter()
        .find(|r| r.provider.kind == kind)
        .expect("a route of that provider");
    let end_user =
        storycad_worker::providers::openai::end_user_id(PROVIDER_KEY.as_bytes(), &claims.sub);
    let req = upstream_request(
        route,
        &call,
        PROVIDER_KEY,
        plan.max_output_tokens,
        &end_user,
        // As the Worker runs by default: breakpoints placed, the OpenAI cache key set.
        Some(&config.prompt_cache).filter(|c| c.enabled),
    )
    .expect("request builds");
    (req, call.include_usage)
}

/// One stream through a fresh relay; the bytes sent to the caller.
fn relay(kind: ProviderKind, include_usage: bool, pieces: &[&[u8]]) -> (usize, Outcome) {
    let scrub = vec![PROVIDER_KEY.to_owned(), "https://api.example".to_owned()];
    let mut relay = Relay::new(kind, ALIAS, include_usage, scrub, 1_764_000_000);
    let mut sent = 0;
    for p in pieces {
        sent += black_box(relay.feed(p)).len();
    }
    sent += relay.finish().len();
    (sent, relay.outcome())
}

fn verifier(config: &Config) -> Verifier {
    config.jwt.verifier()
}

fn benches(c: &mut Criterion) {
    let vars = wrangler_vars();
    let config = load(&vars);
    let plans = &config.plans;
    let verifier = verifier(&config);
    let body = chat_body();
    let streams = [
        (ProviderKind::OpenAiCompatible, openai_stream()),
        (ProviderKind::Anthropic, anthropic_stream()),
    ];

    // Everything measured must succeed: check each path once before timing it.
    let claims = verifier
        .verify(&token(&config, TestKey::Rs256), now())
        .expect("token verifies");
    for (kind, stream) in &streams {
        let (_, include_usage) = build_request(&config, plans, &claims, &body, *kind);
        let (sent, outcome) = relay(*kind, include_usage, &pieces(stream));
        assert_eq!(outcome, Outcome::Done, "{kind:?}");
        assert!(sent > stream.len() / 4, "{kind:?}: {sent} bytes out");
        // Every content chunk reaches the caller, and the stream ends as it should.
        let mut r = Relay::new(*kind, ALIAS, include_usage, Vec::new(), 1);
        let mut out = Vec::new();
        for p in pieces(stream) {
            out.extend(r.feed(p));
        }
        out.extend(r.finish());
        let out = String::from_utf8(out).expect("UTF-8 out");
        assert_eq!(
            out.matches("ghosts").count(),
            CONTENT_CHUNKS / 16,
            "{kind:?}"
        );
        assert!(out.ends_with("data: [DONE]\n\n"), "{kind:?}");
    }

    c.benchmark_group("config")
        .bench_function("parse", |b| b.iter(|| load(black_box(&vars))));

    let mut jwt = c.benchmark_group("jwt");
    // The baseline of the checks below: a token verified before, found in the isolate's cache
    // (what the Worker does for a caller's second and later requests).
    {
        let token = token(&config, TestKey::Rs256);
        let (claims, signer) = verifier
            .verify_keyed(&token, now())
            .expect("token verifies");
        let mut cache = ClaimsCache::new(4096);
        cache.insert(ClaimsCache::key(&token), claims, signer, now());
        jwt.bench_function("cached", |b| {
            b.iter(|| {
                let key = ClaimsCache::key(black_box(&token));
                cache.get(&key, now()).expect("cached")
            })
        });
    }
    for key in TestKey::ALL {
        let token = token(&config, key);
        verifier.verify(&token, now()).expect("token verifies");
        jwt.bench_function(key.alg(), |b| {
            b.iter(|| verifier.verify(black_box(&token), now()))
        });
    }
    jwt.finish();

    let mut request = c.benchmark_group("request");
    for (name, kind) in [
        ("openai", ProviderKind::OpenAiCompatible),
        ("anthropic", ProviderKind::Anthropic),
    ] {
        request.bench_function(name, |b| {
            b.iter(|| build_request(&config, plans, &claims, black_box(&body), kind))
        });
    }
    request.finish();

    // The same long session with prompt caching on (breakpoints placed, the cache key set) and
    // off: what the caching costs the Worker per request, side by side.
    let session = session_body();
    let mut off = config.clone();
    off.prompt_cache.enabled = false;
    let mut long = c.benchmark_group("request_session");
    for (name, kind) in [
        ("openai", ProviderKind::OpenAiCompatible),
        ("anthropic", ProviderKind::Anthropic),
    ] {
        for (cache, cfg) in [("cache_on", &config), ("cache_off", &off)] {
            long.bench_function(format!("{name}_{cache}"), |b| {
                b.iter(|| build_request(cfg, plans, &claims, black_box(&session), kind))
            });
        }
    }
    long.finish();

    let mut group = c.benchmark_group("relay");
    for (name, (kind, stream)) in ["openai_200_chunks", "anthropic_200_chunks"]
        .iter()
        .zip(&streams)
    {
        let pieces = pieces(stream);
        group.bench_function(*name, |b| b.iter(|| relay(*kind, true, black_box(&pieces))));
    }
    group.finish();

    let token = token(&config, TestKey::Rs256);
    let mut total = c.benchmark_group("total");
    for (name, (kind, stream)) in ["openai_stream", "anthropic_stream"].iter().zip(&streams) {
        let pieces = pieces(stream);
        total.bench_function(*name, |b| {
            b.iter(|| {
                let claims = verifier
                    .verify(black_box(&token), now())
                    .expect("token verifies");
                let (req, include_usage) =
                    build_request(&config, plans, &claims, black_box(&body), *kind);
                black_box(req);
                relay(*kind, include_usage, black_box(&pieces))
            })
        });
    }
    total.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = request_cost;
    config = config();
    targets = benches
}
criterion_main!(request_cost);
