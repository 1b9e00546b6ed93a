//! Usage over time (issue 13, section 4): every request of a known key is counted in its hour
//! with how it ended (forwarded and the KB's answer class, or the refusal code), written with
//! the batched usage flush; `/v1/keys/{id}/usage` gives every bucket of the range and
//! `/v1/usage` the totals and top keys. On both stores, and across two gateways on one Redis.

mod common;

use common::redis::RedisServer;
use common::{FakeKb, TestGateway, eventually, kb};
use serde_json::{Value, json};

/// A KB where `/v1/article/missing` is 404 and everything else the 200 echo.
async fn kb_with_a_missing_article() -> common::RunningKb {
    FakeKb::new()
        .route("/v1/article/missing", |_| {
            http::Response::builder()
                .status(404)
                .body(kb::empty())
                .unwrap()
        })
        .start()
        .await
}

async fn key_usage(gateway: &TestGateway, id: &str, query: &str) -> Value {
    let (status, usage) = gateway
        .admin("GET", &format!("/v1/keys/{id}/usage?{query}"), None)
        .await;
    assert_eq!(status, 200, "{usage}");
    usage
}

async fn request_count(gateway: &TestGateway, id: &str) -> u64 {
    let (_, key) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    key["request_count"].as_u64().unwrap()
}

