//! Transparency of the request side: bodies of unknown length on GET and HEAD reach
//! the KB whole, Host and authority values that are not hosts are refused, `Upgrade: h2c` is
//! served over HTTP/1.1, and the credential sources are a setting (`keys.sources`).

mod common;

use bytes::Bytes;
use common::kb::{self, FakeKb};
use common::raw::{self, Conn};
use common::{RunningKb, TestGateway, bin};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;

/// A KB that keeps every request body it reads (HTTP/1.1, or h2c with prior knowledge) and
/// answers 200 with the number of body bytes it got.
async fn body_upstream() -> RunningKb {
    FakeKb::new()
        .keep_bodies()
        .otherwise(|seen| async move {
            Response::new(kb::full(format!("{{\"got\":{}}}", seen.body_len)))
        })
        .start()
        .await
}

/// The framing the upstream saw: (Transfer-Encoding values, Content-Length values).
fn framing(headers: &http::HeaderMap) -> (Vec<String>, Vec<String>) {
    let all = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    (all("transfer-encoding"), all("content-length"))
}

// ---------- a GET or HEAD body of unknown length is forwarded, never dropped ----------

#[tokio::test]
async fn a_chunked_get_or_head_body_reaches_the_kb_whole_over_http1() {
    for http2_upstream in [false, true] {
        let upstream = body_upstream().await;
        let gateway = TestGateway::builder()
            .upstream(&upstream)
            .config(|config| {
                config.upstream.http2 = http2_upstream;
            })
            .start()
            .await;
        let key = gateway.read_write_key().await;
        for method in ["GET", "HEAD"] {
            let mut conn = Conn::open_keyed(
                gateway.addr,
                &format!("{method} /v1/search"),
                &key,
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                 9\r\n{\"query\":\r\nb\r\n\"gateways\"}\r\n0\r\n\r\n",
            )
            .await;
            let response = conn.next_response(method == "HEAD").await.unwrap();
            assert_eq!(response.status(), 200, "{method}: {}", response.text());
            let got = upstream.last();
            let what = format!("{method}, http2 upstream: {http2_upstream}");
            assert_eq!(got.method, method, "{what}");
            assert_eq!(
                (
                    String::from_utf8_lossy(&got.body).as_ref(),
                    got.body_complete
                ),
                ("{\"query\":\"gateways\"}", true),
                "{what}: {:?}",
                got.headers
            );
            if http2_upstream {
                assert_eq!(got.version, http::Version::HTTP_2, "{what}");
            } else {
                assert_eq!(
                    framing(&got.headers),
                    (vec!["chunked".to_string()], vec![]),
                    "{what}: the body is framed, not dropped"
                );
            }
            if method == "GET" {
                assert_eq!(response.text(), "{\"got\":20}", "{what}");
            }
        }
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn an_h2_get_with_data_and_no_content_length_reaches_the_kb_whole() {
    let upstream = body_upstream().await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    let h2 = common::h2c_client();
    let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"query\":")),
        Ok(Bytes::from_static(b"\"gateways\"}")),
    ];
    let response = h2
        .get(gateway.url("/v1/search"))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{\"got\":20}");
    let got = upstream.last();
    assert_eq!(got.method, "GET");
    assert_eq!(got.body, b"{\"query\":\"gateways\"}");
    assert!(got.body_complete);
    assert_eq!(framing(&got.headers), (vec!["chunked".to_string()], vec![]));

    // A GET without a body stays without one: no framing is invented for it.
    let (status, _) =
        common::status_and_code(common::keyed_get_with(&h2, gateway.url("/v1/search"), &key).await)
            .await;
    assert_eq!(status, 200);
    let got = upstream.last();
    assert!(got.body.is_empty());
    assert_eq!(framing(&got.headers), (vec![], vec![]));
    assert_eq!(upstream.count(), 2);
    gateway.shutdown().await;
}

