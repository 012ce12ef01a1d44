//! The real Worker under workerd, through `wrangler dev`, for tests and `cargo xtask dev`.
//!
//! [`Worker::start`] runs `worker/node_modules/.bin/wrangler dev` on 127.0.0.1 with its own
//! port, inspector port, state directory (`--persist-to`, so Durable Objects and KV start empty)
//! and secrets file (`--env-file`, so a developer's `worker/.dev.vars` is never read), with its
//! output in a log file, and waits until `GET /healthz` answers 200.
//!
//! # Stopping
//!
//! wrangler runs in a process group of its own (workerd is its child, in the same group).
//! Dropping the [`Worker`] (or [`Worker::stop`]) sends SIGTERM to the whole group, waits until
//! no process of the group is left, and sends SIGKILL after 5 s. A process that never drops it
//! (killed, aborted, a static) is covered by a watchdog: a `sh` in a group of its own that
//! blocks reading a pipe only this process holds; when this process ends, for whatever reason,
//! the pipe closes and the watchdog kills the group (TERM, then KILL 2 s later).

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use nix::{
    errno::Errno,
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use serde_json::Value;

/// How to run the Worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// A label for the run directory and messages (e.g. the test binary's name).
    pub name: String,
    /// Plain variables, passed as `--var NAME:VALUE` (they override wrangler.toml's `[vars]`).
    pub vars: Vec<(String, String)>,
    /// Secrets, written to a per-run env file (mode 0600) passed as `--env-file`; wrangler
    /// prints their names but not their values.
    pub secrets: Vec<(String, String)>,
    /// The port to listen on; `None` picks a free one.
    pub port: Option<u16>,
    /// A wrangler environment (`--env`), e.g. `dev`.
    pub env: Option<String>,
    /// Run `cargo xtask build-worker` first (it returns at once when the bundle is up to
    /// date). wrangler runs it too, as wrangler.toml's build command, but under the startup
    /// timeout and without a log of its own.
    pub build: bool,
    /// How long the build may take.
    pub build_timeout: Duration,
    /// How long to wait for `/healthz` once wrangler runs.
    pub startup_timeout: Duration,
    /// Run a snapshot of the built bundle (copied into the run directory) under a copy of
    /// wrangler.toml without its `[build]` step, so a rebuild happening meanwhile (another
    /// `wrangler dev` watching the sources, an editor saving) cannot swap the Worker under a
    /// running test. `false`: run worker/ itself, rebuilding and reloading on every change
    /// (what `cargo xtask dev` may want).
    pub isolate: bool,
    /// With `isolate`: an edit of the snapshot's JavaScript glue (`build/index.js`) before it
    /// runs; `None` from it fails the start. Tests use it to make the Worker fail in ways no
    /// request can (a trap in its wasm).
    pub edit_glue: Option<fn(&str) -> Option<String>>,
    /// The directory holding wrangler.toml and node_modules.
    pub worker_dir: PathBuf,
    /// Where the log, secrets file and state go; `None`: `target/e2e/<name>-<pid>-<n>`.
    pub run_dir: Option<PathBuf>,
    /// Start from the state an earlier run in `run_dir` left (Durable Objects' storage, KV)
    /// instead of an empty one: a restart, as when the platform evicts an object.
    pub keep_state: bool,
    /// Run this wrangler.toml as it is instead of the project's Worker: no build, no bundle
    /// check, no snapshot (benchmarks use it for their JavaScript baseline Worker).
    pub config: Option<PathBuf>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            name: "worker".into(),
            vars: Vec::new(),
            secrets: Vec::new(),
            port: None,
            env: None,
            build: true,
            build_timeout: Duration::from_secs(15 * 60),
            startup_timeout: Duration::from_secs(90),
            isolate: true,
            edit_glue: None,
            worker_dir: workspace_root().join("worker"),
            run_dir: None,
            keep_state: false,
            config: None,
        }
    }
}

