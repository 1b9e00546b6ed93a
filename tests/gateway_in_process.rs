//! The gateway as a value: built in process from the shipped config (a real embedded store in a
//! tempdir, real keys) and called without a socket, as axum's examples test `app()`. Covers
//! every refusal the gateway gives before the KB answers: status, code, the one JSON body and
//! X-Request-Id. The KB is an address nothing listens on, so an admitted request gets 502.
//! (`body_timeout` and `upstream_timeout` need a KB that reads or stalls: see tests/hostile_*.)

mod common;

use bytes::Bytes;
use common::store::{Call, HookedStore};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kbgate::authz::Scope;
use kbgate::body::Body;
use kbgate::gateway::Gateway;
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::{KeyRecord, KeyStore, Keyring, StoreError, secret};
use kbgate::rejection::Rejection;
use kbgate::server::{ConnInfo, Handler};
use kbgate::usage::UsageRecorder;
use std::sync::Arc;

/// Nothing listens on port 1: connecting is refused at once.
const UNREACHABLE_KB: &str = "http://127.0.0.1:1";

/// The shipped config with a query rule on `/v1/search`, CORS for one origin and a 16-byte
/// body limit, so that every refusal can be reached.
fn config(dir: &std::path::Path) -> kbgate::Config {
    let shipped = common::shipped_yaml();
    let search = r#"path: "/v1/search",                    permission: "search:read" }"#;
    assert!(
        shipped.contains(search),
        "the shipped /v1/search route moved"
    );
    let text = shipped.replace(
        search,
        r#"path: "/v1/search", permission: "search:read", query: { deny: [_where] } }"#,
    ) + "\ncors: { allowed_origins: [\"https://app.example\"] }\n";
    let mut config = common::TestGateway::builder()
        .yaml(&text)
        .upstream(UNREACHABLE_KB)
        .build_config(dir);
    config.limits.max_body = 16;
    config
}

/// A store key and its secret: read scope, changed by `edit` before it is stored.
async fn key(store: &dyn KeyStore, edit: impl FnOnce(&mut KeyRecord)) -> String {
    let new = secret::generate();
    let now = chrono::Utc::now();
    let mut record = KeyRecord::new("test".into(), Scope::Read, vec![], None, &new, now);
    edit(&mut record);
    store.create(&record).await.unwrap();
    new.secret
}

fn gateway(config: &kbgate::Config, store: Arc<dyn KeyStore>) -> Gateway {
    let keyring = Arc::new(Keyring::new(store, config.hot_tier, true));
    let usage = Arc::new(UsageRecorder::default());
    kbgate::app::gateway(config, keyring, usage, None).unwrap()
}

/// A request with a Host (HTTP/1.1 needs one) and an X-Request-Id naming the case.
fn request(method: Method, target: &str, case: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(target)
        .header("host", "kb.test")
        .header("x-request-id", case)
}

fn empty(builder: http::request::Builder) -> Request<Full<Bytes>> {
    builder.body(Full::default()).unwrap()
}

async fn call(gateway: &Gateway, request: Request<Full<Bytes>>) -> Response<Body> {
    let conn = ConnInfo::new("192.0.2.7:40000".parse().unwrap(), false);
    gateway.handle(request, &conn).await
}

/// The response is `expected`'s: status, the one JSON body, and the request's own id.
async fn assert_refused(response: Response<Body>, expected: Rejection, case: &str) {
    assert_eq!(response.status(), expected.status(), "{case}");
    assert_eq!(response.headers()["x-request-id"], case, "{case}");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{case}"
    );
    let wanted = [
        (StatusCode::UNAUTHORIZED, "www-authenticate"),
        (StatusCode::METHOD_NOT_ALLOWED, "allow"),
    ];
    for (status, header) in wanted {
        assert_eq!(
            response.headers().contains_key(header),
            expected.status() == status,
            "{case}: {header}"
        );
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let shape = serde_json::json!({
        "error": { "code": expected.code(), "message": expected.message() }
    });
    assert_eq!(body, shape, "{case}");
}

