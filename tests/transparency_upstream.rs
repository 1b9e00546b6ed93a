//! The gateway is transparent to upstreams nobody here wrote: an unrequested
//! `101 Switching Protocols` never reaches a client; header names with underscores, a client's
//! copy of an injected query parameter or header, and split HTTP/2 cookies never reach the KB
//! as such, nor can a client's `Connection` line drop the gateway's own headers;
//! links and redirects the KB builds from its own origin (or from the client's Host) lead back
//! to the gateway; and `X-Forwarded-For` is appended to behind a trusted proxy.

mod common;

use common::kb::{self, FakeKb};
use common::raw::{self, Conn};
use common::raw_upstream::RawUpstream;
use common::{RunningKb, TestGateway, h2c_client};

fn get(key: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
}

// ---------- an unrequested 1xx ----------

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
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
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
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
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
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    let (status, _, body) =
        raw::request(gateway.addr, get(&key, "/v1/article/a1").as_bytes()).await;
    assert_eq!((status, body.as_str()), (200, "{\"ok\":true}"));
    gateway.shutdown().await;
}

// ---------- what must not reach the KB ----------

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

/// A gateway on [`yaml`]`(extra, top)` in front of `kb`, and a read-write key.
async fn start(kb: &RunningKb, extra: &str, top: &str) -> (TestGateway, String) {
    let gateway = TestGateway::builder()
        .yaml(&yaml(extra, top))
        .upstream(kb)
        .start()
        .await;
    let key = gateway.read_write_key().await;
    (gateway, key)
}

/// [`start`] with the upstream's base path `/api`: a KB served under a prefix.
async fn start_under_api(kb: &RunningKb, extra: &str) -> (TestGateway, String) {
    let gateway = TestGateway::builder()
        .yaml(&yaml(extra, ""))
        .upstream(kb)
        .config(|config| config.upstream.base_path = "/api".into())
        .start()
        .await;
    let key = gateway.read_write_key().await;
    (gateway, key)
}

const UNDERSCORED: &str = "Transfer_Encoding: chunked\r\nX_Api_Key: kb_forged\r\nX_Kbgate_Key_Id: forged\r\nX_Forwarded_For: 6.6.6.6\r\nX_Custom_Thing: custom\r\nX-Other: other\r\n";

async fn send_underscored(gateway: &TestGateway, key: &str) {
    let request = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n{UNDERSCORED}Connection: close\r\n\r\n"
    );
    let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn header_names_with_underscores_are_dropped_by_default() {
    let (upstream, gateway, key) = TestGateway::builder()
        .yaml(&yaml("", ""))
        .start_with_key()
        .await;
    send_underscored(&gateway, &key).await;
    let seen = upstream.last().headers;
    for name in seen.keys() {
        assert!(
            !name.as_str().contains('_'),
            "{name} reached the KB: {seen:?}"
        );
    }
    assert_eq!(seen["x-other"], "other");
    assert_ne!(seen["x-kbgate-key-id"], "forged");
    gateway.shutdown().await;
}

