//! The Worker's memory: the RSS of its workerd processes, and a full GC of its isolate.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use storycad_e2e::workerd::workerds;

use super::backend::Group;
use crate::cmd;

/// How often workerd's memory is read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One memory reading: the runtime's and the dev proxy's RSS.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    pub at: Duration,
    pub runtime: Rss,
    pub proxy: Rss,
}

/// The summed RSS of some processes.
#[derive(Clone, Copy, Default)]
pub struct Rss {
    pub kb: u64,
    pub processes: usize,
}

impl Rss {
    pub fn mb(self) -> f64 {
        self.kb as f64 / 1024.0
    }
}

/// The RSS of the group's workerd processes, the runtime's and the dev proxy's apart.
pub fn memory(group: Group) -> Sample {
    let mut s = Sample::default();
    for w in workerds(group.pgid, group.public_port) {
        let rss = if w.proxy {
            &mut s.proxy
        } else {
            &mut s.runtime
        };
        rss.kb += w.rss_kb;
        rss.processes += 1;
    }
    s
}

/// Asks the Worker's isolate for a full garbage collection (`gc.mjs`, through the
/// runtime's DevTools inspector).
#[derive(Clone)]
pub struct GcProbe {
    urls: Vec<String>,
}

impl GcProbe {
    pub fn new(urls: Vec<String>) -> Self {
        GcProbe { urls }
    }

    /// A full GC, then (2 s later) a memory reading; `None` when no inspector answered.
    pub async fn collect_and_read(&self, group: Group, started: Instant) -> Option<Sample> {
        let urls = self.urls.clone();
        let ok = tokio::task::spawn_blocking(move || collect_garbage(&urls))
            .await
            .unwrap_or(false);
        if !ok {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(Sample {
            at: started.elapsed(),
            ..memory(group)
        })
    }
}

/// Runs `gc.mjs` over `urls`, bounded to 45 s; whether one collected.
fn collect_garbage(urls: &[String]) -> bool {
    let root = cmd::root();
    let child = Command::new("node")
        .arg(root.join("xtask/src/soak/gc.mjs"))
        .arg(root.join("worker").join("node_modules"))
        .args(urls)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}
