//! Browser clients (`cors:`, opt-in): a browser's preflight is answered by the gateway without a
//! key and without reaching the KB; every response to a listed origin, refusals included,
//! carries `Access-Control-Allow-Origin`; other origins get none, and their preflight is refused.
//! Over sockets, against a KB written here that sends CORS headers of its own.

mod common;

use common::kb::{self, FakeKb};
use common::raw;
use common::{ADMIN_TOKEN, RunningKb, TestGateway, UPSTREAM_CREDENTIAL, shipped_yaml};

const APP: &str = "https://app.example.com";
const DEV: &str = "http://localhost:3000";

fn with_cors() -> String {
    format!(
        "{}\ncors:\n  allowed_origins: [\"{APP}\", \"HTTP://LOCALHOST:3000\"]\n  max_age: 10m\n",
        shipped_yaml()
    )
}

/// A KB that answers 200 with a permissive CORS policy of its own (which the gateway must not
/// let through when `cors:` is on); `kb.count()` is the number of requests it got.
async fn cors_kb() -> RunningKb {
    FakeKb::new()
        .otherwise(|_| async {
            http::Response::builder()
                .header("content-type", "application/json")
                .header("access-control-allow-origin", "*")
                .header("access-control-allow-credentials", "true")
                .header("vary", "Accept-Encoding")
                .header("etag", "\"v1\"")
                .body(kb::full(&b"{\"ok\":true}"[..]))
                .unwrap()
        })
        .start()
        .await
}

/// A gateway with `cors:` on ([`with_cors`]) in front of a [`cors_kb`]; returns both.
async fn cors_gateway() -> (RunningKb, TestGateway) {
    let kb = cors_kb().await;
    let gateway = TestGateway::builder()
        .yaml(&with_cors())
        .upstream(&kb)
        .start()
        .await;
    (kb, gateway)
}

