//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use anyhow::Result;

use crate::{build, cmd, setup};

// Declared here rather than in main.rs: only this task uses it.
#[path = "deploy_check.rs"]
mod deploy_check;
#[path = "published.rs"]
mod published;

pub fn run(extra: &[String]) -> Result<()> {
    let started = std::time::Instant::now();
    setup::run()?;
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The crates.io packages: files, README, licences, and the client's native-tls build.
    published::check()?;
    // The end-to-end tests run the real Worker bundle under workerd.
    build::worker(false)?;
    // Its wasm's size, and its largest function (compiled whole on its first call).
    build::check_worker()?;
    // The bench's Rust baseline builds too (its code is compiled for wasm only).
    build::rust_metered()?;
    // Every wrangler.toml environment bundles and validates (offline, no login).
    deploy_check::run()?;
    cmd::run(
        cmd::cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(extra),
    )?;
    // The uniffi bindings, through the Python module generated from the built library.
    crate::python::test()?;
    eprintln!(
        "xtask test: all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