#[tokio::test]
async fn every_refusal_before_the_kb_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("keys.db")).unwrap());
    let read = key(store.as_ref(), |_| {}).await;
    let other = key(store.as_ref(), |_| {}).await;
    let disabled = key(store.as_ref(), |r| r.enabled = false).await;
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let expired = key(store.as_ref(), |r| r.expires_at = Some(past)).await;
    let gateway = gateway(&config, store);
    let bearer = |secret: &str| format!("Bearer {secret}");
    let get = |target: &str, case: &str| request(Method::GET, target, case);
    let long_path = format!("/v1/article/{}", "a".repeat(9000));

    let cases: Vec<(Request<Full<Bytes>>, Rejection)> = vec![
        (
            empty(get("/v1/article", "two-hosts").header("host", "kb.other")),
            Rejection::BadRequest,
        ),
        (
            empty(request(Method::CONNECT, "kb.test:443", "connect")),
            Rejection::ConnectNotAllowed,
        ),
        (
            empty(get("/v1/article", "upgrade").header("upgrade", "websocket")),
            Rejection::UpgradeNotAllowed,
        ),
        (
            empty(get(&long_path, "uri-too-long")),
            Rejection::UriTooLong,
        ),
        (
            empty(get("/v1/article", "big-headers").header("x-big", "h".repeat(40_000))),
            Rejection::HeadersTooLarge,
        ),
        (
            empty(get("/v1/article/a%2Fb", "encoded-slash")),
            Rejection::InvalidPath,
        ),
        (empty(get("/v1/article", "no-key")), Rejection::MissingKey),
        (
            empty(
                get("/v1/article", "two-keys")
                    .header("authorization", bearer(&read))
                    .header("x-api-key", &other),
            ),
            Rejection::AmbiguousKey,
        ),
        (
            empty(get("/v1/article", "malformed-key").header("authorization", "Bearer nonsense")),
            Rejection::InvalidKey,
        ),
        (
            empty(get("/v1/article", "unknown-key").header("x-api-key", secret::generate().secret)),
            Rejection::InvalidKey,
        ),
        (
            empty(get("/v1/article", "disabled-key").header("x-api-key", &disabled)),
            Rejection::KeyDisabled,
        ),
        (
            empty(get("/v1/article", "expired-key").header("x-api-key", &expired)),
            Rejection::KeyExpired,
        ),
        (
            empty(get("/v2/anything", "no-route").header("x-api-key", &read)),
            Rejection::RouteNotAllowed,
        ),
        (
            empty(
                request(Method::POST, "/v1/article", "read-key-writes").header("x-api-key", &read),
            ),
            Rejection::InsufficientPermissions,
        ),
        (
            empty(get("/v1/search?_where=1", "denied-query").header("x-api-key", &read)),
            Rejection::QueryNotAllowed,
        ),
        (
            get("/v1/article", "declared-too-large")
                .header("x-api-key", &read)
                .body(Full::new(Bytes::from_static(b"seventeen bytes!!")))
                .unwrap(),
            Rejection::BodyTooLarge,
        ),
        (
            empty(
                request(Method::OPTIONS, "/v1/article", "foreign-origin")
                    .header("origin", "https://elsewhere.example")
                    .header("access-control-request-method", "GET"),
            ),
            Rejection::OriginNotAllowed,
        ),
        (
            empty(get("/v1/article", "kb-unreachable").header("x-api-key", &read)),
            Rejection::UpstreamUnavailable,
        ),
    ];
    for (request, expected) in cases {
        let case = request.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_refused(call(&gateway, request).await, expected, &case).await;
    }
}

#[tokio::test]
async fn a_store_that_cannot_answer_is_store_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let store = Arc::new(HookedStore {
        inner: EmbeddedStore::open(&dir.path().join("keys.db")).unwrap(),
        hook: Box::new(|call| match call {
            Call::FindByHash(_) => Err(StoreError::Unavailable("switched off".into())),
            _ => Ok(()),
        }),
    });
    let secret = key(store.as_ref(), |_| {}).await;
    let gateway = gateway(&config, store);
    let request =
        empty(request(Method::GET, "/v1/article", "store-down").header("x-api-key", &secret));
    assert_refused(
        call(&gateway, request).await,
        Rejection::StoreUnavailable,
        "store-down",
    )
    .await;
}

/// A client's own id is kept; a request without one gets a fresh id on its refusal.
#[tokio::test]
async fn refusals_carry_a_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("keys.db")).unwrap());
    let gateway = gateway(&config, store);
    let request = Request::builder()
        .uri("/v1/article")
        .header("host", "kb.test")
        .body(Full::default())
        .unwrap();
    let response = call(&gateway, request).await;
    assert_eq!(response.status(), 401);
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32, "{id}");
}
