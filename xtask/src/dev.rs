//! `cargo xtask dev`: the Worker under workerd, a fake provider (or the real ones when their
//! keys are set), a dev signing key, a token, and the chat REPL connected to it all.

use anyhow::{bail, Result};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("cargo xtask dev is coming with the Worker (issue 3)")
}
