//! `cargo xtask setup`: install what is missing, and nothing else, so a second run takes seconds.
//!
//! The wasm32 toolchain, in this order (the decision is [`wasm_step`], a pure function):
//! 1. one already there: rustup's `wasm32-unknown-unknown` target, else Debian's `rustc-web`
//!    packages (which build the standard library from source);
//! 2. rustup's target, installed with `rustup target add` (an ordinary laptop, any OS);
//! 3. where rustup cannot download it and apt-get exists: Debian's packages;
//! 4. otherwise a message saying what to install by hand.
//!
//! Node.js and Python are checked, not installed: a message says what to install when they are
//! missing or too old. See ../shared/TOOLCHAIN.md for the facts behind each step.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, cargo_tool, have, output, root};

pub const WORKER_BUILD_VERSION: &str = "0.8.7";
/// Used only when Cargo.lock does not name wasm-bindgen (it must match the lock file).
const WASM_BINDGEN_FALLBACK: &str = "0.2.130";
const DEBIAN_WASM_PACKAGES: [&str; 4] = ["rustc-web", "cargo-web", "rust-web-src", "lld-22"];
/// worker-build only checks that this directory exists; Debian's std comes from source.
const DEBIAN_RUSTLIB_WASM: &str = "/usr/lib/rustlib/wasm32-unknown-unknown/lib";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// wrangler 4.86 (pinned in worker/package.json) needs Node.js 20.3 or newer.
const NODE_MIN: (u32, u32) = (20, 3);

/// How the Worker's wasm is compiled on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmToolchain {
    /// rustup's toolchain with its installed `wasm32-unknown-unknown` target.
    Rustup,
    /// Debian's rustc 1.96 (`/usr/bin`), building std from source.
    Debian,
}

/// What is known about the machine's wasm32 toolchain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WasmProbe {
    rustup: bool,
    /// `wasm32-unknown-unknown` is in `rustup target list --installed`.
    rustup_target: bool,
    /// How `rustup target add` went, once tried.
    rustup_add: Option<bool>,
    /// Debian's packages are installed and the rustlib directory exists.
    debian_ready: bool,
    apt_get: bool,
}

/// What to do next about the wasm32 toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WasmStep {
    Use(WasmToolchain),
    AddRustupTarget,
    InstallDebian,
    /// Nothing this machine offers: say what to install.
    Manual,
}

/// A toolchain already there is used as it is (rustup's first), so a second run installs and
/// downloads nothing; else rustup's target, and Debian's packages only where rustup failed.
fn wasm_step(p: WasmProbe) -> WasmStep {
    if p.rustup_target || p.rustup_add == Some(true) {
        WasmStep::Use(WasmToolchain::Rustup)
    } else if p.debian_ready {
        WasmStep::Use(WasmToolchain::Debian)
    } else if p.rustup && p.rustup_add.is_none() {
        WasmStep::AddRustupTarget
    } else if p.apt_get {
        WasmStep::InstallDebian
    } else {
        WasmStep::Manual
    }
}

/// `rustup` as the Worker's build will resolve it: in worker/, without the toolchain that
/// `cargo +toolchain xtask` would pass down (build.rs removes it from the build too).
fn rustup() -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(root().join("worker"))
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

fn probe() -> WasmProbe {
    let installed = output(rustup().args(["target", "list", "--installed"]));
    WasmProbe {
        rustup: installed.is_some() || have("rustup"),
        rustup_target: installed
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == WASM_TARGET),
        rustup_add: None,
        debian_ready: cfg!(target_os = "linux")
            && Path::new(DEBIAN_RUSTLIB_WASM).is_dir()
            && DEBIAN_WASM_PACKAGES.iter().all(|p| debian_installed(p)),
        apt_get: cfg!(target_os = "linux") && have("apt-get"),
    }
}

/// The toolchain the Worker's build uses: the one setup chose, found the same way.
pub fn wasm_toolchain() -> Result<WasmToolchain> {
    match wasm_step(probe()) {
        WasmStep::Use(t) => Ok(t),
        _ => bail!(
            "no wasm32 toolchain: neither rustup's {WASM_TARGET} target nor Debian's rustc-web \
             packages are installed; run `cargo xtask setup`"
        ),
    }
}

/// Makes a wasm32 toolchain available (see the module's docs for the order).
fn wasm32() -> Result<WasmToolchain> {
    let mut p = probe();
    loop {
        match wasm_step(p) {
            WasmStep::Use(t) => return Ok(t),
            WasmStep::AddRustupTarget => {
                let added = cmd::run(rustup().args(["target", "add", WASM_TARGET]));
                if let Err(e) = &added {
                    eprintln!("setup: {e:#}; trying another way");
                }
                p.rustup_add = Some(added.is_ok());
            }
            WasmStep::InstallDebian => {
                debian_wasm_toolchain().with_context(|| {
                    format!(
                        "installing Debian's rustc-web packages (Debian 12 and later have them) \
                         failed; the other way is rustup's target: install rustup with {} and \
                         run `rustup target add {WASM_TARGET}`",
                        rustup_install_hint()
                    )
                })?;
                p.debian_ready = true;
            }
            WasmStep::Manual => bail!(manual_wasm_message(p)),
        }
    }
}

