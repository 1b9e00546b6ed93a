//! The key list pages and filters (issue 13, section 3) on both stores: a walk over 2,500 keys
//! while another task creates and deletes keys sees every key that existed throughout exactly
//! once, in creation order and in the usage orders; each filter and sort on a set built for
//! it; the usage orders after real requests through the gateway (and two gateways on one
//! Redis); a bad parameter is named in a 422.

mod common;

use chrono::{Duration, Utc};
use common::seed::{Store, record, start_seeded};
use common::stores::{self, redis_pair};
use common::{TestGateway, eventually};
use kbgate::authz::{Action, Permission, Scope};
use kbgate::keys::{KeyRecord, Usage};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const SEEDED: usize = 2_500;

/// Every page of `GET /v1/keys?{query}`, following `next_cursor`; the keys' names in order.
async fn walk(gateway: &TestGateway, query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/keys?{query}"),
            Some(c) => format!("/v1/keys?{query}&cursor={c}"),
        };
        let (status, page) = gateway.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        for key in page["keys"].as_array().unwrap() {
            names.push(key["name"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return names,
        }
    }
}

async fn walk_while_keys_change(store: Store) {
    walk_in_order_while_keys_change(store, "").await;
}

async fn walk_by_requests_while_keys_change(store: Store) {
    walk_in_order_while_keys_change(store, "&sort=requests&order=desc").await;
}

async fn walk_by_last_use_while_keys_change(store: Store) {
    walk_in_order_while_keys_change(store, "&sort=last_used").await;
}

