//! Several gateways on one real redis-server behave as one gateway, and Redis faults are met
//! with the guarantees of the contract: fail closed, never hang, resume without a restart.
//! Each test says SKIPPED and returns where redis-server is not installed.

mod common;

use common::redis::RedisServer;
use common::{RunningKb, TestGateway, eventually, free_port};
use kbgate::keys::StoreConfig;
use kbgate::keys::redis::RedisConfig;
use serde_json::json;
use std::time::{Duration, Instant};

/// What two gateways of [`pair`] share: a redis-server and a fake KB.
struct Shared {
    server: RedisServer,
    upstream: RunningKb,
}

/// A redis-server, a fake KB and two gateways in front of it sharing the server ([`gateways`]);
/// None (SKIPPED) where redis-server is not installed.
async fn pair() -> Option<(TestGateway, TestGateway, Shared)> {
    let server = RedisServer::start()?;
    let upstream = RunningKb::start().await;
    let (a, b) = gateways(&upstream, &server).await;
    Some((a, b, Shared { server, upstream }))
}

/// Two gateways sharing `server` under one prefix; the hot tier keeps entries for a minute, so
/// a refusal seen on B within the test's wait can only come from the change feed.
async fn gateways(upstream: &RunningKb, server: &RedisServer) -> (TestGateway, TestGateway) {
    let start = || {
        TestGateway::builder()
            .upstream(upstream)
            .config(|config| {
                config.store = server.store("shared:");
                config.hot_tier.max_age = Duration::from_secs(60);
            })
            .start()
    };
    let a = start().await;
    let b = start().await;
    // Both instances listen for changes once a first change reaches them.
    let (probe_id, probe) = a.create_key(json!({})).await;
    assert_eq!(b.get("/v1/article", &probe).await.0, 200);
    a.admin("DELETE", &format!("/v1/keys/{probe_id}"), None)
        .await;
    eventually("B hears changes", || async {
        b.get("/v1/article", &probe).await.0 == 401
    })
    .await;
    (a, b)
}