#[tokio::test]
async fn underscores_may_pass_when_asked_but_never_as_a_gateway_header() {
    let (upstream, gateway, key) = TestGateway::builder()
        .yaml(&yaml("  forward_underscore_headers: true", ""))
        .start_with_key()
        .await;
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
async fn an_injected_header_replaces_the_clients_and_a_connection_line_drops_no_gateway_header() {
    let injected = r#"headers: { Authorization: "Bearer ${KB_API_KEY}", X-Kb-Tenant: acme }"#;
    let config = yaml("", "").replace(
        r#"headers: { Authorization: "Bearer ${KB_API_KEY}" }"#,
        injected,
    );
    assert!(config.contains("X-Kb-Tenant"), "{config}");
    let (upstream, gateway, key) = TestGateway::builder().yaml(&config).start_with_key().await;
    let request = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n\
         X-Kb-Tenant: evil\r\nx-kb-tenant: evil2\r\nX-Other: kept\r\nX-Dropped: gone\r\n\
         Connection: close, X-Kb-Tenant, X-Forwarded-For, X-Request-Id, X-Dropped\r\n\r\n"
    );
    let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let seen = upstream.last().headers;
    let values = |name: &str| -> Vec<&str> {
        seen.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(values("x-kb-tenant"), ["acme"], "{seen:?}");
    assert_eq!(values("x-other"), ["kept"]);
    assert!(values("x-dropped").is_empty(), "{seen:?}");
    // Named by the client's Connection line, the gateway's own headers still go.
    assert_eq!(values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values("x-request-id").len(), 1, "{seen:?}");
    assert_eq!(values("host"), [upstream.addr.to_string().as_str()]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_injected_query_parameter_replaces_the_clients() {
    let (upstream, gateway, key) = TestGateway::builder()
        .yaml(&yaml(
            r#"    query: { token: "${KB_API_KEY}", "api key": fixed }"#,
            "",
        ))
        .start_with_key()
        .await;
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
    let (status, _, _) = raw::request(
        gateway.addr,
        get(&key, "/v1/search?tokens=1&x=token").as_bytes(),
    )
    .await;
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
    let (upstream, gateway, key) = TestGateway::builder()
        .yaml(&yaml("", ""))
        .start_with_key()
        .await;
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
    let cookies: Vec<_> = upstream
        .last()
        .headers
        .get_all("cookie")
        .iter()
        .cloned()
        .collect();
    assert_eq!(cookies, vec!["x=1; y=2"]);
    gateway.shutdown().await;
}

// ---------- links and redirects lead back through the gateway ----------

/// A KB that builds absolute URLs: paging links from the `Host` it was sent (as most web
/// frameworks do), redirects from its own configured origin. It serves under `prefix`.
///
/// - `{prefix}/v1/article?page=N`: 200, `Link: <http://{Host}{prefix}/v1/article?page=N+1>;
///   rel="next"` beside a CDN link, `Content-Location` to itself, the next link in the body;
/// - `{prefix}/v1/article/old`: 301 to `http://{own address}{prefix}/v1/article/new`;
/// - `{prefix}/v1/article/relative`: 302 to `/elsewhere?x=1` (relative);
/// - `{prefix}/v1/article/outside`: 302 to `http://{own address}/login` (outside the prefix).
async fn linking_kb(prefix: &'static str) -> RunningKb {
    let location = |status: u16, to: String| {
        http::Response::builder()
            .status(status)
            .header("location", to)
            .body(kb::empty())
            .unwrap()
    };
    FakeKb::new()
        .route(&format!("{prefix}/v1/article"), move |req| {
            let host = req.headers["host"].to_str().unwrap();
            let page = req.param("page").unwrap_or(1);
            let next = format!("http://{host}{prefix}/v1/article?page={}", page + 1);
            http::Response::builder()
                .header(
                    "link",
                    format!("<{next}>; rel=\"next\", <https://cdn.example/style.css>; rel=preload"),
                )
                .header(
                    "content-location",
                    format!("http://{host}{}", req.path_and_query),
                )
                .header("content-type", "application/json")
                .body(kb::full(format!("{{\"next\":\"{next}\"}}")))
                .unwrap()
        })
        .route(&format!("{prefix}/v1/article/old"), move |req| {
            location(301, format!("http://{}{prefix}/v1/article/new", req.kb))
        })
        .route(&format!("{prefix}/v1/article/relative"), move |_| {
            location(302, "/elsewhere?x=1".into())
        })
        .route(&format!("{prefix}/v1/article/outside"), move |req| {
            location(302, format!("http://{}/login", req.kb))
        })
        .otherwise(|_| async {
            http::Response::builder()
                .status(404)
                .body(kb::empty())
                .unwrap()
        })
        .start()
        .await
}

/// (Host, target) of the last request `kb` saw.
fn host_and_target(kb: &RunningKb) -> (String, String) {
    let seen = kb.last();
    (
        seen.headers["host"].to_str().unwrap().to_string(),
        seen.path_and_query,
    )
}

/// GET `target` with `Host: gw.test:8080`; returns (status, headers, body).
async fn get_via(gateway: &TestGateway, key: &str, target: &str) -> (u16, String, String) {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: gw.test:8080\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    raw::request(gateway.addr, request.as_bytes()).await
}

fn header(headers: &str, name: &str) -> String {
    raw::header(headers, name)
        .unwrap_or_else(|| panic!("no {name} in {headers}"))
        .to_string()
}

#[tokio::test]
async fn links_and_redirects_to_the_kbs_origin_lead_back_to_the_gateway() {
    let kb = linking_kb("/api").await;
    let (gateway, key) = start_under_api(&kb, "").await;

    let (status, headers, _) = get_via(&gateway, &key, "/v1/article?page=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        host_and_target(&kb),
        (kb.addr.to_string(), "/api/v1/article?page=1".into()),
        "the KB's own Host by default"
    );
    assert_eq!(
        header(&headers, "link"),
        "<http://gw.test:8080/v1/article?page=2>; rel=\"next\", <https://cdn.example/style.css>; rel=preload"
    );
    assert_eq!(
        header(&headers, "content-location"),
        "http://gw.test:8080/v1/article?page=1"
    );

    // The rewritten link leads to the next page through the gateway.
    let (status, headers, _) = get_via(&gateway, &key, "/v1/article?page=2").await;
    assert_eq!(status, 200);
    assert_eq!(host_and_target(&kb).1, "/api/v1/article?page=2");
    assert!(header(&headers, "link").starts_with("<http://gw.test:8080/v1/article?page=3>"));

    let (status, headers, _) = get_via(&gateway, &key, "/v1/article/old").await;
    assert_eq!(status, 301);
    assert_eq!(
        header(&headers, "location"),
        "http://gw.test:8080/v1/article/new"
    );
    let (status, headers, _) = get_via(&gateway, &key, "/v1/article/relative").await;
    assert_eq!(
        (status, header(&headers, "location")),
        (302, "/elsewhere?x=1".into()),
        "relative: left alone"
    );
    let (status, headers, _) = get_via(&gateway, &key, "/v1/article/outside").await;
    assert_eq!(
        (status, header(&headers, "location")),
        (302, format!("http://{}/login", kb.addr)),
        "outside the upstream's prefix: not served by the gateway, left alone"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn public_url_is_where_links_lead_over_http1_and_h2() {
    let kb = linking_kb("").await;
    let (gateway, key) = start(&kb, "", "public_url: https://kb-gateway.example.com/").await;
    let (_, headers, _) = get_via(&gateway, &key, "/v1/article/old").await;
    assert_eq!(
        header(&headers, "location"),
        "https://kb-gateway.example.com/v1/article/new"
    );
    let response =
        common::keyed_get_with(&h2c_client(), gateway.url("/v1/article?page=4"), &key).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response.headers()["link"],
        "<https://kb-gateway.example.com/v1/article?page=5>; rel=\"next\", <https://cdn.example/style.css>; rel=preload"
    );
    // Without public_url, the h2 client's :authority is the public origin.
    let (plain, key) = start(&kb, "", "").await;
    let not_following = reqwest::Client::builder()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = common::keyed_get_with(&not_following, plain.url("/v1/article/old"), &key).await;
    assert_eq!(
        response.headers()["location"],
        plain.url("/v1/article/new").as_str()
    );
    plain.shutdown().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host_and_its_links_come_back() {
    // No prefix: the KB's own body links are right as they are.
    let kb = linking_kb("").await;
    let (gateway, key) = start(&kb, "  preserve_host: true", "").await;
    let (status, headers, body) = get_via(&gateway, &key, "/v1/article?page=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        host_and_target(&kb).0,
        "gw.test:8080",
        "the client's Host reached the KB"
    );
    assert_eq!(body, "{\"next\":\"http://gw.test:8080/v1/article?page=2\"}");
    assert!(header(&headers, "link").starts_with("<http://gw.test:8080/v1/article?page=2>"));
    let (_, headers, _) = get_via(&gateway, &key, "/v1/article/old").await;
    assert_eq!(
        header(&headers, "location"),
        "http://gw.test:8080/v1/article/new"
    );
    gateway.shutdown().await;

    // Under a prefix: links the KB built from the client's Host lose the prefix.
    let kb = linking_kb("/api").await;
    let (gateway, key) = start_under_api(&kb, "  preserve_host: true").await;
    let (_, headers, _) = get_via(&gateway, &key, "/v1/article?page=7").await;
    assert_eq!(
        host_and_target(&kb),
        ("gw.test:8080".into(), "/api/v1/article?page=7".into())
    );
    assert!(
        header(&headers, "link").starts_with("<http://gw.test:8080/v1/article?page=8>"),
        "{headers}"
    );
    assert_eq!(
        header(&headers, "content-location"),
        "http://gw.test:8080/v1/article?page=7"
    );
    gateway.shutdown().await;
}

// ---------- X-Forwarded-For behind a trusted proxy ----------

/// Sends a GET from 127.0.0.1 with these `X-Forwarded-For` lines; returns what the KB got.
async fn forwarded_for_seen(
    gateway: &TestGateway,
    upstream: &RunningKb,
    key: &str,
    lines: &[&str],
) -> Vec<String> {
    let mut request = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\n"
    );
    for line in lines {
        request.push_str(&format!("X-Forwarded-For: {line}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    upstream
        .last()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn x_forwarded_for_is_appended_to_behind_a_trusted_proxy() {
    let (upstream, gateway, key) = TestGateway::builder()
        .yaml(&yaml("", "trusted_proxies: [10.0.0.0/8, 127.0.0.1/32]"))
        .start_with_key()
        .await;
    assert_eq!(
        forwarded_for_seen(&gateway, &upstream, &key, &["203.0.113.7, 10.1.2.3"]).await,
        vec!["203.0.113.7, 10.1.2.3, 127.0.0.1"]
    );
    assert_eq!(
        forwarded_for_seen(&gateway, &upstream, &key, &["198.51.100.2", "10.1.2.3"]).await,
        vec!["198.51.100.2, 10.1.2.3, 127.0.0.1"],
        "two lines are one list"
    );
    assert_eq!(
        forwarded_for_seen(&gateway, &upstream, &key, &[]).await,
        vec!["127.0.0.1"],
        "no chain: the peer alone"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_forged_x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let upstream = RunningKb::start().await;
    for top in ["", "trusted_proxies: [10.0.0.0/8, \"::1\"]"] {
        let (gateway, key) = start(&upstream, "", top).await;
        assert_eq!(
            forwarded_for_seen(&gateway, &upstream, &key, &["6.6.6.6", "10.0.0.1"]).await,
            vec!["127.0.0.1"],
            "{top:?}"
        );
        gateway.shutdown().await;
    }
}
