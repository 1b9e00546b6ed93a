//! Per-key limits shared by gateways on one real redis-server: exact quotas and rates across
//! gateways, one script per decision and none for a key already refused, and what happens
//! when Redis is killed mid-run (`limits.on_store_error`).

mod common;

use common::kb::BROKEN_ARTICLE;
use common::limits::{assert_rate, hammer, paced, quota_state, ratelimit, retry_after};
use common::redis::RedisServer;
use common::{RunningKb, TestGateway, eventually};
use kbgate::keys::StoreConfig;
use kbgate::limits::OnStoreError;
use serde_json::json;
use std::time::Duration;

const ARTICLE: &str = "/v1/article/a1";
const LIMIT_DECISIONS: &str = "kbgate_limit_decisions_total";

/// A gateway on `server` whose hot tier is listening to the change feed (so a verified key
/// stays cached while Redis is down); usage is flushed rarely, so that Redis sees only what
/// the limits ask of it.
async fn gateway(
    kb: &RunningKb,
    server: &RedisServer,
    on_store_error: OnStoreError,
) -> TestGateway {
    gateway_with(
        kb,
        server,
        on_store_error,
        Duration::from_millis(300),
        NO_FLUSH,
    )
    .await
}

/// Usage flushed so rarely that no flush happens during a test.
const NO_FLUSH: Duration = Duration::from_secs(3600);

/// A gateway for counting exactly: a Redis slowed past the store timeout by a loaded machine
/// must neither let requests past the limit (`deny`) nor refuse them (a long timeout).
async fn exact_gateway(kb: &RunningKb, server: &RedisServer) -> TestGateway {
    gateway_with(
        kb,
        server,
        OnStoreError::Deny,
        Duration::from_secs(10),
        NO_FLUSH,
    )
    .await
}

async fn gateway_with(
    kb: &RunningKb,
    server: &RedisServer,
    on_store_error: OnStoreError,
    timeout: Duration,
    usage_flush: Duration,
) -> TestGateway {
    let mut store = server.store("limits:");
    if let StoreConfig::Redis(redis) = &mut store {
        redis.timeout = timeout;
    }
    let gateway = TestGateway::builder()
        .upstream(kb)
        .config(move |c| {
            c.store = store;
            c.hot_tier.max_age = Duration::from_secs(60);
            c.usage_flush_interval = usage_flush;
            c.limit_settings.on_store_error = on_store_error;
        })
        .start()
        .await;
    let (id, probe) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get(ARTICLE, &probe).await.0, 200);
    gateway
        .admin("DELETE", &format!("/v1/keys/{id}"), None)
        .await;
    eventually("the change feed is heard", || async {
        gateway.get(ARTICLE, &probe).await.0 == 401
    })
    .await;
    gateway
}

/// A redis-server, a fake KB and two [`exact_gateway`]s sharing both; None where redis-server
/// is not installed.
async fn two_exact_gateways() -> Option<(RedisServer, RunningKb, TestGateway, TestGateway)> {
    let server = RedisServer::start()?;
    let kb = RunningKb::start().await;
    let a = exact_gateway(&kb, &server).await;
    let b = exact_gateway(&kb, &server).await;
    Some((server, kb, a, b))
}

#[tokio::test]
async fn two_gateways_admit_exactly_the_quota() {
    let _heavy = common::limits::HEAVY.lock().await;
    let Some((_server, kb, a, b)) = two_exact_gateways().await else {
        return;
    };
    let (id, key) = a
        .create_key(json!({"quota": {"requests": 1000, "period": "month"}}))
        .await;
    let statuses = hammer(&[&a, &b], &key, ARTICLE, 3000, 16).await;
    assert_eq!(statuses.get(&200), Some(&1000), "{statuses:?}");
    assert_eq!(kb.count(), 1000 + 2, "and the two probes");
    for gateway in [&a, &b] {
        assert_eq!(quota_state(gateway, &id).await["used"], 1000);
    }
}

#[tokio::test]
async fn two_gateways_admit_the_rate_of_one() {
    let _heavy = common::limits::HEAVY.lock().await;
    let Some((_server, _kb, a, b)) = two_exact_gateways().await else {
        return;
    };
    let (_, key) = a
        .create_key(json!({"rate_limit": {"requests": 50, "window_seconds": 1, "burst": 10}}))
        .await;
    let run = paced(&[&a], &key, ARTICLE, 200, Duration::from_secs(5)).await;
    assert_rate(&run, 50.0, 10, 0.02, "redis, one gateway");
    let (_, key) = a
        .create_key(json!({"rate_limit": {"requests": 50, "window_seconds": 1, "burst": 10}}))
        .await;
    let run = paced(&[&a, &b], &key, ARTICLE, 200, Duration::from_secs(5)).await;
    assert_rate(&run, 50.0, 10, 0.02, "redis, two gateways");
}

#[tokio::test]
async fn one_script_per_decision_and_none_while_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let kb = RunningKb::start().await;
    let gateway = exact_gateway(&kb, &server).await;
    let (_, key) = gateway
        .create_key(json!({
            "rate_limit": {"requests": 3, "window_seconds": 60},
            "quota": {"requests": 100, "period": "day"},
        }))
        .await;
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 200, "cached");
    let scripts = || server.calls("evalsha") + server.calls("eval");
    let before = scripts();
    for _ in 0..2 {
        assert_eq!(gateway.get(ARTICLE, &key).await.0, 200);
    }
    let refused = gateway.keyed_get(gateway.url(ARTICLE), &key).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(scripts() - before, 3, "one round trip per limited request");
    let wait = retry_after(&refused);
    assert!((1..=20).contains(&wait), "{wait}");
    for _ in 0..5 {
        let again = gateway.keyed_get(gateway.url(ARTICLE), &key).await;
        assert_eq!(again.status(), 429);
        assert_eq!(ratelimit(&again).param("r"), 0);
        assert!(retry_after(&again) <= wait);
    }
    assert_eq!(
        scripts() - before,
        3,
        "a key refused until T is answered here until T"
    );
}