/// A bodiless GET over HTTP/1.1 and a GET with a declared length keep their own framing.
#[tokio::test]
async fn get_bodies_of_known_length_and_no_body_are_framed_as_before() {
    let upstream = body_upstream().await;
    let (gateway, key) = TestGateway::start_keyed(&upstream).await;
    let with_length = format!(
        "GET /v1/search HTTP/1.1\r\nHost: kb.test\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let (status, _, body) = raw::request(gateway.addr, with_length.as_bytes()).await;
    assert_eq!((status, body.as_str()), (200, "{\"got\":5}"));
    assert_eq!(
        framing(&upstream.last().headers),
        (vec![], vec!["5".to_string()])
    );
    let (status, _, body) = raw::get(gateway.addr, "/v1/search", &key).await;
    assert_eq!((status, body.as_str()), (200, "{\"got\":0}"));
    assert_eq!(framing(&upstream.last().headers), (vec![], vec![]));
    gateway.shutdown().await;
}

// ---------- Host and authority values must be hosts, without credentials ----------

/// `GET /v1/article/a1` over HTTP/1.1 with the given Host line(s), closing after.
fn with_host(key: &str, host_lines: &str) -> String {
    format!(
        "GET /v1/article/a1 HTTP/1.1\r\n{host_lines}Authorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn host_values_that_are_not_hosts_are_refused() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let refused = [
        "Host: kb.test:-1\r\n",
        "Host: kb.test:8o\r\n",
        "Host: kb.test:+80\r\n",
        "Host: kb.test:0x50\r\n",
        "Host: kb.test:80:80\r\n",
        "Host: [zzz]\r\n",
        "Host: [zzz]:80\r\n",
        "Host: [::1\r\n",
        "Host: :80\r\n",
        "Host:\r\n",
        "Host: \r\n",
        "Host: user:pw@kb.test\r\n",
        "Host: kb%zz.test\r\n",
    ];
    for host in refused {
        let (status, _, body) = raw::request(gateway.addr, with_host(&key, host).as_bytes()).await;
        assert_eq!(
            (status, raw::error_code(&body).as_str()),
            (400, "bad_request"),
            "{host:?}: {body}"
        );
    }
    // An empty Host on HTTP/1.0 too: the target URI would have no authority.
    let request =
        format!("GET /v1/article/a1 HTTP/1.0\r\nHost:\r\nAuthorization: Bearer {key}\r\n\r\n");
    let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(
        (status, raw::error_code(&body).as_str()),
        (400, "bad_request")
    );
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());

    for host in [
        "Host: kb.test\r\n",
        "Host: KB.test:8080\r\n",
        "Host: 127.0.0.1:80\r\n",
        "Host: [::1]\r\n",
        "Host: [2001:db8::1]:8443\r\n",
    ] {
        let (status, _, body) = raw::request(gateway.addr, with_host(&key, host).as_bytes()).await;
        assert_eq!(status, 200, "{host:?}: {body}");
    }
    // HTTP/1.0 may still leave Host out.
    let request = format!("GET /v1/article/a1 HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\r\n");
    assert_eq!(raw::request(gateway.addr, request.as_bytes()).await.0, 200);
    assert_eq!(upstream.requests().len(), 6);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_absolute_form_target_with_credentials_or_a_bad_port_is_refused() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let refused = [
        "GET http://user:pw@kb.test/v1/article/a1 HTTP/1.0\r\n".to_string(),
        "GET http://user@kb.test/v1/article/a1 HTTP/1.0\r\n".to_string(),
        "GET http://user:pw@kb.test/v1/article/a1 HTTP/1.1\r\nHost: user:pw@kb.test\r\n"
            .to_string(),
        "GET http://kb.test:8o/v1/article/a1 HTTP/1.0\r\n".to_string(),
        "GET http://[zzz]/v1/article/a1 HTTP/1.0\r\n".to_string(),
    ];
    for head in refused {
        let request = format!("{head}Authorization: Bearer {key}\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
        // hyper itself may refuse a target it cannot parse (bare 400); either way, never 200.
        assert_eq!(status, 400, "{head:?}: {body}");
        if !body.is_empty() {
            assert_eq!(raw::error_code(&body), "bad_request", "{head:?}");
        }
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    let request =
        format!("GET http://kb.test/v1/article/a1 HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\r\n");
    let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.last().path_and_query, "/v1/article/a1");
    gateway.shutdown().await;
}

/// One HTTP/2 (h2c, prior knowledge) GET whose `:authority` is whatever `uri` says.
async fn h2_get(addr: SocketAddr, uri: &str, key: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, raw::error_code(&String::from_utf8_lossy(&body)))
}

