//! TLS and HTTP/2 over real sockets: the gateway's HTTPS listener (ALPN h2 and http/1.1), h2c
//! with prior knowledge, X-Forwarded-Proto, an https:// upstream trusted through `upstream.ca`,
//! and junk on the TLS listener.

mod common;

use common::raw;
use common::tls::{self, TestCert};
use common::{RunningKb, TestGateway, UPSTREAM_CREDENTIAL, status_and_code};
use reqwest::Version;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// A gateway serving HTTPS with a certificate generated for this test.
async fn tls_gateway(upstream: &RunningKb) -> (TestGateway, TestCert, tempfile::TempDir) {
    tls_gateway_with(upstream, |_| {}).await
}

async fn tls_gateway_with(
    upstream: &RunningKb,
    adjust: impl FnOnce(&mut kbgate::Config),
) -> (TestGateway, TestCert, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(dir.path());
    let files = cert.files();
    let gateway = TestGateway::builder()
        .upstream(upstream)
        .config(|config| {
            config.tls = Some(files);
            adjust(config);
        })
        .start()
        .await;
    (gateway, cert, dir)
}

fn https_url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{}", addr.port(), path)
}

#[tokio::test]
async fn the_tls_listener_negotiates_h2_by_alpn_and_still_speaks_http1() {
    let upstream = RunningKb::start().await;
    let (gateway, cert, _dir) = tls_gateway(&upstream).await;
    let (_, key) = gateway.create_key(json!({"name": "tls reader"})).await;
    let url = https_url(gateway.addr, "/v1/article/a1");

    let h2 = tls::client_trusting(&cert, gateway.addr).build().unwrap();
    let response = h2.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2, "ALPN should pick h2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/v1/article/a1");

    let h1 = tls::client_trusting(&cert, gateway.addr)
        .http1_only()
        .build()
        .unwrap();
    let response = h1.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/v1/article/a1");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "both requests were forwarded");
    for request in &seen {
        assert_eq!(request.path_and_query, "/v1/article/a1");
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {UPSTREAM_CREDENTIAL}")
        );
    }

    // The plain-HTTP client of the harness cannot talk to the TLS listener.
    let plain = gateway
        .client
        .get(gateway.url("/v1/article/a1"))
        .bearer_auth(&key)
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP to the TLS listener answered: {plain:?}"
    );
    assert_eq!(upstream.requests().len(), 2);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused_by_its_own_tls() {
    let upstream = RunningKb::start().await;
    let (gateway, _cert, _dir) = tls_gateway(&upstream).await;
    // Another self-signed certificate for the same names: the gateway's is not signed by it.
    let other_dir = tempfile::tempdir().unwrap();
    let other = tls::self_signed(other_dir.path());
    let client = tls::client_trusting(&other, gateway.addr).build().unwrap();
    let result = client
        .get(https_url(gateway.addr, "/v1/article/a1"))
        .send()
        .await;
    let error = result.expect_err("a certificate the client does not trust was accepted");
    assert!(
        error.is_connect(),
        "expected a connect (TLS) error, got {error:?}"
    );
    assert!(upstream.requests().is_empty());
    gateway.shutdown().await;
}

