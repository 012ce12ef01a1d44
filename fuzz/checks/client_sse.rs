//! `client_sse`: a 200 answer's SSE body, whole and in pieces, through the client's
//! `ChatStream` (`storycad_client::fuzzing::read_stream`).
//!
//! Checked: no panic; the same chunks and the same ending (compared by their `Debug` text)
//! whether the body arrives whole or cut anywhere; at most one error, and only as the last item;
//! a stream without error saw `data: [DONE]` (it never ends silently).

use bytes::Bytes;
use storycad_client::fuzzing::read_stream;

use crate::pieces::Input;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a Tokio runtime")
    })
}

fn read(pieces: &[&[u8]]) -> Vec<String> {
    let pieces = pieces.iter().map(|p| Bytes::copy_from_slice(p)).collect();
    let items = runtime().block_on(read_stream(pieces));
    let errors = items.iter().filter(|i| i.is_err()).count();
    assert!(errors <= 1, "{errors} errors");
    if errors == 1 {
        assert!(
            items.last().is_some_and(Result::is_err),
            "items after an error"
        );
    }
    items.iter().map(|i| format!("{i:?}")).collect()
}

/// The check for one fuzz input; panics on a violation.
pub fn check(data: &[u8]) {
    let input = Input::parse(data);
    let whole = read(&[input.body]);
    let cut = read(&input.pieces());
    assert_eq!(whole, cut, "pieces changed what the client read");
    let done = input.body.windows(6).any(|w| w == b"[DONE]");
    if whole.last().is_none_or(|l| !l.starts_with("Err(")) {
        assert!(done, "the stream ended without [DONE] and without an error");
    }
}