impl WorkerOptions {
    /// Sets a variable (replacing an earlier value of the same name).
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.vars.retain(|(set, _)| *set != name);
        self.vars.push((name, value.into()));
        self
    }

    /// Adds a secret.
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.push((name.into(), value.into()));
        self
    }
}

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller should bind it soon).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How the Worker was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Whether SIGTERM was not enough and SIGKILL was sent.
    pub killed: bool,
    /// How long it took until no process of the group was left.
    pub took: Duration,
    /// Whether the group is empty now.
    pub group_empty: bool,
}

/// A running `wrangler dev`; stopped (with its workerd) on drop.
#[derive(Debug)]
pub struct Worker {
    port: u16,
    run_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    pgid: i32,
    watchdog: Option<Child>,
    watchdog_pipe: Option<ChildStdin>,
    started_in: Duration,
    /// Stopping leaves the state directory for the next start (see [`Worker::stop_keeping_state`]).
    keep_state: bool,
}

static RUN_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Worker {
    /// Starts wrangler and waits until `/healthz` answers 200 (or fails with the log's tail).
    /// A port taken in the meantime is retried with another, twice.
    pub fn start(opts: WorkerOptions) -> Result<Worker> {
        if opts.build && opts.config.is_none() {
            build_worker(&opts)?;
        }
        let bundle = opts
            .worker_dir
            .join("build")
            .join("worker")
            .join("shim.mjs");
        if opts.config.is_none() && !bundle.exists() {
            bail!(
                "the Worker bundle {} is missing: run `cargo xtask build-worker` first \
                 (`cargo xtask test` does)",
                bundle.display()
            );
        }
        let wrangler = opts
            .worker_dir
            .join("node_modules")
            .join(".bin")
            .join("wrangler");
        if !wrangler.exists() {
            bail!(
                "{} is missing: run `cargo xtask setup` first",
                wrangler.display()
            );
        }
        let mut last_err = None;
        for _attempt in 0..3 {
            match Worker::start_once(&opts, &wrangler) {
                Ok(w) => return Ok(w),
                Err(StartError::PortTaken(e)) if opts.port.is_none() => last_err = Some(e),
                Err(StartError::PortTaken(e)) | Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start wrangler")))
    }

    fn start_once(opts: &WorkerOptions, wrangler: &Path) -> Result<Worker, StartError> {
        let started = Instant::now();
        let n = RUN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run_dir = opts.run_dir.clone().unwrap_or_else(|| {
            target_dir()
                .join("e2e")
                .join(format!("{}-{}-{n}", opts.name, std::process::id()))
        });
        if !opts.keep_state {
            let _ = fs::remove_dir_all(run_dir.join("state"));
        }
        fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let secrets_path = run_dir.join("secrets.env");
        write_secrets(&secrets_path, &opts.secrets)?;
        let log_path = run_dir.join("wrangler.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let inspector = free_port()?;

        let mut cmd = Command::new(wrangler);
        cmd.current_dir(&opts.worker_dir);
        if let Some(config) = &opts.config {
            cmd.arg("--config").arg(config);
        } else if opts.isolate {
            let config = snapshot(&opts.worker_dir, &run_dir)?;
            if let Some(edit) = opts.edit_glue {
                let glue = run_dir.join("build").join("index.js");
                let text = fs::read_to_string(&glue)
                    .with_context(|| format!("reading {}", glue.display()))?;
                let edited = edit(&text).with_context(|| {
                    format!("the glue edit does not apply to {}", glue.display())
                })?;
                fs::write(&glue, edited)?;
            }
            cmd.arg("--config").arg(config);
        }
        cmd.args(["dev", "--ip", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--inspector-port")
            .arg(inspector.to_string())
            .arg("--show-interactive-dev-session=false")
            .arg("--persist-to")
            .arg(run_dir.join("state"))
            .arg("--env-file")
            .arg(&secrets_path);
        if let Some(env) = &opts.env {
            cmd.arg("--env").arg(env);
        }
        for (name, value) in &opts.vars {
            cmd.arg("--var").arg(format!("{name}:{value}"));
        }
        cmd.env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0")
            // Real provider keys in the caller's environment must not reach a test Worker.
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("CLOUDFLARE_INCLUDE_PROCESS_ENV")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", wrangler.display()))?;
        let pgid = i32::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?;
        let (watchdog, watchdog_pipe) = match spawn_watchdog(pgid) {
            Ok((w, p)) => (Some(w), Some(p)),
            Err(_) => (None, None),
        };
        let mut worker = Worker {
            port,
            run_dir,
            log_path,
            child: Some(child),
            pgid,
            watchdog,
            watchdog_pipe,
            started_in: Duration::ZERO,
            keep_state: false,
        };
        let deadline = started + opts.startup_timeout;
        loop {
            if let Some(status) = worker
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = worker.log_text();
                let tail = tail(&log, 40);
                let msg = anyhow!(
                    "wrangler exited ({status}) before /healthz answered; log {}:\n{tail}",
                    worker.log_path.display()
                );
                return Err(if port_taken(&log) {
                    StartError::PortTaken(msg)
                } else {
                    StartError::Other(msg)
                });
            }
            if let Some(actual) = ready_port(&worker.log_text()) {
                // wrangler may have moved to another port if ours was taken meanwhile.
                worker.port = actual;
            }
            if health(worker.port) {
                worker.started_in = started.elapsed();
                return Ok(worker);
            }
            if Instant::now() >= deadline {
                let log = worker.log_text();
                return Err(StartError::Other(anyhow!(
                    "/healthz on port {} did not answer 200 within {:?}; log {}:\n{}",
                    worker.port,
                    opts.startup_timeout,
                    worker.log_path.display(),
                    tail(&log, 40)
                )));
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/v1`: the client's base URL.
    pub fn api_base(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// How long the start took (wrangler's build step, workerd, first `/healthz`).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The run directory (log, secrets file, state).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The log file: wrangler's and workerd's stdout and stderr, including the Worker's own
    /// log lines.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log lines that are JSON objects (the Worker's structured log lines), parsed.
    pub fn log_json(&self) -> Vec<Value> {
        self.log_entries().into_iter().map(|e| e.value).collect()
    }

    /// The Worker's structured log lines with the console level each was written at.
    pub fn log_entries(&self) -> Vec<LogEntry> {
        self.log_text().lines().filter_map(parse_log_line).collect()
    }

    /// Log lines that show a Rust panic or a wasm trap in the Worker.
    pub fn panics(&self) -> Vec<String> {
        panic_lines(&self.log_text())
    }

    /// Whether wrangler is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process group id (wrangler's pid); its workerd is in the same group.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The port of the Worker's runtime itself, past wrangler's dev proxy: what a test that
    /// measures the Worker's own buffering or timing talks to (see [`runtime_ports`]).
    pub fn runtime_port(&self) -> Result<u16> {
        runtime_ports(self.pgid, self.port).map(|(port, _)| port)
    }

    /// Stops wrangler and its workerd (see the module docs) and reports how.
    pub fn stop(mut self) -> StopReport {
        self.stop_now()
    }

    /// Stops, leaving the state directory (Durable Objects' storage, KV) for a start with
    /// [`WorkerOptions::keep_state`] in the same run directory.
    pub fn stop_keeping_state(mut self) -> StopReport {
        self.keep_state = true;
        self.stop_now()
    }

    fn stop_now(&mut self) -> StopReport {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return StopReport {
                killed: false,
                took: Duration::ZERO,
                group_empty: group_empty(self.pgid),
            };
        };
        let pgid = Pid::from_raw(self.pgid);
        let _ = killpg(pgid, Signal::SIGTERM);
        let mut killed = false;
        let mut empty = wait_group(&mut child, self.pgid, Duration::from_secs(5));
        if !empty {
            killed = true;
            let _ = killpg(pgid, Signal::SIGKILL);
            empty = wait_group(&mut child, self.pgid, Duration::from_secs(3));
        }
        let _ = child.wait();
        // The group is gone: the watchdog has nothing left to do.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.watchdog_pipe.take();
        if !self.keep_state {
            let _ = fs::remove_dir_all(self.run_dir.join("state"));
        }
        StopReport {
            killed,
            took: started.elapsed(),
            group_empty: empty,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop_now();
    }
}

enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Other(e.into())
    }
}

/// Copies `worker/build` into `run_dir/build` and writes `run_dir/wrangler.toml`: the Worker's
/// own wrangler.toml without its `[build]` table (its `main` is relative, so it now points at
/// the copy). Returns the config's path.
fn snapshot(worker_dir: &Path, run_dir: &Path) -> Result<PathBuf> {
    let to = run_dir.join("build");
    let _ = fs::remove_dir_all(&to);
    copy_dir(&worker_dir.join("build"), &to)
        .with_context(|| format!("copying the bundle into {}", to.display()))?;
    let toml =
        fs::read_to_string(worker_dir.join("wrangler.toml")).context("reading wrangler.toml")?;
    let config = run_dir.join("wrangler.toml");
    fs::write(&config, without_table(&toml, "build"))?;
    Ok(config)
}

/// `toml` without the table `[name]` (its header and keys, up to the next table).
fn without_table(toml: &str, name: &str) -> String {
    let header = format!("[{name}]");
    let mut out = String::new();
    let mut skipping = false;
    for line in toml.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skipping = trimmed == header;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Copies the directory `from` to `to` (worker-build's scratch directory and lock left out).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        // worker-build's scratch directory and lock.
        if name == ".tmp" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(&name))?;
        } else {
            fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}

/// Runs `cargo xtask build-worker` with its output in `target/e2e/build-worker-<pid>.log`,
/// bounded by `opts.build_timeout` (its process group is killed when the time is up). When
/// another worker-build holds the bundle's lock (a `wrangler dev` rebuilding on a change), it
/// waits and tries again within that bound.
fn build_worker(opts: &WorkerOptions) -> Result<()> {
    let dir = target_dir().join("e2e");
    fs::create_dir_all(&dir)?;
    let log_path = dir.join(format!("build-worker-{}.log", std::process::id()));
    let started = Instant::now();
    loop {
        let remaining = opts.build_timeout.saturating_sub(started.elapsed());
        let text = build_once(&log_path, remaining)?;
        match text {
            Ok(text) => {
                if !text.contains("up to date") {
                    eprintln!(
                        "[{}] built the Worker in {:.1} s",
                        opts.name,
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(());
            }
            Err(text) if text.contains("concurrent worker-build") => {
                eprintln!("[{}] another worker-build is running; waiting", opts.name);
                std::thread::sleep(Duration::from_secs(5));
            }
            Err(text) => bail!(
                "`cargo xtask build-worker` failed; log {}:\n{}",
                log_path.display(),
                tail(&text, 40)
            ),
        }
    }
}

/// One `cargo xtask build-worker`: `Ok(log)` when it succeeded, `Err(log)` when it failed,
/// an error when it could not run or took longer than `limit`.
fn build_once(log_path: &Path, limit: Duration) -> Result<Result<String, String>> {
    let log = fs::File::create(log_path)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let mut child = Command::new(cargo)
        .args(["xtask", "build-worker"])
        .current_dir(workspace_root())
        // What `cargo test` set for this crate must not leak into the inner build.
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_MANIFEST_PATH")
        .env_remove("CARGO_PKG_NAME")
        .env_remove("CARGO_CRATE_NAME")
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting `cargo xtask build-worker`")?;
    let pgid = i32::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            let text = fs::read_to_string(log_path).unwrap_or_default();
            return Ok(if status.success() {
                Ok(text)
            } else {
                Err(text)
            });
        }
        if started.elapsed() > limit {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let _ = child.wait();
            bail!(
                "`cargo xtask build-worker` did not finish in time; log {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The console method a line of the Worker's log was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `console.log` (and `console.info`, `console.debug`): printed as it is.
    Log,
    /// `console.warn`: wrangler prints `▲ [WARNING] <line>`.
    Warn,
    /// `console.error`: wrangler prints `✘ [ERROR] <line>`.
    Error,
}

/// One JSON log line of the Worker and its level.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The console method it was written with.
    pub level: LogLevel,
    /// The line's JSON object.
    pub value: Value,
}

/// A line of wrangler's output as a Worker log line, when it is one (a JSON object, maybe
/// behind wrangler's level marker). wrangler colours the `console.warn` and `console.error`
/// lines even with `NO_COLOR`: the escapes are dropped first.
pub fn parse_log_line(line: &str) -> Option<LogEntry> {
    let plain = strip_ansi(line);
    let level = if plain.trim_start().starts_with("✘ [ERROR]") {
        LogLevel::Error
    } else if plain.trim_start().starts_with("▲ [WARNING]") {
        LogLevel::Warn
    } else {
        LogLevel::Log
    };
    let start = plain.find('{')?;
    let value = serde_json::from_str::<Value>(plain[start..].trim_end())
        .ok()
        .filter(Value::is_object)?;
    Some(LogEntry { level, value })
}

/// `text` without its ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The lines of a Worker's log that show a Rust panic or a wasm trap.
pub fn panic_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("panicked at")
                || l.contains("RuntimeError: unreachable")
                || l.contains("Uncaught (in promise)")
        })
        .map(str::to_owned)
        .collect()
}

/// Whether no process is left in group `pgid`.
pub fn group_empty(pgid: i32) -> bool {
    matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// Reaps `leader` when it exits and waits until the group is empty, up to `limit`.
fn wait_group(leader: &mut Child, pgid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        // A zombie leader still counts as a group member until it is reaped.
        let _ = leader.try_wait();
        if group_empty(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a runtime's log says a port it was to listen on was taken (by the time it bound it).
pub fn port_taken(log: &str) -> bool {
    log.contains("EADDRINUSE") || log.contains("already in use")
}

/// A watchdog for the process group `pgid`: it kills the group (TERM, then KILL 2 s later) once
/// the returned pipe closes, which happens however this process ends. Kill the watchdog after
/// stopping the group normally.
pub fn spawn_watchdog(pgid: i32) -> std::io::Result<(Child, ChildStdin)> {
    // `read` returns when our end of the pipe closes: when we drop it, or when this process
    // ends in any way. The pipe is close-on-exec, so no other child holds it.
    // No `--` before the negative pid: dash's `kill` rejects it.
    let script =
        "read -r _; kill -TERM -\"$1\" 2>/dev/null; sleep 2; kill -KILL -\"$1\" 2>/dev/null; exit 0";
    let mut child = Command::new("sh")
        .args(["-c", script, "storycad-e2e-watchdog"])
        .arg(pgid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pipe = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("watchdog has no stdin"))?;
    Ok((child, pipe))
}

fn write_secrets(path: &Path, secrets: &[(String, String)]) -> Result<()> {
    let mut text = String::new();
    for (name, value) in secrets {
        // dotenv keeps single-quoted values verbatim (JSON included); a `'` would end it.
        if value.contains('\'') {
            bail!("secret {name} contains a single quote, which the env file cannot hold");
        }
        text.push_str(&format!("{name}='{value}'\n"));
    }
    write_private(path, text.as_bytes())
}

/// Writes `bytes` to `path`, readable by its owner only (secrets).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// The port in wrangler's "Ready on http://127.0.0.1:PORT" line, if printed yet.
fn ready_port(log: &str) -> Option<u16> {
    let at = log.rfind("Ready on http://127.0.0.1:")?;
    let rest = &log[at + "Ready on http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether `GET /healthz` answers 200.
/// A workerd process of a wrangler (or miniflare) process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workerd {
    /// Its pid.
    pub pid: u32,
    /// Whether it serves the public port: wrangler's dev proxy, not the Worker's runtime.
    pub proxy: bool,
    /// Its resident memory, KiB.
    pub rss_kb: u64,
}

/// The processes of group `pgid` whose name contains `workerd`; the one whose command line
/// serves 127.0.0.1:`public_port` is wrangler's dev proxy. `public_port` 0: there is no dev
/// proxy (miniflare alone, whose unused entry socket is port 0).
pub fn workerds(pgid: i32, public_port: u16) -> Vec<Workerd> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    let public = format!("entry=127.0.0.1:{public_port}");
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let pgrp = stat[close + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse::<i32>().ok());
        if pgrp != Some(pgid) || !comm.contains("workerd") {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let rss_kb = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            });
        if let Some(rss_kb) = rss_kb {
            out.push(Workerd {
                pid,
                proxy: public_port != 0 && cmdline.split(' ').any(|a| a.ends_with(&public)),
                rss_kb,
            });
        }
    }
    out
}

/// One TCP socket of this machine, as `/proc/net/tcp` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// The local port.
    pub local_port: u16,
    /// The remote port (0 for a listening socket).
    pub remote_port: u16,
    /// Whether it is listening.
    pub listening: bool,
    /// Bytes written and not yet acknowledged by the peer (the send queue).
    pub tx_queue: u64,
    /// Bytes received and not yet read by the process (the receive queue).
    pub rx_queue: u64,
    /// The socket's inode (`/proc/<pid>/fd` links name it).
    pub inode: u64,
}

/// Every TCP socket of this machine (IPv4 and IPv6), from `/proc/net/tcp{,6}`.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout
            // inode ...
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
            };
            let (Some(local_port), Some(remote_port)) = (port(f[1]), port(f[2])) else {
                continue;
            };
            let (tx, rx) = f[4].split_once(':').unwrap_or(("0", "0"));
            out.push(TcpSocket {
                local_port,
                remote_port,
                listening: f[3] == "0A",
                tx_queue: u64::from_str_radix(tx, 16).unwrap_or(0),
                rx_queue: u64::from_str_radix(rx, 16).unwrap_or(0),
                inode: f[9].parse().unwrap_or(0),
            });
        }
    }
    out
}

