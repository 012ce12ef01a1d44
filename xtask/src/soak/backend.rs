//! The Worker under load, however it was started: `wrangler dev` (requests to its runtime or
//! through its dev proxy) or miniflare alone; its process group, log and inspector.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use storycad_e2e::workerd::{
    free_port, health, panic_lines, runtime_ports, target_dir, workerds, Worker, WorkerOptions,
};

use super::{memory::GcProbe, Settings};
use crate::{build, cmd};

/// The running Worker, however it was started.
pub struct Backend {
    /// The base URL requests go to (`.../v1`).
    pub target: String,
    /// How the requests reach the Worker, for the messages.
    pub what: &'static str,
    pub group: Group,
    pub log: PathBuf,
    /// Where a full GC of the Worker's isolate can be asked for.
    pub gc: Option<GcProbe>,
    kind: BackendKind,
}

enum BackendKind {
    Wrangler(Worker),
    Miniflare(Child),
}

impl Backend {
    pub fn start(
        settings: &Settings,
        vars: &[(&str, String)],
        secrets: &[(&str, &str)],
    ) -> Result<Self> {
        if settings.miniflare {
            return Backend::miniflare(vars, secrets);
        }
        let mut opts = WorkerOptions {
            name: "soak".into(),
            ..WorkerOptions::default()
        };
        for (name, value) in vars {
            opts = opts.var(*name, value.clone());
        }
        for (name, value) in secrets {
            opts = opts.secret(*name, *value);
        }
        let worker = Worker::start(opts)?;
        let group = Group {
            pgid: worker.pgid(),
            public_port: worker.port(),
        };
        let runtime = match runtime_base(group) {
            Ok(r) => r,
            Err(e) => {
                worker.stop();
                return Err(e);
            }
        };
        let (target, what) = if settings.via_wrangler {
            (worker.api_base(), "through wrangler's dev proxy")
        } else {
            (
                format!("http://127.0.0.1:{}/v1", runtime.port),
                "the Worker's runtime under wrangler dev, directly",
            )
        };
        // The runtime's other listening ports: its inspector is one of them.
        let name = worker_name()?;
        let urls = runtime
            .other_ports
            .iter()
            .map(|p| format!("ws://127.0.0.1:{p}/core:user:{name}"))
            .collect();
        Ok(Backend {
            target,
            what,
            group,
            log: worker.log_path().to_path_buf(),
            gc: Some(GcProbe::new(urls)),
            kind: BackendKind::Wrangler(worker),
        })
    }

    /// The bundle (a snapshot of worker/build) under miniflare alone, in a process group of
    /// its own.
    fn miniflare(vars: &[(&str, String)], secrets: &[(&str, &str)]) -> Result<Self> {
        let root = cmd::root();
        let run_dir = target_dir()
            .join("e2e")
            .join(format!("soak-miniflare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        let build = run_dir.join("build");
        copy_dir(&build::bundle_dir(), &build)?;
        let port = free_port()?;
        let inspector_port = free_port()?;
        let name = worker_name()?;
        let mut bindings = serde_json::Map::new();
        for (name, value) in vars {
            bindings.insert((*name).to_owned(), json!(value));
        }
        for (name, value) in secrets {
            bindings.insert((*name).to_owned(), json!(value));
        }
        let toml = std::fs::read_to_string(root.join("worker").join("wrangler.toml"))?;
        let compatibility_date = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("compatibility_date"))
            .and_then(|v| v.split('"').nth(1))
            .context("wrangler.toml has no compatibility_date")?
            .to_owned();
        // `compatibility_flags = ["a", "b"]` on one line.
        let compatibility_flags: Vec<String> = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("compatibility_flags"))
            .map(|v| v.split('"').skip(1).step_by(2).map(str::to_owned).collect())
            .unwrap_or_default();
        let config = json!({
            "node_modules": root.join("worker").join("node_modules"),
            "build": build,
            "port": port,
            "inspector_port": inspector_port,
            "name": name,
            "persist": run_dir.join("state"),
            "compatibility_date": compatibility_date,
            "compatibility_flags": compatibility_flags,
            "bindings": bindings,
        });
        let config_path = run_dir.join("miniflare.json");
        write_private(&config_path, config.to_string().as_bytes())?;
        let log = run_dir.join("miniflare.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("node")
            .arg(root.join("xtask/src/soak/miniflare.mjs"))
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("starting node (miniflare)")?;
        let pgid = i32::try_from(child.id()).context("pid out of range")?;
        let backend = Backend {
            target: format!("http://127.0.0.1:{port}/v1"),
            what: "miniflare alone (no DevTools client, no dev proxy)",
            group: Group {
                pgid,
                public_port: 0,
            },
            log,
            gc: Some(GcProbe::new(vec![format!(
                "ws://127.0.0.1:{inspector_port}/core:user:{name}"
            )])),
            kind: BackendKind::Miniflare(child),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !health(port) {
            if Instant::now() > deadline {
                let text = std::fs::read_to_string(&backend.log).unwrap_or_default();
                backend.stop();
                bail!("miniflare did not answer /healthz within 90 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(backend)
    }

    /// Log lines that show a Rust panic or a wasm trap in the Worker.
    pub fn panics(&self) -> Vec<String> {
        match &self.kind {
            BackendKind::Wrangler(w) => w.panics(),
            BackendKind::Miniflare(_) => {
                panic_lines(&std::fs::read_to_string(&self.log).unwrap_or_default())
            }
        }
    }

    pub fn stop(self) {
        match self.kind {
            BackendKind::Wrangler(w) => {
                let report = w.stop();
                if !report.group_empty {
                    eprintln!("soak: some wrangler processes were still running at the end");
                }
            }
            BackendKind::Miniflare(mut child) => {
                // The node process and its workerd, by the group id of the node we started.
                let group = format!("-{}", self.group.pgid);
                let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && !workerds(self.group.pgid, self.group.public_port).is_empty()
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !workerds(self.group.pgid, self.group.public_port).is_empty() {
                    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == ".tmp" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path`, readable by the owner only (it holds the fake secrets).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// The Worker's process group, and the public port that tells its dev proxy apart.
#[derive(Clone, Copy)]
pub struct Group {
    pub pgid: i32,
    pub public_port: u16,
}

/// `http://127.0.0.1:PORT/v1` of the Worker's runtime itself: the port, among those the
/// group's non-proxy workerd listens on, that answers `GET /healthz` with the Worker's 200.
fn runtime_base(group: Group) -> Result<RuntimePorts> {
    let (port, other_ports) = runtime_ports(group.pgid, group.public_port)
        .context("`--via-wrangler` goes through wrangler's dev proxy instead of the runtime")?;
    Ok(RuntimePorts { port, other_ports })
}

/// The Worker's runtime under wrangler dev: the port that serves it, and the runtime's others.
struct RuntimePorts {
    port: u16,
    other_ports: Vec<u16>,
}

/// The Worker's name, from wrangler.toml (its inspector path is `/core:user:<name>`).
pub fn worker_name() -> Result<String> {
    let toml = std::fs::read_to_string(cmd::root().join("worker").join("wrangler.toml"))?;
    toml.lines()
        .find_map(|l| l.trim().strip_prefix("name"))
        .and_then(|v| v.split('"').nth(1))
        .map(str::to_owned)
        .context("wrangler.toml has no name")
}
