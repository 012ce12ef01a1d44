//! `cargo xtask csharp`: the C# bindings of `storycad-ffi`, as `bindings/csharp` needs them.
//!
//! Builds the cdylib, runs uniffi-bindgen-cs on it in library mode (the API comes from the
//! metadata compiled into the library, the settings from `bindings/uniffi.toml`), and copies the
//! library to `runtimes/<RID>/native/` of the class library. Both outputs are git-ignored.
//! Written in Rust rather than shell so that Visual Studio on Windows runs it too: the class
//! library's `GenerateStoryCadFfi` MSBuild target calls it when the bindings are missing.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, cargo_bin, root};

/// The generator's release; its uniffi must be the one `bindings/Cargo.toml` pins (0.31).
pub const BINDGEN_CS_TAG: &str = "v0.11.0+v0.31.0";

/// The .NET runtime identifiers the package ships, with the Rust target each is built for.
const RIDS: [(&str, &str); 6] = [
    ("win-x64", "x86_64-pc-windows-msvc"),
    ("win-arm64", "aarch64-pc-windows-msvc"),
    ("linux-x64", "x86_64-unknown-linux-gnu"),
    ("linux-arm64", "aarch64-unknown-linux-gnu"),
    ("osx-arm64", "aarch64-apple-darwin"),
    ("osx-x64", "x86_64-apple-darwin"),
];

/// Options of `cargo xtask csharp`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Build the library with --release (what the NuGet package ships).
    #[arg(long)]
    pub release: bool,
    /// The .NET runtime identifier to build for and lay the library out under (default: this
    /// machine's). Another RID than this machine's is cross-built with `cargo build --target`,
    /// which needs that target installed (`rustup target add`) and its linker.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(RIDS.map(|(rid, _)| rid)))]
    pub rid: Option<String>,
}

/// This machine's runtime identifier, when it is one the package ships.
fn host_rid() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("windows", "x86_64") => Some("win-x64"),
        ("windows", "aarch64") => Some("win-arm64"),
        ("linux", "x86_64") => Some("linux-x64"),
        ("linux", "aarch64") => Some("linux-arm64"),
        ("macos", "aarch64") => Some("osx-arm64"),
        ("macos", "x86_64") => Some("osx-x64"),
        _ => None,
    }
}

/// The library's file name on the RID's OS.
fn library_name(rid: &str) -> &'static str {
    if rid.starts_with("win-") {
        "storycad_ffi.dll"
    } else if rid.starts_with("osx-") {
        "libstorycad_ffi.dylib"
    } else {
        "libstorycad_ffi.so"
    }
}

fn project_dir() -> PathBuf {
    root()
        .join("bindings")
        .join("csharp")
        .join("src")
        .join("StoryCad.Collaborator.Client")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The generator: on PATH, else where `cargo install` put it.
fn bindgen() -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("uniffi-bindgen-cs"),
        cargo_bin().join(format!("uniffi-bindgen-cs{}", std::env::consts::EXE_SUFFIX)),
    ];
    for program in candidates {
        if let Some(version) = cmd::output(Command::new(&program).arg("--version")) {
            let wanted = BINDGEN_CS_TAG.trim_start_matches('v');
            if !version.contains(wanted) {
                bail!(
                    "{} is version {}, but the bindings need {BINDGEN_CS_TAG} (built against \
                     the same uniffi as storycad-ffi); reinstall it with\n  {}",
                    program.display(),
                    version.trim(),
                    install_command()
                );
            }
            return Ok(program);
        }
    }
    bail!(
        "uniffi-bindgen-cs is not installed (neither on PATH nor in {}); install it with\n  {}",
        cargo_bin().display(),
        install_command()
    )
}

fn install_command() -> String {
    format!(
        "cargo install uniffi-bindgen-cs --git https://github.com/NordSecurity/uniffi-bindgen-cs --tag {BINDGEN_CS_TAG}"
    )
}

pub fn run(options: &Options) -> Result<()> {
    let host = host_rid();
    let rid = match (options.rid.as_deref(), host) {
        (Some(rid), _) => rid,
        (None, Some(rid)) => rid,
        (None, None) => bail!(
            "{}-{} is not a runtime identifier the package ships; pass --rid",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    };
    // Checked before the build, which takes minutes, so a missing generator fails at once.
    let generator = bindgen()?;

    let profile = if options.release { "release" } else { "debug" };
    let mut build = cmd::cargo();
    build.args(["build", "-p", "storycad-ffi", "--lib"]);
    if options.release {
        build.arg("--release");
    }
    let mut out_dir = target_dir();
    if Some(rid) != host {
        let (_, triple) = RIDS
            .iter()
            .find(|(r, _)| *r == rid)
            .context("the RID list and the parser disagree")?;
        build.args(["--target", triple]);
        out_dir.push(triple);
    }
    cmd::run(&mut build)?;
    let lib_name = library_name(rid);
    let built = out_dir.join(profile).join(lib_name);

    let project = project_dir();
    cmd::run(
        Command::new(&generator)
            // The generator reads bindings/uniffi.toml through `cargo metadata`.
            .current_dir(root())
            .arg("--library")
            .arg(&built)
            .arg("--out-dir")
            .arg(project.join("Generated"))
            .arg("--no-format"),
    )?;

    let native = project.join("runtimes").join(rid).join("native");
    fs::create_dir_all(&native).with_context(|| format!("creating {}", native.display()))?;
    let copy = native.join(lib_name);
    fs::copy(&built, &copy)
        .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    eprintln!(
        "xtask csharp: {} and {}",
        project.join("Generated").join("storycad_ffi.cs").display(),
        copy.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rid_has_its_library_name() {
        assert_eq!(library_name("win-arm64"), "storycad_ffi.dll");
        assert_eq!(library_name("osx-arm64"), "libstorycad_ffi.dylib");
        assert_eq!(library_name("linux-x64"), "libstorycad_ffi.so");
    }

    #[test]
    fn the_host_rid_is_one_the_package_ships() {
        if let Some(rid) = host_rid() {
            assert!(RIDS.iter().any(|(r, _)| *r == rid), "{rid}");
        }
    }
}