#[tokio::test]
async fn an_h2_authority_with_credentials_or_a_bad_port_is_refused() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    for uri in [
        "http://user:pw@kb.test/v1/article/a1",
        "http://user@kb.test/v1/article/a1",
        "http://kb.test:8o/v1/article/a1",
        "http://kb.test:-1/v1/article/a1",
        "http://[zzz]/v1/article/a1",
    ] {
        assert_eq!(
            h2_get(gateway.addr, uri, &key).await,
            (400, "bad_request".to_string()),
            "{uri}"
        );
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_eq!(
        h2_get(gateway.addr, "http://kb.test:8080/v1/article/a1", &key).await,
        (200, String::new())
    );
    assert_eq!(
        upstream.last().headers.get("x-forwarded-host").unwrap(),
        "kb.test:8080"
    );
    gateway.shutdown().await;
}

// ---------- `Upgrade: h2c` is ignored and served over HTTP/1.1 ----------

/// The headers of an h2c offer must never reach the KB.
fn assert_no_offer_upstream(seen: &http::HeaderMap, what: &str) {
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            seen.get(name).is_none(),
            "{what}: {name} reached the KB: {seen:?}"
        );
    }
}

#[tokio::test]
async fn an_h2c_upgrade_offer_is_answered_over_http1_and_the_connection_stays_http1() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let offers = [
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        "Connection: upgrade\r\nConnection: http2-settings\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABk\r\n",
        // Not listed in Connection: still hop-by-hop, still never forwarded.
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n",
        "Upgrade: h2c, \r\n",
    ];
    for offer in offers {
        let mut conn = Conn::open_keyed(
            gateway.addr,
            "GET /v1/article/a1",
            &key,
            &format!("{offer}\r\n"),
        )
        .await;
        let response = conn.response().await;
        assert_eq!(response.start, "HTTP/1.1 200 OK", "{offer:?}");
        assert!(response.header("upgrade").is_none(), "{offer:?}");
        assert!(response.text().contains("/v1/article/a1"), "{offer:?}");
        assert_no_offer_upstream(&upstream.last().headers, offer);
        // Nothing switched: the connection still speaks HTTP/1.1 to a follow-up.
        let follow_up = format!(
            "PUT /v1/article/a2 HTTP/1.1\r\nHost: kb.test\r\nAuthorization: Bearer {key}\r\n{offer}Content-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        conn.send(follow_up.as_bytes()).await.unwrap();
        let response = conn.response().await;
        assert_eq!(response.start, "HTTP/1.1 200 OK", "{offer:?}");
        let seen = upstream.last();
        assert_eq!(
            (seen.method.as_str(), seen.body_len, seen.body_complete),
            ("PUT", 5, true),
            "{offer:?}"
        );
        assert_no_offer_upstream(&seen.headers, offer);
        assert!(conn.until_closed().await.is_empty(), "{offer:?}");
    }
    assert_eq!(upstream.requests().len(), 2 * offers.len());
    gateway.shutdown().await;
}

#[tokio::test]
async fn any_other_upgrade_stays_refused() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    for offer in [
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
        "Connection: Upgrade\r\nUpgrade: h2c, websocket\r\n",
        "Connection: Upgrade\r\nUpgrade: h2c\r\nUpgrade: WebSocket\r\n",
        "Connection: Upgrade\r\nUpgrade: h2\r\n",
        "Connection: Upgrade\r\nUpgrade: h2c/2\r\n",
        "Connection: Upgrade\r\nUpgrade: \r\n",
        "Connection: Upgrade\r\nUpgrade: TLS/1.2\r\n",
    ] {
        let request = format!(
            "GET /v1/article/a1 HTTP/1.1\r\nHost: kb.test\r\nAuthorization: Bearer {key}\r\n{offer}Connection: close\r\n\r\n"
        );
        let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
        assert_eq!(
            (status, raw::error_code(&body).as_str()),
            (400, "upgrade_not_allowed"),
            "{offer:?}"
        );
    }
    assert!(upstream.requests().is_empty());
    gateway.shutdown().await;
}

