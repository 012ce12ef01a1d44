//! `cargo xtask dev`: the Worker under workerd, a fake provider (or the real ones when their
//! keys are set), a dev signing key, a token, and the chat REPL connected to it all. Quitting
//! the REPL stops everything this started.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result};
use storycad_e2e::{
    fake_provider::{FakeProvider, FakeProviderOptions},
    tokens::{self, DevKey},
    workerd::{free_port, target_dir, Worker, WorkerOptions},
};

use crate::{build, cmd, setup};

const ISSUER: &str = "storycad-dev";
const AUDIENCE: &str = "storycad-llm-proxy";
const DEV_USER: &str = "dev-user";
const PREFERRED_PORT: u16 = 8787;
/// The plan of the dev token (wrangler.toml's `pro`: both aliases).
const DEV_PLAN: &str = "pro";
/// With the fake provider, one alias starts at each provider's API, so both paths get used.
const FAKE_ROUTES: &str = r#"{"storycad-fast":["openai:gpt-4o-mini","anthropic:claude-haiku-4-5"],"storycad-smart":["anthropic:claude-sonnet-4-5","openai:gpt-4o"]}"#;

pub fn run() -> Result<()> {
    setup::run()?;
    build::worker(false)?;
    // Build the REPL before anything starts, so no compile waits behind a running Worker.
    cmd::run(cmd::cargo().args([
        "build",
        "-q",
        "-p",
        "storycad-examples",
        "--example",
        "chat",
    ]))?;

    let dev_dir = cmd::root().join(".dev");
    let key = DevKey::load_or_generate(dev_dir.join("signing-key.jwk.json"))
        .context("dev signing key")?;

    let openai_key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let anthropic_key = std::env::var("ANTHROPIC_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let use_real = openai_key.is_some() || anthropic_key.is_some();

    let mut opts = WorkerOptions {
        name: "dev".into(),
        port: Some(port()),
        startup_timeout: Duration::from_secs(120),
        run_dir: Some(dev_dir.join("worker")),
        ..WorkerOptions::default()
    }
    .var("JWT_PUBLIC_JWK", key.public_jwk().to_string())
    .var("JWT_ISSUER", ISSUER)
    .var("JWT_AUDIENCE", AUDIENCE);

    let provider = if use_real {
        eprintln!("dev: using the real providers (keys from the environment)");
        if let Some(k) = openai_key {
            opts = opts.secret("OPENAI_API_KEY", k);
        }
        if let Some(k) = anthropic_key {
            opts = opts.secret("ANTHROPIC_API_KEY", k);
        }
        None
    } else {
        let provider = FakeProvider::start_with(FakeProviderOptions {
            log: false,
            ..FakeProviderOptions::default()
        })
        .context("starting the fake provider")?;
        opts = opts
            .var("ROUTES", FAKE_ROUTES)
            .var("OPENAI_BASE_URL", provider.openai_base_url())
            .var("ANTHROPIC_BASE_URL", provider.anthropic_base_url())
            .secret("OPENAI_API_KEY", "fake-openai-key")
            .secret("ANTHROPIC_API_KEY", "fake-anthropic-key");
        eprintln!("dev: fake provider on {}", provider.addr());
        Some(provider)
    };

    eprintln!("dev: starting the Worker under workerd...");
    let worker = Worker::start(opts).context("starting the Worker")?;
    let mut claims = tokens::claims(ISSUER, AUDIENCE, DEV_USER, Duration::from_secs(12 * 3600));
    claims["plan"] = DEV_PLAN.into();
    let token = key.mint(&claims);
    let token_file = dev_dir.join("token");
    std::fs::write(&token_file, &token)?;
    eprintln!(
        "dev: Worker at {} (log: {})\n\
         dev: a 12-hour token for `{DEV_USER}` is in {} (STORYCAD_TOKEN for other clients)\n\
         dev: plan `{DEV_PLAN}`: storycad-fast (OpenAI first), storycad-smart (Anthropic first); \
         /quit or Ctrl-D stops everything",
        worker.api_base(),
        worker.log_path().display(),
        token_file.display()
    );

    // Ctrl-C belongs to the REPL (it stops the answer being generated): this process must not
    // die of it, or the Worker would be left behind. wrangler runs in its own process group.
    ctrlc::set_handler(|| {}).context("installing the Ctrl-C handler")?;
    let status = Command::new(repl_binary())
        .args(["--base-url", &worker.api_base(), "--model", "storycad-fast"])
        .env("STORYCAD_TOKEN", &token)
        .status()
        .context("running the chat REPL")?;

    let report = worker.stop();
    drop(provider);
    eprintln!(
        "dev: stopped the Worker in {:.1} s{}",
        report.took.as_secs_f64(),
        if report.group_empty {
            ""
        } else {
            " (some of its processes are still running!)"
        }
    );
    if !status.success() {
        anyhow::bail!("the chat REPL exited with {status}");
    }
    Ok(())
}

/// 8787 (wrangler's usual port) when it is free, else any free port.
fn port() -> u16 {
    match std::net::TcpListener::bind(("127.0.0.1", PREFERRED_PORT)) {
        Ok(_) => PREFERRED_PORT,
        Err(_) => free_port().unwrap_or(PREFERRED_PORT),
    }
}

fn repl_binary() -> PathBuf {
    target_dir()
        .join("debug")
        .join("examples")
        .join(format!("chat{}", std::env::consts::EXE_SUFFIX))
}
