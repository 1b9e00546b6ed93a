//! Raw HTTP/1.1 over TCP, for requests a normal client would rewrite or refuse to send.
//!
//! reqwest (through `url`) normalises `..`, `%2e` and backslashes before a request leaves, so
//! tests about what the gateway does with such paths write the request line themselves.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one raw exchange may take, connect to EOF.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `request` exactly as given and reads the response until the server closes the
/// connection (so send `Connection: close`). Returns (status, header block, body), the header
/// block being every line after the status line, and the body de-chunked when it was chunked.
pub async fn request(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    request_with_timeout(addr, request, TIMEOUT).await
}

/// [`request`] with another time limit; panics when it is exceeded.
pub async fn request_with_timeout(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> (u16, String, String) {
    let shown = String::from_utf8_lossy(request).into_owned();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        stream.flush().await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => panic!("raw request {shown:?}: {error}"),
        Err(_) => panic!("raw request {shown:?}: no complete response within {timeout:?}"),
    };
    parse(&response).unwrap_or_else(|error| {
        panic!(
            "raw request {shown:?}: {error}; got {:?}",
            String::from_utf8_lossy(&response)
        )
    })
}

/// `GET target` with `key` as a bearer token and `Connection: close`.
pub async fn get(addr: SocketAddr, target: &str, key: &str) -> (u16, String, String) {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    self::request(addr, request.as_bytes()).await
}

/// `GET target` with no credential but what the target carries (e.g. `?key=`).
pub async fn get_without_header(addr: SocketAddr, target: &str) -> (u16, String, String) {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n");
    self::request(addr, request.as_bytes()).await
}

/// The `error.code` of the one JSON error body, or "" when the body is not one.
pub fn error_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The value of the first header called `name` (case-insensitive) in a header block.
pub fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn parse(response: &[u8]) -> Result<(u16, String, String), String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in the response")?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| "headers are not UTF-8")?;
    let raw_body = &response[split + 4..];
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let mut words = status_line.split(' ');
    match words.next() {
        Some("HTTP/1.1" | "HTTP/1.0") => {}
        other => return Err(format!("not an HTTP/1 status line (version {other:?})")),
    }
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let headers = headers.replace("\r\n", "\n");
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_line = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// One HTTP/1 message read off a connection: its start line, header block and body.
#[derive(Debug)]
pub struct Message {
    /// `HTTP/1.1 200 OK` or `GET /x HTTP/1.1`.
    pub start: String,
    /// Every header line, `\n`-separated.
    pub headers: String,
    pub body: Vec<u8>,
}

impl Message {
    /// The status code of a response.
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {:?}", self.start))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Every value of the header called `name`, one per line.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error.code` of the one JSON error body, or "".
    pub fn code(&self) -> String {
        error_code(&self.text())
    }
}

/// A byte stream read message by message: the client side of a kept-open connection to the
/// gateway, or the server side of a connection from it (see `raw_upstream`).
pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; 0 at EOF (a reset counts as EOF).
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// The next `\r\n`-terminated line, without its end; None at EOF first.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Some(line);
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await == 0 {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Reads one message: None at a clean EOF before it starts. A message cut short panics,
    /// unless it is close-delimited. `bodiless` is for responses that carry no body (to HEAD,
    /// 1xx, 204, 304).
    pub async fn message(&mut self, bodiless: bool) -> Option<Message> {
        let start = self.line().await?;
        let mut headers = String::new();
        loop {
            let line = self.line().await.expect("EOF inside a header block");
            if line.is_empty() {
                break;
            }
            headers.push_str(&line);
            headers.push('\n');
        }
        let mut message = Message {
            start,
            headers,
            body: Vec::new(),
        };
        let informational = message.start.starts_with("HTTP/") && message.status() < 200;
        if bodiless || informational {
            return Some(message);
        }
        let chunked = message
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
        let length = message.header("content-length").map(|n| n.parse().unwrap());
        if chunked {
            loop {
                let size_line = self.line().await.expect("EOF before the last chunk");
                let size = usize::from_str_radix(size_line.split(';').next().unwrap(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
                if size == 0 {
                    while !self.line().await.expect("EOF in the trailer").is_empty() {}
                    break;
                }
                let data = self.exact(size + 2).await.expect("EOF inside a chunk");
                message.body.extend_from_slice(&data[..size]);
            }
        } else if let Some(length) = length {
            message.body = self.exact(length).await.unwrap_or_else(|| {
                panic!("EOF inside a body of {length} bytes: {:?}", message.start)
            });
        } else if message.start.starts_with("HTTP/") {
            while self.fill().await > 0 {}
            message.body = std::mem::take(&mut self.buf);
        }
        Some(message)
    }

    /// Everything that arrives until the peer closes (or resets) the connection.
    pub async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}

/// A kept-open client connection to the gateway: send bytes, read responses one at a time,
/// see whether the gateway closed it. Every read is bounded by [`TIMEOUT`].
pub struct Conn {
    pub wire: Wire,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn {
            wire: Wire::new(TcpStream::connect(addr).await.expect("connect")),
        }
    }

    /// Opens a connection and sends `{start} HTTP/1.1` (e.g. `start` = "PUT /v1/article/a1"),
    /// `Host: kb.example`, `key` as a bearer token, then `rest` as given (more header lines,
    /// the blank line, any body).
    pub async fn open_keyed(addr: SocketAddr, start: &str, key: &str, rest: &str) -> Conn {
        let mut conn = Conn::open(addr).await;
        let head =
            format!("{start} HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n");
        conn.send(format!("{head}{rest}").as_bytes()).await.unwrap();
        conn
    }

    /// Writes `bytes` as given; the gateway may already have closed, so errors are returned.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wire.send(bytes).await
    }

    /// The next response; panics when none comes within [`TIMEOUT`].
    pub async fn response(&mut self) -> Message {
        self.next_response(false)
            .await
            .expect("the gateway closed the connection instead of answering")
    }

    /// The next response, or None when the gateway closes the connection first.
    pub async fn next_response(&mut self, bodiless: bool) -> Option<Message> {
        tokio::time::timeout(TIMEOUT, self.wire.message(bodiless))
            .await
            .expect("no response within the time limit")
    }

    /// Waits for the gateway to close the connection; returns what it sent until then.
    pub async fn until_closed(&mut self) -> Vec<u8> {
        tokio::time::timeout(TIMEOUT, self.wire.rest())
            .await
            .expect("the gateway kept the connection open")
    }
}
