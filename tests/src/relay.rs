//! A TCP relay between a client and the Worker that can cut a connection mid-answer: what a
//! dropped Wi-Fi link does to a stream, on 127.0.0.1.
//!
//! Every connection is relayed byte for byte to `target`. [`CutRelay::cut_next`] arms a cut for
//! the next connection: once the answer's head has passed, the relay forwards that connection's
//! answer up to a point ([`Cut`]) and then closes both sides, the client's and the Worker's, as
//! a lost link does. Later connections pass untouched until another cut is armed. The relay
//! runs on the caller's tokio runtime and stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Where the next connection's answer is cut (counted in the answer's body as sent on the
/// wire, after its head: chunked framing included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// After this many body bytes (0: right after the head).
    AfterBytes(usize),
    /// Just before the first occurrence of this text in the body.
    Before(String),
}

#[derive(Default)]
struct Shared {
    armed: Option<Cut>,
    connections: usize,
    cuts: usize,
}

/// The relay; stops (and closes its connections) when dropped.
pub struct CutRelay {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    accept: JoinHandle<()>,
}

impl CutRelay {
    /// A relay on a free port of 127.0.0.1 to `target`, on the current tokio runtime.
    pub async fn start(target: SocketAddr) -> std::io::Result<CutRelay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            let mut tasks: Vec<JoinHandle<()>> = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                let cut = {
                    let mut s = state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    s.connections += 1;
                    s.armed.take()
                };
                let state = Arc::clone(&state);
                tasks.retain(|t| !t.is_finished());
                tasks.push(tokio::spawn(async move {
                    if relay(client, target, cut).await {
                        state
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .cuts += 1;
                    }
                }));
            }
        });
        Ok(CutRelay {
            addr,
            shared,
            accept,
        })
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts the next connection's answer at `cut`.
    pub fn cut_next(&self, cut: Cut) {
        self.lock().armed = Some(cut);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.lock().cuts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        // The connection tasks end with their sockets: the listener's task drops them all.
        self.accept.abort();
    }
}

/// Relays one connection; true when it was cut.
async fn relay(client: TcpStream, target: SocketAddr, cut: Option<Cut>) -> bool {
    let Ok(server) = TcpStream::connect(target).await else {
        return false;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut seen: Vec<u8> = Vec::new();
    let mut body_start: Option<usize> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut was_cut = false;
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = seen.len();
        seen.extend_from_slice(&buf[..n]);
        if body_start.is_none() {
            body_start = find(&seen, b"\r\n\r\n").map(|i| i + 4);
        }
        let stop = match (&cut, body_start) {
            (Some(cut), Some(start)) => cut_point(&seen, start, cut),
            _ => None,
        };
        let send_to = stop.map_or(seen.len(), |s| s.max(at));
        if client_write.write_all(&seen[at..send_to]).await.is_err() {
            break;
        }
        if stop.is_some() {
            was_cut = true;
            break;
        }
    }
    // Both sides closed: the client sees its answer end early, the Worker its caller gone.
    up.abort();
    drop(client_write);
    drop(server_read);
    was_cut
}

/// Where in `seen` (body from `start`) the cut falls, once that is known.
fn cut_point(seen: &[u8], start: usize, cut: &Cut) -> Option<usize> {
    match cut {
        Cut::AfterBytes(n) => {
            let at = start + n;
            (seen.len() >= at).then_some(at)
        }
        Cut::Before(text) => find(&seen[start..], text.as_bytes()).map(|i| start + i),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_points() {
        let seen = b"HTTP/1.1 200 OK\r\n\r\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n";
        let start = find(seen, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(cut_point(seen, start, &Cut::AfterBytes(0)), Some(start));
        assert_eq!(cut_point(seen, start, &Cut::AfterBytes(3)), Some(start + 3));
        assert_eq!(cut_point(seen, start, &Cut::AfterBytes(999)), None);
        let before = cut_point(seen, start, &Cut::Before("id: 2".into())).unwrap();
        assert_eq!(&seen[before..before + 5], b"id: 2");
        assert_eq!(cut_point(seen, start, &Cut::Before("id: 3".into())), None);
    }
}
