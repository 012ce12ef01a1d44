//! `cargo xtask <task>`: the project's tasks, in Rust rather than shell scripts.
//!
//! - `setup`: install what is missing (apt packages, cargo tools, npm packages), idempotently.
//! - `build-worker`: build the Worker's release bundle (skipped when it is up to date).
//! - `test`: setup, `cargo fmt --check`, clippy with `-D warnings`, the bundle, every test.
//! - `dev`: the Worker under workerd with a fake provider (or real keys), and the chat REPL.
//! - `bench [client|proxy|ffi]`: benchmarks that print ratios measured side by side; alone,
//!   all of them and one summary table.
//! - `fuzz --minutes N [--target NAME]`: the fuzz targets in `fuzz/`, one after another.
//! - `soak`: the Worker under steady streaming load for N minutes, watching workerd's memory.

mod bench_all;
mod bench_proxy;
mod build;
mod cmd;
mod dev;
mod fuzz;
mod python;
mod setup;
mod soak;
mod test;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  setup          install what is missing (apt, cargo tools, npm packages); idempotent
  build-worker   build the Worker's release bundle into worker/build (skipped when up to date)
  test           setup, fmt --check, clippy -D warnings, build-worker, every test
  dev            the Worker under workerd + fake provider (or real keys) + the chat REPL
  bench          every benchmark below (release builds) and one summary table: proxy
                 latency, the Worker's host CPU cost (criterion), wasm size against its
                 budget (fails above 1 MB gzipped), client parsing
                 [--record: write BENCHMARKS.md] [the proxy options below]
  bench client   client SSE parsing: ours vs async-openai on the same stream
  bench proxy    latency the Worker adds: vs the fake provider directly and vs a JavaScript
                 passthrough Worker on the same workerd
                 [--requests N (500)] [--stream-words N (199)] [--concurrency 1,16,64]
                 [--against DIR: a copy of worker/build from another commit, measured beside]
  bench ffi      per-chunk cost: Python bindings' next() loop vs the Rust client
  fuzz           the fuzz targets (nightly, cargo-fuzz; installed if missing), one at a time
                 --minutes N [--target NAME] [--sanitizer none|address]
  soak           streaming load on the Worker under workerd; fails on any error or on
                 workerd RSS growth >= 10% [--minutes N (10)] [--users N (32)]
                 [--via-wrangler | --miniflare] [--no-limits] [--no-stream] [--warm-up S]
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = args.get(1..).unwrap_or_default();
    match task {
        "setup" => setup::run(),
        "build-worker" => build::worker(rest.iter().any(|a| a == "--force")),
        "test" => test::run(rest),
        "dev" => dev::run(),
        "bench" => bench(rest),
        "fuzz" => fuzz::run(rest),
        "soak" => soak::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

fn bench(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        None => bench_all::run(&[]),
        Some("all") => bench_all::run(&args[1..]),
        Some(a) if a.starts_with("--") => bench_all::run(args),
        Some("proxy") => bench_proxy::run(&args[1..]),
        Some("ffi") => python::bench(),
        Some("client") => {
            let mut c = cmd::cargo();
            c.args(["bench", "-p", "storycad-client", "--bench", "stream_parse"]);
            cmd::run(&mut c)
        }
        _ => bail!("usage: cargo xtask bench [--record] | bench <client|proxy|ffi>"),
    }
}
