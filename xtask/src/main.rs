//! `cargo xtask <task>`: the project's tasks, in Rust rather than shell scripts. `cargo xtask
//! help` (or `<task> --help`) lists them with their options, from the definitions below.

// The Worker's own tasks (dev server, benchmarks, soak) drive workerd and the fake provider
// (storycad-e2e), which are Unix-only. The others build on Windows too, so `cargo xtask csharp`
// runs from Visual Studio there.
#[cfg(unix)]
mod bench_all;
#[cfg(unix)]
mod bench_cache;
#[cfg(unix)]
mod bench_proxy;
mod build;
mod cmd;
mod csharp;
#[cfg(unix)]
mod dev;
mod fuzz;
#[cfg(unix)]
mod miniflare;
mod python;
mod setup;
#[cfg(unix)]
mod soak;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The project's tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (the wasm32 target via rustup, else Debian packages; cargo tools;
    /// npm packages; the Python venv) and check Node.js and Python; idempotent.
    Setup,
    /// Build the Worker's release bundle into worker/build (skipped when up to date).
    BuildWorker {
        /// Build even when the bundle is up to date.
        #[arg(long)]
        force: bool,
    },
    /// Setup, `cargo fmt --check`, clippy -D warnings, build-worker, every test.
    Test {
        /// Passed on to `cargo test --workspace` (after `--`: `cargo xtask test -- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_test: Vec<String>,
    },
    /// The Worker under workerd with a fake provider (or real keys), and the chat REPL.
    #[cfg(unix)]
    Dev,
    /// Benchmarks that print ratios measured side by side (alone: all of them, one table).
    ///
    /// Alone, every benchmark (release builds) and one summary table: proxy latency, the
    /// Worker's host CPU cost (criterion), wasm size against its budget (fails above 1 MB
    /// gzipped), client parsing.
    #[cfg(unix)]
    Bench(Bench),
    /// The fuzz targets in fuzz/ (nightly, cargo-fuzz; installed if missing), one at a time.
    Fuzz(fuzz::Options),
    /// The C# bindings: build storycad-ffi, generate them with uniffi-bindgen-cs, copy the
    /// library to bindings/csharp's runtimes/<RID>/native.
    ///
    /// What the class library's build runs when its generated bindings are missing (from
    /// Visual Studio too: no shell needed). Needs uniffi-bindgen-cs v0.11.0+v0.31.0.
    Csharp(csharp::Options),
    /// Streaming load on the Worker under workerd, watching its memory.
    ///
    /// Fails on any error, a panic in the Worker's log, or workerd RSS growth of 10% or more.
    #[cfg(unix)]
    Soak(soak::Settings),
}

#[cfg(unix)]
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct Bench {
    #[command(subcommand)]
    only: Option<OneBench>,
    /// Write the summary, with the machine and the command, to BENCHMARKS.md.
    #[arg(long)]
    record: bool,
    #[command(flatten)]
    proxy: bench_proxy::Settings,
}