/// The TCP ports process `pid` listens on.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    l.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports: Vec<u16> = tcp_sockets()
        .into_iter()
        .filter(|s| s.listening && inodes.contains(&s.inode))
        .map(|s| s.local_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The Worker's runtime under wrangler dev (group `pgid`, public port `public_port`): the port
/// that serves the Worker itself, without wrangler's dev proxy (which buffers answers and
/// retries requests), and the runtime's other listening ports (its inspector among them).
pub fn runtime_ports(pgid: i32, public_port: u16) -> Result<(u16, Vec<u16>)> {
    let mut tried = Vec::new();
    for w in workerds(pgid, public_port).iter().filter(|w| !w.proxy) {
        let ports = listening_ports(w.pid);
        for &port in &ports {
            tried.push(port);
            if health(port) {
                return Ok((port, ports.into_iter().filter(|p| *p != port).collect()));
            }
        }
    }
    bail!("the Worker's runtime was not found (group {pgid}; ports tried: {tried:?})")
}

/// Whether `GET /healthz` on 127.0.0.1:`port` answers 200.
pub fn health(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.1 200")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_one_table() {
        let toml =
            "name = \"x\"\n[build]\ncommand = \"make\"\n\n[vars]\nA = \"1\"\n[[kv]]\nid = 2\n";
        assert_eq!(
            without_table(toml, "build"),
            "name = \"x\"\n[vars]\nA = \"1\"\n[[kv]]\nid = 2\n"
        );
    }

    #[test]
    fn reads_log_lines_and_their_level() {
        // As wrangler 4.86 prints console.log, console.error and console.warn lines.
        let log = parse_log_line("{\"status\":200}").unwrap();
        assert_eq!(log.level, LogLevel::Log);
        assert_eq!(log.value["status"], 200);
        let error = "\u{1b}[31m✘ \u{1b}[41;31m[\u{1b}[41;97mERROR\u{1b}[41;31m]\u{1b}[0m \
                     \u{1b}[1m{\"status\":502}\u{1b}[0m";
        let error = parse_log_line(error).unwrap();
        assert_eq!(error.level, LogLevel::Error);
        assert_eq!(error.value["status"], 502);
        let warn = "\u{1b}[33m▲ \u{1b}[43;33m[\u{1b}[43;30mWARNING\u{1b}[43;33m]\u{1b}[0m \
                    \u{1b}[1m{\"c\":3}\u{1b}[0m";
        assert_eq!(parse_log_line(warn).unwrap().level, LogLevel::Warn);
        assert_eq!(
            parse_log_line("✘ [ERROR] {\"a\":1}").unwrap().level,
            LogLevel::Error
        );
        assert!(parse_log_line("[wrangler:info] GET /healthz 200 OK (3ms)").is_none());
    }

    #[test]
    fn reads_the_ready_line() {
        assert_eq!(
            ready_port("x\n[wrangler:info] Ready on http://127.0.0.1:45123\n"),
            Some(45123)
        );
        assert_eq!(ready_port("starting"), None);
    }
}
