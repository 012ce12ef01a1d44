//! Drives the `chat` example with piped stdin against a fake provider on 127.0.0.1.
#![allow(clippy::unwrap_used)] // test helpers, like the tests, fail by panicking

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
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
