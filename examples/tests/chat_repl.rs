//! Drives the `chat` example with piped stdin against a fake provider on 127.0.0.1.
#![allow(clippy::unwrap_used)] // test helpers, like the tests, fail by panicking

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use storycad_e2e::fake_provider::FakeProvider;

/// The example binary, which `cargo test` builds beside this test's own binary.
fn chat_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug_dir = exe.parent().unwrap().parent().unwrap();
    let bin = debug_dir.join("examples").join("chat");
    assert!(
        bin.exists(),
        "{} is missing: run cargo test -p storycad-examples",
        bin.display()
    );
    bin
}

/// Runs the REPL with `input` on stdin; returns (stdout, stderr, exit success).
fn run_repl(base_url: &str, input: &str) -> (String, String, bool) {
    let mut child = Command::new(chat_binary())
        .args(["--base-url", base_url, "--model", "storycad-fast"])
        .env("STORYCAD_TOKEN", "test-token")
        .env_remove("HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the REPL did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[test]
fn repl_streams_answers_keeps_the_conversation_and_explains_errors() {
    let provider = FakeProvider::start().unwrap();
    let input = "hello there\n\
                 /model storycad-other\n\
                 second question\n\
                 fault:429=90 please\n\
                 /usage\n\
                 /bogus\n\
                 /reset\n\
                 after reset\n\
                 /quit\n\
                 never sent\n";
    let (stdout, stderr, ok) = run_repl(&provider.openai_base_url(), input);
    assert!(ok, "exit failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("echo: hello there"), "{stdout}");
    assert!(stdout.contains("(model is now storycad-other)"), "{stdout}");
    assert!(stdout.contains("echo: second question"), "{stdout}");
    // A server delay above the client's limit comes back at once, in plain words.
    assert!(
        stdout.contains("rate limited: try again in 90 s"),
        "{stdout}"
    );
    // The fake provider has no /v1/usage: a clear error, and the REPL goes on.
    assert!(stdout.contains("error: HTTP 404"), "{stdout}");
    assert!(stdout.contains("unknown command /bogus"), "{stdout}");
    assert!(stdout.contains("echo: after reset"), "{stdout}");

    let chats: Vec<_> = provider
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(chats.len(), 4, "hello, second, fault, after reset");
    let bodies: Vec<serde_json::Value> = chats.iter().map(|r| r.json().unwrap()).collect();
    // Streamed, with the model chosen at the time.
    assert_eq!(bodies[0]["stream"], true);
    assert_eq!(bodies[0]["model"], "storycad-fast");
    assert_eq!(bodies[1]["model"], "storycad-other");
    // The conversation is kept: question, answer, question.
    let second = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(second.len(), 3);
    assert_eq!(second[1]["role"], "assistant");
    assert_eq!(second[1]["content"], "echo: hello there");
    // The failed question was taken back, and /reset forgot the rest.
    let third = bodies[2]["messages"].as_array().unwrap();
    assert_eq!(third.len(), 5);
    let after_reset = bodies[3]["messages"].as_array().unwrap();
    assert_eq!(after_reset.len(), 1);
    assert_eq!(after_reset[0]["content"], "after reset");
    // Nothing after /quit was sent.
    assert!(provider.requests_containing("never sent").is_empty());
}

#[test]
fn repl_without_token_says_how_to_give_one() {
    let out = Command::new(chat_binary())
        .args(["--base-url", "http://127.0.0.1:9/v1"])
        .env_remove("STORYCAD_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STORYCAD_TOKEN"), "{stderr}");
}

#[test]
fn ctrl_c_stops_the_answer_not_the_repl() {
    let provider = FakeProvider::start().unwrap();
    let mut child = Command::new(chat_binary())
        .args(["--base-url", &provider.openai_base_url(), "--model", "m"])
        .env("STORYCAD_TOKEN", "test-token")
        .env_remove("HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // 21 pieces, 300 ms apart: about 6 s unless stopped.
    stdin
        .write_all(b"fault:slow=300 a b c d e f g h i j k l m n o p q r s t\n")
        .unwrap();
    let started = Instant::now();
    while provider.requests_containing("fault:slow").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the question never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let a few pieces through, then press Ctrl-C.
    std::thread::sleep(Duration::from_millis(1000));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    stdin.write_all(b"after the stop\n/quit\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(stopped)"), "{stdout}");
    assert!(stdout.contains("echo: after the stop"), "{stdout}");
    // The stopped answer was partial, and what was shown is kept in the conversation.
    let last = provider.requests_containing("after the stop");
    let body = last[0].json().unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    let partial = messages[1]["content"].as_str().unwrap();
    assert!(partial.starts_with("echo:"), "{partial}");
    assert!(
        !partial.ends_with(" t"),
        "the answer was not stopped: {partial}"
    );
}

/// A Worker stand-in on 127.0.0.1 whose streamed answer is resumable and cut after two events;
/// the resume (`GET .../streams/s-1`) sends the rest. Returns the base URL and the request lines
/// received.
fn resumable_worker() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let event = |n: u32, data: &str| format!("id: {n}\ndata: {data}\n\n");
    let chunk = |text: &str| {
        serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": {"content": text},
            "finish_reason": null}]})
        .to_string()
    };
    let first = event(1, &chunk("Once")) + &event(2, &chunk(" upon"));
    let rest = event(3, &chunk(" a time.")) + &event(4, "[DONE]");
    // Serves until the test process ends; each answer closes its connection.
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            let _ = sock.read_exact(&mut body);
            let line = head.lines().next().unwrap_or("").to_owned();
            let (extra, body) = if line.starts_with("get /v1/chat/completions/streams/s-1") {
                ("", rest.as_str())
            } else {
                ("x-storycad-stream-id: s-1\r\n", first.as_str())
            };
            log.lock().unwrap().push(line);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\
                 {extra}\r\n{body}"
            );
            let _ = sock.write_all(answer.as_bytes());
        }
    });
    (base_url, seen)
}

#[test]
fn a_resumed_answer_is_shown_whole_with_a_note() {
    let (base_url, seen) = resumable_worker();
    let (stdout, stderr, ok) = run_repl(&base_url, "tell me a story\n/quit\n");
    assert!(ok, "exit failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Once upon a time."), "{stdout}");
    assert!(stderr.contains("(reconnected)"), "{stderr}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1].starts_with("get /v1/chat/completions/streams/s-1"),
        "{seen:?}"
    );
}
