//! Events of the per-key limits over a real receiver: `quota.threshold` at 80, 90 and 100% of
//! a key's quota, once each per period, and `key.rate_limited` once per key per minute; on
//! the embedded store, and with two gateways sharing one Redis (each event once between them).

mod common;

use common::receiver::Receiver;
use common::{RunningKb, TestGateway, eventually};
use kbgate::Config;
use serde_json::{Value, json};
use std::time::Duration;

fn fast(config: &mut Config) {
    config.webhooks.allow_private_networks = true;
    config.webhooks.retry_initial = Duration::from_millis(100);
    config.webhooks.poll_interval = Duration::from_millis(50);
}

fn of_type(receiver: &Receiver, kind: &str) -> Vec<Value> {
    receiver
        .delivered()
        .iter()
        .map(|g| g.json())
        .filter(|e| e["type"] == kind)
        .collect()
}

/// Requests go to `a` and `b` in turn (the same gateway twice on the embedded store).
async fn limit_events(a: &TestGateway, b: &TestGateway) {
    let receiver = Receiver::start().await;
    let body = json!({"url": receiver.url(), "events": ["quota.threshold", "key.rate_limited"]});
    let (status, hook) = a.admin("POST", "/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{hook}");

    let (quota_id, quota_key) = a
        .create_key(json!({"quota": {"requests": 10, "period": "day"}}))
        .await;
    for i in 0..13 {
        let gateway = if i % 2 == 0 { a } else { b };
        let expected = if i < 10 { 200 } else { 429 };
        assert_eq!(
            gateway.get("/v1/article", &quota_key).await.0,
            expected,
            "{i}"
        );
        if i == 7 {
            // The request that reached 80% was answered after its event was in the outbox.
            let store = gateway.running.as_ref().unwrap().keyring.store().clone();
            let outbox = store.events_after(0, 100).await.unwrap();
            assert!(
                outbox.iter().any(|e| e.event.kind == "quota.threshold"),
                "{outbox:?}"
            );
        }
    }
    eventually("three thresholds delivered", || async {
        of_type(&receiver, "quota.threshold").len() >= 3
    })
    .await;

    let (rate_id, rate_key) = b
        .create_key(json!({"rate_limit": {"requests": 1, "window_seconds": 60}}))
        .await;
    assert_eq!(a.get("/v1/article", &rate_key).await.0, 200);
    for gateway in [a, b, a, b] {
        let (status, code) = gateway.get("/v1/article", &rate_key).await;
        assert_eq!((status, code.as_str()), (429, "rate_limited"));
    }
    eventually("key.rate_limited delivered", || async {
        !of_type(&receiver, "key.rate_limited").is_empty()
    })
    .await;

    let thresholds = of_type(&receiver, "quota.threshold");
    // In order from one gateway; two write theirs side by side.
    let mut shares: Vec<u64> = thresholds
        .iter()
        .map(|e| e["data"]["threshold_percent"].as_u64().unwrap())
        .collect();
    shares.sort_unstable();
    assert_eq!(shares, [80, 90, 100], "{thresholds:?}");
    assert!(
        thresholds
            .iter()
            .all(|e| e["data"]["key"]["id"] == quota_id.as_str())
    );
    assert_eq!(thresholds[2]["data"]["used"], 10);
    let limited = of_type(&receiver, "key.rate_limited");
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0]["data"]["key"]["id"], rate_id.as_str());
}

#[tokio::test]
async fn limit_events_on_the_embedded_store() {
    let kb = RunningKb::start().await;
    let gateway = TestGateway::builder()
        .upstream(&kb)
        .config(fast)
        .start()
        .await;
    limit_events(&gateway, &gateway).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn limit_events_once_between_two_gateways_on_redis() {
    // The server and the KB are bound: dropped, they would stop.
    let Some(common::stores::RedisPair {
        a,
        b,
        server: _server,
        upstream: _kb,
    }) = common::stores::redis_pair_with("limitevents:", fast).await
    else {
        return;
    };
    limit_events(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}
