//! Stream-parsing throughput: storycad-client against async-openai, in one run.
//!
//! Serves a 10,000-chunk stream built from the recorded OpenAI chunks in
//! `fixtures/openai/chat_stream_parallel_tool_calls_usage.sse` from 127.0.0.1, reads it to the end
//! with both clients, interleaved over several rounds, and prints chunks/s for each, the median
//! of the rounds, and the ratio ours/theirs. Nothing passes or fails on absolute times.
//!
//! `cargo bench -p storycad-client --bench stream_parse` (`-- --rounds N --chunks N` to change
//! the defaults of 7 rounds of 10,000 chunks; `-- --only ours` or `-- --only theirs` runs one
//! client alone, for a profiler). With `STORYCAD_BENCH_SUMMARY=<file>` the medians are also
//! written there as JSON (for `cargo xtask bench`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_openai::{
    config::OpenAIConfig,
    types::{ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs},
};
use futures_util::StreamExt as _;
use storycad_client::{ChatRequest, Message};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fixture's chunk events repeated to `n` events, then `[DONE]`.
fn stream_body(n: usize) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/openai/chat_stream_parallel_tool_calls_usage.sse"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let events: Vec<&str> = text.lines().filter(|l| l.starts_with("data: {")).collect();
    let mut body = String::new();
    for i in 0..n {
        body.push_str(events[i % events.len()]);
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    body.into_bytes()
}

/// Answers every connection with the whole stream (read the request first).
async fn serve(body: Arc<Vec<u8>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                // Headers, then a body of content-length bytes.
                loop {
                    let Ok(n) = sock.read(&mut tmp).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            cache-control: no-cache\r\nconnection: close\r\n\r\n";
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

async fn ours(client: &storycad_client::Client, expected: usize) -> Duration {
    let req = ChatRequest::new("bench", vec![Message::user("hi")]);
    let started = Instant::now();
    let mut stream = client.chat_stream(&req).await.expect("ours: stream");
    let mut n = 0usize;
    while let Some(item) = stream.next().await {
        item.expect("ours: chunk");
        n += 1;
    }
    let took = started.elapsed();
    assert_eq!(n, expected, "ours: chunk count");
    took
}

async fn theirs(client: &async_openai::Client<OpenAIConfig>, expected: usize) -> Duration {
    let req = CreateChatCompletionRequestArgs::default()
        .model("bench")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .expect("message")
            .into()])
        .build()
        .expect("request");
    let started = Instant::now();
    let mut stream = client
        .chat()
        .create_stream(req)
        .await
        .expect("theirs: stream");
    let mut n = 0usize;
    while let Some(item) = stream.next().await {
        item.expect("theirs: chunk");
        n += 1;
    }
    let took = started.elapsed();
    assert_eq!(n, expected, "theirs: chunk count");
    took
}

/// CPU time of all this process's threads (Linux: `/proc/self/task/*/schedstat`, in ns), or
/// `None` elsewhere. On a shared machine CPU time per chunk is steadier than wall time.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // the thread ended meanwhile
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Wall time and CPU time of `f`.
async fn measure<F: std::future::Future<Output = Duration>>(f: F) -> (Duration, Option<Duration>) {
    let cpu0 = cpu_time();
    let wall = f.await;
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    (wall, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = arg("--rounds", 7);
    let chunks = arg("--chunks", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let body = Arc::new(stream_body(chunks));
        let addr = serve(body.clone()).await;
        let base = format!("http://{addr}/v1");
        let ours_client = storycad_client::Client::builder()
            .base_url(&base)
            .token("bench-token")
            .build()
            .expect("our client");
        let their_client = async_openai::Client::with_config(
            OpenAIConfig::new()
                .with_api_base(&base)
                .with_api_key("bench-token"),
        );
        println!(
            "stream_parse: {chunks} chunks ({:.1} MiB) per stream, {rounds} rounds, interleaved",
            body.len() as f64 / (1024.0 * 1024.0)
        );
        // `--only ours|theirs` runs one client alone, for a profiler.
        if let Some(i) = std::env::args().position(|a| a == "--only") {
            let which = std::env::args().nth(i + 1).unwrap_or_default();
            for _ in 0..rounds {
                let t = if which == "theirs" {
                    theirs(&their_client, chunks).await
                } else {
                    ours(&ours_client, chunks).await
                };
                println!("{which}: {:.0} chunks/s", chunks as f64 / t.as_secs_f64());
            }
            return;
        }
        // Warm-up: connections, allocator, caches.
        ours(&ours_client, chunks).await;
        theirs(&their_client, chunks).await;

        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut ca, mut cb) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate who goes first so neither always runs on a warmer machine.
            let ((ta, cpu_a), (tb, cpu_b)) = if round % 2 == 0 {
                let x = measure(ours(&ours_client, chunks)).await;
                (x, measure(theirs(&their_client, chunks)).await)
            } else {
                let y = measure(theirs(&their_client, chunks)).await;
                (measure(ours(&ours_client, chunks)).await, y)
            };
            let per_s = |t: Duration| chunks as f64 / t.as_secs_f64();
            let (ra, rb) = (per_s(ta), per_s(tb));
            let cpu_ns = |c: Option<Duration>| c.map_or(f64::NAN, |c| c.as_nanos() as f64 / chunks as f64);
            let (na, nb) = (cpu_ns(cpu_a), cpu_ns(cpu_b));
            println!(
                "round {round}: storycad-client {ra:>8.0} chunks/s {na:>6.0} cpu-ns/chunk | async-openai {rb:>8.0} chunks/s {nb:>6.0} cpu-ns/chunk | ratio {:.2} (cpu {:.2})",
                ra / rb,
                nb / na
            );
            a.push(ra);
            b.push(rb);
            ca.push(na);
            cb.push(nb);
        }
        let (ma, mb) = (median(a), median(b));
        let (mca, mcb) = (median(ca), median(cb));
        println!(
            "median: storycad-client {ma:.0} chunks/s ({mca:.0} CPU ns/chunk), async-openai {mb:.0} chunks/s ({mcb:.0} CPU ns/chunk)"
        );
        println!(
            "ratio ours/theirs (higher is better for us): throughput {:.2}, CPU efficiency {:.2}",
            ma / mb,
            mcb / mca
        );
        // `cargo xtask bench` reads the medians from here for its summary table.
        if let Some(path) = std::env::var_os("STORYCAD_BENCH_SUMMARY") {
            let summary = serde_json::json!({
                "chunks": chunks,
                "rounds": rounds,
                "ours_chunks_per_s": ma,
                "theirs_chunks_per_s": mb,
                "ours_cpu_ns_per_chunk": mca,
                "theirs_cpu_ns_per_chunk": mcb,
            });
            std::fs::write(path, summary.to_string()).expect("writing the bench summary");
        }
    });
}
