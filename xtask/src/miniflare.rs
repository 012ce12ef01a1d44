//! A Worker under workerd through miniflare alone (`miniflare.mjs`): one workerd process, no
//! dev proxy, no DevTools client and no router in front of the Worker (its own socket, not
//! miniflare's entry Worker), as close to a deployed Worker as runs here. `wrangler dev`
//! attaches its inspector to the runtime, and that turns every `console.log` into a DevTools
//! message with a captured stack trace: measured side by side, our Worker cost 1.47 ms of CPU a
//! request under `wrangler dev` and 0.99 under miniflare alone, the JS metering Worker 1.01-1.10
//! and 0.66-0.78. `cargo xtask bench proxy` and `cargo xtask soak --miniflare` run Workers so.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use storycad_e2e::workerd::{
    copy_dir, free_port, port_taken, spawn_watchdog, target_dir, workerds, write_private,
};

use crate::cmd;

/// What a Worker runs.
pub enum Code {
    /// Our bundle (a copy of worker/build), with its Durable Objects and KV namespace.
    Bundle(PathBuf),
    /// A bench baseline: the wrangler.toml whose `main` module it runs (its imports may reach
    /// the parent directory, as bench/metered's does; bench/rust-metered's imports its wasm).
    Script(PathBuf),
}

/// A Worker to start.
pub struct Options {
    /// A label for the run directory (and the Worker's name).
    pub name: String,
    pub code: Code,
    /// Its variables and secrets alike (the runtime makes no difference between them).
    pub bindings: Vec<(String, String)>,
}

/// A running miniflare and its workerd, in a process group of their own; stopped by
/// [`Miniflare::stop`] or when dropped (by that group), and by the e2e harness's watchdog if
/// this process ends without either (killed, aborted).
pub struct Miniflare {
    /// Where the Worker answers (127.0.0.1).
    pub port: u16,
    /// The runtime's inspector (no client attached).
    pub inspector_port: u16,
    /// Where `miniflare.mjs` has the runtime start another isolate.
    control_port: u16,
    pub pgid: i32,
    /// miniflare's output and the Worker's console.
    pub log: PathBuf,
    /// `None` once stopped.
    child: Option<Child>,
    watchdog: Option<(Child, ChildStdin)>,
}

impl Miniflare {
    /// Starts the Worker and waits (90 s at most) until miniflare says it is up: workerd has
    /// loaded it and listens. No request reaches it first, so the first one the caller sends
    /// is its isolate's first (a `GET /healthz` here would have compiled code that request
    /// then finds ready).
    pub fn start(options: Options) -> Result<Miniflare> {
        // The ports are free when picked, but something else (a client's connection, say) may
        // take one before workerd binds it: then again, with others.
        let mut tries = 0;
        loop {
            tries += 1;
            match Miniflare::try_start(&options) {
                // The error carries miniflare's log.
                Err(e) if tries < 3 && port_taken(&format!("{e:#}")) => {
                    eprintln!("xtask: a port was taken as miniflare started; starting again");
                }
                done => return done,
            }
        }
    }