/// The walk of `/v1/keys?limit=100{order}` over [`SEEDED`] keys while keys are created and
/// deleted (their usage does not change).
async fn walk_in_order_while_keys_change(store: Store, order: &str) {
    let base = Utc::now() - Duration::hours(1);
    // Three keys to a millisecond: ties in creation time are ordered by id. Usage: many keys
    // to a value (ties keep creation order), some never used.
    let records: Vec<KeyRecord> = (0..SEEDED)
        .map(|i| {
            let created = base + Duration::milliseconds(i64::try_from(i / 3).unwrap());
            let mut record = record(&format!("seed {i}"), created);
            if i % 5 != 0 {
                let minutes = i64::try_from(i % 40).unwrap();
                record.usage = Usage {
                    request_count: u64::try_from(i % 17).unwrap(),
                    last_used_at: Some(base + Duration::minutes(minutes)),
                };
            }
            record
        })
        .collect();
    let Some((gateway, _redis)) = start_seeded(store, &records).await else {
        return;
    };
    let gateway = Arc::new(gateway);
    // Every seventh key is deleted during the walk, in id order (scattered in age), so some
    // are behind the cursor when they go and some ahead of it.
    let mut doomed: Vec<String> = records.iter().step_by(7).map(|r| r.id.clone()).collect();
    doomed.sort();
    let throughout: HashSet<String> = records
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| !doomed.contains(id))
        .collect();
    let changes = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let churn = tokio::spawn({
        let (gateway, changes, done) = (gateway.clone(), changes.clone(), done.clone());
        async move {
            let mut doomed = doomed.into_iter();
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                gateway
                    .create_key(json!({"name": format!("new {n}")}))
                    .await;
                if let Some(id) = doomed.next() {
                    let (status, _) = gateway
                        .admin("DELETE", &format!("/v1/keys/{id}"), None)
                        .await;
                    assert_eq!(status, 204);
                }
                n += 1;
                changes.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => format!("/v1/keys?limit=100{order}"),
            Some(c) => format!("/v1/keys?limit=100{order}&cursor={c}"),
        };
        let (status, page) = gateway.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let keys = page["keys"].as_array().unwrap();
        assert!(keys.len() <= 100);
        for key in keys {
            *seen
                .entry(key["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        pages += 1;
        // Keys change between every two pages.
        let before = changes.load(Ordering::SeqCst);
        eventually("a change between pages", || {
            let changes = changes.clone();
            async move { changes.load(Ordering::SeqCst) > before }
        })
        .await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    done.store(true, Ordering::SeqCst);
    churn.await.unwrap();

    assert!(pages >= 22, "{order}: {pages} pages");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{order}: seen more than once: {twice:?}");
    let missed: Vec<_> = throughout
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missed.is_empty(),
        "{order}: {} keys that existed throughout were skipped",
        missed.len()
    );
    Arc::into_inner(gateway).unwrap().shutdown().await;
}

/// A set with one key for each filter to find, and usage to sort by.
fn filter_set() -> Vec<KeyRecord> {
    let now = Utc::now();
    let days = Duration::days;
    let used = |count, ago: Duration| Usage {
        request_count: count,
        last_used_at: Some(now - ago),
    };
    // Never used: idle since its creation.
    let chat = record("Chat Bot", now - days(60));
    let mut chatty = record("chatty export", now - days(1));
    chatty.usage = used(50, Duration::hours(1));
    let mut disabled = record("Old sync", now - days(50));
    disabled.enabled = false;
    disabled.usage = used(5, days(40));
    let mut expired = record("expired", now - days(40));
    expired.expires_at = Some(now - days(1));
    let mut expiring = record("expiring soon", now - days(30));
    expiring.expires_at = Some(now + days(3));
    expiring.usage = used(7, days(2));
    let mut later = record("expiring later", now - days(20));
    later.expires_at = Some(now + days(30));
    let mut writer = record("writer", now - days(10));
    writer.scope = Scope::ReadWrite;
    writer.usage = used(20, Duration::minutes(5));
    let mut narrow = record("narrow", now - days(5));
    narrow.permissions = vec![Permission {
        resource: "search".into(),
        action: Action::Read,
    }];
    vec![
        chat, chatty, disabled, expired, expiring, later, writer, narrow,
    ]
}

/// [`filter_set`] by requests, most first (ties: newest first).
const BY_REQUESTS_DESC: [&str; 8] = [
    "chatty export",
    "writer",
    "expiring soon",
    "Old sync",
    "narrow",
    "expiring later",
    "expired",
    "Chat Bot",
];

async fn each_filter_finds_its_keys(store: Store) {
    let Some((gateway, _redis)) = start_seeded(store, &filter_set()).await else {
        return;
    };
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };
    let cases: &[(&str, &[&str])] = &[
        (
            "state=active",
            &[
                "Chat Bot",
                "chatty export",
                "expiring later",
                "expiring soon",
                "narrow",
                "writer",
            ],
        ),
        ("state=disabled", &["Old sync"]),
        ("state=expired", &["expired"]),
        ("state=expiring", &["expiring soon"]),
        (
            "state=expiring&expiring_within=40d",
            &["expiring later", "expiring soon"],
        ),
        ("unused_for=30d", &["Chat Bot", "Old sync", "expired"]),
        ("unused_for=720h", &["Chat Bot", "Old sync", "expired"]),
        ("q=CHAT", &["Chat Bot", "chatty export"]),
        ("q=chat&state=disabled", &[]),
        ("permission=article:write", &["writer"]),
        (
            "permission=search:read",
            &[
                "Chat Bot",
                "Old sync",
                "chatty export",
                "expired",
                "expiring later",
                "expiring soon",
                "narrow",
                "writer",
            ],
        ),
    ];
    for (query, expected) in cases {
        // Pages of two: a filtered walk goes on from its cursor.
        let names = walk(&gateway, &format!("{query}&limit=2")).await;
        assert_eq!(sorted(names), *expected, "{query}");
    }
    assert!(
        !walk(&gateway, "permission=article:read")
            .await
            .contains(&"narrow".to_string()),
        "a key narrowed to search:read does not grant article:read"
    );

    let orders: &[(&str, &[&str])] = &[
        (
            "order=desc",
            &[
                "chatty export",
                "narrow",
                "writer",
                "expiring later",
                "expiring soon",
                "expired",
                "Old sync",
                "Chat Bot",
            ],
        ),
        ("sort=requests&order=desc", &BY_REQUESTS_DESC),
        (
            "sort=last_used",
            &[
                "Chat Bot",
                "expired",
                "expiring later",
                "narrow",
                "Old sync",
                "expiring soon",
                "chatty export",
                "writer",
            ],
        ),
        (
            "sort=requests&state=active&order=asc",
            &[
                "Chat Bot",
                "expiring later",
                "narrow",
                "expiring soon",
                "writer",
                "chatty export",
            ],
        ),
    ];
    for (query, expected) in orders {
        for limit in [3, 100] {
            let names = walk(&gateway, &format!("{query}&limit={limit}")).await;
            assert_eq!(names, *expected, "{query}&limit={limit}");
        }
    }
    gateway.shutdown().await;
}

async fn bad_parameters_are_named(store: Store) {
    let Some((gateway, _redis)) = start_seeded(store, &filter_set()).await else {
        return;
    };
    let (_, page) = gateway.admin("GET", "/v1/keys?limit=1", None).await;
    let created_cursor = page["next_cursor"].as_str().unwrap().to_string();
    let cases = [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("state=gone", "state"),
        ("unused_for=soon", "unused_for"),
        ("expiring_within=-1d", "expiring_within"),
        ("sort=name", "sort"),
        ("order=up", "order"),
        ("permission=nothing", "permission"),
        ("cursor=zz", "cursor"),
        (&format!("sort=requests&cursor={created_cursor}"), "cursor"),
        ("colour=blue", "colour"),
        ("q=a&q=b", "q"),
    ];
    for (query, named) in cases {
        let (status, body) = gateway
            .admin("GET", &format!("/v1/keys?{query}"), None)
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{query}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{named}: ")),
            "{query}: {message}"
        );
    }
    gateway.shutdown().await;
}

/// The names of a walk of `/v1/keys?{query}` with their request counts.
async fn counted(gateway: &TestGateway, query: &str) -> Vec<(String, u64)> {
    let (status, page) = gateway
        .admin("GET", &format!("/v1/keys?{query}&limit=1000"), None)
        .await;
    assert_eq!(status, 200, "{query}: {page}");
    assert!(page["next_cursor"].is_null(), "{query}: one page");
    page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let name = k["name"].as_str().unwrap().to_string();
            (name, k["request_count"].as_u64().unwrap())
        })
        .collect()
}

