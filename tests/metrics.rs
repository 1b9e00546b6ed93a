//! `/metrics`, `/healthz` and `/readyz` on the admin listener of a real gateway.
//!
//! Several gateways share the process's one recorder, so process-wide counters are compared
//! before and after (at least this much more); per-key series carry key ids unique to a test
//! and are compared exactly.

mod common;

use common::metrics::{Scrape, prometheus_tool, promtool_check_metrics};
use common::{ADMIN_TOKEN, TestGateway, UPSTREAM_CREDENTIAL};
use kbgate::metrics::{
    AUTH_DECISIONS, BUILD_INFO, HOT_TIER_LOOKUPS, IN_FLIGHT, KEY_INFO, KEY_REQUESTS,
    REQUEST_DURATION, REQUESTS, STORE_LOOKUPS, UPSTREAM_DURATION, UPSTREAM_ERRORS,
};
use serde_json::{Value, json};
use std::time::Duration;

/// How much a series grew between two scrapes.
fn grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[tokio::test]
async fn requests_are_counted_by_route_outcome_and_key() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, secret) = gateway
        .create_key(json!({"name": "Metrics \"reader\"", "scope": "read"}))
        .await;
    let (unused, _) = gateway.create_key(json!({"name": "Never used"})).await;
    let before = gateway.scrape().await;
    let mine = [("key_id", id.as_str())];
    assert!(
        before.has(KEY_REQUESTS, &mine) && before.sum(KEY_REQUESTS, &mine) == 0.0,
        "a new key's counter starts at 0 so increase() sees its first use"
    );

    for _ in 0..3 {
        assert_eq!(
            gateway.get("/v1/article/article-7f3a9", &secret).await.0,
            200
        );
    }
    let unknown = kbgate::keys::secret::generate().secret;
    let refusals = [
        (gateway.send("POST", "/v1/article", &secret).await, 403),
        (gateway.get("/v1/nowhere", &secret).await, 403),
        (
            common::status_and_code(gateway.plain_get(gateway.url("/v1/article")).await).await,
            401,
        ),
        (gateway.get("/v1/article", &unknown).await, 401),
        (gateway.get("/v1/article", &unknown).await, 401),
    ];
    for ((status, code), want) in refusals {
        assert_eq!(status, want, "{code}");
    }
    let after = gateway.scrape().await;

    assert_eq!(
        after.sum(KEY_REQUESTS, &mine),
        5.0,
        "every request with the verified key, forwarded or refused"
    );
    assert_eq!(after.sum(KEY_REQUESTS, &[("key_id", &unused)]), 0.0);
    let info = [("key_id", id.as_str()), ("name", "Metrics \"reader\"")];
    assert_eq!(
        after.sum(KEY_INFO, &[info[0], info[1], ("scope", "read")]),
        1.0
    );

    let article = [
        ("route", "/v1/article/{id}"),
        ("method", "GET"),
        ("status_class", "2xx"),
        ("outcome", "forwarded"),
    ];
    assert!(grew(&before, &after, REQUESTS, &article) >= 3.0);
    let refused = [
        ("route", "/v1/article"),
        ("method", "POST"),
        ("status_class", "4xx"),
        ("outcome", "insufficient_permissions"),
    ];
    assert!(grew(&before, &after, REQUESTS, &refused) >= 1.0);
    for outcome in ["route_not_allowed", "missing_key", "invalid_key"] {
        let labels = [("route", "none"), ("outcome", outcome)];
        assert!(grew(&before, &after, REQUESTS, &labels) >= 1.0, "{outcome}");
        let decision = [("outcome", outcome)];
        assert!(
            grew(&before, &after, AUTH_DECISIONS, &decision) >= 1.0,
            "{outcome}"
        );
    }
    assert!(grew(&before, &after, AUTH_DECISIONS, &[("outcome", "allowed")]) >= 3.0);
    assert!(grew(&before, &after, HOT_TIER_LOOKUPS, &[("result", "hit")]) >= 4.0);
    assert!(grew(&before, &after, STORE_LOOKUPS, &[("result", "found")]) >= 1.0);
    assert!(grew(&before, &after, STORE_LOOKUPS, &[("result", "not_found")]) >= 1.0);
    let negative = [("result", "negative_hit")];
    assert!(
        grew(&before, &after, HOT_TIER_LOOKUPS, &negative) >= 1.0,
        "the second try of an unknown key is answered by the negative cache"
    );

    let route = [("route", "/v1/article/{id}")];
    let count = format!("{REQUEST_DURATION}_count");
    assert!(grew(&before, &after, &count, &route) >= 3.0);
    let upstream_count = format!("{UPSTREAM_DURATION}_count");
    assert!(grew(&before, &after, &upstream_count, &route) >= 3.0);
    let bucket = format!("{REQUEST_DURATION}_bucket");
    for le in ["0.0005", "0.1", "30", "+Inf"] {
        assert!(after.has(&bucket, &[route[0], ("le", le)]), "bucket {le}");
    }
    assert!(after.has(IN_FLIGHT, &[]));
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(after.sum(BUILD_INFO, &version), 1.0);

    for never in [
        "article-7f3a9",
        "/v1/nowhere",
        secret.as_str(),
        ADMIN_TOKEN,
        UPSTREAM_CREDENTIAL,
    ] {
        assert!(!after.text.contains(never), "{never:?} is in /metrics");
    }
    if let Some(promtool) = prometheus_tool("promtool") {
        promtool_check_metrics(&promtool, &after.text)
            .unwrap_or_else(|problems| panic!("promtool check metrics:\n{problems}"));
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn key_info_follows_edits_and_deletes() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, _) = gateway.create_key(json!({"name": "Before"})).await;
    let series = |scrape: &Scrape| -> Vec<(String, String)> {
        scrape
            .matching(KEY_INFO, &[("key_id", &id)])
            .map(|s| (s.labels["name"].clone(), s.labels["scope"].clone()))
            .collect()
    };
    assert_eq!(
        series(&gateway.scrape().await),
        [("Before".into(), "read".into())]
    );

    let edit = json!({"name": "After", "scope": "read_write"});
    let (status, _) = gateway
        .admin("PATCH", &format!("/v1/keys/{id}"), Some(edit))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        series(&gateway.scrape().await),
        [("After".into(), "read_write".into())],
        "the old name's series is gone"
    );

    let (status, _) = gateway
        .admin("DELETE", &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert!(series(&gateway.scrape().await).is_empty());
    gateway.shutdown().await;
}