/// How to install rustup on this OS.
fn rustup_install_hint() -> &'static str {
    if cfg!(target_os = "macos") {
        "`brew install rustup` then `rustup-init`, or the script from https://rustup.rs"
    } else if cfg!(windows) {
        "`winget install Rustlang.Rustup`, or rustup-init.exe from https://rustup.rs"
    } else {
        "the script from https://rustup.rs (or the distribution's `rustup` package: \
         `dnf install rustup` then `rustup-init` on Fedora, `pacman -S rustup` on Arch)"
    }
}

fn manual_wasm_message(p: WasmProbe) -> String {
    let mut m =
        format!("the Worker needs Rust's {WASM_TARGET} target, and setup cannot install it");
    if p.rustup {
        m.push_str(&format!(
            ": `rustup target add {WASM_TARGET}` failed (above). Check the network or proxy \
             (rustup downloads from static.rust-lang.org) and run setup again"
        ));
    } else {
        m.push_str(&format!(
            ": rustup is not installed (a distribution's own Rust is not used for the Worker). \
             Install rustup with {}, then run setup again (it adds the target)",
            rustup_install_hint()
        ));
    }
    if cfg!(target_os = "linux") && !p.apt_get {
        m.push_str(
            ". Debian's rustc-web packages, the other way, need apt-get, which this machine \
             does not have",
        );
    }
    m
}

