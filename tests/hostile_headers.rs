//! Header hygiene under attack: hop-by-hop headers (every `Connection` line, both ways),
//! protocol switches (h2c, WebSocket, CONNECT), `Expect: 100-continue` on refused requests,
//! and client headers posing as the gateway's.

mod common;

use common::raw::{self, Conn};
use common::raw_upstream::RawUpstream;
use common::{TestGateway, UPSTREAM_CREDENTIAL};
use serde_json::json;

/// `GET /v1/article/a1` with `key` and the given extra header lines, closing after.
fn get_with(key: &str, headers: &str) -> String {
    format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n{headers}Connection: close\r\n\r\n"
    )
}

/// The same, keeping the connection open.
fn kept_alive(key: &str, headers: &str) -> String {
    get_with(key, headers).replace("Connection: close\r\n", "")
}

fn values<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[tokio::test]
async fn headers_named_in_every_connection_line_never_reach_the_upstream() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let request = format!(
        "PUT /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\
         Connection: keep-alive, X-One\r\nConnection: x-two,,  X-Three-Listed \r\n\
         X-One: 1\r\nX-Two: 2\r\nX-Three-Listed: 3\r\nX-Kept: kept\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
         Trailer: X-Checksum\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    let mut conn = Conn::open(gateway.addr).await;
    conn.send(request.as_bytes()).await.unwrap();
    let response = conn.response().await;
    assert_eq!(response.status(), 200, "{}", response.text());

    let seen = upstream.last();
    assert_eq!((seen.body_len, seen.body_complete), (11, true));
    for name in [
        "connection",
        "x-one",
        "x-two",
        "x-three-listed",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(values(&seen.headers, "x-kept"), ["kept"]);
    // The body was re-framed by the gateway's own client: one framing, its own.
    let framing = (
        values(&seen.headers, "transfer-encoding"),
        values(&seen.headers, "content-length"),
    );
    assert!(
        framing == (vec!["chunked"], vec![]) || framing == (vec![], vec!["11"]),
        "{framing:?}"
    );
    gateway.shutdown().await;
}

/// `Connection` may name any header; naming the framing or the gateway's own headers must not
/// unframe the body nor remove what the gateway adds.
#[tokio::test]
async fn connection_naming_framing_or_gateway_headers_changes_nothing_that_matters() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({"scope": "read_write"})).await;
    let request = format!(
        "PUT /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\
         Connection: content-length, authorization, host\r\n\
         Connection: x-kbgate-key-id, x-forwarded-for, x-request-id\r\n\
         Content-Length: 5\r\n\r\nhello"
    );
    let mut conn = Conn::open(gateway.addr).await;
    conn.send(request.as_bytes()).await.unwrap();
    assert_eq!(conn.response().await.status(), 200);
    let seen = upstream.last();
    assert_eq!((seen.body_len, seen.body_complete), (5, true));
    assert_eq!(
        values(&seen.headers, "authorization"),
        [format!("Bearer {UPSTREAM_CREDENTIAL}").as_str()]
    );
    assert_eq!(values(&seen.headers, "x-kbgate-key-id"), [id.as_str()]);
    assert_eq!(values(&seen.headers, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen.headers, "x-request-id").len(), 1);
    assert_eq!(
        values(&seen.headers, "host"),
        [upstream.addr.to_string().as_str()]
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_in_the_upstream_response_never_reach_the_client() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while conn.request().await.is_some() {
            conn.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                  Connection: X-Resp-Hop\r\nConnection: keep-alive\r\n\
                  X-Resp-Hop: secret\r\nUpgrade: h2c\r\nKeep-Alive: timeout=5\r\n\
                  Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Sum\r\n\
                  Proxy-Authenticate: Basic\r\nX-Resp-Kept: kept\r\n\
                  Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            )
            .await;
        }
    })
    .await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    let mut conn = Conn::open(gateway.addr).await;
    conn.send(get_with(&key, "").as_bytes()).await.unwrap();
    let response = conn.response().await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), "hello");
    for name in [
        "x-resp-hop",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authenticate",
    ] {
        assert!(
            response.header(name).is_none(),
            "{name} reached the client:\n{}",
            response.headers
        );
    }
    // The only Connection line is the gateway's own.
    assert_eq!(response.header_all("connection"), ["close"]);
    assert_eq!(response.header("x-resp-kept"), Some("kept"));
    gateway.shutdown().await;
}