/// What `curl --http2 http://…` does: offer h2c; it must get its answer over HTTP/1.1.
#[tokio::test]
async fn curl_http2_on_plain_http_gets_its_answer() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var("CI").is_err(), "CI must have curl");
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let output = tokio::process::Command::new("curl")
        .args(["--http2", "-sS", "-v", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .arg(gateway.url("/v1/article/a1?lang=en"))
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("> Upgrade: h2c"),
        "curl offered h2c: {stderr}"
    );
    assert!(stderr.contains("< HTTP/1.1 200"), "{stderr}");
    assert!(!stderr.contains("< HTTP/1.1 101"), "{stderr}");
    assert!(stdout.contains("/v1/article/a1?lang=en"), "{stdout}");
    let seen = upstream.last();
    assert_eq!(seen.path_and_query, "/v1/article/a1?lang=en");
    assert_no_offer_upstream(&seen.headers, "curl --http2");
    gateway.shutdown().await;
}

// ---------- the credential sources are a setting; empty values are no key ----------

/// A KB with its own `key` query parameter: a column filter. `GET /v1/article/a1?key=title`
/// answers only the named columns of the one article; it also echoes the query it got.
async fn column_filter_kb() -> RunningKb {
    FakeKb::new()
        .otherwise(|seen| async move {
            let query = seen.query().to_string();
            let article = serde_json::json!({
                "id": "a1", "title": "Gateways", "body": "All about them."
            });
            let mut answer = serde_json::Map::new();
            for pair in query.split('&') {
                if let Some(column) = pair.strip_prefix("key=")
                    && let Some(value) = article.get(column)
                {
                    answer.insert(column.to_string(), value.clone());
                }
            }
            let body = serde_json::json!({ "query": query, "article": answer });
            Response::new(kb::full(body.to_string()))
        })
        .start()
        .await
}

/// The shipped config with `keys.sources` set to `sources` (YAML flow list).
async fn gateway_with_sources(upstream_url: &str, sources: &str) -> TestGateway {
    let yaml = format!("{}\nkeys:\n  sources: {sources}\n", common::shipped_yaml());
    TestGateway::builder()
        .yaml(&yaml)
        .upstream(upstream_url)
        .start()
        .await
}

