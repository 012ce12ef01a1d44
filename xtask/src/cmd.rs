//! Running commands, and where things are.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// `cargo` for host builds: the one that started us.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(root());
    c
}

/// Runs `c` with inherited stdio; fails unless it exits 0.
pub fn run(c: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(c));
    let status = c
        .status()
        .with_context(|| format!("could not start {}", describe(c)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(c));
    }
    Ok(())
}

/// Runs `c` quietly and returns its stdout when it exits 0, `None` otherwise (or if it is
/// not installed).
pub fn output(c: &mut Command) -> Option<String> {
    let out = c.stderr(Stdio::null()).stdin(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a program is on PATH (or is a path that exists).
pub fn have(program: &str) -> bool {
    output(Command::new(program).arg("--version")).is_some()
}

/// The program and its arguments, for logs.
pub fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// npm as a program to start: on Windows it is a batch file, which `Command` finds only by
/// its full name.
pub const NPM: &str = if cfg!(windows) { "npm.cmd" } else { "npm" };

/// `$CARGO_HOME`, cargo's own directory (`~/.cargo` unless set).
pub fn cargo_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cargo")
}

/// `$CARGO_HOME/bin`, where `cargo install` puts tools.
pub fn cargo_bin() -> PathBuf {
    cargo_home().join("bin")
}

/// A tool `cargo install` put in [`cargo_bin`] (`worker-build`, `worker-build.exe` on Windows).
pub fn cargo_tool(name: &str) -> PathBuf {
    cargo_bin().join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}