#[tokio::test]
async fn a_response_refused_before_the_limits_shows_them_in_one_round_trip_or_none() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let kb = RunningKb::start().await;
    let gateway = exact_gateway(&kb, &server).await;
    let (_, key) = gateway
        .create_key(json!({"scope": "read", "rate_limit": {"requests": 2, "window_seconds": 60}}))
        .await;
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 200, "cached");
    let scripts = || server.calls("evalsha") + server.calls("eval");
    let post = || async {
        let request = gateway.client.post(gateway.url("/v1/article"));
        request.bearer_auth(&key).body("{}").send().await.unwrap()
    };
    assert_eq!(post().await.status(), 403, "the peek's script loaded");
    let before = scripts();
    let refused = post().await;
    assert_eq!(refused.status(), 403);
    assert_eq!(ratelimit(&refused).param("r"), 1, "nothing taken, twice");
    assert_eq!(scripts() - before, 1, "one round trip to peek");
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 200, "the one left");
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 429);
    // Refused here until T: the limits are shown without asking Redis.
    let before = scripts();
    let refused = post().await;
    assert_eq!(refused.status(), 403);
    assert_eq!(ratelimit(&refused).param("r"), 0);
    assert!(refused.headers().get("retry-after").is_none());
    assert_eq!(scripts() - before, 0);
}

/// `counts: successful` on Redis: a unit the KB did not answer well comes back with the key's
/// next decision (so a request still costs one round trip), or on the usage flush's tick when
/// no decision comes.
#[tokio::test]
async fn units_given_back_ride_with_the_next_decision_or_the_flush() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let kb = RunningKb::with_broken_article().await;
    let gateway = exact_gateway(&kb, &server).await;
    let (id, key) = gateway
        .create_key(json!({"quota": {"requests": 3, "period": "day"}}))
        .await;
    let used = || async { quota_state(&gateway, &id).await["used"].as_u64() };
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 200, "cached, 1 used");
    let decisions = || server.calls("evalsha");
    let before = decisions();
    for _ in 0..5 {
        assert_eq!(gateway.get(BROKEN_ARTICLE, &key).await.0, 500);
    }
    assert_eq!(
        used().await,
        Some(2),
        "each 500's unit went back with the next request; the last one waits here"
    );
    for _ in 0..2 {
        assert_eq!(gateway.get(ARTICLE, &key).await.0, 200);
    }
    assert_eq!(
        used().await,
        Some(3),
        "given back with the first, then 2 taken"
    );
    assert_eq!(
        gateway.get(ARTICLE, &key).await,
        (429, "quota_exceeded".into())
    );
    assert_eq!(
        decisions() - before,
        8,
        "one round trip per request, 500s included"
    );

    // No further request: the usage flush's tick takes the units back.
    let flushing = gateway_with(
        &kb,
        &server,
        OnStoreError::Deny,
        Duration::from_secs(10),
        Duration::from_millis(200),
    )
    .await;
    let (id, key) = flushing
        .create_key(json!({"quota": {"requests": 3, "period": "day"}}))
        .await;
    for _ in 0..2 {
        assert_eq!(flushing.get(BROKEN_ARTICLE, &key).await.0, 500);
    }
    eventually("the units come back on the flush's tick", || async {
        quota_state(&flushing, &id).await["used"] == 0
    })
    .await;
}

#[tokio::test]
async fn redis_killed_allow_keeps_serving_deny_refuses_and_both_resume() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let kb = RunningKb::start().await;
    let allow = gateway(&kb, &server, OnStoreError::Allow).await;
    let deny = gateway(&kb, &server, OnStoreError::Deny).await;
    let (id, key) = allow
        .create_key(json!({"quota": {"requests": 100, "period": "day"}}))
        .await;
    for gateway in [&allow, &deny] {
        assert_eq!(
            gateway.get(ARTICLE, &key).await.0,
            200,
            "verified and cached"
        );
    }
    let errors = |scrape: common::metrics::Scrape| {
        scrape.sum(
            LIMIT_DECISIONS,
            &[("limit", "quota"), ("outcome", "store_error")],
        )
    };
    let before = errors(allow.scrape().await);

    server.kill();
    assert_eq!(allow.get(ARTICLE, &key).await.0, 200, "allow: served");
    assert_eq!(allow.get(ARTICLE, &key).await.0, 200);
    assert_eq!(
        deny.get(ARTICLE, &key).await,
        (503, "store_unavailable".into()),
        "deny: refused"
    );
    assert!(
        errors(allow.scrape().await) - before >= 3.0,
        "counted as store_error"
    );

    server.restart();
    eventually("deny serves again once Redis is back", || async {
        deny.get(ARTICLE, &key).await.0 == 200
    })
    .await;
    assert_eq!(allow.get(ARTICLE, &key).await.0, 200);
    let shown = quota_state(&allow, &id).await;
    assert!(
        shown["used"].as_u64().unwrap() >= 3,
        "counting again: {shown}"
    );
}