/// Sends `n` requests with `secret`, then waits for the clock's next millisecond, so the
/// keys used one after another have distinct last-use times.
async fn use_key(gateway: &TestGateway, secret: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(gateway.get("/v1/article", secret).await.0, 200);
    }
    let now = Utc::now().timestamp_millis();
    while Utc::now().timestamp_millis() == now {
        tokio::task::yield_now().await;
    }
}

/// Waits until the usage flush has written `total` requests (the overview reads the store).
async fn flushed(gateway: &TestGateway, total: u64) {
    eventually(&format!("{total} requests flushed"), || async {
        let (_, overview) = gateway.admin("GET", "/v1/usage", None).await;
        overview["total"]["requests"] == total
    })
    .await;
}

/// Real requests through the gateway order the keys by requests and by last use, both ways,
/// page by page, with filters; a deleted key leaves the orders; more usage moves a key.
async fn usage_orders_follow_requests(store: Store) {
    let upstream = common::RunningKb::start().await;
    let started = match store {
        Store::Embedded => stores::embedded(&upstream, |_| {}).await,
        Store::Redis => stores::redis(&upstream, "orders:", |_| {}).await,
    };
    let Some((gateway, _redis)) = started else {
        return;
    };
    let mut keys = HashMap::new();
    for name in ["chat a", "sync b", "chat c", "idle d"] {
        keys.insert(name, gateway.create_key(json!({ "name": name })).await);
    }
    // Used in this order: b once, c twice, a three times; d never.
    for (name, n) in [("sync b", 1), ("chat c", 2), ("chat a", 3)] {
        use_key(&gateway, &keys[name].1, n).await;
    }
    flushed(&gateway, 6).await;
    let by_requests = [("chat a", 3), ("chat c", 2), ("sync b", 1), ("idle d", 0)];
    let expected = |order: &[(&str, u64)]| -> Vec<(String, u64)> {
        order.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    };
    let reversed = |order: &[(&str, u64)]| {
        let mut order = expected(order);
        order.reverse();
        order
    };
    assert_eq!(
        counted(&gateway, "sort=requests&order=desc").await,
        expected(&by_requests)
    );
    assert_eq!(
        counted(&gateway, "sort=requests").await,
        reversed(&by_requests)
    );
    // Last used: a, then c, then b; d never (first ascending, last descending).
    assert_eq!(
        counted(&gateway, "sort=last_used&order=desc").await,
        expected(&by_requests)
    );
    assert_eq!(
        counted(&gateway, "sort=last_used&order=asc").await,
        reversed(&by_requests)
    );
    let names =
        |order: Vec<(String, u64)>| -> Vec<String> { order.into_iter().map(|o| o.0).collect() };
    for query in [
        "sort=requests&order=desc",
        "sort=requests&order=asc",
        "sort=last_used&order=desc",
        "sort=last_used&order=asc",
    ] {
        let whole = names(counted(&gateway, query).await);
        for limit in [1, 3] {
            let paged = walk(&gateway, &format!("{query}&limit={limit}")).await;
            assert_eq!(
                paged, whole,
                "{query}&limit={limit}: every key once, in order"
            );
        }
    }

    // Filters combine with the usage order.
    assert_eq!(
        walk(&gateway, "sort=requests&order=desc&q=chat&limit=1").await,
        ["chat a", "chat c"]
    );
    let (status, _) = gateway
        .admin(
            "PATCH",
            &format!("/v1/keys/{}", keys["chat c"].0),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        walk(&gateway, "sort=last_used&order=desc&state=active&limit=2").await,
        ["chat a", "sync b", "idle d"]
    );

    // A deleted key leaves the orders.
    let (status, _) = gateway
        .admin("DELETE", &format!("/v1/keys/{}", keys["chat a"].0), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        walk(&gateway, "sort=requests&order=desc").await,
        ["chat c", "sync b", "idle d"]
    );

    // More requests move a key once flushed.
    use_key(&gateway, &keys["idle d"].1, 4).await;
    eventually("idle d moves to the front", || async {
        walk(&gateway, "sort=requests&order=desc&limit=2").await == ["idle d", "chat c", "sync b"]
    })
    .await;
    assert_eq!(
        walk(&gateway, "sort=last_used").await,
        ["sync b", "chat c", "idle d"]
    );
    gateway.shutdown().await;
}

