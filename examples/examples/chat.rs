//! A chat REPL against the StoryCAD LLM proxy.
//!
//! ```sh
//! cargo run -p storycad-examples --example chat -- --base-url http://127.0.0.1:8787/v1 --token "$JWT"
//! ```
//!
//! The token may also come from `STORYCAD_TOKEN`, the base URL from `STORYCAD_BASE_URL`, the
//! model from `--model` or `STORYCAD_MODEL`. Answers stream as they arrive (a stream that
//! resumes after a dropped connection shows `(reconnected)` on stderr); Ctrl-C stops the
//! answer being generated, not the REPL. Commands: `/model NAME`, `/models`, `/reset`,
//! `/usage`, `/help`, `/quit`.

use std::io::{IsTerminal, Write};

use futures_util::StreamExt;
use rustyline::{error::ReadlineError, DefaultEditor};
use storycad_client::{Client, Error};
use storycad_examples::{describe_error, Args, Command};
use storycad_protocol::{ChatRequest, Message};
use tokio::sync::{mpsc, watch};

const HELP: &str = "commands: /model NAME  /models  /reset  /usage  /help  /quit
anything else is sent as your message; Ctrl-C stops an answer, Ctrl-D or /quit leaves";

#[tokio::main]
async fn main() {
    let args = match Args::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("error: {}", describe_error(&e));
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let client = Client::builder()
        .base_url(args.base_url.clone())
        .token(args.token.clone())
        .build()?;
    let mut model = match args.model.clone() {
        Some(m) => m,
        None => match client.models().await {
            Ok(list) if !list.data.is_empty() => list.data[0].id.clone(),
            Ok(_) => "storycad-fast".to_owned(),
            Err(e) => {
                eprintln!("could not list models: {}", describe_error(&e));
                "storycad-fast".to_owned()
            }
        },
    };
    println!(
        "connected to {} with model {model}; /help for commands",
        args.base_url
    );

    let mut interrupts = watch_interrupts();
    let mut lines = LineReader::spawn();
    let mut conversation: Vec<Message> = args.system.iter().map(Message::system).collect();
    while let Some(line) = lines.next_line().await {
        match Command::parse(&line) {
            Command::Empty => {}
            Command::Quit => break,
            Command::Help => println!("{HELP}"),
            Command::Reset => {
                conversation.retain(|m| m.role == storycad_protocol::Role::System);
                println!("(conversation cleared)");
            }
            Command::Model(None) => println!("model: {model}"),
            Command::Model(Some(name)) => {
                model = name;
                println!("(model is now {model})");
            }
            Command::Models => match client.models().await {
                Ok(list) => {
                    for m in list.data {
                        let mark = if m.id == model { "*" } else { " " };
                        println!("{mark} {}", m.id);
                    }
                }
                Err(e) => println!("error: {}", describe_error(&e)),
            },
            Command::Usage => match client.usage().await {
                Ok(u) => println!(
                    "plan {}: {}/{} requests left this minute, {}/{} tokens left today, \
                     {}/{} streams free",
                    u.plan,
                    u.requests.remaining,
                    u.requests.limit,
                    u.tokens.remaining,
                    u.tokens.limit,
                    u.streams.remaining,
                    u.streams.limit
                ),
                Err(e) => println!("error: {}", describe_error(&e)),
            },
            Command::Unknown(cmd) => println!("unknown command {cmd}; /help lists them"),
            Command::Say(text) => {
                conversation.push(Message::user(text));
                let request = ChatRequest::new(model.clone(), conversation.clone());
                match answer(&client, &request, &mut interrupts).await {
                    Ok(text) => conversation.push(Message::assistant(text)),
                    Err(e) => {
                        // The question stays unanswered: take it back so a retry sends it once.
                        conversation.pop();
                        println!("error: {}", describe_error(&e));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Counts Ctrl-C presses. Installed at start so that Ctrl-C never kills the REPL, whatever it
/// is doing; at a terminal prompt rustyline reads Ctrl-C as a key instead.
fn watch_interrupts() -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            tx.send_modify(|n| *n += 1);
        }
    });
    rx
}

/// Streams one answer to stdout; Ctrl-C stops it and keeps what was shown. A resumed
/// connection is noted on stderr, where the answer stands, so stdout keeps the answer alone.
async fn answer(
    client: &Client,
    request: &ChatRequest,
    interrupts: &mut watch::Receiver<u64>,
) -> Result<String, Error> {
    // A Ctrl-C pressed before this answer does not stop it.
    interrupts.borrow_and_update();
    let mut stream = client.chat_stream(request).await?;
    let mut text = String::new();
    let mut stdout = std::io::stdout();
    let mut resumptions = 0;
    loop {
        tokio::select! {
            item = stream.next() => match item {
                None => break,
                Some(Ok(chunk)) => {
                    if stream.meta().resumptions > resumptions {
                        resumptions = stream.meta().resumptions;
                        let _ = stdout.flush();
                        eprint!(" (reconnected) ");
                    }
                    if let Some(piece) = chunk.text() {
                        text.push_str(piece);
                        print!("{piece}");
                        let _ = stdout.flush();
                    }
                }
                Some(Err(e)) => {
                    println!();
                    return Err(e);
                }
            },
            _ = interrupts.changed() => {
                // Dropping the stream closes the connection, which stops the generation.
                println!("\n(stopped)");
                return Ok(text);
            }
        }
    }
    println!();
    Ok(text)
}

/// Reads lines on a thread of its own (rustyline blocks), with line editing and history when
/// stdin is a terminal and plain line reading when it is a pipe. It prompts only when asked, so
/// the prompt never lands in the middle of an answer.
struct LineReader {
    ask: std::sync::mpsc::Sender<()>,
    lines: mpsc::Receiver<String>,
}

impl LineReader {
    fn spawn() -> Self {
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tx, lines) = mpsc::channel(1);
        std::thread::spawn(move || {
            let Ok(mut editor) = DefaultEditor::new() else {
                return;
            };
            // History is kept for people at a terminal, not for piped input.
            let history = std::io::stdin()
                .is_terminal()
                .then(|| std::env::var_os("HOME"))
                .flatten()
                .map(|h| std::path::PathBuf::from(h).join(".storycad_chat_history"));
            if let Some(h) = &history {
                let _ = editor.load_history(h);
            }
            while asked.recv().is_ok() {
                let line = loop {
                    match editor.readline("> ") {
                        Ok(line) => break Some(line),
                        // Ctrl-C at the prompt clears the line, as in a shell.
                        Err(ReadlineError::Interrupted) => continue,
                        Err(_) => break None,
                    }
                };
                let Some(line) = line else { break };
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    if let Some(h) = &history {
                        let _ = editor.save_history(h);
                    }
                }
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        LineReader { ask, lines }
    }

    /// The next line typed, or `None` at the end of input.
    async fn next_line(&mut self) -> Option<String> {
        self.ask.send(()).ok()?;
        self.lines.recv().await
    }
}
