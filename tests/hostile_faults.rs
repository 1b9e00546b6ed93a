//! Faults, each guarantee tested against a misbehaving peer written here as a raw TCP server
//! or client: a refused connection (502 at once), an upstream that never answers (504 at the
//! deadline), an upstream reset mid-body (the client sees an aborted response, never a
//! truncated one that looks complete), a client that aborts mid-upload (the upstream request
//! is aborted too), an upstream closing a kept-alive connection (an idempotent request is
//! retried once, a non-idempotent one is not), and a graceful drain under load.

mod common;

use common::raw::{self, Conn, Wire};
use common::raw_upstream::RawUpstream;
use common::{TestGateway, eventually};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

fn get(key: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn an_upstream_refusing_connections_gets_502_at_once() {
    // A port nothing listens on: bind, read the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = TestGateway::builder()
        .upstream(&format!("http://{closed}"))
        .config(|config| {
            config.upstream.connect_timeout = Duration::from_secs(20);
        })
        .start()
        .await;
    let key = gateway.read_write_key().await;
    for (method, path) in [("GET", "/v1/article/a1"), ("POST", "/v1/article")] {
        let started = Instant::now();
        let (status, code) = gateway.send(method, path, &key).await;
        assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{method}: {:?}, not at once (nor after the 20 s connect timeout)",
            started.elapsed()
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_never_sends_headers_gets_504_at_the_deadline() {
    let timeout = Duration::from_millis(500);
    // One upstream reads the request and then says nothing; the other never even reads.
    let silent = RawUpstream::start(|mut conn| async move {
        conn.request().await;
        std::future::pending::<()>().await;
        drop(conn);
    })
    .await;
    let deaf = RawUpstream::start(|conn| async move {
        std::future::pending::<()>().await;
        drop(conn);
    })
    .await;
    for upstream in [&silent, &deaf] {
        let gateway = TestGateway::builder()
            .upstream(&upstream)
            .config(|config| {
                config.upstream.timeout = timeout;
            })
            .start()
            .await;
        let key = gateway.read_write_key().await;
        let started = Instant::now();
        let (status, _, body) =
            raw::request(gateway.addr, get(&key, "/v1/article/a1").as_bytes()).await;
        let elapsed = started.elapsed();
        assert_eq!(
            (status, raw::error_code(&body).as_str()),
            (504, "upstream_timeout")
        );
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(3),
            "504 after {elapsed:?}, deadline {timeout:?}"
        );
        assert!(
            !body.contains("127.0.0.1"),
            "no upstream address leaks: {body}"
        );
        gateway.shutdown().await;
    }
    assert_eq!(silent.requests().len(), 1);
}

/// What a client holding a response cut short can tell: the framing it was promised, and how
/// much of it arrived before the connection ended.
fn framing_of(bytes: &[u8]) -> (Option<usize>, bool, Vec<u8>) {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let body = bytes[split + 4..].to_vec();
    let length =
        raw::header(&head.replace("\r\n", "\n"), "content-length").map(|n| n.parse().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    (length, chunked, body)
}

#[tokio::test]
async fn an_upstream_reset_mid_body_reaches_the_client_as_an_aborted_response() {
    // The KB promises 1000 bytes (or a chunked body), sends 300, then resets or closes.
    let sized = RawUpstream::start(|mut conn| async move {
        conn.request().await;
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        conn.write(&[b'a'; 300]).await;
        conn.reset();
    })
    .await;
    let chunked = RawUpstream::start(|mut conn| async move {
        conn.request().await;
        conn.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n12c\r\n")
            .await;
        conn.write(&[b'a'; 300]).await;
        conn.write(b"\r\n").await;
        conn.reset();
    })
    .await;
    let closed = RawUpstream::start(|mut conn| async move {
        conn.request().await;
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        conn.write(&[b'a'; 300]).await;
        drop(conn); // a FIN, not a reset
    })
    .await;
    for (what, upstream) in [
        ("sized", &sized),
        ("chunked", &chunked),
        ("closed", &closed),
    ] {
        let (gateway, key) = TestGateway::start_keyed(&upstream).await;

        // Over HTTP/1.1, byte for byte.
        let mut conn = Conn::open(gateway.addr).await;
        conn.send(get(&key, "/v1/article/a1").as_bytes())
            .await
            .unwrap();
        let bytes = conn.until_closed().await;
        let (length, is_chunked, body) = framing_of(&bytes);
        match (length, is_chunked) {
            (Some(length), false) => assert!(
                body.len() < length,
                "{what}: {} of {length} bytes looks complete",
                body.len()
            ),
            (None, true) => assert!(
                !body.ends_with(b"0\r\n\r\n"),
                "{what}: a cut chunked body was terminated as if complete"
            ),
            other => panic!("{what}: the client was not told any framing: {other:?}"),
        }

        // With an HTTP client, over HTTP/1.1 and HTTP/2: reading the body fails.
        let h2 = common::h2c_client();
        for client in [&gateway.client, &h2] {
            let response =
                common::keyed_get_with(client, gateway.url("/v1/article/a1"), &key).await;
            assert_eq!(response.status(), 200);
            let version = response.version();
            let read = response.bytes().await;
            assert!(read.is_err(), "{what} over {version:?}: read {read:?}");
        }
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn a_client_aborting_mid_upload_aborts_the_upstream_request() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({"scope": "read_write"})).await;
    for (counted, (framing, partial)) in [
        ("Content-Length: 1000\r\n", "x".repeat(100)),
        (
            "Transfer-Encoding: chunked\r\n",
            format!("64\r\n{}\r\n", "x".repeat(100)),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let before = upstream.requests().len();
        let conn = Conn::open_keyed(
            gateway.addr,
            "PUT /v1/article/a1",
            &key,
            &format!("{framing}\r\n{partial}"),
        )
        .await;
        // Once the gateway has counted the request it is forwarding it; the client gives up.
        eventually("the gateway forwards the upload", || async {
            let (_, view) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
            view["request_count"] == counted + 1
        })
        .await;
        drop(conn);
        eventually("the upstream sees the upload end", || async {
            upstream.requests().len() > before
        })
        .await;
        let seen = upstream.requests().split_off(before);
        assert_eq!(seen.len(), 1, "{framing}: {seen:?}");
        assert!(
            !seen[0].body_complete && seen[0].body_len <= 100,
            "{framing}: the upstream took a cut upload as complete: {seen:?}"
        );
    }
    gateway.shutdown().await;
}

/// An upstream whose first connection serves one request, then reads the next and closes it
/// without an answer: a kept-alive connection the KB timed out just as it was reused. Later
/// connections are served normally.
async fn closes_second_request_on_first_connection() -> RawUpstream {
    RawUpstream::start(|mut conn| async move {
        if conn.index == 0 {
            conn.request().await;
            conn.ok().await;
            conn.request().await;
            return; // closed, unanswered
        }
        while conn.request().await.is_some() {
            conn.ok().await;
        }
    })
    .await
}

#[tokio::test]
async fn an_idempotent_request_on_a_connection_the_upstream_closed_is_retried_once() {
    let upstream = closes_second_request_on_first_connection().await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    assert_eq!(gateway.get("/v1/article/first", &key).await.0, 200);
    assert_eq!(
        gateway.get("/v1/article/second", &key).await,
        (200, String::new())
    );
    assert_eq!(
        upstream.requests(),
        [
            (0, "GET /v1/article/first HTTP/1.1".to_string()),
            (0, "GET /v1/article/second HTTP/1.1".to_string()),
            (1, "GET /v1/article/second HTTP/1.1".to_string()),
        ]
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_non_idempotent_request_on_a_connection_the_upstream_closed_is_not_retried() {
    let upstream = closes_second_request_on_first_connection().await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    assert_eq!(gateway.get("/v1/article/first", &key).await.0, 200);
    assert_eq!(
        gateway.send("POST", "/v1/article", &key).await,
        (502, "upstream_unavailable".to_string())
    );
    assert_eq!(
        upstream.requests(),
        [
            (0, "GET /v1/article/first HTTP/1.1".to_string()),
            (0, "POST /v1/article HTTP/1.1".to_string()),
        ],
        "the POST went upstream once"
    );
    // A GET with a body is not repeated either: the body was streamed, not kept.
    let response = gateway
        .client
        .get(gateway.url("/v1/article/again"))
        .bearer_auth(&key)
        .body("streamed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a fresh connection serves it");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_request_is_retried_only_once() {
    // Every connection reads the request and closes without answering.
    let upstream = RawUpstream::start(|mut conn| async move {
        conn.request().await;
    })
    .await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    assert_eq!(
        gateway.get("/v1/article/a1", &key).await,
        (502, "upstream_unavailable".to_string())
    );
    assert_eq!(upstream.requests().len(), 2, "{:?}", upstream.requests());
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_upstream_closing_an_idle_connection_between_requests_costs_nothing() {
    // Each connection serves one request and closes at once, as a KB with keep-alive off does.
    let upstream = RawUpstream::start(|mut conn| async move {
        conn.request().await;
        conn.ok().await;
    })
    .await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    for i in 0..5 {
        assert_eq!(gateway.get(&format!("/v1/article/a{i}"), &key).await.0, 200);
    }
    assert_eq!(upstream.requests().len(), 5);
    gateway.shutdown().await;
}

/// How one raw request during the drain ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The connection was refused: the listener was closed.
    Refused,
    /// Connected, but never answered: not accepted by the gateway before it stopped.
    Unanswered,
    /// A complete response with this status (a partial one panics in `Wire::message`).
    Answered(u16),
}

async fn attempt(addr: SocketAddr, request: &[u8]) -> Outcome {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return Outcome::Refused;
    };
    let mut wire = Wire::new(stream);
    if wire.send(request).await.is_err() {
        return Outcome::Unanswered;
    }
    match tokio::time::timeout(raw::TIMEOUT, wire.message(false)).await {
        Ok(Some(message)) => Outcome::Answered(message.status()),
        Ok(None) => Outcome::Unanswered,
        Err(_) => panic!("no answer and no close within {:?}", raw::TIMEOUT),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_drain_under_load_loses_no_accepted_request() {
    const IN_FLIGHT: usize = 20;
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({"scope": "read"})).await;
    let addr = gateway.addr;

    // Twenty slow requests, all counted (so accepted and verified) before the drain starts.
    let slow = get(&key, "/v1/article/slow?delay_ms=500");
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let request = slow.clone();
            tokio::spawn(async move { attempt(addr, request.as_bytes()).await })
        })
        .collect();
    eventually("all slow requests are accepted", || async {
        let (_, view) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
        view["request_count"] == IN_FLIGHT
    })
    .await;

    // Load keeps coming while the gateway drains.
    let stop = tokio_util::sync::CancellationToken::new();
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, request) = (stop.clone(), get(&key, &format!("/v1/article/load{i}")));
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.is_cancelled() {
                    let outcome = attempt(addr, request.as_bytes()).await;
                    let refused = outcome == Outcome::Refused;
                    outcomes.push(outcome);
                    if refused {
                        break; // the listener is closed for good
                    }
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drain = tokio::spawn(gateway.shutdown());

    for request in in_flight {
        assert_eq!(
            request.await.unwrap(),
            Outcome::Answered(200),
            "an accepted request was lost"
        );
    }
    drain.await.unwrap();
    stop.cancel();
    let mut answered = IN_FLIGHT;
    for outcomes in load {
        for outcome in outcomes.await.unwrap() {
            match outcome {
                Outcome::Answered(200) => answered += 1,
                Outcome::Refused | Outcome::Unanswered => {}
                other => panic!("a request during the drain ended as {other:?}"),
            }
        }
    }
    assert_eq!(
        answered,
        upstream.requests().len(),
        "every request the upstream served was delivered, and only those"
    );
}
