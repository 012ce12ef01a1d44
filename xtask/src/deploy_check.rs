//! `wrangler deploy --dry-run` for every environment of `worker/wrangler.toml`, so a broken
//! `[env.*]` section fails `cargo xtask test` rather than a deploy. Offline: a dry run bundles
//! the Worker and validates the configuration without a Cloudflare login or any request.
//!
//! The bundle is the one `cargo xtask build-worker` just built: the dry runs use a copy of
//! wrangler.toml without its `[build]` step (and with `main` made absolute), so wrangler does
//! not run the build once per environment.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Dry-runs a deploy of every environment; fails with wrangler's output on the first that
/// fails.
pub fn run() -> Result<()> {
    let started = Instant::now();
    let worker = cmd::root().join("worker");
    let toml = fs::read_to_string(worker.join("wrangler.toml")).context("reading wrangler.toml")?;
    let envs = env_names(&toml);
    if envs.is_empty() {
        bail!("worker/wrangler.toml defines no [env.*] section");
    }
    check_top_level_name(&toml)?;
    let dir = target_dir().join("deploy-check");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let shim = worker.join("build").join("worker").join("shim.mjs");
    if !shim.exists() {
        bail!(
            "{} is missing: run `cargo xtask build-worker` first",
            shim.display()
        );
    }
    let config = dir.join("wrangler.toml");
    fs::write(&config, without_build(&toml, &shim)).context("writing the dry-run config")?;
    let wrangler = worker.join("node_modules").join(".bin").join("wrangler");
    for env in &envs {
        let mut c = Command::new(&wrangler);
        c.current_dir(&worker)
            .arg("deploy")
            .arg("--dry-run")
            .arg("--config")
            .arg(&config)
            .args(["--env", env])
            .arg("--outdir")
            .arg(dir.join(env))
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let out = c
            .output()
            .with_context(|| format!("could not start {}", cmd::describe(&c)))?;
        if !out.status.success() {
            bail!(
                "`wrangler deploy --dry-run --env {env}` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    eprintln!(
        "deploy dry run: {} in {:.1} s",
        envs.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => cmd::root().join(dir),
        None => cmd::root().join("target"),
    }
}

/// The names of the `[env.NAME]` sections, in order.
fn env_names(toml: &str) -> Vec<String> {
    toml.lines()
        .filter_map(|l| l.trim().strip_prefix("[env.")?.strip_suffix(']'))
        .filter(|name| !name.contains('.'))
        .map(str::to_owned)
        .collect()
}

/// The `name = "..."` of the top level and of each environment.
fn names(toml: &str) -> Vec<(Option<String>, String)> {
    let mut table: Option<String> = None;
    let mut top = true;
    let mut out = Vec::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            top = false;
            table = line
                .strip_prefix("[env.")
                .and_then(|l| l.strip_suffix(']'))
                .filter(|n| !n.contains('.'))
                .map(str::to_owned);
            continue;
        }
        if !top && table.is_none() {
            continue;
        }
        if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
            if let Some(value) = value.strip_prefix('=') {
                out.push((table.clone(), value.trim().trim_matches('"').to_owned()));
            }
        }
    }
    out
}

/// A bare `wrangler deploy` deploys the top level: its name must not be a staging or
/// production Worker's.
fn check_top_level_name(toml: &str) -> Result<()> {
    let names = names(toml);
    let Some((_, top)) = names.iter().find(|(env, _)| env.is_none()) else {
        bail!("worker/wrangler.toml has no top-level name");
    };
    for (env, name) in &names {
        if let Some(env) = env {
            if env != "dev" && name == top {
                bail!(
                    "worker/wrangler.toml's top-level name {top:?} is [env.{env}]'s: a bare \
                     `wrangler deploy` would overwrite it"
                );
            }
        }
    }
    Ok(())
}

/// `toml` without its `[build]` tables (top level and per environment), with `main` pointing
/// at `shim` wherever the copy is written.
fn without_build(toml: &str, shim: &Path) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skipping = trimmed == "[build]"
                || (trimmed.starts_with("[env.") && trimmed.ends_with(".build]"));
        }
        if skipping {
            continue;
        }
        if trimmed.starts_with("main ") || trimmed.starts_with("main=") {
            // A TOML literal string: a Windows path's backslashes stay as they are.
            out.push_str(&format!("main = '{}'\n", shim.display()));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str =
        "name = \"w-dev\"\nmain = \"build/worker/shim.mjs\"\n[build]\ncommand = \"make\"\n\
        [vars]\nA = \"1\"\n[env.dev]\nname = \"w-dev\"\n[env.dev.vars]\nA = \"2\"\n\
        [env.production]\nname = \"w\"\n[env.production.build]\ncommand = \"x\"\n\
        [[env.production.kv_namespaces]]\nid = \"0\"\n";

    /// The step itself, alone: `cargo test -p xtask dry_runs -- --ignored` (needs the bundle
    /// and worker/node_modules).
    #[test]
    #[ignore = "runs wrangler; `cargo xtask test` runs it as a step"]
    fn dry_runs_every_environment() {
        run().unwrap();
    }

    #[test]
    fn reads_the_environments() {
        assert_eq!(env_names(TOML), ["dev", "production"]);
    }

    #[test]
    fn the_top_level_may_share_only_devs_name() {
        assert!(check_top_level_name(TOML).is_ok());
        let bad = TOML.replacen("name = \"w-dev\"", "name = \"w\"", 1);
        let err = check_top_level_name(&bad).unwrap_err().to_string();
        assert!(err.contains("[env.production]"), "{err}");
    }

    #[test]
    fn drops_the_build_steps_and_pins_main() {
        let out = without_build(TOML, Path::new("/abs/shim.mjs"));
        assert!(!out.contains("command"), "{out}");
        assert!(out.contains("main = '/abs/shim.mjs'\n"), "{out}");
        assert!(out.contains("[env.production]\nname = \"w\"\n[[env.production.kv_namespaces]]"));
    }
}