/// A listed key is the key object `GET /v1/keys/{id}` shows, quota state included (the list
/// reads the quota counts of a whole page at once).
async fn listed_keys_are_the_keys_shown(store: Store) {
    let upstream = common::RunningKb::start().await;
    let started = match store {
        Store::Embedded => stores::embedded(&upstream, |_| {}).await,
        Store::Redis => stores::redis(&upstream, "quotas:", |_| {}).await,
    };
    let Some((gateway, _redis)) = started else {
        return;
    };
    let quota = |requests: u64, period: &str| json!({"requests": requests, "period": period});
    let keys = [
        (json!({"name": "plain"}), 1),
        (json!({"name": "unused", "quota": quota(10, "day")}), 0),
        (json!({"name": "used", "quota": quota(5, "month")}), 3),
        (json!({"name": "spent", "quota": quota(2, "day")}), 2),
    ];
    for (body, uses) in keys {
        let (_, secret) = gateway.create_key(body).await;
        use_key(&gateway, &secret, uses).await;
    }
    for query in ["", "sort=requests&order=desc"] {
        let (status, page) = gateway
            .admin("GET", &format!("/v1/keys?{query}"), None)
            .await;
        assert_eq!(status, 200, "{page}");
        let listed = page["keys"].as_array().unwrap();
        assert_eq!(listed.len(), 4);
        for key in listed {
            let id = key["id"].as_str().unwrap();
            let (_, shown) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
            assert_eq!(*key, shown, "{query}");
        }
        let used: HashMap<&str, &serde_json::Value> = listed
            .iter()
            .map(|k| (k["name"].as_str().unwrap(), &k["quota_state"]["used"]))
            .collect();
        assert_eq!(used["used"], 3);
        assert_eq!(used["spent"], 2);
        assert_eq!(used["unused"], 0);
        assert!(used["plain"].is_null());
    }
    gateway.shutdown().await;
}

/// A Redis written before the usage orders (here: without them): the first sorted list
/// indexes every key.
#[tokio::test]
async fn a_redis_from_before_the_usage_orders_is_indexed() {
    let Some((gateway, Some(redis))) = start_seeded(Store::Redis, &filter_set()).await else {
        return;
    };
    let deleted = redis.cli(&["DEL", "seeded:by_requests", "seeded:by_last_used"]);
    assert_eq!(deleted.as_deref(), Some("2"), "the import kept both orders");
    assert_eq!(
        walk(&gateway, "sort=requests&order=desc&limit=3").await,
        BY_REQUESTS_DESC
    );
    gateway.shutdown().await;
}

/// Two gateways on one Redis each flush their own counts: the order is that of the sums,
/// which neither gateway's counts give alone, and both gateways list it the same.
#[tokio::test]
async fn two_gateways_order_by_summed_requests() {
    let Some(pair) = redis_pair("pages:").await else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    let mut secrets = HashMap::new();
    for name in ["k1", "k2", "k3"] {
        secrets.insert(name, a.create_key(json!({ "name": name })).await.1);
    }
    // k1: 2 + 2 = 4; k2: 3 + 0 = 3; k3: 0 + 2 = 2. Alone, a says k2 > k1 > k3, b k1 = k3 > k2.
    for (gateway, name, n) in [(a, "k1", 2), (b, "k1", 2), (a, "k2", 3), (b, "k3", 2)] {
        use_key(gateway, &secrets[name], n).await;
    }
    flushed(a, 9).await;
    let summed = vec![
        ("k1".to_string(), 4),
        ("k2".to_string(), 3),
        ("k3".to_string(), 2),
    ];
    for gateway in [a, b] {
        assert_eq!(counted(gateway, "sort=requests&order=desc").await, summed);
    }
    pair.a.shutdown().await;
    pair.b.shutdown().await;
}

macro_rules! on_both_stores {
    ($($suite:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test] async fn $suite() { super::$suite(super::Store::Embedded).await } )*
        }
        mod redis {
            $( #[tokio::test] async fn $suite() { super::$suite(super::Store::Redis).await } )*
        }
    };
}

on_both_stores!(
    walk_while_keys_change,
    walk_by_requests_while_keys_change,
    walk_by_last_use_while_keys_change,
    usage_orders_follow_requests,
    listed_keys_are_the_keys_shown,
    each_filter_finds_its_keys,
    bad_parameters_are_named,
);
