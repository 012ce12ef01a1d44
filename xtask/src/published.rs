//! The crates published on crates.io (`storycad-protocol`, `storycad-client`) as a user gets
//! them: each packages and builds on its own, with its README and both licences, and the
//! client's other TLS backend (`native-tls`) builds and passes the client's tests too.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The published crates and their directories.
const PUBLISHED: [(&str, &str); 2] = [
    ("storycad-protocol", "protocol"),
    ("storycad-client", "client"),
];

/// The licences: the repository's files, copied into each published crate (cargo packages only
/// what is inside the crate's directory, and symbolic links do not survive a Windows checkout).
const LICENCES: [&str; 2] = ["LICENSE-MIT", "LICENSE-APACHE"];

pub fn check() -> Result<()> {
    licence_copies_are_current()?;
    // Both at once, so the client is verified against the packaged protocol (a path dependency
    // that crates.io does not have yet). Builds each crate from its .crate file alone.
    let mut package = cmd::cargo();
    package.args(["package", "--allow-dirty"]);
    for (name, _) in PUBLISHED {
        package.args(["-p", name]);
    }
    cmd::run(&mut package)?;
    for (name, _) in PUBLISHED {
        let list =
            cmd::output(cmd::cargo().args(["package", "--list", "--allow-dirty", "-p", name]))
                .with_context(|| format!("cargo package --list -p {name} failed"))?;
        let files: BTreeSet<&str> = list.lines().map(str::trim).collect();
        let missing: Vec<&str> = LICENCES
            .into_iter()
            .chain(["README.md"])
            .filter(|f| !files.contains(f))
            .collect();
        if !missing.is_empty() {
            bail!("the {name} package lacks {}", missing.join(", "));
        }
    }
    // The client with native-tls instead of rustls (OpenSSL here: needs its headers).
    let native = [
        "-p",
        "storycad-client",
        "--no-default-features",
        "--features",
        "native-tls",
    ];
    cmd::run(cmd::cargo().arg("clippy").args(native).args([
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run(cmd::cargo().arg("test").args(native))
}

/// Each crate's licence files equal the repository's (line endings aside: a Windows checkout
/// may turn them into CRLF).
fn licence_copies_are_current() -> Result<()> {
    let root = cmd::root();
    let read = |path: std::path::PathBuf| -> Result<String> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(text.replace("\r\n", "\n"))
    };
    for licence in LICENCES {
        let original = read(root.join(licence))?;
        for (_, dir) in PUBLISHED {
            if read(root.join(dir).join(licence))? != original {
                bail!(
                    "{dir}/{licence} differs from {licence}: copy it again (cp {licence} {dir}/)"
                );
            }
        }
    }
    Ok(())
}
