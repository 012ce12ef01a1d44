//! A scripted HTTP/1.1 server on 127.0.0.1:0 over raw TCP, so a test controls the exact bytes
//! and timing: one scripted [`Action`] per accepted connection, every request recorded.
#![allow(dead_code)]

pub mod tls;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use storycad_client::{Client, ClientBuilder, RetryPolicy, Timeouts};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the server does on one connection, after reading the request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes in one write.
    Write(Vec<u8>),
    /// Write these bytes one byte per write.
    WriteBytewise(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Read until the client closes the connection (up to 5 s) and record that it did.
    WaitClientClose,
}

/// A scripted answer: a list of steps, then the connection is closed.
#[derive(Debug, Clone)]
pub struct Action {
    pub steps: Vec<Step>,
}

impl Action {
    /// A complete answer with `content-length`.
    pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let mut head = head(status, headers);
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        Action {
            steps: vec![Step::Write(bytes)],
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, body: &str) -> Self {
        Self::respond(status, &[("content-type", "application/json")], body)
    }

    /// A JSON answer with extra headers.
    pub fn json_with(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        Self::respond(status, &all, body)
    }

    /// An OpenAI-style error answer.
    pub fn error(status: u16, code: &str, headers: &[(&str, &str)]) -> Self {
        let body = format!(
            r#"{{"error":{{"message":"scripted {code}","type":"test_error","code":"{code}","param":null}}}}"#
        );
        Self::json_with(status, headers, &body)
    }

    /// An SSE answer whose body runs until the connection closes, written in one go.
    pub fn sse(body: impl Into<Vec<u8>>) -> Self {
        Self::sse_steps(&[], vec![Step::Write(body.into())])
    }

    /// SSE headers (plus `extra`), then `steps` as the body (until close).
    pub fn sse_steps(extra: &[(&str, &str)], mut steps: Vec<Step>) -> Self {
        let mut h = vec![("content-type", "text/event-stream")];
        h.extend_from_slice(extra);
        let mut head = head(200, &h);
        head.push_str("\r\n");
        steps.insert(0, Step::Write(head.into_bytes()));
        Action { steps }
    }

    /// Read the request, then close without answering.
    pub fn reset() -> Self {
        Action { steps: vec![] }
    }
}

fn head(status: u16, headers: &[(&str, &str)]) -> String {
    let mut s = format!("HTTP/1.1 {status} Scripted\r\nconnection: close\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s
}

/// One HTTP/1.1 chunk of chunked transfer-encoding.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Action>,
    fallback: Option<Action>,
    requests: Vec<Recorded>,
    client_closed: u32,
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    shared: Arc<Mutex<Shared>>,
    closed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serves `script` in order, one action per connection; after it, a 599 answer.
    pub async fn start(script: Vec<Action>) -> Self {
        Self::start_with(script, None).await
    }

    /// Serves `script`, then `fallback` on every further connection.
    pub async fn start_with(script: Vec<Action>, fallback: Option<Action>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Shared {
            script: script.into(),
            fallback,
            ..Shared::default()
        }));
        let closed = Arc::new(Notify::new());
        let (s, c) = (shared.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, s, c).await;
                });
            }
        });
        TestServer {
            addr,
            shared,
            closed,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().expect("lock").requests.clone()
    }

    pub fn hits(&self) -> usize {
        self.shared.lock().expect("lock").requests.len()
    }

    /// Waits (up to `within`) until a [`Step::WaitClientClose`] saw the client close.
    pub async fn wait_client_closed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.closed.notified();
            if self.shared.lock().expect("lock").client_closed > 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return self.shared.lock().expect("lock").client_closed > 0;
            }
        }
    }

    /// A client for this server with fast retries (backoff 10 ms to 40 ms) and a static token.
    pub fn client(&self) -> Client {
        self.builder().build().expect("client")
    }

    pub fn builder(&self) -> ClientBuilder {
        Client::builder()
            .base_url(self.base_url())
            .token("test-token")
            .retry_policy(fast_retries())
            .timeouts(
                Timeouts::default()
                    .with_connect(Duration::from_secs(2))
                    .with_response_headers(Duration::from_secs(5))
                    .with_stream_idle(Duration::from_secs(5)),
            )
    }
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(40))
}

async fn serve(
    mut sock: TcpStream,
    shared: Arc<Mutex<Shared>>,
    closed: Arc<Notify>,
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let Some(req) = read_request(&mut sock).await? else {
        return Ok(());
    };
    let action = {
        let mut s = shared.lock().expect("lock");
        s.requests.push(req);
        s.script.pop_front().or_else(|| s.fallback.clone())
    };
    let action =
        action.unwrap_or_else(|| Action::json(599, r#"{"error":{"message":"script exhausted"}}"#));
    for step in action.steps {
        match step {
            Step::Write(b) => {
                sock.write_all(&b).await?;
                sock.flush().await?;
            }
            Step::WriteBytewise(b) => {
                for byte in b {
                    sock.write_all(&[byte]).await?;
                    sock.flush().await?;
                }
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::WaitClientClose => {
                let mut buf = [0u8; 1024];
                let seen = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .is_ok();
                if seen {
                    shared.lock().expect("lock").client_closed += 1;
                    closed.notify_waiters();
                }
            }
        }
    }
    sock.shutdown().await
}

async fn read_request(sock: &mut TcpStream) -> std::io::Result<Option<Recorded>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut tmp))
            .await
            .map_err(|_| std::io::Error::other("request read timeout"))??;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let at = Instant::now();
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut tmp))
            .await
            .map_err(|_| std::io::Error::other("body read timeout"))??;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
        at,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A recorded OpenAI answer from the workspace's `fixtures/openai`.
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/openai")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A minimal request.
pub fn request() -> storycad_client::ChatRequest {
    storycad_client::ChatRequest::new(
        "storycad-fast",
        vec![storycad_client::Message::user("hello")],
    )
}

/// One SSE event with a text delta.
pub fn text_event(text: &str) -> String {
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
        serde_json::to_string(text).expect("json")
    )
}

/// A whole test is bounded by this.
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test took longer than 20 s")
}
