//! The gateway is transparent to upstreams nobody here wrote (issue 11): an unrequested
//! `101 Switching Protocols` never reaches a client; header names with underscores, a client's
//! copy of an injected query parameter and split HTTP/2 cookies never reach the KB as such;
//! links and redirects the KB builds from its own origin (or from the client's Host) lead back
//! to the gateway; and `X-Forwarded-For` is appended to behind a trusted proxy.

mod common;

use common::raw::{self, Conn};
use common::raw_upstream::RawUpstream;
use common::{Gateway, Upstream, h2c_client};

fn get(key: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
}

// ---------- item 16: an unrequested 1xx ----------

/// A KB that answers every request with `101 Switching Protocols` and then talks nonsense.
async fn switching_upstream() -> RawUpstream {
    RawUpstream::start(|mut conn| async move {
        while conn.request().await.is_some() {
            conn.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
            )
            .await;
        }
    })
    .await
}

#[tokio::test]
async fn an_unrequested_101_is_502_over_http1() {
    let upstream = switching_upstream().await;
    let gateway = Gateway::start_at(&upstream.url(), |_| {}).await;
    let key = gateway.read_write_key().await;
    let (status, headers, body) =
        raw::request(gateway.addr, get(&key, "/v1/article/a1").as_bytes()).await;
    assert_eq!(
        (status, raw::error_code(&body).as_str()),
        (502, "upstream_unavailable"),
        "{headers}\n{body}"
    );
    assert!(raw::header(&headers, "upgrade").is_none(), "{headers}");
    assert_eq!(upstream.requests().len(), 1, "the KB was asked");

    // On a kept-open connection: a final 502, and the connection still serves the next one.
    let mut conn = Conn::open(gateway.addr).await;
    for _ in 0..2 {
        conn.wire
            .send(
                format!(
                    "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let response = conn.wire.message(false).await.expect("a response");
        assert_eq!(response.status(), 502, "{response:?}");
        assert_eq!(response.code(), "upstream_unavailable");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_unrequested_101_is_502_over_h2c() {
    let upstream = switching_upstream().await;
    let gateway = Gateway::start_at(&upstream.url(), |_| {}).await;
    let key = gateway.read_write_key().await;
    let client = h2c_client();
    // Twice on one HTTP/2 connection: a `:status 101` would make a compliant client drop it.
    for _ in 0..2 {
        let response = client
            .get(gateway.url("/v1/article/a1"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("a response, not a torn-down connection");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let (status, code) = common::status_and_code(response).await;
        assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
    }
    assert_eq!(upstream.requests().len(), 2);
    gateway.shutdown().await;
}

#[tokio::test]
async fn interim_100_and_103_before_a_final_answer_still_pass() {
    let upstream = RawUpstream::start(|mut conn| async move {
        while conn.request().await.is_some() {
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
                .await;
            conn.ok().await;
        }
    })
    .await;
    let gateway = Gateway::start_at(&upstream.url(), |_| {}).await;
    let key = gateway.read_write_key().await;
    let (status, _, body) =
        raw::request(gateway.addr, get(&key, "/v1/article/a1").as_bytes()).await;
    assert_eq!((status, body.as_str()), (200, "{\"ok\":true}"));
    gateway.shutdown().await;
}