/// Makes a change on A and waits until B enforces it; returns how long that took.
async fn propagation(
    b: &TestGateway,
    key: &str,
    expected: (u16, &str),
    change: impl std::future::Future<Output = ()>,
) -> Duration {
    assert_eq!(b.get("/v1/article", key).await.0, 200, "cached on B first");
    let started = Instant::now();
    change.await;
    let expected = (expected.0, expected.1.to_string());
    eventually("B enforces A's change", || async {
        b.get("/v1/article", key).await == expected
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_change_made_on_a_is_enforced_by_b() {
    let Some((a, b, _shared)) = pair().await else {
        return;
    };

    let (id, key) = a.create_key(json!({"scope": "read_write"})).await;
    let path = format!("/v1/keys/{id}");
    let disable = propagation(&b, &key, (401, "key_disabled"), async {
        assert_eq!(
            a.admin("PATCH", &path, Some(json!({"enabled": false})))
                .await
                .0,
            200
        );
    })
    .await;
    a.admin("PATCH", &path, Some(json!({"enabled": true})))
        .await;
    eventually("re-enabled on B", || async {
        b.get("/v1/article", &key).await.0 == 200
    })
    .await;

    let narrowed = propagation(&b, &key, (403, "insufficient_permissions"), async {
        a.admin(
            "PATCH",
            &path,
            Some(json!({"permissions": ["search:read"]})),
        )
        .await;
    })
    .await;
    a.admin("PATCH", &path, Some(json!({"permissions": []})))
        .await;
    eventually("widened on B", || async {
        b.get("/v1/article", &key).await.0 == 200
    })
    .await;

    let mut new_secret = String::new();
    let rotated = propagation(&b, &key, (401, "key_expired"), async {
        let (_, body) = a.rotate(&id, 0).await;
        new_secret = body["secret"].as_str().unwrap().to_string();
    })
    .await;
    assert_eq!(
        b.get("/v1/article", &new_secret).await.0,
        200,
        "the new secret works on B"
    );

    let deleted = propagation(&b, &new_secret, (401, "invalid_key"), async {
        assert_eq!(a.admin("DELETE", &path, None).await.0, 204);
    })
    .await;
    eprintln!(
        "measured propagation A -> B: disable {disable:?}, permissions {narrowed:?}, rotate {rotated:?}, delete {deleted:?}"
    );
    let (_, listed) = b.admin("GET", "/v1/keys", None).await;
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != id.as_str())
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_unknown_keys_is_answered_from_the_negative_cache() {
    let Some((a, b, shared)) = pair().await else {
        return;
    };
    let unknown = kbgate::keys::secret::generate().secret;
    assert_eq!(
        b.get("/v1/article", &unknown).await,
        (401, "invalid_key".into())
    );
    let gets_before = shared.server.calls("get");
    for _ in 0..200 {
        assert_eq!(
            b.get("/v1/article", &unknown).await,
            (401, "invalid_key".into())
        );
    }
    let lookups = shared.server.calls("get") - gets_before;
    assert!(
        lookups <= 2,
        "200 refusals of one unknown key cost {lookups} Redis lookups"
    );

    // A key created afterwards works at once on every instance.
    let (_, key) = a.create_key(json!({})).await;
    assert_eq!(b.get("/v1/article", &key).await.0, 200);
    assert_eq!(a.get("/v1/article", &key).await.0, 200);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn usage_from_all_instances_adds_up_exactly() {
    let Some((a, b, shared)) = pair().await else {
        return;
    };
    let (id, key) = a.create_key(json!({})).await;
    let requests = |gateway: &TestGateway, n: usize| {
        let key = key.clone();
        let client = gateway.client.clone();
        let url = gateway.url("/v1/article");
        async move {
            for _ in 0..n {
                assert_eq!(
                    common::keyed_get_with(&client, &url, &key).await.status(),
                    200
                );
            }
        }
    };
    tokio::join!(requests(&a, 30), requests(&b, 20), requests(&a, 10));
    eventually("both instances flushed", || async {
        let (_, shown) = b.admin("GET", &format!("/v1/keys/{id}"), None).await;
        shown["request_count"] == 60
    })
    .await;
    // And nothing more arrives later: the sum is exact, not an over-count.
    a.shutdown().await;
    b.shutdown().await;
    let c = TestGateway::builder()
        .upstream(&shared.upstream)
        .config(|config| config.store = shared.server.store("shared:"))
        .start()
        .await;
    let (_, shown) = c.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(shown["request_count"], 60);
    c.shutdown().await;
}

#[tokio::test]
async fn redis_down_at_start_fails_closed_then_full_service_resumes() {
    if RedisServer::start().is_none() {
        return;
    }
    let port = free_port();
    let (upstream, gateway) = TestGateway::builder()
        .config(|config| {
            config.store = StoreConfig::Redis(RedisConfig {
                urls: vec![format!("redis://127.0.0.1:{port}/0")],
                cluster: false,
                prefix: "late:".into(),
                timeout: Duration::from_millis(300),
            })
        })
        .start_on_echo()
        .await;
    let ready = gateway.plain_get(gateway.admin_url("/readyz")).await;
    assert_eq!(ready.status(), 503);
    let some_key = kbgate::keys::secret::generate().secret;
    let started = Instant::now();
    assert_eq!(
        gateway.get("/v1/article", &some_key).await,
        (503, "store_unavailable".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no request hangs: {:?}",
        started.elapsed()
    );
    assert_eq!(gateway.admin("POST", "/v1/keys", None).await.0, 503);
    assert!(
        upstream.requests().is_empty(),
        "nothing unverified went upstream"
    );

    // Redis comes up on that port: service resumes without a restart.
    let _server = RedisServer::start_on(port).unwrap();
    eventually("ready once Redis is up", || async {
        gateway
            .plain_get(gateway.admin_url("/readyz"))
            .await
            .status()
            == 200
    })
    .await;
    let (_, key) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn redis_lost_mid_run_keeps_cached_keys_fails_closed_for_the_rest_and_recovers() {
    let Some((a, b, mut shared)) = pair().await else {
        return;
    };
    let (_, cached) = a.create_key(json!({})).await;
    let (_, uncached) = a.create_key(json!({})).await;
    assert_eq!(b.get("/v1/article", &cached).await.0, 200);

    shared.server.kill();
    assert_eq!(
        b.get("/v1/article", &cached).await.0,
        200,
        "hot-tier keys keep working"
    );
    let started = Instant::now();
    assert_eq!(
        b.get("/v1/article", &uncached).await,
        (503, "store_unavailable".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the store timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(b.plain_get(b.admin_url("/readyz")).await.status(), 503);
    assert_eq!(
        b.get("/v1/article", &cached).await.0,
        200,
        "still served while Redis is down"
    );

    shared.server.restart();
    eventually("full service resumes", || async {
        b.get("/v1/article", &uncached).await.0 == 200
    })
    .await;
    // The change feed is back too: a change on A reaches B again.
    let (id, key) = a.create_key(json!({})).await;
    assert_eq!(b.get("/v1/article", &key).await.0, 200);
    a.admin(
        "PATCH",
        &format!("/v1/keys/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    eventually("B hears changes again", || async {
        b.get("/v1/article", &key).await.0 == 401
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_slow_redis_gives_503_after_the_store_timeout_not_a_hung_request() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (_upstream, gateway) = TestGateway::builder()
        .config(|config| config.store = server.store("slow:"))
        .start_on_echo()
        .await;
    let (_, key) = gateway.create_key(json!({})).await;
    let (_, other) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);

    server.signal("-STOP");
    let started = Instant::now();
    let answer = gateway.get("/v1/article", &other).await;
    let waited = started.elapsed();
    server.signal("-CONT");
    assert_eq!(answer, (503, "store_unavailable".into()));
    assert!(
        waited >= Duration::from_millis(250),
        "it did wait for Redis: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "bounded by the tests' 2 s store timeout: {waited:?}"
    );
    eprintln!("a frozen Redis was answered with 503 after {waited:?}");
    eventually("answers again once Redis does", || async {
        gateway.get("/v1/article", &other).await.0 == 200
    })
    .await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_redis_cluster_serves_as_the_shared_store() {
    if RedisServer::start().is_none() {
        return;
    }
    let cluster = common::redis::RedisCluster::start().unwrap();
    let upstream = RunningKb::start().await;
    let start = || {
        TestGateway::builder()
            .upstream(&upstream)
            .config(|config| {
                config.store = cluster.store("kbgate:");
                config.hot_tier.max_age = Duration::from_secs(60);
            })
            .start()
    };
    let a = start().await;
    let b = start().await;
    let (id, key) = a.create_key(json!({"name": "On a cluster"})).await;
    assert_eq!(b.get("/v1/article", &key).await.0, 200);
    assert_eq!(
        b.admin("GET", &format!("/v1/keys/{id}"), None).await.1["name"],
        "On a cluster"
    );
    a.admin(
        "PATCH",
        &format!("/v1/keys/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    eventually("B enforces a change made on A", || async {
        b.get("/v1/article", &key).await == (401, "key_disabled".into())
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn losing_the_change_feed_while_redis_is_up_empties_the_hot_tier() {
    let Some((a, b, shared)) = pair().await else {
        return;
    };
    let (_, key) = a.create_key(json!({})).await;
    assert_eq!(b.get("/v1/article", &key).await.0, 200);
    let keyring = b.running.as_ref().unwrap().keyring.clone();
    assert!(keyring.hot_len() >= 1, "the key is cached on B");

    // Drop every subscriber connection; Redis itself stays up.
    let killed = shared
        .server
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .unwrap();
    assert_ne!(killed, "0", "a subscription was there to kill");
    eventually("B empties its hot tier", || async {
        keyring.hot_len() == 0
    })
    .await;
    // It resubscribes by itself and goes on serving (and caching) as before.
    assert_eq!(b.get("/v1/article", &key).await.0, 200);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_key_created_on_a_gets_its_name_in_b_metrics() {
    let Some((a, b, _shared)) = pair().await else {
        return;
    };
    let (id, _) = a.create_key(json!({"name": "Named on A"})).await;
    // B hears of the change on its feed and re-reads the names within a refresh (5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = b.scrape().await;
        let info = [("key_id", id.as_str()), ("name", "Named on A")];
        if scrape.has(kbgate::metrics::KEY_INFO, &info) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never named the key:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn listings_larger_than_one_batch_return_every_key_with_its_own_usage() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // 2,345 writes one after the other: on a loaded 2-core machine one of them can wait past
    // the tests' usual 300 ms, and this test is about listings, not timeouts.
    let mut config = server.store("many:");
    if let StoreConfig::Redis(redis) = &mut config {
        redis.timeout = Duration::from_secs(5);
    }
    let store = kbgate::app::open_store(&config).unwrap();
    let now = chrono::Utc::now();
    // More than two of the store's read batches (1000), and not a multiple of one.
    let mut ids = std::collections::BTreeSet::new();
    let mut deltas = Vec::new();
    for n in 0..2345u64 {
        let secret = kbgate::keys::secret::generate();
        let record = kbgate::keys::KeyRecord::new(
            format!("key {n}"),
            kbgate::authz::Scope::Read,
            Vec::new(),
            None,
            &secret,
            now,
        );
        store.create(&record).await.unwrap();
        deltas.push(kbgate::keys::UsageDelta {
            key_id: record.id.clone(),
            requests: n + 1,
            last_used_at: now,
            hours: Vec::new(),
        });
        ids.insert(record.id);
    }
    store.add_usage(&deltas).await.unwrap();

    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), ids.len());
    let listed_ids: std::collections::BTreeSet<String> =
        listed.iter().map(|r| r.id.clone()).collect();
    assert_eq!(listed_ids, ids, "every key once");
    for record in &listed {
        let n: u64 = record.name.strip_prefix("key ").unwrap().parse().unwrap();
        assert_eq!(record.usage.request_count, n + 1, "{}", record.name);
    }

    // The oldest first; created in the same millisecond, they are in id order.
    let oldest = store.list_oldest(1500).await.unwrap();
    let oldest_ids: Vec<String> = oldest.iter().map(|r| r.id.clone()).collect();
    let expected: Vec<String> = ids.iter().take(1500).cloned().collect();
    assert_eq!(oldest_ids, expected);
    assert!(
        oldest.iter().all(|r| r.usage.request_count > 0),
        "with usage"
    );
    assert_eq!(store.list_oldest(5000).await.unwrap().len(), ids.len());
    assert!(store.list_oldest(0).await.unwrap().is_empty());
}