#[tokio::test]
async fn refusals_over_tls_and_h2_are_the_same_json() {
    let upstream = RunningKb::start().await;
    let (gateway, cert, _dir) = tls_gateway(&upstream).await;
    let (_, read_key) = gateway.create_key(json!({"name": "reader"})).await;
    let client = tls::client_trusting(&cert, gateway.addr).build().unwrap();

    let response = client
        .get(https_url(gateway.addr, "/v1/article/a1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap(),
        "application/json"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_key", "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let response = common::keyed_get_with(
        &client,
        https_url(gateway.addr, "/v1/article/a1"),
        "kb_not-a-real-key",
    )
    .await;
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(status_and_code(response).await, (401, "invalid_key".into()));

    let response = client
        .put(https_url(gateway.addr, "/v1/article/a1"))
        .bearer_auth(&read_key)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(
        status_and_code(response).await,
        (403, "insufficient_permissions".into())
    );

    let response =
        common::keyed_get_with(&client, https_url(gateway.addr, "/v1/nowhere"), &read_key).await;
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(
        status_and_code(response).await,
        (403, "route_not_allowed".into())
    );

    assert!(
        upstream.requests().is_empty(),
        "no refused request reached the upstream"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn h2c_with_prior_knowledge_works_on_the_plain_listener() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let client = common::h2c_client();

    let response = common::keyed_get_with(&client, gateway.url("/v1/article/a1"), &key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/v1/article/a1");

    let response = client
        .get(gateway.url("/v1/article/a1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(status_and_code(response).await, (401, "missing_key".into()));

    assert_eq!(upstream.requests().len(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_proto_says_how_the_client_came() {
    let upstream = RunningKb::start().await;

    let (tls_gateway, cert, _dir) = tls_gateway(&upstream).await;
    let (_, key) = tls_gateway.create_key(json!({"name": "proto"})).await;
    let client = tls::client_trusting(&cert, tls_gateway.addr)
        .build()
        .unwrap();
    let response = client
        .get(https_url(tls_gateway.addr, "/v1/article/a1"))
        .bearer_auth(&key)
        // A client cannot choose what the upstream hears.
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(
        seen.headers
            .get_all("x-forwarded-proto")
            .iter()
            .collect::<Vec<_>>(),
        vec!["https"]
    );
    tls_gateway.shutdown().await;

    let plain_gateway = TestGateway::start(&upstream).await;
    let (_, key) = plain_gateway.create_key(json!({"name": "proto"})).await;
    let response = plain_gateway
        .client
        .get(plain_gateway.url("/v1/article/a2"))
        .bearer_auth(&key)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.path_and_query, "/v1/article/a2");
    assert_eq!(
        seen.headers
            .get_all("x-forwarded-proto")
            .iter()
            .collect::<Vec<_>>(),
        vec!["http"]
    );
    plain_gateway.shutdown().await;
}

/// A gateway whose upstream is an HTTPS echo server (`tls::start_https_upstream`) at
/// `https://localhost:PORT/` with a fresh self-signed certificate, trusting that certificate
/// through `upstream.ca` (or, with `trust_other`, another one); with a key. The recording
/// upstream is only a placeholder for the harness; nothing should reach it.
struct HttpsUpstream {
    gateway: TestGateway,
    placeholder: RunningKb,
    key: String,
    _certs: [tempfile::TempDir; 2],
}

async fn gateway_to_https_upstream(trust_other: bool, http2: bool) -> HttpsUpstream {
    let cert_dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(cert_dir.path());
    let upstream_addr = tls::start_https_upstream(&cert).await;
    let other_dir = tempfile::tempdir().unwrap();
    let ca = match trust_other {
        false => cert.cert_path.clone(),
        // The upstream's own certificate is not signed by this one.
        true => tls::self_signed(other_dir.path()).cert_path,
    };
    let placeholder = RunningKb::start().await;
    let gateway = TestGateway::builder()
        .upstream(&placeholder)
        .config(|config| {
            config.upstream.origin = format!("https://localhost:{}/", upstream_addr.port())
                .parse()
                .unwrap();
            config.upstream.ca = Some(ca);
            config.upstream.http2 = http2;
        })
        .start()
        .await;
    let (_, key) = gateway.create_key(json!({"name": "https upstream"})).await;
    HttpsUpstream {
        gateway,
        placeholder,
        key,
        _certs: [cert_dir, other_dir],
    }
}

/// A keyed GET through the gateway to an HTTPS upstream trusted through `upstream.ca`; returns
/// what the upstream saw (path, authorization, HTTP version).
async fn through_https_upstream(http2: bool) -> Value {
    let HttpsUpstream {
        gateway,
        placeholder,
        key,
        _certs,
    } = gateway_to_https_upstream(false, http2).await;
    let response = gateway
        .keyed_get(gateway.url("/v1/article/a1?lang=en"), &key)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/v1/article/a1?lang=en");
    assert_eq!(
        body["authorization"],
        format!("Bearer {UPSTREAM_CREDENTIAL}")
    );
    assert!(placeholder.requests().is_empty());
    gateway.shutdown().await;
    body
}

#[tokio::test]
async fn an_https_upstream_is_reached_through_the_configured_ca() {
    assert_eq!(through_https_upstream(false).await["version"], "HTTP/1.1");
}

#[tokio::test]
async fn an_https_upstream_can_be_spoken_to_over_h2() {
    assert_eq!(through_https_upstream(true).await["version"], "HTTP/2.0");
}

#[tokio::test]
async fn an_https_upstream_outside_the_trusted_roots_is_unavailable() {
    let https = gateway_to_https_upstream(true, false).await;
    let (gateway, key) = (https.gateway, https.key);

    let (status, code) = gateway.get("/v1/article/a1", &key).await;
    assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
    gateway.shutdown().await;
}

/// Writes `bytes` on a fresh connection and reads until the gateway closes it (EOF or reset).
/// Returns what was read. Panics if the connection stays open for [`raw::TIMEOUT`].
async fn send_junk(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = raw::Conn::open(addr).await;
    conn.send(bytes).await.unwrap();
    conn.until_closed().await
}

#[tokio::test]
async fn junk_on_the_tls_listener_does_not_hurt_it() {
    let upstream = RunningKb::start().await;
    let (gateway, cert, _dir) = tls_gateway_with(&upstream, |config| {
        config.limits.tls_handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let (_, key) = gateway.create_key(json!({"name": "after junk"})).await;
    let client = tls::client_trusting(&cert, gateway.addr).build().unwrap();
    let url = https_url(gateway.addr, "/v1/article/a1");

    // A client that connects and says nothing does not hold up anyone else.
    let mut silent = raw::Conn::open(gateway.addr).await;

    let plain_http = format!(
        "GET /v1/article/a1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    let answer = send_junk(gateway.addr, plain_http.as_bytes()).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "a plaintext request was answered in plaintext: {:?}",
        String::from_utf8_lossy(&answer)
    );

    let garbage: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    send_junk(gateway.addr, &garbage).await;
    // A TLS record header announcing a handshake, then nonsense.
    send_junk(gateway.addr, b"\x16\x03\x01\x00\x05hello\xff\xff\xff\xff").await;

    let response = client.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the TLS listener stopped working after junk"
    );
    assert_eq!(response.version(), Version::HTTP_2);

    // The silent client is dropped once the handshake timeout passes.
    // (until_closed panics if a client that never handshakes is kept open)
    silent.until_closed().await;

    let response = tls::client_trusting(&cert, gateway.addr)
        .http1_only()
        .build()
        .unwrap()
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    upstream.assert_count(2, "only the two proper requests were forwarded");
    gateway.shutdown().await;
}
