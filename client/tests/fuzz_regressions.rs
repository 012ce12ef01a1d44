//! The `client_sse` fuzz target's inputs replayed as ordinary tests: every committed seed
//! (`fuzz/seeds/client_sse`) and every input the fuzzer found (`fuzz/regressions/client_sse`)
//! goes through the very check the fuzz target runs (`fuzz/checks/client_sse.rs`), so
//! `cargo test` keeps each fix. `cargo xtask fuzz` runs the fuzzer itself.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/client_sse.rs"]
mod client_sse;
#[path = "../../fuzz/checks/pieces.rs"]
mod pieces;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The committed inputs: the seeds, then the regressions.
fn inputs() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join("client_sse")) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.expect("directory entry").path())
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).expect("committed input");
            out.push((p, bytes));
        }
    }
    out
}

#[test]
fn client_sse_inputs() {
    let inputs = inputs();
    assert!(inputs.len() >= 5, "only {} committed inputs", inputs.len());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, bytes)| std::panic::catch_unwind(|| client_sse::check(bytes)).is_err())
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "failing inputs {failed:#?}");
}

/// A recorded stream read in pieces gives its chunks and ends at `[DONE]` without an error: the
/// entry point the fuzzer drives is the real stream.
#[tokio::test]
async fn the_fuzz_entry_point_reads_a_recorded_stream() {
    let seed = std::fs::read(fuzz_dir().join("seeds/client_sse/chat_stream_text_usage")).unwrap();
    let input = pieces::Input::parse(&seed);
    let pieces = input
        .body
        .chunks(7)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let items = storycad_client::fuzzing::read_stream(pieces).await;
    assert!(items.len() > 3, "{} items", items.len());
    let text: String = items
        .iter()
        .map(|i| i.as_ref().unwrap().text().unwrap_or("").to_owned())
        .collect();
    assert!(
        text.starts_with("I'm unable to provide real-time"),
        "{text}"
    );
}
