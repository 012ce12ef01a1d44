//! A small HTTP/1.1 server layer over raw tokio TCP, for the fake servers.
//!
//! Raw TCP rather than hyper because the faults need exact bytes: close before the headers,
//! cut a chunked body in the middle, send garbage. Requests are parsed with `httparse` (hyper's
//! own parser); bodies with `Content-Length` or `Transfer-Encoding: chunked` are read whole.

use std::{io, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 32 * 1024 * 1024;
/// How long an idle keep-alive connection stays open.
const IDLE: Duration = Duration::from_secs(60);

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A server connection: the socket and what was read past the last request.
pub(crate) struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = timeout(IDLE, self.stream.read(&mut chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle connection"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next request, or `None` when the peer closed the connection between requests.
    pub async fn read_request(&mut self) -> io::Result<Option<Request>> {
        let (head_len, method, path, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (
                        len,
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                        headers,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(invalid("request head too large"));
                    }
                    if self.fill().await? == 0 {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(invalid("connection closed inside a request head"))
                        };
                    }
                }
                Err(e) => return Err(invalid(&format!("bad request head: {e}"))),
            }
        };
        self.buf.drain(..head_len);
        let mut req = Request {
            method,
            path,
            headers,
            body: Vec::new(),
        };
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            req.body = self.read_chunked().await?;
        } else if let Some(len) = req.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| invalid("bad content-length"))?;
            if len > MAX_BODY {
                return Err(invalid("body too large"));
            }
            while self.buf.len() < len {
                if self.fill().await? == 0 {
                    return Err(invalid("connection closed inside a body"));
                }
            }
            req.body = self.buf.drain(..len).collect();
        }
        Ok(Some(req))
    }

    async fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.drain(..pos + 2).take(pos).collect();
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("chunk line too long"));
            }
            if self.fill().await? == 0 {
                return Err(invalid("connection closed inside a chunked body"));
            }
        }
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let line = String::from_utf8_lossy(&line);
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("body too large"));
            }
            while self.buf.len() < size + 2 {
                if self.fill().await? == 0 {
                    return Err(invalid("connection closed inside a chunk"));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Writes a complete response with a `Content-Length` body.
    pub async fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut out = head(status, headers);
        out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    /// Writes a status line and headers announcing a chunked body.
    pub async fn start_chunked(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
    ) -> io::Result<()> {
        let mut out = head(status, headers);
        out.push_str("transfer-encoding: chunked\r\n\r\n");
        self.stream.write_all(out.as_bytes()).await?;
        self.stream.flush().await
    }

    /// Writes one chunk of a chunked body.
    pub async fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Ends a chunked body properly.
    pub async fn finish_chunked(&mut self) -> io::Result<()> {
        self.stream.write_all(b"0\r\n\r\n").await?;
        self.stream.flush().await
    }

    /// Writes raw bytes (for a body cut short).
    pub async fn raw(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }
}

/// What to do with the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    KeepAlive,
    Close,
}

fn head(status: u16, headers: &[(&str, String)]) -> String {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Site Overloaded",
        _ => "Status",
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Serves one connection: reads requests and hands each to `handle`, until the peer closes,
/// the handler asks to close, or the connection idles out.
pub(crate) async fn serve_conn<F, Fut>(stream: TcpStream, handle: F)
where
    F: Fn(Request, Conn) -> Fut,
    Fut: std::future::Future<Output = (Conn, After)>,
{
    let mut conn = Conn::new(stream);
    loop {
        let req = match conn.read_request().await {
            Ok(Some(req)) => req,
            Ok(None) | Err(_) => return,
        };
        let close = req.wants_close();
        let (c, after) = handle(req, conn).await;
        conn = c;
        if close || after == After::Close {
            let _ = conn.stream.shutdown().await;
            return;
        }
    }
}