#[cfg(unix)]
#[derive(Subcommand)]
enum OneBench {
    /// Client SSE parsing: ours vs async-openai on the same stream.
    Client,
    /// What the Worker costs and adds (CPU per request and per streamed chunk, latency,
    /// throughput): beside the fake provider directly and JavaScript Workers on the same workerd.
    Proxy(bench_proxy::Settings),
    /// Per-chunk cost: the Python bindings' next() loop vs the Rust client.
    Ffi,
    /// Provider prompt caching: a writer's ten-turn session on OpenAI and Anthropic routes,
    /// tokens and charge with PROMPT_CACHE=auto vs off.
    Cache,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.task) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::run(),
        Task::BuildWorker { force } => build::worker(force),
        Task::Test { cargo_test } => test::run(&cargo_test),
        #[cfg(unix)]
        Task::Dev => dev::run(),
        #[cfg(unix)]
        Task::Bench(Bench {
            only: None,
            record,
            proxy,
        }) => bench_all::run(record, &proxy),
        #[cfg(unix)]
        Task::Bench(Bench {
            only: Some(one), ..
        }) => match one {
            OneBench::Client => {
                let mut c = cmd::cargo();
                c.args(["bench", "-p", "storycad-client", "--bench", "stream_parse"]);
                cmd::run(&mut c)
            }
            OneBench::Proxy(settings) => bench_proxy::run(&settings),
            OneBench::Ffi => python::bench(),
            OneBench::Cache => bench_cache::run(),
        },
        Task::Fuzz(options) => fuzz::run(&options),
        Task::Csharp(options) => csharp::run(&options),
        #[cfg(unix)]
        Task::Soak(settings) => soak::run(&settings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(line: &str) -> Result<Task, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(line.split_whitespace())).map(|c| c.task)
    }

    #[cfg(unix)]
    #[test]
    fn options_reach_their_task() {
        let Ok(Task::Bench(b)) = parse("bench --record --requests 40 --concurrency 1,8") else {
            panic!("bench with options did not parse");
        };
        assert!(b.record && b.only.is_none());
        assert_eq!((b.proxy.requests, b.proxy.concurrency), (40, vec![1, 8]));
        let Ok(Task::Bench(b)) = parse("bench proxy --burst-chunks 9 --calibration-ms 2.5") else {
            panic!("bench proxy did not parse");
        };
        let Some(OneBench::Proxy(p)) = b.only else {
            panic!("bench proxy is not the proxy bench");
        };
        assert_eq!((p.requests, p.burst_chunks, p.spaced_chunks), (500, 9, 200));
        assert_eq!((p.calibration_ms, p.streams), (2.5, None));
        let Ok(Task::Bench(b)) = parse("bench cache") else {
            panic!("bench cache did not parse");
        };
        assert!(matches!(b.only, Some(OneBench::Cache)));
        let Ok(Task::Test { cargo_test }) = parse("test -p storycad-worker -- --nocapture") else {
            panic!("test with cargo arguments did not parse");
        };
        assert_eq!(cargo_test, ["-p", "storycad-worker", "--", "--nocapture"]);
        let Ok(Task::Soak(s)) = parse("soak --minutes 0.5 --miniflare --no-stream") else {
            panic!("soak did not parse");
        };
        assert_eq!(
            (s.minutes, s.users, s.miniflare, s.no_stream),
            (0.5, 32, true, true)
        );
        let Ok(Task::Fuzz(f)) = parse("fuzz --minutes 2 --target jwt") else {
            panic!("fuzz did not parse");
        };
        assert_eq!((f.targets(), f.sanitizer.as_str()), (vec!["jwt"], "none"));
    }

    #[test]
    fn csharp_options_parse() {
        let Ok(Task::Csharp(c)) = parse("csharp --release --rid win-arm64") else {
            panic!("csharp with options did not parse");
        };
        assert_eq!((c.release, c.rid.as_deref()), (true, Some("win-arm64")));
        let Ok(Task::Csharp(c)) = parse("csharp") else {
            panic!("csharp alone did not parse");
        };
        assert_eq!((c.release, c.rid), (false, None));
    }

    #[test]
    fn bad_options_are_refused() {
        for line in [
            "bench --concurrency 0",
            "bench --requests many",
            "bench proxy --burst-chunks 2",
            "bench proxy --calibration-ms 0",
            "bench proxy --json-only --cold-only",
            "bench client --record",
            "soak --via-wrangler --miniflare",
            "soak --users 0",
            "soak --minutes 0",
            "soak --minutes 2000",
            "fuzz",
            "fuzz --minutes 1 --target nope",
            "fuzz --minutes -1",
            "fuzz --minutes 1 --sanitizer memory",
            "csharp --rid win-x86",
            "csharp --rid",
            "unknown-task",
        ] {
            assert!(parse(line).is_err(), "`{line}` was accepted");
        }
    }
}
