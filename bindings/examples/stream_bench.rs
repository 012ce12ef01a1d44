//! The Rust side of the streaming benchmark (`bindings/python/bench_stream.py` runs it): reads
//! one long stream with storycad-client and prints the chunk count and the time per chunk.
//!
//! `stream_bench <base_url> <token> <words> <rounds>` prints one JSON line per round:
//! `{"chunks": N, "seconds": S}`, timed from the request to the end of the stream, as the
//! Python side times its `chat_stream` + `next()` loop.

use std::time::Instant;

use futures_util::StreamExt as _;
use storycad_client::{ChatRequest, Client, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base_url, token, words, rounds] = args.as_slice() else {
        return Err("usage: stream_bench <base_url> <token> <words> <rounds>".into());
    };
    let words: usize = words.parse()?;
    let rounds: usize = rounds.parse()?;
    let client = Client::builder()
        .base_url(base_url.clone())
        .token(token.clone())
        .build()?;
    let prompt = vec!["w"; words].join(" ");
    let request = ChatRequest::new("storycad-fast", vec![Message::user(prompt)]);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut stream = client.chat_stream(&request).await?;
        let mut chunks = 0u64;
        while let Some(chunk) = stream.next().await {
            std::hint::black_box(chunk?);
            chunks += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!("{{\"chunks\": {chunks}, \"seconds\": {seconds}}}");
    }
    Ok(())
}
