//! The Worker under load, however it was started: `wrangler dev` (requests to its runtime or
//! through its dev proxy) or miniflare alone; its process group, log and inspector.

use std::path::PathBuf;

use anyhow::{Context, Result};
use storycad_e2e::workerd::{panic_lines, runtime_ports, Worker, WorkerOptions};

use super::{memory::GcProbe, Settings};
use crate::miniflare::{self, Miniflare};
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
    Miniflare(Miniflare),
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
        let bindings = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .chain(
                secrets
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
            )
            .collect();
        let name = worker_name()?;
        let mf = Miniflare::start(miniflare::Options {
            name: name.clone(),
            code: miniflare::Code::Bundle(build::bundle_dir()),
            bindings,
        })?;
        Ok(Backend {
            target: mf.api_base(),
            what: "miniflare alone (no DevTools client, no dev proxy)",
            group: Group {
                pgid: mf.pgid,
                public_port: 0,
            },
            log: mf.log.clone(),
            gc: Some(GcProbe::new(vec![format!(
                "ws://127.0.0.1:{}/core:user:{name}",
                mf.inspector_port
            )])),
            kind: BackendKind::Miniflare(mf),
        })
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
            BackendKind::Miniflare(mf) => {
                if !mf.stop() {
                    eprintln!("soak: miniflare's workerd was still running at the end");
                }
            }
        }
    }
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
