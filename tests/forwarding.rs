//! What the upstream sees: the injected credential and the gateway's own headers, never the
//! client's key nor hop-by-hop headers; and per-key usage counts.

mod common;

use common::{TestGateway, UPSTREAM_CREDENTIAL, eventually};
use serde_json::json;

#[tokio::test]
async fn upstream_sees_the_injected_credential_and_never_the_client_key() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({})).await;

    let response = gateway
        .client
        .get(gateway.url("/v1/search?query=reset&key=") + &key + "&page=2")
        .header("x-api-key", &key)
        .header("connection", "x-private-hop")
        .header("x-private-hop", "secret hop data")
        .header("keep-alive", "timeout=5")
        .header("x-kbgate-key-id", "key_pretender")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-request-id", "client-trace-7")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-trace-7");
    assert!(
        response.headers().get("x-upstream-hop").is_none(),
        "response hop-by-hop headers are dropped"
    );

    let seen = upstream.last();
    assert_eq!(
        seen.path_and_query, "/v1/search?query=reset&page=2",
        "key removed from the query"
    );
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {UPSTREAM_CREDENTIAL}")
    );
    assert!(seen.headers.get("x-api-key").is_none());
    for (name, value) in &seen.headers {
        let value = value.to_str().unwrap_or("");
        assert!(
            !value.contains(&key),
            "client key leaked upstream in {name}"
        );
    }
    assert!(
        seen.headers.get("x-private-hop").is_none(),
        "headers named in Connection are dropped"
    );
    assert!(seen.headers.get("keep-alive").is_none());
    assert_eq!(seen.headers["x-kbgate-key-id"], id.as_str());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        gateway.addr.to_string().as_str()
    );
    assert_eq!(seen.headers["x-request-id"], "client-trace-7");
    assert_eq!(seen.headers["host"], upstream.addr.to_string().as_str());
    assert_eq!(seen.headers["x-custom"], "kept");
    gateway.shutdown().await;
}

#[tokio::test]
async fn query_credential_injection() {
    let (upstream, gateway) = TestGateway::builder()
        .config(|config| {
            config.upstream.inject_headers.clear();
            config.upstream.inject_query = "key=kb-upstream-credential".into();
        })
        .start_on_echo()
        .await;
    let (_, key) = gateway.create_key(json!({})).await;
    let response = gateway
        .plain_get(gateway.url(&format!("/v1/article?key={key}")))
        .await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(
        seen.path_and_query,
        "/v1/article?key=kb-upstream-credential"
    );
    assert!(seen.headers.get("authorization").is_none());
    gateway.shutdown().await;
}

#[tokio::test]
async fn request_count_equals_the_requests_made_and_survives_a_restart() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({})).await;
    let (_, other) = gateway.create_key(json!({})).await;
    for _ in 0..25 {
        assert_eq!(gateway.get("/v1/article", &key).await.0, 200);
    }
    assert_eq!(gateway.get("/v1/article", &other).await.0, 200);
    let (_, shown) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(shown["request_count"], 25, "exact at once, flushed or not");
    assert!(shown["last_used_at"].is_string());

    // The 100 ms flusher writes it to the store; a restart on the same file still shows it.
    let running = gateway.running.as_ref().unwrap();
    let store = running.keyring.store().clone();
    eventually("usage is flushed to the store", || {
        let store = store.clone();
        let id = id.clone();
        async move { store.get(&id).await.unwrap().unwrap().usage.request_count == 25 }
    })
    .await;
    drop(store);
    let TestGateway { running, dir, .. } = gateway;
    running.unwrap().shutdown().await;

    let again = TestGateway::builder()
        .upstream(&upstream)
        .dir(dir)
        .start()
        .await;
    let (_, shown) = again.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(shown["request_count"], 25);
    assert_eq!(
        again.get("/v1/article", &key).await.0,
        200,
        "keys survive a restart"
    );
    again.shutdown().await;
}
