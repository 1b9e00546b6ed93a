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

// ---------- item 19: what must not reach the KB ----------

/// A small config of its own (not the shipped one), `extra` added under `upstream:` and
/// `top` at the top level.
fn yaml(extra: &str, top: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ token: "${{KBGATE_ADMIN_TOKEN}}" }}
upstream:
  url: http://127.0.0.1:1
  inject:
    headers: {{ Authorization: "Bearer ${{KB_API_KEY}}" }}
{extra}
store: {{ embedded: {{ path: unused.db }} }}
routes:
  - {{ methods: [GET, HEAD], path: "/v1/article", permission: "article:read" }}
  - {{ methods: [GET, HEAD], path: "/v1/article/{{id}}", permission: "article:read" }}
  - {{ methods: [POST], path: "/v1/article", permission: "article:write" }}
  - {{ methods: [GET, HEAD], path: "/v1/search", permission: "search:read" }}
{top}
"#
    )
}

const UNDERSCORED: &str = "Transfer_Encoding: chunked\r\nX_Api_Key: kb_forged\r\nX_Kbgate_Key_Id: forged\r\nX_Forwarded_For: 6.6.6.6\r\nX_Custom_Thing: custom\r\nX-Other: other\r\n";

async fn send_underscored(gateway: &Gateway, key: &str) {
    let request = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n{UNDERSCORED}Connection: close\r\n\r\n"
    );
    let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn header_names_with_underscores_are_dropped_by_default() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_yaml(&yaml("", ""), &upstream.url(), |_| {}).await;
    let key = gateway.read_write_key().await;
    send_underscored(&gateway, &key).await;
    let seen = upstream.last().headers;
    for name in seen.keys() {
        assert!(!name.as_str().contains('_'), "{name} reached the KB: {seen:?}");
    }
    assert_eq!(seen["x-other"], "other");
    assert_ne!(seen["x-kbgate-key-id"], "forged");
    gateway.shutdown().await;
}

#[tokio::test]
async fn underscores_may_pass_when_asked_but_never_as_a_gateway_header() {
    let upstream = Upstream::start().await;
    let text = yaml("  forward_underscore_headers: true", "");
    let gateway = Gateway::start_yaml(&text, &upstream.url(), |_| {}).await;
    let key = gateway.read_write_key().await;
    send_underscored(&gateway, &key).await;
    let seen = upstream.last().headers;
    assert_eq!(seen["x_custom_thing"], "custom", "{seen:?}");
    assert_eq!(seen["x-other"], "other");
    for name in [
        "transfer_encoding",
        "x_api_key",
        "x_kbgate_key_id",
        "x_forwarded_for",
    ] {
        assert!(!seen.contains_key(name), "{name} reached the KB: {seen:?}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_injected_query_parameter_replaces_the_clients() {
    let upstream = Upstream::start().await;
    let text = yaml(r#"    query: { token: "${KB_API_KEY}", "api key": fixed }"#, "");
    let gateway = Gateway::start_yaml(&text, &upstream.url(), |_| {}).await;
    let key = gateway.read_write_key().await;
    let target = "/v1/search?query=x&token=forged&tok%65n=forged2&api+key=mine&b=2&token";
    let (status, _, body) = raw::request(gateway.addr, get(&key, target).as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        upstream.last().path_and_query,
        format!(
            "/v1/search?query=x&b=2&api%20key=fixed&token={}",
            common::UPSTREAM_CREDENTIAL.replace('-', "%2D")
        )
    );
    // Nothing else of the client's query is touched.
    let (status, _, _) = raw::request(gateway.addr, get(&key, "/v1/search?tokens=1&x=token").as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream.last().path_and_query,
        format!(
            "/v1/search?tokens=1&x=token&api%20key=fixed&token={}",
            common::UPSTREAM_CREDENTIAL.replace('-', "%2D")
        )
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_kb_as_one_header() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_yaml(&yaml("", ""), &upstream.url(), |_| {}).await;
    let key = gateway.read_write_key().await;
    let response = h2c_client()
        .get(gateway.url("/v1/article/a1"))
        .bearer_auth(&key)
        .header("cookie", "a=1")
        .header("cookie", "b=2; c=3")
        .header("cookie", "d=4")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen = upstream.last().headers;
    let cookies: Vec<_> = seen.get_all("cookie").iter().collect();
    assert_eq!(cookies, vec!["a=1; b=2; c=3; d=4"]);
    // One cookie line over HTTP/1 passes as it was.
    let request = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\nCookie: x=1; y=2\r\nConnection: close\r\n\r\n"
    );
    let (status, _, _) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(status, 200);
    let cookies: Vec<_> = upstream.last().headers.get_all("cookie").iter().cloned().collect();
    assert_eq!(cookies, vec!["x=1; y=2"]);
    gateway.shutdown().await;
}
