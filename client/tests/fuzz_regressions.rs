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

/// Runs `check` on a thread and fails if it takes longer than `limit`.
fn within(limit: std::time::Duration, check: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        check();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit)
        .expect("finished in time (the parse is linear in the body)");
}

/// Found with the `client_sse` check on hand-made 64 KiB inputs (0.7 s and 1.4 s each, 4x per
/// doubling): eventsource-stream copied the rest of its buffer for every line, so one event of
/// many lines cost time quadratic in its size, and it kept (and copied again for each piece)
/// every byte from the first one that is not UTF-8 to the end of the body. Lines now go to it
/// one at a time, and a body that is not UTF-8 fails at once. At 1 MiB the old code took
/// minutes.
#[test]
fn client_sse_long_events_and_bad_bytes_read_in_linear_time() {
    for name in ["many_lines_one_event", "not_utf8_then_blank_lines"] {
        let data = std::fs::read(fuzz_dir().join("regressions/client_sse").join(name))
            .expect("regression input");
        client_sse::check(&data);
    }
    within(std::time::Duration::from_secs(60), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // 1 MiB: one event of 256 Ki lines, then `[DONE]`.
        let mut body = b"data: {\"choices\":[]}\n".to_vec();
        body.extend(b"id:\n".repeat(256 * 1024));
        body.extend(b"\ndata: [DONE]\n\n");
        let items = rt.block_on(storycad_client::fuzzing::read_stream(vec![body.into()]));
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok(), "{items:?}");
        // 1 MiB after a byte that is not UTF-8: an error, at once.
        let mut body = b"data: {\"choices\":[]}\n\n\xff".to_vec();
        body.extend(b"\n\n".repeat(512 * 1024));
        let items = rt.block_on(storycad_client::fuzzing::read_stream(vec![body.into()]));
        assert_eq!(items.len(), 2, "{items:?}");
        let err = items[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    });
}

/// Found by `client_sse` (after the UTF-8 check above): a bad byte in the line after a lone
/// `\r` (a blank line only known as one when the next byte comes) failed the whole line at
/// once when it came in one read, but dispatched the event first when the read was cut before
/// the bad byte. The bytes before a bad one are now always handed on first, so the caller sees
/// the same items however the body was cut.
#[test]
fn client_sse_bytes_before_a_bad_one_are_read_first() {
    let data = std::fs::read(
        fuzz_dir().join("regressions/client_sse/not_utf8_after_a_pending_blank_line"),
    )
    .expect("regression input");
    client_sse::check(&data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let body = b"data: {\"choices\":[]}\r\rdata: \xff\n\n".to_vec();
    for cut in 0..=body.len() {
        let pieces = vec![body[..cut].to_vec().into(), body[cut..].to_vec().into()];
        let items = rt.block_on(storycad_client::fuzzing::read_stream(pieces));
        assert_eq!(items.len(), 2, "cut at {cut}: {items:?}");
        assert!(items[0].is_ok(), "cut at {cut}: {items:?}");
        let err = items[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "cut at {cut}: {err}");
    }
}