/// What a page served from `origin` sends for `fetch(path)` with `key`.
async fn browser_get(
    gateway: &TestGateway,
    path: &str,
    origin: &str,
    key: &str,
) -> reqwest::Response {
    gateway
        .client
        .get(gateway.url(path))
        .header("origin", origin)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// What Chrome sends before a `fetch` with an `Authorization` header: no key, no body.
fn browser_preflight(origin: &str, path: &str) -> Vec<u8> {
    format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: gateway.test\r\nAccept: */*\r\n\
         Access-Control-Request-Method: GET\r\n\
         Access-Control-Request-Headers: authorization\r\n\
         Origin: {origin}\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Site: cross-site\r\n\
         Referer: {origin}/\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn header_list(headers: &str, name: &str) -> Vec<String> {
    raw::header(headers, name)
        .unwrap_or_else(|| panic!("no {name} in {headers}"))
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// Every `Vary` field of a header block, lowercase.
fn vary(headers: &str) -> Vec<String> {
    headers
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("vary"))
        .flat_map(|(_, v)| v.split(',').map(|f| f.trim().to_ascii_lowercase()))
        .collect()
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_is_answered_without_a_key_or_the_kb() {
    let (kb, gateway) = cors_gateway().await;
    for (origin, path) in [
        (APP, "/v1/article/a1"),
        (DEV, "/v1/search?query=x"),
        // Preflights are answered before routing: the real request meets the route table.
        (APP, "/v1/not-a-route"),
    ] {
        let (status, headers, body) =
            raw::request(gateway.addr, &browser_preflight(origin, path)).await;
        assert_eq!(status, 204, "{origin} {path}: {headers}{body}");
        assert_eq!(body, "");
        assert_eq!(
            raw::header(&headers, "access-control-allow-origin"),
            Some(origin)
        );
        let methods = header_list(&headers, "access-control-allow-methods");
        for method in ["get", "head", "post", "put", "patch", "delete"] {
            assert!(methods.contains(&method.to_string()), "{methods:?}");
        }
        assert_eq!(
            header_list(&headers, "access-control-allow-headers"),
            ["authorization", "x-api-key", "content-type"]
        );
        assert_eq!(raw::header(&headers, "access-control-max-age"), Some("600"));
        assert_eq!(vary(&headers), ["origin"]);
        assert!(raw::header(&headers, "x-request-id").is_some());
        assert!(raw::header(&headers, "access-control-allow-credentials").is_none());
    }
    assert_eq!(kb.count(), 0, "no preflight reached the KB");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_preflight_from_any_other_origin_is_refused_with_no_cors_header() {
    let (kb, gateway) = cors_gateway().await;
    for origin in [
        "https://evil.example",
        "http://app.example.com",       // another scheme
        "https://app.example.com:8443", // another port
        "https://app.example.com.evil.example",
        "null",
    ] {
        let (status, headers, body) =
            raw::request(gateway.addr, &browser_preflight(origin, "/v1/article/a1")).await;
        assert_eq!(status, 403, "{origin}: {headers}");
        assert_eq!(raw::error_code(&body), "origin_not_allowed", "{origin}");
        assert_eq!(
            raw::header(&headers, "content-type"),
            Some("application/json")
        );
        assert!(
            raw::header(&headers, "access-control-allow-origin").is_none(),
            "{origin}: {headers}"
        );
        assert!(raw::header(&headers, "access-control-allow-methods").is_none());
        assert_eq!(vary(&headers), ["origin"]);
    }
    assert_eq!(kb.count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn every_response_to_a_listed_origin_carries_its_origin_refusals_included() {
    let (kb, gateway) = cors_gateway().await;
    let (_, read_key) = gateway
        .create_key(serde_json::json!({"scope": "read"}))
        .await;
    let client = &gateway.client;
    let get = |path: &str, origin: &str| {
        client
            .get(gateway.url(path))
            .header("origin", origin)
            .bearer_auth(&read_key)
    };

    // Forwarded: the KB's own `*` and credentials flag are replaced by the gateway's answer.
    let response = get("/v1/article/a1", APP).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert!(h.get("access-control-allow-credentials").is_none());
    let exposed = h["access-control-expose-headers"].to_str().unwrap();
    for name in ["X-Request-Id", "ETag", "Link", "RateLimit"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let vary: Vec<_> = h.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    assert_eq!(h["etag"], "\"v1\"");
    assert_eq!(kb.count(), 1);

    // The origin is echoed as the browser sent it (a listed origin in another case).
    let response = get("/v1/article/a1", DEV).send().await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], DEV);

    // Refusals: 401 without a key, 403 without a route, 403 without the permission.
    let refusals = [
        (
            client
                .get(gateway.url("/v1/article/a1"))
                .header("origin", APP),
            401,
            "missing_key",
        ),
        (get("/v1/nowhere", APP), 403, "route_not_allowed"),
        (
            client
                .post(gateway.url("/v1/article"))
                .header("origin", APP)
                .bearer_auth(&read_key),
            403,
            "insufficient_permissions",
        ),
    ];
    for (request, status, code) in refusals {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            APP,
            "{code}"
        );
        assert_eq!(response.headers()["vary"], "Origin", "{code}");
        let exposed = response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(exposed.contains("X-Request-Id"), "{code}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
    }
    assert_eq!(kb.count(), 2, "no refusal reached the KB");

    // Another origin's actual request is served (CORS is the browser's to enforce) but gets no
    // CORS header at all, not even the KB's `*`.
    let response = get("/v1/article/a1", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        response
            .headers()
            .get("access-control-expose-headers")
            .is_none()
    );
    let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_502_to_a_listed_origin_carries_its_origin() {
    // Nothing listens on the upstream's port.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let gateway = TestGateway::builder()
        .yaml(&with_cors())
        .upstream(&closed)
        .start()
        .await;
    let key = gateway.read_write_key().await;
    let response = browser_get(&gateway, "/v1/article/a1", APP, &key).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["access-control-allow-origin"], APP);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_cors_the_gateway_adds_nothing_and_a_preflight_needs_a_key() {
    let kb = cors_kb().await;
    let gateway = TestGateway::builder().upstream(&kb).start().await;
    let (status, headers, body) =
        raw::request(gateway.addr, &browser_preflight(APP, "/v1/article/a1")).await;
    assert_eq!(status, 401, "{headers}");
    assert_eq!(raw::error_code(&body), "missing_key");
    assert!(raw::header(&headers, "access-control-allow-origin").is_none());
    assert!(vary(&headers).is_empty(), "{headers}");

    // The KB's own headers pass as they always did.
    let key = gateway.read_write_key().await;
    let response = browser_get(&gateway, "/v1/article/a1", APP, &key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_eq!(response.headers()["vary"], "Accept-Encoding");
    gateway.shutdown().await;
}

#[test]
fn a_bad_cors_section_names_the_field_and_the_reason() {
    let env = |name: &str| match name {
        "KBGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_string()),
        "KB_API_KEY" => Some(UPSTREAM_CREDENTIAL.to_string()),
        _ => None,
    };
    let cases = [
        (
            "cors: { allowed_origins: [\"*\"] }",
            "cors.allowed_origins[0]: `*` is not accepted",
        ),
        (
            "cors: { allowed_origins: [\"https://a.example\", \"https://b.example/\"] }",
            "cors.allowed_origins[1]: \"https://b.example/\": an origin has no path",
        ),
        (
            "cors: { allowed_origins: [\"a.example\"] }",
            "cors.allowed_origins[0]: \"a.example\" is not an origin",
        ),
        (
            "cors: { allowed_origins: [] }",
            "cors.allowed_origins: list at least one origin",
        ),
        (
            "cors: { allowed_origins: [\"https://a.example\"], allowed_headers: [\"*\"] }",
            "cors.allowed_headers[0]: \"*\" is not a header name",
        ),
        (
            "cors: { allowed_origins: [\"https://a.example\"], max_age: 2d }",
            "cors.max_age: must be at most 24h",
        ),
        (
            "cors: { allowed_origins: [\"https://a.example\"], allow_credentials: true }",
            "unknown field `allow_credentials`",
        ),
    ];
    for (section, expected) in cases {
        let text = format!("{}\n{section}\n", shipped_yaml());
        let error = kbgate::Config::parse_with_env(&text, &env)
            .err()
            .unwrap_or_else(|| panic!("{section} was accepted"))
            .to_string();
        assert!(error.contains(expected), "{section}: {error}");
    }
    let text = format!(
        "{}\ncors: {{ allowed_origins: [\"https://a.example\"] }}\n",
        shipped_yaml()
    );
    let config = kbgate::Config::parse_with_env(&text, &env).unwrap();
    assert!(config.cors.is_some());
    let off = kbgate::Config::parse_with_env(&shipped_yaml(), &env).unwrap();
    assert!(off.cors.is_none(), "off by default");
}