async fn get_json(
    gateway: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut request = gateway.client.get(gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_kb_with_its_own_key_parameter_works_when_the_query_source_is_removed() {
    let kb = column_filter_kb().await;
    let gateway = gateway_with_sources(&kb.url(), "[authorization, x-api-key]").await;
    let key = gateway.read_write_key().await;
    let bearer = format!("Bearer {key}");
    let (status, body) = get_json(
        &gateway,
        "/v1/article/a1?key=title&key=body",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["query"], "key=title&key=body", "forwarded untouched");
    assert_eq!(
        body["article"],
        serde_json::json!({"title": "Gateways", "body": "All about them."})
    );
    let (status, body) =
        get_json(&gateway, "/v1/article/a1?key=title", &[("x-api-key", &key)]).await;
    assert_eq!(
        (status, &body["article"]),
        (200, &serde_json::json!({"title": "Gateways"}))
    );
    // A kbgate key in ?key= is not read as one (and a request with no key is refused).
    let (status, body) = get_json(&gateway, &format!("/v1/article/a1?key={key}"), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_key"))
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_renamed_query_parameter_carries_the_key_and_key_reaches_the_kb() {
    let kb = column_filter_kb().await;
    let gateway = gateway_with_sources(&kb.url(), "[authorization, \"query:kbgate_key\"]").await;
    let key = gateway.read_write_key().await;
    let (status, body) = get_json(
        &gateway,
        &format!("/v1/article/a1?key=title&kbgate_key={key}"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["query"], "key=title",
        "the kbgate key is taken out, `key` stays"
    );
    assert_eq!(body["article"], serde_json::json!({"title": "Gateways"}));
    // Percent-encoded names are the same parameter.
    let (status, body) =
        get_json(&gateway, &format!("/v1/article/a1?kbgate%5Fkey={key}"), &[]).await;
    assert_eq!((status, &body["query"]), (200, &serde_json::json!("")));
    // X-Api-Key is not a source here: not read, and still never forwarded.
    let (status, body) = get_json(&gateway, "/v1/article/a1", &[("x-api-key", &key)]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_key"))
    );
    // Two different keys across the sources are still ambiguous.
    let (status, body) = get_json(
        &gateway,
        "/v1/article/a1?kbgate_key=kb_other",
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("ambiguous_key"))
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_default_sources_still_read_all_three() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let bearer = format!("Bearer {key}");
    for (path, headers) in [
        (
            "/v1/article/a1?lang=en".to_string(),
            vec![("authorization", bearer.as_str())],
        ),
        (
            "/v1/article/a1?lang=en".to_string(),
            vec![("x-api-key", key.as_str())],
        ),
        (format!("/v1/article/a1?key={key}&lang=en"), vec![]),
    ] {
        let (status, body) = get_json(&gateway, &path, &headers).await;
        assert_eq!(status, 200, "{path} {headers:?}: {body}");
        let seen = upstream.last();
        assert_eq!(seen.path_and_query, "/v1/article/a1?lang=en");
        assert!(seen.headers.get("x-api-key").is_none());
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn empty_key_sources_beside_a_key_are_no_second_key() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let cases = [
        format!(
            "GET /v1/article/a1?lang=en HTTP/1.1\r\nAuthorization: Bearer {key}\r\nX-Api-Key:\r\n"
        ),
        format!(
            "GET /v1/article/a1?lang=en HTTP/1.1\r\nAuthorization: Bearer {key}\r\nX-Api-Key:   \r\n"
        ),
        format!("GET /v1/article/a1?key=&lang=en HTTP/1.1\r\nAuthorization: Bearer {key}\r\n"),
        format!("GET /v1/article/a1?lang=en&key HTTP/1.1\r\nX-Api-Key: {key}\r\n"),
        format!("GET /v1/article/a1?key={key}&lang=en HTTP/1.1\r\nAuthorization: Bearer \r\n"),
    ];
    for head in &cases {
        let request = format!("{head}Host: kb.test\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
        assert_eq!(status, 200, "{head:?}: {body}");
        assert_eq!(
            upstream.last().path_and_query,
            "/v1/article/a1?lang=en",
            "{head:?}"
        );
    }
    for head in [
        "GET /v1/article/a1?key=&lang=en HTTP/1.1\r\nX-Api-Key:\r\nAuthorization: Bearer \r\n",
        "GET /v1/article/a1?key= HTTP/1.1\r\n",
        "GET /v1/article/a1 HTTP/1.1\r\nX-Api-Key: \r\n",
    ] {
        let request = format!("{head}Host: kb.test\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw::request(gateway.addr, request.as_bytes()).await;
        assert_eq!(
            (status, raw::error_code(&body).as_str()),
            (401, "missing_key"),
            "{head:?}"
        );
    }
    assert_eq!(upstream.requests().len(), cases.len());
    gateway.shutdown().await;
}

/// A broken `keys.sources` is refused by the real binary, naming the entry and the reason.
#[tokio::test]
async fn check_config_names_a_bad_key_source() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[authorization, cookie]",
            "keys.sources[1]: unknown key source \"cookie\"",
        ),
        ("[]", "keys.sources: must name at least one source"),
        (
            "[\"query:\"]",
            "keys.sources[0]: query: needs the parameter's name",
        ),
    ];
    for (sources, expected) in cases {
        let path = dir.path().join("kbgate.yaml");
        std::fs::write(
            &path,
            format!(
                "{}\nkeys: {{ sources: {sources} }}\n",
                common::shipped_yaml()
            ),
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let run = bin::run(&mut bin::kbgate(&["check-config", "--config", path])).await;
        let stderr = run.stderr;
        assert_eq!(run.code, Some(2), "{sources}: {stderr}");
        assert!(stderr.contains(expected), "{sources}: {stderr}");
    }
    // The default, written out, is accepted.
    let path = dir.path().join("kbgate.yaml");
    std::fs::write(
        &path,
        format!(
            "{}\nkeys: {{ sources: [authorization, x-api-key, query:key] }}\n",
            common::shipped_yaml()
        ),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    bin::run(&mut bin::kbgate(&["check-config", "--config", path]))
        .await
        .success();
}
