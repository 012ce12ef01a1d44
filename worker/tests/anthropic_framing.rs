//! The Anthropic relay (SSE framing + translation) on the recorded streams, at every chunking.

use storycad_protocol::{ChatChunk, ErrorBody};
use storycad_worker::providers::anthropic::{AnthropicStream, StreamTranslator, MAX_EVENT_BYTES};

const CREATED: u64 = 1_764_000_000;
const ALIAS: &str = "storycad-fast";
const STREAMS: [&str; 5] = [
    "messages_stream_basic_fixture.sse",
    "messages_stream_text.sse",
    "messages_stream_tool_use.sse",
    "messages_stream_text_then_tool_use.sse",
    "messages_stream_error_overloaded.sse",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn relay_in_pieces(body: &[u8], piece: usize) -> (Vec<u8>, AnthropicStream) {
    let mut relay = AnthropicStream::new(ALIAS, CREATED, true);
    let mut out = Vec::new();
    for chunk in body.chunks(piece) {
        out.extend(relay.feed(chunk));
    }
    out.extend(relay.finish());
    (out, relay)
}

/// The events of an SSE body, split the simple way (every recorded event is terminated).
fn simple_events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_owned();
                }
            }
            (name, data)
        })
        .collect()
}

#[test]
fn every_chunking_gives_the_same_output_as_the_translator() {
    for name in STREAMS {
        let body = fixture(name);
        let mut tr = StreamTranslator::new(ALIAS, CREATED, true);
        let mut expected = Vec::new();
        for (event, data) in simple_events(std::str::from_utf8(&body).unwrap()) {
            tr.on_event(event.as_deref(), &data, &mut expected);
        }
        tr.finish(&mut expected);

        for piece in [body.len(), 1, 2, 7, 64] {
            let (out, relay) = relay_in_pieces(&body, piece);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected.clone()).unwrap(),
                "{name} in {piece}-byte pieces"
            );
            assert!(relay.is_closed());
        }

        let crlf = String::from_utf8(body.clone())
            .unwrap()
            .replace('\n', "\r\n");
        for piece in [crlf.len(), 1, 3] {
            let (out, _) = relay_in_pieces(crlf.as_bytes(), piece);
            assert_eq!(out, expected, "{name} with CRLF in {piece}-byte pieces");
        }
        let cr = String::from_utf8(body.clone()).unwrap().replace('\n', "\r");
        let (out, _) = relay_in_pieces(cr.as_bytes(), 5);
        assert_eq!(out, expected, "{name} with CR line ends");
    }
}

#[test]
fn final_event_without_its_blank_line_still_completes_the_stream() {
    let body = fixture("messages_stream_text_then_tool_use.sse");
    assert!(!body.ends_with(b"\n\n"));
    let (out, relay) = relay_in_pieces(&body, 11);
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("[DONE]").count(), 1);
    assert!(relay.error().is_none());
    let usage = relay.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (377, 65));
}

#[test]
fn a_cut_off_event_is_truncation() {
    let body = fixture("messages_stream_text.sse");
    let text = std::str::from_utf8(&body).unwrap();
    // Cut inside the message_delta JSON.
    let delta = text.find("event: message_delta").unwrap();
    let cut = delta + text[delta..].find("\"stop_reason\"").unwrap();
    let (out, relay) = relay_in_pieces(&body[..cut], 13);
    let last = String::from_utf8(out).unwrap();
    let last = last.trim_end().rsplit("\n\n").next().unwrap().to_owned();
    let err: ErrorBody = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err.error.code.as_deref(), Some("stream_truncated"));
    assert_eq!(relay.error(), Some(&err));
    // What came is still charged.
    let usage = relay.usage().unwrap();
    assert_eq!(usage.prompt_tokens, 135);
    // 13 bytes of text relayed; Anthropic had reported 1 token.
    assert_eq!(usage.completion_tokens, 4);
    assert!(String::from_utf8(relay_in_pieces(&body[..cut], 13).0)
        .unwrap()
        .contains("67890]"));
}

#[test]
fn events_go_out_as_soon_as_their_blank_line_arrives() {
    let body = fixture("messages_stream_text.sse");
    let text = std::str::from_utf8(&body).unwrap();
    let first_end = text.find("\n\n").unwrap();
    let mut relay = AnthropicStream::new(ALIAS, CREATED, false);
    assert!(
        relay.feed(&body[..first_end + 1]).is_empty(),
        "not yet whole"
    );
    let out = relay.feed(&body[first_end + 1..first_end + 2]);
    let line = String::from_utf8(out).unwrap();
    let chunk: ChatChunk =
        serde_json::from_str(line.strip_prefix("data: ").unwrap().trim_end()).unwrap();
    assert_eq!(chunk.id, "msg_013nnniYDrJDocdy5nrMU7cH");
    assert_eq!(chunk.choices[0].delta.content.as_deref(), Some(""));
}

#[test]
fn utf8_split_across_chunks_is_fine_and_bom_is_skipped() {
    let body = "\u{feff}event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_u\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"héllo 🚀\"}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let (out, relay) = relay_in_pieces(body.as_bytes(), 1);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"content\":\"héllo 🚀\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(relay.error().is_none());
}

#[test]
fn invalid_utf8_and_oversized_events_are_upstream_errors() {
    let mut relay = AnthropicStream::new(ALIAS, CREATED, false);
    let out = relay.feed(b"event: ping\ndata: \xff\xfe\n\n");
    assert!(String::from_utf8_lossy(&out).contains("upstream_error"));
    assert!(relay.is_closed());
    assert!(relay.feed(b"event: message_stop\n\n").is_empty());
    assert!(relay.finish().is_empty());

    let mut relay = AnthropicStream::new(ALIAS, CREATED, false);
    let mut out = Vec::new();
    let big = vec![b'a'; 1024 * 1024];
    out.extend(relay.feed(b"data: "));
    for _ in 0..5 {
        out.extend(relay.feed(&big));
    }
    assert!(5 * big.len() > MAX_EVENT_BYTES);
    assert!(String::from_utf8_lossy(&out).contains("upstream_error"));
    assert!(relay.is_closed());
}

#[test]
fn fail_ends_an_open_stream_once() {
    let body = fixture("messages_stream_text.sse");
    let mut relay = AnthropicStream::new(ALIAS, CREATED, false);
    let mut out = relay.feed(&body[..400]);
    out.extend(relay.fail(ErrorBody::new(
        "server_error",
        "upstream_timeout",
        "the upstream stalled",
    )));
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("\n\n"));
    assert!(text.contains("upstream_timeout"));
    assert!(!text.contains("[DONE]"));
    assert!(relay.fail(ErrorBody::new("x", "y", "z")).is_empty());
    assert!(relay.finish().is_empty());
}