    fn try_start(options: &Options) -> Result<Miniflare> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let root = cmd::root();
        let run_dir = target_dir().join("e2e").join(format!(
            "miniflare-{}-{}-{}",
            options.name,
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        let port = free_port()?;
        let inspector_port = free_port()?;
        let control_port = free_port()?;
        let bindings: serde_json::Map<String, serde_json::Value> = options
            .bindings
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect();
        let mut config = json!({
            "node_modules": root.join("worker").join("node_modules"),
            "name": options.name,
            "port": port,
            "inspector_port": inspector_port,
            "control_port": control_port,
            "bindings": bindings,
        });
        let toml = match &options.code {
            Code::Bundle(bundle) => {
                // A snapshot: a rebuild meanwhile cannot swap the Worker under a measurement.
                let build = run_dir.join("build");
                copy_dir(bundle, &build)
                    .with_context(|| format!("copying {}", bundle.display()))?;
                config["build"] = json!(build);
                config["persist"] = json!(run_dir.join("state"));
                root.join("worker").join("wrangler.toml")
            }
            Code::Script(toml) => {
                let text = std::fs::read_to_string(toml)
                    .with_context(|| format!("reading {}", toml.display()))?;
                let dir = toml.parent().context("a wrangler.toml has a directory")?;
                let main = value_of(&text, "main").context("its wrangler.toml has no main")?;
                config["script"] = json!(dir.join(main));
                config["modules_root"] = json!(dir.parent().unwrap_or(dir));
                toml.clone()
            }
        };
        let (date, flags) = compatibility(&toml)?;
        config["compatibility_date"] = json!(date);
        config["compatibility_flags"] = json!(flags);
        let config_path = run_dir.join("miniflare.json");
        write_private(&config_path, config.to_string().as_bytes())?;
        let log = run_dir.join("miniflare.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("node")
            .arg(root.join("xtask").join("src").join("miniflare.mjs"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting node (miniflare)")?;
        let pgid = i32::try_from(child.id()).context("pid out of range")?;
        let mut started = Miniflare {
            port,
            inspector_port,
            control_port,
            pgid,
            log,
            child: Some(child),
            watchdog: spawn_watchdog(pgid).ok(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !announced_ready(&started.log) {
            let exited = started
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(&started.log).unwrap_or_default();
                started.stop();
                match exited {
                    Some(status) => {
                        bail!("miniflare exited ({status}) before the Worker was up:\n{text}")
                    }
                    None => bail!("miniflare did not have the Worker up within 90 s:\n{text}"),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(started)
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// A GET here has the runtime start another isolate beside the Worker's, and answers once
    /// it has (V8 then drops the baseline code of every wasm module in the runtime).
    pub fn new_isolate_url(&self) -> String {
        format!("http://127.0.0.1:{}/new-isolate", self.control_port)
    }

    /// The workerd process serving the Worker (there is no dev proxy here).
    pub fn runtime(&self) -> Vec<u32> {
        workerds(self.pgid, 0).into_iter().map(|w| w.pid).collect()
    }

    /// Stops node and its workerd, by their process group; whether none was left running.
    pub fn stop(mut self) -> bool {
        self.halt()
    }

    /// [`Miniflare::stop`]'s work, once: later calls find nothing to stop.
    fn halt(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return workerds(self.pgid, 0).is_empty();
        };
        let group = format!("-{}", self.pgid);
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !workerds(self.pgid, 0).is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = !workerds(self.pgid, 0).is_empty();
        if left {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        }
        let _ = child.kill();
        let _ = child.wait();
        // The group is gone: the watchdog has nothing left to do.
        if let Some((mut watchdog, _pipe)) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        !left
    }
}

// A measurement that fails midway (`?`) leaves no Worker running behind it.
impl Drop for Miniflare {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A top-level `key = "value"` of a wrangler.toml.
fn value_of<'t>(toml: &'t str, key: &str) -> Option<&'t str> {
    toml.lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.split('"').nth(1))?
        })
}

/// Whether `miniflare.mjs` has printed `ready <url>` to its log.
fn announced_ready(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.lines().any(|l| l.starts_with("ready ")))
}

/// A wrangler.toml's `compatibility_date` and `compatibility_flags` (`["a", "b"]` on one line).
fn compatibility(toml: &Path) -> Result<(String, Vec<String>)> {
    let text =
        std::fs::read_to_string(toml).with_context(|| format!("reading {}", toml.display()))?;
    let date = value_of(&text, "compatibility_date")
        .with_context(|| format!("{} has no compatibility_date", toml.display()))?
        .to_owned();
    let flags = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| l.trim().strip_prefix("compatibility_flags"))
        .map(|v| v.split('"').skip(1).step_by(2).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok((date, flags))
}

#[cfg(test)]
mod tests {
    use super::value_of;

    #[test]
    fn top_level_values_of_a_wrangler_toml() {
        let toml =
            "name = \"w\"\nmain = \"worker.js\" # the entry\ncompatibility_date = \"2026-04-20\"\n\
                    [vars]\nmain = \"not this\"\n";
        assert_eq!(value_of(toml, "main"), Some("worker.js"));
        assert_eq!(value_of(toml, "compatibility_date"), Some("2026-04-20"));
        assert_eq!(value_of(toml, "name"), Some("w"));
        assert_eq!(value_of(toml, "missing"), None);
    }
}
