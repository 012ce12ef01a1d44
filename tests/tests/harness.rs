//! The workerd harness itself: wrangler and its workerd are gone after a drop, and after the
//! process that started them is killed outright (the watchdog's job).

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use storycad_e2e::workerd::{group_empty, Worker, WorkerOptions};

const CHILD_ENV: &str = "STORYCAD_E2E_WATCHDOG_CHILD";

fn options(name: &str) -> WorkerOptions {
    // /healthz needs no configuration.
    WorkerOptions {
        name: name.into(),
        ..WorkerOptions::default()
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn drop_stops_wrangler_and_workerd() {
    let worker = Worker::start(options("harness-drop")).expect("worker starts");
    let (pgid, addr) = (worker.pgid(), worker.addr());
    assert!(TcpStream::connect(addr).is_ok());
    assert!(!group_empty(pgid));
    let report = worker.stop();
    assert!(report.group_empty, "{report:?}");
    assert!(group_empty(pgid));
    assert!(
        TcpStream::connect(addr).is_err(),
        "something still listens on {addr}"
    );
}

#[test]
fn killing_the_owner_process_stops_wrangler() {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", "watchdog_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("WORKER ") {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    // Long enough for a build of the Worker, if the sources changed.
    let line = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("the child started a Worker");
    let mut parts = line.split_whitespace();
    let pgid: i32 = parts.next().and_then(|p| p.parse().ok()).expect("pgid");
    let port: u16 = parts.next().and_then(|p| p.parse().ok()).expect("port");
    assert!(!group_empty(pgid));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    // SIGKILL: no destructor, no exit handler runs in the child.
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    assert!(
        wait_until(Duration::from_secs(10), || group_empty(pgid)),
        "wrangler's process group {pgid} outlived its owner"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Run by `killing_the_owner_process_stops_wrangler` in a child process, which it then kills.
#[test]
#[ignore = "a helper: killing_the_owner_process_stops_wrangler runs it in a child process"]
fn watchdog_child() {
    assert_eq!(
        std::env::var(CHILD_ENV).as_deref(),
        Ok("1"),
        "only meant to run as the child of killing_the_owner_process_stops_wrangler"
    );
    let worker = Worker::start(options("harness-watchdog")).expect("worker starts");
    println!("WORKER {} {}", worker.pgid(), worker.port());
    // Wait to be killed (bounded, in case the parent died first).
    std::thread::sleep(Duration::from_secs(300));
}