#[tokio::test]
async fn key_info_is_loaded_from_the_store_at_start() {
    let (upstream, first) = TestGateway::builder().start_on_echo().await;
    let (id, _) = first.create_key(json!({"name": "Survivor"})).await;
    let dir = first.dir.path().to_path_buf();
    let TestGateway {
        running, dir: keep, ..
    } = first;
    running.unwrap().shutdown().await;

    let again = TestGateway::builder()
        .upstream(&upstream)
        .config(|config| {
            config.store = kbgate::keys::StoreConfig::embedded(dir.join("kbgate.db"));
        })
        .start()
        .await;
    let scrape = again.scrape().await;
    assert_eq!(
        scrape.sum(KEY_INFO, &[("key_id", &id), ("name", "Survivor")]),
        1.0
    );
    assert!(
        scrape.has(KEY_REQUESTS, &[("key_id", &id)]),
        "registered at 0"
    );
    again.shutdown().await;
    drop(keep);
}

#[tokio::test]
async fn per_key_series_can_be_switched_off() {
    let (_upstream, gateway) = TestGateway::builder()
        .config(|c| c.metrics.per_key = false)
        .start_on_echo()
        .await;
    let (id, secret) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
    let scrape = gateway.scrape().await;
    assert!(!scrape.has(KEY_REQUESTS, &[("key_id", &id)]));
    assert!(!scrape.text.contains(&id), "no series names the key");
    assert!(!scrape.text.contains(KEY_INFO));
    gateway.shutdown().await;
}

/// The only test in this binary that reaches a cap, so `key_id="other"` is its alone.
#[tokio::test]
async fn keys_past_the_cap_count_as_other() {
    let (_upstream, gateway) = TestGateway::builder()
        .config(|c| c.metrics.per_key_limit = 1)
        .start_on_echo()
        .await;
    let (first, first_secret) = gateway.create_key(json!({})).await;
    let (second, second_secret) = gateway.create_key(json!({})).await;
    let before = gateway.scrape().await;
    assert_eq!(gateway.get("/v1/article", &first_secret).await.0, 200);
    for _ in 0..2 {
        assert_eq!(gateway.get("/v1/article", &second_secret).await.0, 200);
    }
    let after = gateway.scrape().await;
    assert_eq!(after.sum(KEY_REQUESTS, &[("key_id", &first)]), 1.0);
    assert!(!after.has(KEY_REQUESTS, &[("key_id", &second)]));
    assert_eq!(
        grew(&before, &after, KEY_REQUESTS, &[("key_id", "other")]),
        2.0
    );
    assert!(after.has(KEY_INFO, &[("key_id", &first)]));
    assert!(
        !after.has(KEY_INFO, &[("key_id", &second)]),
        "a key past the cap has no name series either"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_are_counted_by_kind() {
    let closed_url = common::closed_url();
    let (upstream, unreachable) = TestGateway::builder()
        .config(|c| {
            c.upstream.origin = closed_url.parse().unwrap();
        })
        .start_on_echo()
        .await;
    let slow = TestGateway::builder()
        .upstream(&upstream)
        .config(|c| {
            c.upstream.timeout = Duration::from_millis(200);
        })
        .start()
        .await;
    let (_, a) = unreachable.create_key(json!({})).await;
    let (_, b) = slow.create_key(json!({})).await;
    let before = slow.scrape().await;
    assert_eq!(unreachable.get("/v1/article", &a).await.0, 502);
    assert_eq!(slow.get("/v1/article?delay_ms=3000", &b).await.0, 504);
    let after = slow.scrape().await;
    assert!(grew(&before, &after, UPSTREAM_ERRORS, &[("kind", "connect")]) >= 1.0);
    assert!(grew(&before, &after, UPSTREAM_ERRORS, &[("kind", "timeout")]) >= 1.0);
    let timeout = [("outcome", "upstream_timeout"), ("status_class", "5xx")];
    assert!(grew(&before, &after, REQUESTS, &timeout) >= 1.0);
    unreachable.shutdown().await;
    slow.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_need_no_token() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = gateway.plain_get(gateway.admin_url(path)).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], want, "{path}");
    }
    let keys = gateway.plain_get(gateway.admin_url("/v1/keys")).await;
    assert_eq!(keys.status(), 401, "the key API still needs the token");
    gateway.scrape().await;
    gateway.shutdown().await;
}
