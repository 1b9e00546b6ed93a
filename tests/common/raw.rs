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