fn bucket_sum(usage: &Value) -> u64 {
    usage["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum()
}

async fn outcomes_by_hour(gateway: TestGateway) {
    let (id, secret) = gateway.create_key(json!({"name": "reader"})).await;
    let (other, _) = gateway.create_key(json!({"name": "idle"})).await;
    for _ in 0..6 {
        assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(gateway.get("/v1/article/missing", &secret).await.0, 404);
        assert_eq!(
            gateway.get("/v1/unmapped", &secret).await.1,
            "route_not_allowed"
        );
        let (_, code) = gateway.send("POST", "/v1/article", &secret).await;
        assert_eq!(code, "insufficient_permissions");
    }
    // Refused before the key is known: not the key's usage.
    assert_eq!(gateway.get("/v1/article", "kb_wrong").await.0, 401);

    let usage = key_usage(&gateway, &id, "").await;
    assert_eq!(usage["key_id"], id.as_str());
    assert_eq!(usage["granularity"], "hour");
    assert_eq!(
        usage["total"],
        json!({
            "requests": 12,
            "forwarded": 8,
            "refused": {"route_not_allowed": 2, "insufficient_permissions": 2},
            "upstream": {"2xx": 6, "3xx": 0, "4xx": 2, "5xx": 0},
        })
    );
    assert_eq!(bucket_sum(&usage), 12);
    assert_eq!(request_count(&gateway, &id).await, 12);
    // Seven days of hours, every one present (zeros too), one hour apart.
    let buckets = usage["buckets"].as_array().unwrap();
    assert!((168..=169).contains(&buckets.len()), "{}", buckets.len());
    let starts: Vec<chrono::DateTime<chrono::Utc>> = buckets
        .iter()
        .map(|b| b["start"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        starts
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::hours(1))
    );
    assert_eq!(buckets[0]["refused"], json!({}));

    let by_day = key_usage(&gateway, &id, "granularity=day").await;
    let days = by_day["buckets"].as_array().unwrap();
    assert!((7..=8).contains(&days.len()), "{}", days.len());
    assert_eq!(bucket_sum(&by_day), 12);
    let idle = key_usage(&gateway, &other, "granularity=day").await;
    assert_eq!(idle["total"]["requests"], 0);

    // The overview reads what was flushed: it catches up within a flush.
    eventually("the overview counts the flushed requests", || async {
        let (_, overview) = gateway.admin("GET", "/v1/usage", None).await;
        overview["total"]["requests"] == 12
    })
    .await;
    let (status, overview) = gateway.admin("GET", "/v1/usage?top=1", None).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["total"]["forwarded"], 8);
    assert_eq!(
        overview["keys"],
        json!([{"key_id": id, "name": "reader", "requests": 12}])
    );

    for (path, named) in [
        (
            format!("/v1/keys/{id}/usage?granularity=week"),
            "granularity",
        ),
        (format!("/v1/keys/{id}/usage?from=yesterday"), "from"),
        (
            format!("/v1/keys/{id}/usage?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
            "from",
        ),
        (
            format!("/v1/keys/{id}/usage?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
            "from",
        ),
        ("/v1/usage?top=-1".to_string(), "top"),
        ("/v1/usage?days=7".to_string(), "days"),
    ] {
        let (status, body) = gateway.admin("GET", &path, None).await;
        assert_eq!(status, 422, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{named}: ")),
            "{path}: {message}"
        );
    }
    let (status, body) = gateway.admin("GET", "/v1/keys/key_nope/usage", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn outcomes_by_hour_embedded() {
    let upstream = kb_with_a_missing_article().await;
    outcomes_by_hour(TestGateway::start(&upstream).await).await;
}

#[tokio::test]
async fn outcomes_by_hour_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let upstream = kb_with_a_missing_article().await;
    let store = server.store("history:");
    let gateway = TestGateway::builder()
        .upstream(&upstream)
        .config(|c| c.store = store)
        .start()
        .await;
    outcomes_by_hour(gateway).await;
}

/// N requests through two gateways on one Redis: the buckets add up to N, and to the key's
/// `request_count`, whichever gateway is asked.
#[tokio::test]
async fn two_gateways_add_up_exactly() {
    const N: u64 = 60;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let upstream = kb_with_a_missing_article().await;
    let start = || {
        let store = server.store("shared:");
        TestGateway::builder()
            .upstream(&upstream)
            .config(|c| c.store = store)
            .start()
    };
    let (a, b) = (start().await, start().await);
    let (id, secret) = a.create_key(json!({"name": "shared"})).await;
    for n in 0..N {
        let gateway = if n % 2 == 0 { &a } else { &b };
        let path = if n % 5 == 0 {
            "/v1/unmapped"
        } else {
            "/v1/article"
        };
        gateway.get(path, &secret).await;
    }
    // Each gateway flushes on its own; once both have, the store holds all N.
    eventually("both gateways flushed", || async {
        let (_, overview) = a.admin("GET", "/v1/usage", None).await;
        overview["total"]["requests"] == N
    })
    .await;
    for gateway in [&a, &b] {
        let usage = key_usage(gateway, &id, "").await;
        assert_eq!(bucket_sum(&usage), N);
        assert_eq!(usage["total"]["requests"], N);
        assert_eq!(usage["total"]["refused"]["route_not_allowed"], N / 5);
        assert_eq!(usage["total"]["forwarded"], N - N / 5);
        assert_eq!(request_count(gateway, &id).await, N);
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Redis keeps history by hour and prunes whole hours, as the embedded store does.
#[tokio::test]
async fn redis_history_is_pruned_by_hour() {
    use kbgate::keys::UsageDelta;
    use kbgate::keys::history::HourCounts;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = kbgate::app::open_store(&server.store("prune:")).unwrap();
    let record = common::seed::record("k", chrono::Utc::now());
    store.create(&record).await.unwrap();
    let hour = |hour, requests| HourCounts {
        requests,
        forwarded: requests,
        ..HourCounts::empty(hour)
    };
    let delta = UsageDelta {
        key_id: record.id.clone(),
        requests: 5,
        last_used_at: chrono::Utc::now(),
        hours: vec![hour(10, 2), hour(20, 3)],
    };
    store.add_usage(&[delta]).await.unwrap();
    let history = store.usage_history(&record.id, 0, 100).await.unwrap();
    assert_eq!(history, [hour(10, 2), hour(20, 3)]);
    store.prune_history(15).await.unwrap();
    let history = store.usage_history(&record.id, 0, 100).await.unwrap();
    assert_eq!(history, [hour(20, 3)]);
    let overview = store.usage_overview(0, 100).await.unwrap();
    assert_eq!(overview.hours, [hour(20, 3)]);
    assert_eq!(overview.keys, [(record.id.clone(), 3)]);
    // redis-cli's raw answer: `*0` is an empty list.
    let keys = |pattern: &str| server.cli(&["KEYS", pattern]).unwrap_or_default();
    assert_eq!(
        keys("prune:hist*:10").trim(),
        "*0",
        "nothing of hour 10 is left"
    );
    assert_ne!(keys("prune:hist*:20").trim(), "*0", "hour 20 is kept");
}

/// A request whose client goes away before the KB answers is still counted in its key's
/// usage, without an outcome: it was neither forwarded to an answer nor refused.
#[tokio::test]
async fn a_request_dropped_before_its_answer_is_counted() {
    use tokio::io::AsyncWriteExt;
    let kb = FakeKb::new()
        .otherwise(|_| std::future::pending())
        .start()
        .await;
    let gateway = TestGateway::start(&kb).await;
    let (id, secret) = gateway.create_key(json!({"name": "leaves early"})).await;
    let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let request = format!(
        "GET /v1/article HTTP/1.1\r\nHost: kb.test\r\nAuthorization: Bearer {secret}\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    eventually("the KB has the request", || async { kb.count() == 1 }).await;
    let in_flight = || async { gateway.scrape().await.sum("kbgate_requests_in_flight", &[]) };
    assert!(in_flight().await >= 1.0, "the request is not in flight");
    drop(client);
    // Read once the gateway has let the request go, not while it is still waiting on the KB.
    eventually("the gateway drops the request", || async {
        in_flight().await == 0.0
    })
    .await;
    assert_eq!(request_count(&gateway, &id).await, 1);
    let usage = key_usage(&gateway, &id, "").await;
    assert_eq!(
        usage["total"],
        json!({
            "requests": 1,
            "forwarded": 0,
            "refused": {},
            "upstream": {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
        })
    );
    gateway.shutdown().await;
}
