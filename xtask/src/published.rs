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
    // A target directory of its own, where only these builds run: cargo takes a registry
    // crate's build as current whatever its source now says (a published version never
    // changes), so the client could be verified against an earlier run's protocol.
    let target = cmd::root().join("target").join("published");
    forget_earlier_builds(&target)?;
    // Both at once, so the client is verified against the packaged protocol (a path dependency
    // that crates.io does not have yet). Builds each crate from its .crate file alone.
    let mut package = cmd::cargo();
    package.args(["package", "--allow-dirty", "--target-dir"]);
    package.arg(&target);
    // A packaged crate is built with its own manifest, without the workspace's profiles: no
    // debug info, as the workspace's dependencies (Cargo.toml), or this build alone is 540 MB.
    package.env("CARGO_PROFILE_DEV_DEBUG", "false");
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

/// Removes what earlier runs of this check left of the published crates, so that the client is
/// verified against the protocol as it is now, not as it was then (which failed CI on a
/// checkout at the same path as an earlier one). Cargo treats a registry crate's version as
/// fixed forever, and packaging both crates at once makes the protocol one: it extracts it
/// from a registry under `target` into `$CARGO_HOME/registry/src/-<hash of that path>/` and
/// never extracts that version again, and it keeps its build in `target` as current. So: the
/// builds' fingerprints in this check's own target directory (cargo rebuilds a unit it has no
/// fingerprint for), and the extracted copies (local registries' directories start with `-`;
/// crates.io's do not, and are left alone).
fn forget_earlier_builds(target: &std::path::Path) -> Result<()> {
    remove_published(&target.join("debug").join(".fingerprint"), |tail| {
        !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_hexdigit())
    })?;
    let sources = cmd::cargo_home().join("registry").join("src");
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(()); // nothing extracted yet
    };
    for registry in registries.flatten() {
        if registry.file_name().to_string_lossy().starts_with('-') {
            remove_published(&registry.path(), |tail| {
                tail.starts_with(|c: char| c.is_ascii_digit())
            })?;
        }
    }
    Ok(())
}

/// Removes the entries of `dir` named `<a published crate>-<tail>` where `tail` passes
/// `is_ours` (a hash for a build's fingerprint, a version for an extracted crate); a missing
/// `dir` holds nothing.
fn remove_published(dir: &std::path::Path, is_ours: impl Fn(&str) -> bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if PUBLISHED
            .iter()
            .any(|(crate_name, _)| tail_after(&name, crate_name).is_some_and(&is_ours))
        {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// What follows `<crate_name>-` in `dir` (`0.1.0` in `storycad-protocol-0.1.0`).
fn tail_after<'d>(dir: &'d str, crate_name: &str) -> Option<&'d str> {
    dir.strip_prefix(crate_name)?.strip_prefix('-')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_crates_are_forgotten() {
        let cases = [
            ("storycad-protocol-0.1.0", Some("0.1.0")),
            ("storycad-client-8994737960b1d3ef", Some("8994737960b1d3ef")),
            ("storycad-protocol-extra-1.0.0", Some("extra-1.0.0")),
            ("storycad-protocolx-1.0.0", None),
            ("storycad-protocol", None),
            ("serde-1.0.0", None),
        ];
        for (dir, tail) in cases {
            let found = PUBLISHED
                .iter()
                .find_map(|(crate_name, _)| tail_after(dir, crate_name));
            assert_eq!(found, tail, "{dir}");
        }
        let dir = std::env::temp_dir().join(format!("published-test-{}", std::process::id()));
        for name in [
            "storycad-protocol-0.1.0",
            "storycad-protocol-extra-1.0.0",
            "storycad-client-abc123",
            "serde-1.0.0",
        ] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        remove_published(&dir, |tail| tail.starts_with(|c: char| c.is_ascii_digit())).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "serde-1.0.0",
                "storycad-client-abc123",
                "storycad-protocol-extra-1.0.0"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        remove_published(&dir, |_| true).unwrap(); // gone: nothing to do
    }
}
