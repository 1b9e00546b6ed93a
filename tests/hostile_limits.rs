//! Limits, each with a clear answer: header size (431), URI length (414), body size per route
//! and globally (413), the connection cap, HTTP/2 concurrent streams, the header read timeout
//! against slowloris clients, and the body timeout against slow uploads (408). The slow
//! clients are written here, byte by byte.

mod common;

use common::raw::{self, Conn};
use common::{FakeKb, RunningKb, TestGateway, shipped_yaml};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KIB: usize = 1024;

fn get_with_header(key: &str, name: &str, value: &str) -> String {
    format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n{name}: {value}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let limit = 32 * KIB; // the default limits.max_header_size

    // Just under the limit: served.
    let under = get_with_header(&key, "X-Big", &"a".repeat(limit - 200));
    let (status, _, body) = raw::request(gateway.addr, under.as_bytes()).await;
    assert_eq!(status, 200, "{body}");

    // One big field, or many small ones, past the limit: the gateway's 431 JSON.
    let one_big = get_with_header(&key, "X-Big", &"a".repeat(limit + 1));
    let many = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n{}Connection: close\r\n\r\n",
        (0..90)
            .map(|i| format!("X-Field-{i}: {}\r\n", "b".repeat(400)))
            .collect::<String>()
    );
    for request in [one_big, many] {
        let (status, headers, body) = raw::request(gateway.addr, request.as_bytes()).await;
        assert_eq!(
            (status, raw::error_code(&body).as_str()),
            (431, "headers_too_large")
        );
        assert_eq!(
            raw::header(&headers, "content-type"),
            Some("application/json")
        );
    }

    // Far past it, or more fields than the parser keeps: hyper's own bare 431, and the
    // connection closed (raw::request reads to EOF).
    let huge = get_with_header(&key, "X-Huge", &"a".repeat(256 * KIB));
    let too_many = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    for request in [huge, too_many] {
        let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
        assert_eq!((status, body.as_str()), (431, ""));
    }
    upstream.assert_count(1, "only the request under the limit");
    gateway.shutdown().await;
}

#[tokio::test]
async fn overlong_uris_get_414() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let limit = 8 * KIB; // the default limits.max_uri_length
    let target = |len: usize| {
        let prefix = "/v1/search?query=";
        format!("{prefix}{}", "q".repeat(len - prefix.len()))
    };
    let (status, _, _) = raw::get(gateway.addr, &target(limit), &key).await;
    assert_eq!(status, 200);
    let (status, headers, body) = raw::get(gateway.addr, &target(limit + 1), &key).await;
    assert_eq!(
        (status, raw::error_code(&body).as_str()),
        (414, "uri_too_long")
    );
    assert_eq!(
        raw::header(&headers, "content-type"),
        Some("application/json")
    );
    // Past the 64 KiB hyper accepts at all: its bare 414.
    let (status, _, body) = raw::get(gateway.addr, &target(70 * KIB), &key).await;
    assert_eq!((status, body.as_str()), (414, ""));
    assert_eq!(upstream.requests().len(), 1);
    gateway.shutdown().await;
}

/// The shipped routes with `max_body` set on two of them: lower than the global limit on
/// `POST /v1/article`, higher on `PUT /v1/category/{id}`.
fn yaml_with_route_limits() -> String {
    let text = shipped_yaml();
    let mut edited = text.clone();
    for (from, to) in [
        (
            r#"permission: "article:write", event: article.created }"#,
            r#"permission: "article:write", event: article.created, max_body: 1KiB }"#,
        ),
        (
            r#"path: "/v1/category/{id}",             permission: "category:write" }"#,
            r#"path: "/v1/category/{id}",             permission: "category:write", max_body: 8KiB }"#,
        ),
    ] {
        assert_eq!(edited.matches(from).count(), 1, "{from}");
        edited = edited.replacen(from, to, 1);
    }
    edited
}

async fn send_body(
    gateway: &TestGateway,
    key: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let response = gateway
        .client
        .request(method.parse().unwrap(), gateway.url(path))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    common::status_and_code(response).await
}