/// An upstream answering with both framings (a response-splitting attempt, or a broken KB):
/// the body was read as chunked, so the Content-Length beside it is dropped rather than
/// forwarded, where it would cut the body short and make the rest look like a second response.
#[tokio::test]
async fn an_upstream_response_with_content_length_and_chunked_is_reframed_whole() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while conn.request().await.is_some() {
            conn.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n13\r\nHTTP/1.1 200 OK\r\n\r\n\r\n0\r\n\r\n",
            )
            .await;
        }
    })
    .await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    let mut conn = Conn::open(gateway.addr).await;
    let request = kept_alive(&key, "");
    conn.send(format!("{request}{request}").as_bytes())
        .await
        .unwrap();
    for _ in 0..2 {
        let response = conn.response().await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text(), "helloHTTP/1.1 200 OK\r\n\r\n");
        assert_ne!(response.header("content-length"), Some("5"));
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn protocol_switches_are_refused() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let cases = [
        // An h2c offer is ignored and answered over HTTP/1.1 (tests/transparency_request.rs).
        (
            "h2c upgrade",
            kept_alive(
                &key,
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
            ),
            (200, ""),
        ),
        (
            "websocket upgrade",
            kept_alive(
                &key,
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            ),
            (400, "upgrade_not_allowed"),
        ),
        (
            "upgrade not listed in Connection",
            kept_alive(&key, "Upgrade: websocket\r\n"),
            (400, "upgrade_not_allowed"),
        ),
        (
            "CONNECT in authority form",
            format!(
                "CONNECT kb.example:443 HTTP/1.1\r\nHost: kb.example:443\r\nAuthorization: Bearer {key}\r\n\r\n"
            ),
            (405, "connect_not_allowed"),
        ),
        (
            "CONNECT without a key",
            "CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: 10.0.0.1:22\r\n\r\n".to_string(),
            (405, "connect_not_allowed"),
        ),
    ];
    for (what, request, (status, code)) in cases {
        let mut conn = Conn::open(gateway.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        let response = conn.response().await;
        assert_eq!(
            (response.status(), response.code().as_str()),
            (status, code),
            "{what}: {}",
            response.text()
        );
        if status == 405 {
            assert!(response.header("allow").unwrap().contains("GET"), "{what}");
        }
        // No switch happened: the same connection still speaks HTTP/1.1 to a follow-up.
        let _ = conn.send(get_with(&key, "").as_bytes()).await;
        assert_eq!(conn.response().await.status(), 200, "{what}");
        assert!(conn.until_closed().await.is_empty(), "{what}");
    }
    assert!(
        upstream
            .requests()
            .iter()
            .all(|s| s.headers.get("upgrade").is_none() && s.method != "CONNECT"),
        "{:?}",
        upstream.requests()
    );
    gateway.shutdown().await;
}

/// A client that asks `Expect: 100-continue` and waits is told the final answer at once when
/// the request will be refused, and never invited to send a body that will not be read.
#[tokio::test]
async fn expect_100_continue_on_a_refused_request_gets_the_final_status_and_no_100() {
    let (upstream, gateway) = TestGateway::builder()
        .config(|config| {
            config.limits.max_body = 1000;
        })
        .start_on_echo()
        .await;
    let (_, read_only) = gateway.create_key(json!({"scope": "read"})).await;
    let key = gateway.read_write_key().await;
    let head = |auth: &str, length: u64| {
        format!(
            "PUT /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\n{auth}Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let cases = [
        (head("", 10), (401, "missing_key")),
        (
            head("Authorization: Bearer kb_not_a_key\r\n", 10),
            (401, "invalid_key"),
        ),
        (
            head(&format!("Authorization: Bearer {read_only}\r\n"), 10),
            (403, "insufficient_permissions"),
        ),
        (
            head(&format!("Authorization: Bearer {key}\r\n"), 1_000_000),
            (413, "body_too_large"),
        ),
    ];
    for (request, (status, code)) in cases {
        let mut conn = Conn::open(gateway.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        let first = conn.response().await;
        assert_eq!(
            (first.status(), first.code().as_str()),
            (status, code),
            "{request}"
        );
    }
    assert!(upstream.requests().is_empty());
    gateway.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_on_an_accepted_request_gets_100_then_the_answer() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let mut conn = Conn::open_keyed(
        gateway.addr,
        "PUT /v1/article/a1",
        &key,
        "Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(conn.response().await.status(), 100);
    conn.send(b"hello").await.unwrap();
    assert_eq!(conn.response().await.status(), 200);
    let seen = upstream.last();
    assert_eq!((seen.body_len, seen.body_complete), (5, true));
    assert!(
        seen.headers.get("expect").is_none(),
        "the gateway answered the expectation itself"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn client_sent_gateway_headers_cannot_pose_as_the_gateway() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({"scope": "read"})).await;
    let request = get_with(
        &key,
        "X-Kbgate-Key-Id: key_admin\r\nX-KBGATE-KEY-ID: key_other\r\nX-Kbgate-Scope: read_write\r\n\
         X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7\r\nX-Forwarded-Host: evil.example\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nForwarded: for=6.6.6.6;proto=https\r\n\
         X-Request-Id: spaces are not allowed\r\n",
    );
    let (status, headers, body) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let seen = upstream.last();
    assert_eq!(values(&seen.headers, "x-kbgate-key-id"), [id.as_str()]);
    assert!(seen.headers.get("x-kbgate-scope").is_none());
    assert_eq!(values(&seen.headers, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen.headers, "x-forwarded-host"), ["kb.example"]);
    assert_eq!(values(&seen.headers, "x-forwarded-proto"), ["http"]);
    assert!(seen.headers.get("x-forwarded-port").is_none());
    assert!(seen.headers.get("forwarded").is_none());
    let request_id = values(&seen.headers, "x-request-id");
    assert_eq!(request_id.len(), 1);
    assert_eq!(request_id[0].len(), 32, "a fresh id, not the client's");
    assert_eq!(raw::header(&headers, "x-request-id"), Some(request_id[0]));
    gateway.shutdown().await;
}
