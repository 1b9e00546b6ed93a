//! The key list pages and filters (issue 13, section 3) on both stores: a walk over 2,500 keys
//! while another task creates and deletes keys sees every key that existed throughout exactly
//! once; each filter and sort on a set built for it; a bad parameter is named in a 422.

mod common;

use chrono::{Duration, Utc};
use common::seed::{Store, record, start_seeded};
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
    let base = Utc::now() - Duration::hours(1);
    // Three keys to a millisecond: ties in creation time are ordered by id.
    let records: Vec<KeyRecord> = (0..SEEDED)
        .map(|i| {
            let created = base + Duration::milliseconds(i64::try_from(i / 3).unwrap());
            record(&format!("seed {i}"), created)
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
            None => "/v1/keys?limit=100".to_string(),
            Some(c) => format!("/v1/keys?limit=100&cursor={c}"),
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

    assert!(pages >= 22, "{pages} pages");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "seen more than once: {twice:?}");
    let missed: Vec<_> = throughout
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missed.is_empty(),
        "{} keys that existed throughout were skipped",
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
        (
            "sort=requests&order=desc",
            &[
                "chatty export",
                "writer",
                "expiring soon",
                "Old sync",
                "narrow",
                "expiring later",
                "expired",
                "Chat Bot",
            ],
        ),
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
    each_filter_finds_its_keys,
    bad_parameters_are_named,
);