#[tokio::test]
async fn bodies_over_the_route_or_global_limit_get_413() {
    let (upstream, gateway, key) = TestGateway::builder()
        .yaml(&yaml_with_route_limits())
        .config(|config| {
            config.limits.max_body = 2 * KIB as u64;
        })
        .start_with_key()
        .await;
    let too_large = (413, "body_too_large".to_string());
    let cases = [
        ("POST", "/v1/article", KIB, (200, String::new())),
        ("POST", "/v1/article", KIB + 1, too_large.clone()),
        ("PUT", "/v1/article/a1", 2 * KIB, (200, String::new())),
        ("PUT", "/v1/article/a1", 2 * KIB + 1, too_large.clone()),
        ("PUT", "/v1/category/c1", 8 * KIB, (200, String::new())),
        ("PUT", "/v1/category/c1", 8 * KIB + 1, too_large.clone()),
    ];
    for (method, path, size, want) in cases {
        let before = upstream.requests().len();
        let got = send_body(&gateway, &key, method, path, vec![b'x'; size]).await;
        assert_eq!(got, want, "{method} {path} with {size} bytes");
        let seen = upstream.requests().split_off(before);
        if want.0 == 200 {
            assert_eq!(seen.len(), 1);
            assert_eq!(
                (seen[0].body_len, seen[0].body_complete),
                (size as u64, true)
            );
        } else {
            assert!(
                seen.is_empty(),
                "a declared oversize body is refused before forwarding"
            );
        }
    }

    // A chunked body declares no length: it is cut off as it passes the limit, the upstream
    // request is aborted with it, and the client still gets the 413.
    let mut conn = Conn::open_keyed(
        gateway.addr,
        "POST /v1/article",
        &key,
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    let chunk = format!("200\r\n{}\r\n", "y".repeat(0x200));
    for _ in 0..3 {
        let _ = conn.send(chunk.as_bytes()).await;
    }
    let response = conn.response().await;
    assert_eq!(
        (response.status(), response.code().as_str()),
        (413, "body_too_large")
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.until_closed().await.is_empty());
    common::eventually("no complete oversize request upstream", || async {
        upstream
            .requests()
            .iter()
            .filter(|s| s.path_and_query == "/v1/article")
            .all(|s| s.body_len <= KIB as u64)
    })
    .await;
    assert!(
        upstream
            .requests()
            .iter()
            .all(|s| s.body_complete || s.body_len <= KIB as u64),
        "{:?}",
        upstream.requests()
    );

    // The same limit over HTTP/2.
    let h2 = common::h2c_client();
    let response = h2
        .post(gateway.url("/v1/article"))
        .bearer_auth(&key)
        .body(vec![b'x'; KIB + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(common::status_and_code(response).await, too_large);
    gateway.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_to_be_accepted() {
    let (upstream, gateway, key) = TestGateway::builder()
        .config(|config| {
            config.limits.max_connections = 2;
        })
        .start_with_key()
        .await;
    let keep_alive = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    // Two kept-alive connections, each proven accepted by an answered request.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = Conn::open(gateway.addr).await;
        conn.send(keep_alive.as_bytes()).await.unwrap();
        assert_eq!(conn.response().await.status(), 200);
        held.push(conn);
    }
    // A third is connected by the kernel but not accepted: its request is not read.
    let mut third = Conn::open(gateway.addr).await;
    third.send(keep_alive.as_bytes()).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), third.next_response(false)).await;
    assert!(
        waited.is_err(),
        "a third connection was served beyond the cap"
    );
    assert_eq!(upstream.requests().len(), 2);
    // Closing one frees its slot: the waiting request is served.
    drop(held.pop());
    assert_eq!(third.response().await.status(), 200);
    assert_eq!(upstream.requests().len(), 3);
    gateway.shutdown().await;
}

/// An upstream that records how many requests it holds at once. Each waits until three are
/// in flight (which a working stream cap never allows) or 600 ms have passed.
/// Returns the upstream, the most requests it held at once, and the number it answered.
async fn concurrency_upstream() -> (RunningKb, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (now, max, done) = (in_flight.clone(), max_in_flight.clone(), served.clone());
    let upstream = FakeKb::new()
        .otherwise(move |_| {
            let (now, max, done) = (now.clone(), max.clone(), done.clone());
            async move {
                let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(current, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_millis(600);
                while now.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                now.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                http::Response::new(common::kb::full("ok"))
            }
        })
        .start()
        .await;
    (upstream, max_in_flight, served)
}

#[tokio::test]
async fn http2_streams_beyond_max_concurrent_streams_wait() {
    let (upstream, max_in_flight, served) = concurrency_upstream().await;
    let gateway = TestGateway::builder()
        .upstream(&upstream)
        .config(|config| {
            config.limits.max_concurrent_streams = 2;
        })
        .start()
        .await;
    let key = gateway.read_write_key().await;
    let h2 = common::h2c_client();
    // Five requests at once on one HTTP/2 connection.
    let requests = (0..5).map(|i| {
        let request = h2
            .get(gateway.url(&format!("/v1/article/a{i}")))
            .bearer_auth(&key)
            .send();
        async move {
            let response = request.await.unwrap();
            (response.version(), response.status().as_u16())
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    assert!(
        answers.iter().all(|a| *a == (http::Version::HTTP_2, 200)),
        "{answers:?}"
    );
    assert_eq!(served.load(Ordering::SeqCst), 5);
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        2,
        "at most two streams at once, and two did run together"
    );
    gateway.shutdown().await;
}

/// Writes `first`, then `drip` every 100 ms, until the gateway closes the connection; returns
/// how long the gateway took to close it, and what it sent.
async fn slow_client(
    addr: std::net::SocketAddr,
    first: &[u8],
    drip: &'static [u8],
) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(first).await.unwrap();
    let dripping = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(drip).await.is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(raw::TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    dripping.abort();
    assert!(
        read.is_ok(),
        "the gateway kept a slow client for {:?}",
        raw::TIMEOUT
    );
    (started.elapsed(), received)
}

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);

fn assert_cut_at_timeout(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed >= timeout.mul_f32(0.9) && elapsed < timeout + Duration::from_secs(3),
        "{what}: closed after {elapsed:?} with a timeout of {timeout:?}"
    );
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_at_the_header_read_timeout() {
    let (upstream, gateway) = TestGateway::builder()
        .config(|config| {
            config.limits.header_read_timeout = HEADER_TIMEOUT;
        })
        .start_on_echo()
        .await;
    let cases: [(&str, &[u8], &'static [u8]); 4] = [
        (
            "a header line every 100 ms",
            b"GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\n",
            b"X-Drip: 1\r\n",
        ),
        ("a byte every 100 ms", b"G", b"E"),
        ("an HTTP/2 preface a byte every 100 ms", b"P", b"R"),
        ("nothing at all", b"", b""),
    ];
    for (what, first, drip) in cases {
        let (elapsed, received) = slow_client(gateway.addr, first, drip).await;
        assert_cut_at_timeout(what, elapsed, HEADER_TIMEOUT);
        // Either nothing, or a refusal; never a forwarded request.
        assert!(
            received.is_empty() || received.starts_with(b"HTTP/1.1 4"),
            "{what}: {:?}",
            String::from_utf8_lossy(&received)
        );
    }
    assert!(upstream.requests().is_empty());

    // An idle kept-alive connection is closed the same way after its request.
    let key = gateway.read_write_key().await;
    let mut conn = Conn::open_keyed(gateway.addr, "GET /v1/article/a1", &key, "\r\n").await;
    assert_eq!(conn.response().await.status(), 200);
    let idle = Instant::now();
    assert!(conn.until_closed().await.is_empty());
    assert_cut_at_timeout(
        "an idle kept-alive connection",
        idle.elapsed(),
        HEADER_TIMEOUT,
    );
    gateway.shutdown().await;
}

/// The header read timeout counts only while a request head is awaited: a request that takes
/// longer (a slow KB, a long download read slowly) keeps its connection, which is closed once
/// it has been idle for the timeout after its last response.
#[tokio::test]
async fn slow_requests_and_long_downloads_outlast_the_header_read_timeout() {
    let (_upstream, gateway, key) = TestGateway::builder()
        .config(|config| {
            config.limits.header_read_timeout = HEADER_TIMEOUT;
        })
        .start_with_key()
        .await;
    // The KB answers after three timeouts.
    let mut conn = Conn::open_keyed(
        gateway.addr,
        "GET /v1/article/a1?delay_ms=1500",
        &key,
        "\r\n",
    )
    .await;
    assert_eq!(conn.response().await.status(), 200);

    // On the same connection, a download far larger than the socket buffers, not read for
    // three timeouts: the gateway waits on the client's reading, not for a head.
    const SIZE: usize = 64 * 1024 * 1024;
    let request = format!(
        "GET /v1/article/a1?size={SIZE} HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    conn.send(request.as_bytes()).await.unwrap();
    tokio::time::sleep(3 * HEADER_TIMEOUT).await;
    let download = conn.response().await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.body.len(), SIZE);

    // Then, idle, it is closed at the timeout.
    let idle = Instant::now();
    assert!(conn.until_closed().await.is_empty());
    assert_cut_at_timeout("idle after a download", idle.elapsed(), HEADER_TIMEOUT);
    gateway.shutdown().await;
}

/// A client that connects and says nothing loses its connection slot after the header read
/// timeout: hyper's own header timer only starts once the HTTP/2 preface sniff is done, so
/// without the gateway's timer such a client would hold the slot for ever.
#[tokio::test]
async fn silent_connections_cannot_hold_every_connection_slot() {
    let (_upstream, gateway, key) = TestGateway::builder()
        .config(|config| {
            config.limits.max_connections = 1;
            config.limits.header_read_timeout = HEADER_TIMEOUT;
        })
        .start_with_key()
        .await;
    let _silent = TcpStream::connect(gateway.addr).await.unwrap();
    // Make sure the silent one holds the slot before the real client comes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let (status, _, _) = raw::get(gateway.addr, "/v1/article/a1", &key).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(3));
    gateway.shutdown().await;
}

const BODY_TIMEOUT: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_stalled_upload_gets_408_and_the_upstream_request_is_aborted() {
    let (upstream, gateway, key) = TestGateway::builder()
        .config(|config| {
            config.limits.body_timeout = BODY_TIMEOUT;
        })
        .start_with_key()
        .await;
    for framing in ["Content-Length: 100\r\n", "Transfer-Encoding: chunked\r\n"] {
        let body = if framing.starts_with("Content") {
            "0123456789"
        } else {
            "a\r\n0123456789\r\n"
        };
        let mut conn = Conn::open(gateway.addr).await;
        let started = Instant::now();
        conn.send(
            format!(
                "PUT /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n{framing}\r\n{body}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let response = conn.response().await;
        assert_eq!(
            (response.status(), response.code().as_str()),
            (408, "body_timeout"),
            "{framing}"
        );
        assert_cut_at_timeout(framing, started.elapsed(), BODY_TIMEOUT);
        assert!(conn.until_closed().await.is_empty());
    }
    // The upstream got the heads and 10 bytes each, and saw both requests cut off.
    common::eventually("the upstream sees both aborted requests", || async {
        upstream.requests().len() == 2
    })
    .await;
    for seen in upstream.requests() {
        assert_eq!((seen.body_len, seen.body_complete), (10, false), "{seen:?}");
    }
    gateway.shutdown().await;
}

/// The body timeout is the longest pause between pieces, not a deadline for the whole body: a
/// slow but steady upload that takes longer than it goes through.
#[tokio::test]
async fn a_slow_but_steady_upload_is_not_cut_off() {
    let (upstream, gateway, key) = TestGateway::builder()
        .config(|config| {
            config.limits.body_timeout = BODY_TIMEOUT;
        })
        .start_with_key()
        .await;
    let mut conn = Conn::open_keyed(
        gateway.addr,
        "PUT /v1/article/a1",
        &key,
        "Content-Length: 10\r\nConnection: close\r\n\r\n",
    )
    .await;
    let started = Instant::now();
    for byte in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.send(&[*byte]).await.unwrap();
    }
    let response = conn.response().await;
    assert_eq!(response.status(), 200, "{}", response.text());
    assert!(
        started.elapsed() > BODY_TIMEOUT,
        "the upload outlasted the body timeout"
    );
    let seen = upstream.last();
    assert_eq!((seen.body_len, seen.body_complete), (10, true));
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(json["body_len"], 10);
    gateway.shutdown().await;
}
