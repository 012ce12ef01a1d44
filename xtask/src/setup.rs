//! `cargo xtask setup`: install what is missing, and nothing else, so a second run takes seconds.
//!
//! The wasm32 toolchain comes from rustup where its `wasm32-unknown-unknown` target is
//! installed (an ordinary laptop), else from Debian's `rustc-web` packages, which build the
//! standard library from source (machines where rustup cannot download targets). See
//! ../shared/TOOLCHAIN.md for the facts behind each step.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, cargo_bin, have, output, root};

pub const WORKER_BUILD_VERSION: &str = "0.8.7";
/// Used only when Cargo.lock does not name wasm-bindgen (it must match the lock file).
const WASM_BINDGEN_FALLBACK: &str = "0.2.130";
const DEBIAN_WASM_PACKAGES: [&str; 4] = ["rustc-web", "cargo-web", "rust-web-src", "lld-22"];

/// How the Worker's wasm is compiled on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmToolchain {
    /// rustup's toolchain with its installed `wasm32-unknown-unknown` target.
    Rustup,
    /// Debian's rustc 1.96 (`/usr/bin`), building std from source.
    Debian,
}

pub fn wasm_toolchain() -> WasmToolchain {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        WasmToolchain::Rustup
    } else {
        WasmToolchain::Debian
    }
}

pub fn run() -> Result<()> {
    let started = std::time::Instant::now();
    let toolchain = wasm_toolchain();
    if toolchain == WasmToolchain::Debian {
        debian_wasm_toolchain()?;
    }
    node()?;
    wasm_bindgen()?;
    worker_build()?;
    npm_packages()?;
    crate::python::setup_venv()?;
    eprintln!(
        "setup: ready ({toolchain:?} wasm toolchain) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !debian_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    let sudo = !is_root() && have("sudo");
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    cmd::run(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq"]);
    install.args(&missing);
    cmd::run(&mut install)
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

fn debian_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn debian_wasm_toolchain() -> Result<()> {
    apt_install(&DEBIAN_WASM_PACKAGES)?;
    // worker-build only checks that this directory exists; Debian's std comes from source.
    let dir = Path::new("/usr/lib/rustlib/wasm32-unknown-unknown/lib");
    if !dir.is_dir() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn node() -> Result<()> {
    if have("node") && have("npm") {
        return Ok(());
    }
    apt_install(&["nodejs", "npm"])
}

/// The wasm-bindgen version in Cargo.lock: the CLI must be exactly that version.
pub fn wasm_bindgen_version() -> String {
    let lock = fs::read_to_string(root().join("Cargo.lock")).unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                return v.trim_matches('"').to_owned();
            }
        }
    }
    WASM_BINDGEN_FALLBACK.to_owned()
}

/// The version a tool prints: `wasm-bindgen 0.2.130` and `0.8.7` (worker-build) alike.
fn installed_version(program: &Path) -> Option<String> {
    output(Command::new(program).arg("--version"))
        .and_then(|s| s.split_whitespace().last().map(str::to_owned))
}

fn wasm_bindgen() -> Result<()> {
    let want = wasm_bindgen_version();
    let bin = cargo_bin().join("wasm-bindgen");
    if installed_version(&bin).as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    // Not --locked: one of its locked dependencies is missing from the registry.
    let mut c = cmd::cargo();
    c.args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]);
    cmd::run(&mut c)
}

fn worker_build() -> Result<()> {
    let bin = cargo_bin().join("worker-build");
    if installed_version(&bin).as_deref() == Some(WORKER_BUILD_VERSION) {
        return Ok(());
    }
    let mut c = cmd::cargo();
    c.args([
        "install",
        "--locked",
        &format!("worker-build@{WORKER_BUILD_VERSION}"),
        "--force",
    ]);
    cmd::run(&mut c)
}

/// `npm ci` in worker/, unless node_modules already matches package-lock.json.
fn npm_packages() -> Result<()> {
    let worker = root().join("worker");
    let lock = worker.join("package-lock.json");
    if !lock.exists() {
        bail!("{} is missing", lock.display());
    }
    let want = fnv1a(&fs::read(&lock)?).to_string();
    let stamp = worker.join("node_modules").join(".storycad-lock-hash");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    let mut c = Command::new("npm");
    c.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&worker);
    cmd::run(&mut c)?;
    fs::write(&stamp, want)?;
    Ok(())
}

/// FNV-1a, 64 bit: a stable fingerprint of file contents (std's hasher is not stable).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_reference_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
