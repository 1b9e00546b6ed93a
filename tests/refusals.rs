//! Every refusal of DESIGN.md's request path, over real sockets: status, code and JSON body,
//! and what reached the upstream (nothing, for a refusal).

mod common;

use common::{RunningKb, TestGateway, status_and_code};
use kbgate::keys::StoreError;
use kbgate::metrics::{AUTH_DECISIONS, STORE_ERRORS, STORE_LOOKUPS};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[tokio::test]
async fn a_read_key_gets_but_cannot_post() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway.create_key(json!({"name": "Chatbot"})).await;
    assert_eq!(
        gateway.get("/v1/article/a1", &key).await,
        (200, String::new())
    );
    assert_eq!(gateway.get("/v1/search?query=x", &key).await.0, 200);
    assert_eq!(
        gateway.send("POST", "/v1/article", &key).await,
        (403, "insufficient_permissions".into())
    );
    upstream.assert_count(2, "the refused POST never reached the upstream");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_refusal_body_is_one_json_shape_with_a_request_id() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let response = gateway.plain_get(gateway.url("/v1/article")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(request_id.len(), 32);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_key");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Api-Key")
    );
    assert_eq!(body.as_object().unwrap().len(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn key_refusals() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway.create_key(json!({})).await;
    let (_, other) = gateway.create_key(json!({})).await;
    let c = &gateway.client;
    let url = gateway.url("/v1/article");

    // missing
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(status_and_code(r).await, (401, "missing_key".into()));
    let r = c
        .get(&url)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (401, "missing_key".into()));

    // ambiguous: two different keys, in any two places
    let r = c
        .get(&url)
        .bearer_auth(&key)
        .header("x-api-key", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (400, "ambiguous_key".into()));
    let r = c
        .get(format!("{url}?key={other}"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (400, "ambiguous_key".into()));
    // the same key twice is not ambiguous
    let r = common::keyed_get_with(c, format!("{url}?key={key}"), &key).await;
    assert_eq!(status_and_code(r).await, (200, String::new()));

    // invalid: malformed, wrong checksum and well-formed-but-unknown get the same answer
    let mut wrong_checksum = key.clone();
    wrong_checksum.pop();
    wrong_checksum.push(if key.ends_with('A') { 'B' } else { 'A' });
    let unknown = kbgate::keys::secret::generate().secret;
    let mut bodies = Vec::new();
    for bad in ["nonsense", "kb_", wrong_checksum.as_str(), unknown.as_str()] {
        let r = c.get(&url).bearer_auth(bad).send().await.unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_key", "{bad}");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "malformed and unknown keys look alike"
    );
    upstream.assert_count(1, "only the one good request went upstream");
    gateway.shutdown().await;
}

#[tokio::test]
async fn disabled_and_expired_keys() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);
    gateway
        .admin(
            "PATCH",
            &format!("/v1/keys/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(
        gateway.get("/v1/article", &key).await,
        (401, "key_disabled".into())
    );

    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (_, expiring) = gateway
        .create_key(json!({"expires_at": soon.to_rfc3339()}))
        .await;
    assert_eq!(
        gateway.get("/v1/article", &expiring).await.0,
        200,
        "cached while valid"
    );
    common::eventually("the key expires", || async {
        gateway.get("/v1/article", &expiring).await == (401, "key_expired".into())
    })
    .await;
    assert!(
        chrono::Utc::now() >= soon,
        "refused as expired only after expires_at"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn route_refusals() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, read) = gateway.create_key(json!({"scope": "read"})).await;
    let (_, narrow) = gateway
        .create_key(json!({"scope": "read_write", "permissions": ["search:read"]}))
        .await;
    assert_eq!(
        gateway.get("/v1/unmapped", &read).await,
        (403, "route_not_allowed".into())
    );
    assert_eq!(
        gateway.send("OPTIONS", "/v1/article", &read).await,
        (403, "route_not_allowed".into())
    );
    assert_eq!(
        gateway.send("DELETE", "/v1/article/a1", &read).await,
        (403, "insufficient_permissions".into())
    );
    // specific permissions narrow the scope
    assert_eq!(gateway.get("/v1/search?query=a", &narrow).await.0, 200);
    assert_eq!(
        gateway.get("/v1/article", &narrow).await,
        (403, "insufficient_permissions".into())
    );
    assert_eq!(
        gateway.send("POST", "/v1/article", &narrow).await,
        (403, "insufficient_permissions".into())
    );
    assert_eq!(upstream.requests().len(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_unavailable_and_timeout() {
    // A port nothing listens on: bind, read the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (upstream, gateway) = TestGateway::builder()
        .config(|config| {
            config.upstream.origin = format!("http://{closed}/").parse().unwrap();
        })
        .start_on_echo()
        .await;
    let (_, key) = gateway.create_key(json!({})).await;
    let response = gateway.keyed_get(gateway.url("/v1/article"), &key).await;
    let (status, code) = status_and_code(response).await;
    assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
    gateway.shutdown().await;

    let gateway = TestGateway::builder()
        .upstream(&upstream)
        .config(|config| {
            config.upstream.timeout = Duration::from_millis(300);
        })
        .start()
        .await;
    let (_, key) = gateway.create_key(json!({})).await;
    let response = gateway.get("/v1/article?delay_ms=5000", &key).await;
    assert_eq!(response, (504, "upstream_timeout".into()));
    let body = gateway.keyed_get(gateway.url("/v1/article"), &key).await;
    let text = body.text().await.unwrap();
    assert!(
        !text.contains("127.0.0.1"),
        "no upstream address leaks to clients"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn store_down_fails_closed_for_keys_not_in_the_hot_tier() {
    let upstream = RunningKb::start().await;
    // The embedded store with a switch that fails every call, as a lost disk or network would.
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let gateway = TestGateway::builder()
        .upstream(&upstream)
        .store(Box::new(move |_call| {
            if switch.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("switched off by the test".into()));
            }
            Ok(())
        }))
        .start()
        .await;
    let (_, cached) = gateway.create_key(json!({})).await;
    let (_, uncached) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get("/v1/article", &cached).await.0, 200);
    let before = gateway.scrape().await;

    down.store(true, Ordering::SeqCst);
    assert_eq!(
        gateway.get("/v1/article", &uncached).await,
        (503, "store_unavailable".into())
    );
    assert_eq!(
        gateway.get("/v1/article", &cached).await.0,
        200,
        "the hot tier keeps serving"
    );
    let ready = gateway.plain_get(gateway.admin_url("/readyz")).await;
    assert_eq!(ready.status(), 503);
    let after = gateway.scrape().await;
    for (name, labels) in [
        (STORE_LOOKUPS, &[("result", "error")][..]),
        (STORE_ERRORS, &[("op", "lookup"), ("kind", "unavailable")]),
        (STORE_ERRORS, &[("op", "ping"), ("kind", "unavailable")]),
        (AUTH_DECISIONS, &[("outcome", "store_unavailable")]),
    ] {
        let grew = after.sum(name, labels) - before.sum(name, labels);
        assert!(grew >= 1.0, "{name} {labels:?} grew by {grew}");
    }
    upstream.assert_count(2, "the unverified request never went upstream");

    down.store(false, Ordering::SeqCst);
    assert_eq!(
        gateway.get("/v1/article", &uncached).await.0,
        200,
        "service resumes"
    );
    gateway.shutdown().await;
}
