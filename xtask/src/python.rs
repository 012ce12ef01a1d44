//! The Python bindings of `storycad-ffi`: their venv, their tests and their benchmark.
//!
//! - [`setup_venv`]: `bindings/python/.venv` (git-ignored) with the packages of
//!   `bindings/python/requirements.txt`; skipped when that file has not changed since.
//! - [`test`]: builds the cdylib and the fake provider, generates the Python module (uniffi's
//!   library mode) into `target/storycad-ffi-python`, runs pytest on `bindings/python/tests`
//!   with a deadline.
//! - [`bench`]: the per-chunk cost of a stream through the bindings against the Rust client
//!   on the same stream (`bindings/python/bench_stream.py`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    cmd::{self, root},
    setup::fnv1a,
};

/// pytest's whole run; the tests bound each of their own waits far below this.
const TEST_DEADLINE: Duration = Duration::from_secs(300);
/// The benchmark's whole run.
#[cfg(unix)]
const BENCH_DEADLINE: Duration = Duration::from_secs(540);

fn python_dir() -> PathBuf {
    root().join("bindings").join("python")
}

fn venv_python() -> PathBuf {
    let venv = python_dir().join(".venv");
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Creates the venv and installs the requirements, unless they are already there.
pub fn setup_venv() -> Result<()> {
    let requirements = python_dir().join("requirements.txt");
    let want = fnv1a(
        &fs::read(&requirements).with_context(|| format!("reading {}", requirements.display()))?,
    )
    .to_string();
    let stamp = python_dir()
        .join(".venv")
        .join(".storycad-requirements-hash");
    let python = venv_python();
    if python.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    if !python.exists() {
        let system = ["python3", "python"]
            .into_iter()
            .find(|p| cmd::have(p))
            .with_context(|| {
                format!(
                    "python3 is not installed (the Python bindings' tests need it): {}",
                    if cfg!(windows) {
                        "`winget install Python.Python.3.12`, or https://www.python.org"
                    } else if cfg!(target_os = "macos") {
                        "`brew install python`, or https://www.python.org"
                    } else {
                        "install the distribution's python3 (and python3-venv on Debian/Ubuntu)"
                    }
                )
            })?;
        // Debian and Ubuntu ship `venv` and `ensurepip` apart from python3.
        if cmd::output(Command::new(system).args(["-c", "import ensurepip, venv"])).is_none() {
            bail!(
                "{system} cannot create a virtual environment (its `venv` or `ensurepip` module \
                 is missing): on Debian/Ubuntu `sudo apt-get install python3-venv`, then run \
                 setup again"
            );
        }
        cmd::run(
            Command::new(system)
                .args(["-m", "venv"])
                .arg(python_dir().join(".venv")),
        )?;
    }
    cmd::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
    )?;
    fs::write(&stamp, want)?;
    Ok(())
}

/// Builds the library (debug or release) and the fake provider, generates the Python module,
/// and returns (module dir, fake-provider binary).
fn build_and_generate(release: bool) -> Result<(PathBuf, PathBuf)> {
    let profile = if release { "release" } else { "debug" };
    let mut build = cmd::cargo();
    build.args(["build", "-p", "storycad-ffi", "--lib"]);
    if release {
        build.arg("--release");
    }
    cmd::run(&mut build)?;
    // The benchmark's server must not be what it measures: same profile as the library.
    let mut fake_build = cmd::cargo();
    fake_build.args(["build", "-p", "storycad-e2e", "--bin", "fake-provider"]);
    if release {
        fake_build.arg("--release");
    }
    cmd::run(&mut fake_build)?;
    let lib = target_dir().join(profile).join(format!(
        "{}storycad_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let out = target_dir().join(format!("storycad-ffi-python-{profile}"));
    fs::create_dir_all(&out)?;
    cmd::run(
        cmd::cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "storycad-ffi",
                "--bin",
                "uniffi-bindgen",
                "--",
            ])
            .arg("generate")
            .arg(&lib)
            .args(["--language", "python", "--no-format", "--out-dir"])
            .arg(&out),
    )?;
    // Library mode writes the module only; it loads the library from its own directory.
    let lib_copy = out.join(lib.file_name().context("library path has no file name")?);
    fs::copy(&lib, &lib_copy)
        .with_context(|| format!("copying {} to {}", lib.display(), lib_copy.display()))?;
    let fake = target_dir()
        .join(profile)
        .join(format!("fake-provider{}", std::env::consts::EXE_SUFFIX));
    Ok((out, fake))
}

/// Runs `c` and kills it if it outlives `deadline`.
fn run_with_deadline(c: &mut Command, deadline: Duration) -> Result<()> {
    eprintln!("$ {}", cmd::describe(c));
    let mut child = c
        .spawn()
        .with_context(|| format!("could not start {}", cmd::describe(c)))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{} failed ({status})", cmd::describe(c));
            }
            return Ok(());
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not finish within {} s; killed",
                cmd::describe(c),
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn python_command(module_dir: &Path, fake_provider: &Path) -> Command {
    let mut c = Command::new(venv_python());
    c.current_dir(python_dir())
        .env("PYTHONPATH", module_dir)
        .env("STORYCAD_FAKE_PROVIDER", fake_provider)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

/// The Python bindings' tests (pytest on bindings/python/tests).
pub fn test() -> Result<()> {
    setup_venv()?;
    let (module_dir, fake) = build_and_generate(false)?;
    let mut c = python_command(&module_dir, &fake);
    c.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]);
    run_with_deadline(&mut c, TEST_DEADLINE)
}

/// The streaming benchmark: the Python bindings' `next()` loop against the Rust client on the
/// same long stream, interleaved in one run (release builds). `cargo xtask bench` is Unix-only.
#[cfg(unix)]
pub fn bench() -> Result<()> {
    setup_venv()?;
    let (module_dir, fake) = build_and_generate(true)?;
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "storycad-ffi",
        "--example",
        "stream_bench",
    ]))?;
    let rust_bench = target_dir()
        .join("release")
        .join("examples")
        .join(format!("stream_bench{}", std::env::consts::EXE_SUFFIX));
    let mut c = python_command(&module_dir, &fake);
    c.arg("bench_stream.py")
        .env("STORYCAD_RUST_STREAM_BENCH", rust_bench);
    run_with_deadline(&mut c, BENCH_DEADLINE)
}