pub fn run() -> Result<()> {
    let started = std::time::Instant::now();
    // Checks that cannot install anything come first: they fail in a second, not after the
    // cargo installs.
    node()?;
    let toolchain = wasm32()?;
    openssl_headers()?;
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

/// `apt-get` (or `sudo apt-get` when not root); None when neither is possible.
fn privileged(program: &str) -> Option<Command> {
    if is_root() {
        Some(Command::new(program))
    } else if have("sudo") {
        let mut c = Command::new("sudo");
        c.arg(program);
        Some(c)
    } else {
        None
    }
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
    let apt = |args: &[&str]| -> Result<Command> {
        let mut c = privileged("apt-get").with_context(|| {
            format!(
                "installing {} needs root: run setup as root, install sudo, or install them \
                 yourself",
                missing.join(" ")
            )
        })?;
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        Ok(c)
    };
    cmd::run(&mut apt(&["update", "-qq"])?)?;
    let mut install = apt(&["install", "-y", "-qq"])?;
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
    let dir = Path::new(DEBIAN_RUSTLIB_WASM);
    if !dir.is_dir() {
        let mut mkdir = privileged("mkdir").context("creating it needs root")?;
        cmd::run(mkdir.arg("-p").arg(dir))
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// OpenSSL's headers and pkg-config, for the client's `native-tls` build that the test command
/// checks (macOS and Windows use the system's TLS and need nothing).
fn openssl_headers() -> Result<()> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let found = || {
        Command::new("pkg-config")
            .args(["--exists", "openssl"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if found() {
        return Ok(());
    }
    if have("apt-get") {
        apt_install(&["libssl-dev", "pkg-config"])?;
        if found() {
            return Ok(());
        }
    }
    bail!(
        "OpenSSL's development files were not found (`pkg-config --exists openssl` failed): the \
         client's native-tls build needs them. Install them with your package manager \
         (Debian/Ubuntu: libssl-dev pkg-config; Fedora: openssl-devel pkgconf; Arch: openssl \
         pkgconf) and run setup again"
    )
}

/// `node --version`'s `v20.20.2` as (20, 20).
fn node_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether `node --version` printed one wrangler runs on.
fn node_new_enough(version: &str) -> bool {
    node_version(version).is_some_and(|v| v >= NODE_MIN)
}

/// Node.js is checked, not installed: the distributions' packages are often too old for
/// wrangler (Debian 12 and Ubuntu 24.04 ship Node 18).
fn node() -> Result<()> {
    let found = output(Command::new("node").arg("--version"));
    if found.as_deref().is_some_and(node_new_enough) {
        if !have(cmd::NPM) {
            bail!(
                "Node.js is installed but npm is not: install npm (Debian/Ubuntu package it \
                 apart: `sudo apt-get install npm`)"
            );
        }
        return Ok(());
    }
    let (major, minor) = NODE_MIN;
    let found = match found {
        Some(v) => format!("this machine has Node.js {}", v.trim()),
        None => "node is not on PATH".to_owned(),
    };
    let how = if cfg!(target_os = "macos") {
        "`brew install node@22` (then follow brew's note to put it on PATH), or the installer from https://nodejs.org"
    } else if cfg!(windows) {
        "`winget install OpenJS.NodeJS.LTS`, or the installer from https://nodejs.org"
    } else {
        "the distribution's `nodejs` where it is new enough (Debian 13, Fedora 40, Arch), \
         else NodeSource's packages (https://github.com/nodesource/distributions) or nvm \
         (https://github.com/nvm-sh/nvm); Debian 12's and Ubuntu 24.04's `nodejs` (18) is too old"
    };
    bail!(
        "wrangler needs Node.js {major}.{minor} or newer (20 or 22 LTS), and {found}. Install it \
         with {how}, then run setup again"
    )
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
    let bin = cargo_tool("wasm-bindgen");
    if installed_version(&bin).as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    // Not --locked: one of its locked dependencies is missing from the registry.
    let mut c = cmd::cargo();
    c.args(["install", "wasm-bindgen-cli", "--version", &want, "--force"]);
    cmd::run(&mut c)
}

fn worker_build() -> Result<()> {
    let bin = cargo_tool("worker-build");
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
    let mut c = Command::new(cmd::NPM);
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

    /// Runs setup's loop on a simulated machine: `add_works` is how `rustup target add`
    /// would go. Returns the toolchain (or None for the manual message) and the steps taken.
    fn simulate(start: WasmProbe, add_works: bool) -> (Option<WasmToolchain>, Vec<WasmStep>) {
        let (mut p, mut steps) = (start, Vec::new());
        loop {
            let step = wasm_step(p);
            steps.push(step);
            match step {
                WasmStep::Use(t) => return (Some(t), steps),
                WasmStep::Manual => return (None, steps),
                WasmStep::AddRustupTarget => p.rustup_add = Some(add_works),
                WasmStep::InstallDebian => p.debian_ready = true,
            }
            assert!(steps.len() < 5, "no decision: {steps:?}");
        }
    }

    #[test]
    fn the_wasm_toolchain_route_on_each_kind_of_machine() {
        use WasmStep::*;
        use WasmToolchain::{Debian, Rustup};
        let rustup = WasmProbe {
            rustup: true,
            ..WasmProbe::default()
        };
        // A laptop with rustup (any OS): the target is added, nothing else.
        assert_eq!(
            simulate(rustup, true),
            (Some(Rustup), vec![AddRustupTarget, Use(Rustup)])
        );
        // Its second run: nothing to do.
        let laptop = WasmProbe {
            rustup_target: true,
            ..rustup
        };
        assert_eq!(simulate(laptop, true), (Some(Rustup), vec![Use(Rustup)]));
        // Debian where rustup cannot download: rustup first, then the packages.
        let debian = WasmProbe {
            apt_get: true,
            ..rustup
        };
        assert_eq!(
            simulate(debian, false),
            (
                Some(Debian),
                vec![AddRustupTarget, InstallDebian, Use(Debian)]
            )
        );
        // Its second run: the packages are there, rustup is not asked again.
        let ready = WasmProbe {
            debian_ready: true,
            ..debian
        };
        assert_eq!(simulate(ready, false), (Some(Debian), vec![Use(Debian)]));
        // An installed rustup target wins over Debian's packages.
        let both = WasmProbe {
            rustup_target: true,
            ..ready
        };
        assert_eq!(simulate(both, false), (Some(Rustup), vec![Use(Rustup)]));
        // Debian without rustup (a distribution's Rust): the packages directly.
        let no_rustup = WasmProbe {
            apt_get: true,
            ..WasmProbe::default()
        };
        assert_eq!(
            simulate(no_rustup, false),
            (Some(Debian), vec![InstallDebian, Use(Debian)])
        );
        // Fedora, Arch, macOS or Windows where rustup fails: no apt-get, so a message.
        assert_eq!(
            simulate(rustup, false),
            (None, vec![AddRustupTarget, Manual])
        );
        // No rustup and no apt-get: a message at once.
        assert_eq!(simulate(WasmProbe::default(), false), (None, vec![Manual]));
    }

    #[test]
    fn the_manual_message_says_what_to_install() {
        let m = manual_wasm_message(WasmProbe::default());
        assert!(m.contains("rustup is not installed"), "{m}");
        assert!(m.contains("https://rustup.rs"), "{m}");
        let m = manual_wasm_message(WasmProbe {
            rustup: true,
            rustup_add: Some(false),
            ..WasmProbe::default()
        });
        assert!(
            m.contains("rustup target add wasm32-unknown-unknown"),
            "{m}"
        );
    }

    #[test]
    fn node_versions_are_read_and_compared() {
        assert_eq!(node_version("v20.20.2\n"), Some((20, 20)));
        assert_eq!(node_version("v18.19.0"), Some((18, 19)));
        assert_eq!(node_version("node"), None);
        for (version, enough) in [
            ("v20.3.0", true),
            ("v22.1.0", true),
            ("v20.2.9", false),
            ("v18.19.0", false),
            ("", false),
        ] {
            assert_eq!(node_new_enough(version), enough, "{version}");
        }
    }

    #[test]
    fn fnv1a_is_the_reference_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
