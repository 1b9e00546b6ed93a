//! The audit trail through the admin API, on both stores: one entry per change with its actor,
//! filters, paging and NDJSON export; a failed store write leaves neither change nor entry; the
//! chain check names an entry edited in the store and passes after retention pruning; several
//! gateways on one Redis write one chain.

mod common;

use common::store::Call;
use common::{RunningKb, TestGateway, eventually, stores};
use kbgate::keys::StoreError;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn entries(gateway: &TestGateway, query: &str) -> Vec<Value> {
    let (status, page) = gateway
        .admin("GET", &format!("/v1/audit{query}"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    page["entries"].as_array().unwrap().clone()
}

async fn verify(gateway: &TestGateway) -> Value {
    let (status, outcome) = gateway.admin("GET", "/v1/audit/verify", None).await;
    assert_eq!(status, 200, "{outcome}");
    outcome
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

async fn every_change_has_its_entry(gateway: &TestGateway) {
    let (status, op) = gateway
        .admin(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "Ops", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 201);
    let (op_id, op_secret) = (op["id"].as_str().unwrap(), op["secret"].as_str().unwrap());
    let as_op = |method: &'static str, path: String, body: Option<Value>| {
        let path = path.clone();
        async move {
            let (status, body) = gateway.admin_as(Some(op_secret), method, &path, body).await;
            assert!(
                (200..300).contains(&status),
                "{method} {path}: {status} {body}"
            );
            body
        }
    };
    let key = as_op("POST", "/v1/keys".into(), Some(json!({"name": "Bot"}))).await;
    let id = key["id"].as_str().unwrap().to_string();
    let secret = key["secret"].as_str().unwrap().to_string();
    let path = format!("/v1/keys/{id}");
    as_op(
        "PATCH",
        path.clone(),
        Some(json!({"name": "Chatbot", "scope": "read_write"})),
    )
    .await;
    as_op("PATCH", path.clone(), Some(json!({"enabled": false}))).await;
    as_op("PATCH", path.clone(), Some(json!({"enabled": true}))).await;
    let rotated = as_op("POST", format!("{path}/rotate"), Some(json!({}))).await;
    as_op("POST", format!("{path}/rotation/end"), None).await;
    as_op("DELETE", path.clone(), None).await;
    let (_, other) = gateway
        .admin(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "tmp", "role": "viewer"})),
        )
        .await;
    let other_id = other["id"].as_str().unwrap();
    as_op("DELETE", format!("/v1/admin-tokens/{other_id}"), None).await;

    let all = entries(gateway, "").await;
    assert_eq!(
        actions(&all),
        [
            "admin_token.deleted",
            "admin_token.created",
            "key.deleted",
            "key.updated",
            "key.rotated",
            "key.enabled",
            "key.disabled",
            "key.updated",
            "key.created",
            "admin_token.created",
        ],
        "newest first"
    );
    assert_eq!(
        all[1]["actor"],
        json!({"id": "config", "name": all[1]["actor"]["name"], "role": "admin"})
    );
    for entry in &all[..9] {
        if entry["action"] != "admin_token.created" {
            assert_eq!(entry["actor"]["id"], op_id, "{entry}");
            assert_eq!(entry["actor"]["name"], "Ops");
        }
        assert_eq!(entry["ip"], "127.0.0.1");
        assert!(entry["user_agent"].is_string() || entry["user_agent"].is_null());
        assert_eq!(entry["hash"].as_str().unwrap().len(), 64);
    }
    let edit = &all[7];
    assert_eq!(
        edit["target"],
        json!({"type": "key", "id": id, "name": "Chatbot"})
    );
    assert_eq!(
        edit["changes"]["name"],
        json!({"from": "Bot", "to": "Chatbot"})
    );
    assert_eq!(
        edit["changes"]["scope"],
        json!({"from": "read", "to": "read_write"})
    );
    assert_eq!(
        all[6]["changes"],
        json!({"enabled": {"from": true, "to": false}})
    );
    assert_eq!(all[4]["changes"]["start"]["to"], rotated["start"]);
    // Never a secret or a secret's hash.
    let text = serde_json::to_string(&all).unwrap();
    for secret in [
        secret.as_str(),
        rotated["secret"].as_str().unwrap(),
        op_secret,
    ] {
        assert!(!text.contains(secret));
        assert!(!text.contains(&blake3::hash(secret.as_bytes()).to_hex().to_string()));
    }

    // Filters, paging and export.
    assert_eq!(entries(gateway, &format!("?key_id={id}")).await.len(), 7);
    assert_eq!(entries(gateway, "?actor=config").await.len(), 2);
    assert_eq!(
        actions(&entries(gateway, "?action=key.disabled").await),
        ["key.disabled"]
    );
    assert_eq!(entries(gateway, "?since=1h").await.len(), 10);
    assert!(entries(gateway, "?until=1h").await.is_empty());
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let query = format!("?since={}", later.replace('+', "%2B"));
    assert!(entries(gateway, &query).await.is_empty());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/audit?limit=3&cursor={c}"),
            None => "/v1/audit?limit=3".into(),
        };
        let (_, page) = gateway.admin("GET", &query, None).await;
        seen.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let ids: Vec<Value> = all.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(seen, ids, "pages walk the trail once");
    let export = gateway
        .client
        .get(gateway.admin_url(&format!("/v1/audit?key_id={id}")))
        .bearer_auth(common::ADMIN_TOKEN)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = export
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    for (query, name) in [
        ("?limit=0", "limit"),
        ("?action=key.exploded", "action"),
        ("?since=yesterday", "since"),
        ("?cursor=abc", "cursor"),
        ("?colour=red", "colour"),
    ] {
        let (status, error) = gateway
            .admin("GET", &format!("/v1/audit{query}"), None)
            .await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(error["error"]["code"], "invalid_request", "{query}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(name),
            "{error}"
        );
    }
    assert_eq!(verify(gateway).await, json!({"ok": true, "entries": 10}));
}

/// Retention of a second: the gateway prunes on its own and the kept chain still verifies.
async fn the_chain_verifies_after_pruning(gateway: &TestGateway) {
    for _ in 0..3 {
        gateway.create_key(json!({})).await;
    }
    eventually("old entries are pruned", || async {
        entries(gateway, "").await.is_empty()
    })
    .await;
    gateway.create_key(json!({})).await;
    let outcome = verify(gateway).await;
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert!(outcome["entries"].as_u64().unwrap() <= 1);
}

const SECOND: Duration = Duration::from_secs(1);

for_each_store!(embedded => |kb| stores::embedded(kb, |_| {}); every_change_has_its_entry);
for_each_store!(redis => |kb| stores::redis(kb, "audit:", |_| {}); every_change_has_its_entry);
// Retention of a second: pruned within the test.
for_each_store!(embedded_pruned => |kb| stores::embedded(kb, |c| c.audit_retention = SECOND);
    the_chain_verifies_after_pruning);
for_each_store!(redis_pruned => |kb| stores::redis(kb, "audit:", |c| c.audit_retention = SECOND);
    the_chain_verifies_after_pruning);

/// A store that refuses the write: 503, and neither the key nor an entry exists afterwards.
#[tokio::test]
async fn a_failed_write_leaves_neither_change_nor_entry() {
    let failing = Arc::new(AtomicBool::new(false));
    let switch = failing.clone();
    let (_upstream, gateway) = TestGateway::builder()
        .store(Box::new(move |call| match call {
            Call::Create(_) | Call::Update(_) | Call::Delete(_)
                if switch.load(Ordering::SeqCst) =>
            {
                Err(StoreError::Unavailable("disk gone".into()))
            }
            _ => Ok(()),
        }))
        .start_on_echo()
        .await;
    let (id, _) = gateway.create_key(json!({"name": "kept"})).await;
    failing.store(true, Ordering::SeqCst);
    let (status, body) = gateway
        .admin("POST", "/v1/keys", Some(json!({"name": "lost"})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable"))
    );
    let path = format!("/v1/keys/{id}");
    assert_eq!(
        gateway
            .admin("PATCH", &path, Some(json!({"name": "x"})))
            .await
            .0,
        503
    );
    assert_eq!(gateway.admin("DELETE", &path, None).await.0, 503);
    failing.store(false, Ordering::SeqCst);

    let (_, list) = gateway.admin("GET", "/v1/keys", None).await;
    let names: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(actions(&entries(&gateway, "").await), ["key.created"]);
    assert_eq!(verify(&gateway).await["ok"], true);
    gateway.shutdown().await;
}

/// Redis: an audit log that cannot take the entry (the wrong type) stops the change too.
#[tokio::test]
async fn redis_a_failed_append_leaves_no_change() {
    let upstream = RunningKb::start().await;
    let Some((gateway, Some(server))) = stores::redis(&upstream, "broken:", |_| {}).await else {
        return;
    };
    server
        .cli(&["SET", "broken:audit", "not a sorted set"])
        .unwrap();
    let (status, _) = gateway
        .admin("POST", "/v1/keys", Some(json!({"name": "lost"})))
        .await;
    assert_eq!(status, 503);
    let (_, list) = gateway.admin("GET", "/v1/keys", None).await;
    assert_eq!(list["keys"], json!([]));
    gateway.shutdown().await;
}

/// Edits `entry_id`'s target name in the embedded store file of a stopped gateway.
fn tamper_embedded(path: &std::path::Path, seq: u64) {
    use redb::{ReadableDatabase, TableDefinition};
    const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
    let db = redb::Database::open(path).unwrap();
    let json: String = {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(AUDIT).unwrap();
        table.get(seq).unwrap().unwrap().value().to_string()
    };
    let mut entry: Value = serde_json::from_str(&json).unwrap();
    entry["target"]["name"] = json!("forged");
    let txn = db.begin_write().unwrap();
    txn.open_table(AUDIT)
        .unwrap()
        .insert(seq, entry.to_string().as_str())
        .unwrap();
    txn.commit().unwrap();
}

#[tokio::test]
async fn an_entry_edited_in_the_embedded_store_is_named() {
    let upstream = RunningKb::start().await;
    let gateway = TestGateway::start(&upstream).await;
    for name in ["a", "b", "c"] {
        gateway.create_key(json!({ "name": name })).await;
    }
    assert_eq!(verify(&gateway).await["ok"], true);
    let TestGateway { running, dir, .. } = gateway;
    running.unwrap().shutdown().await;
    tamper_embedded(&dir.path().join("kbgate.db"), 2);

    let again = TestGateway::builder()
        .upstream(&upstream)
        .dir(dir)
        .start()
        .await;
    let outcome = verify(&again).await;
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["first_bad"], "aud_0000000000000002");
    again.shutdown().await;
}

#[tokio::test]
async fn an_entry_edited_in_redis_is_named() {
    let upstream = RunningKb::start().await;
    let Some((gateway, Some(server))) = stores::redis(&upstream, "tamper:", |_| {}).await else {
        return;
    };
    for name in ["a", "b", "c"] {
        gateway.create_key(json!({ "name": name })).await;
    }
    assert_eq!(verify(&gateway).await["ok"], true);
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let members: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
        .arg("tamper:audit")
        .arg(2)
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut entry: Value = serde_json::from_str(&members[0]).unwrap();
    entry["actor"]["role"] = json!("viewer");
    let _: () = ::redis::pipe()
        .atomic()
        .zrem("tamper:audit", &members[0])
        .zadd("tamper:audit", entry.to_string(), 2)
        .query_async(&mut c)
        .await
        .unwrap();
    let outcome = verify(&gateway).await;
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["first_bad"], "aud_0000000000000002");
    gateway.shutdown().await;
}

/// Changes made at the same time through two gateways on one Redis form one unbroken chain.
#[tokio::test]
async fn two_gateways_on_one_redis_write_one_chain() {
    let Some(stores::RedisPair {
        a,
        b,
        server: _server,
        upstream: _upstream,
    }) = stores::redis_pair("chain:").await
    else {
        return;
    };
    let creates = (0..20).map(|i| {
        let gateway = if i % 2 == 0 { &a } else { &b };
        async move { gateway.create_key(json!({ "name": format!("k{i}") })).await }
    });
    futures_util::future::join_all(creates).await;
    let outcome = verify(&a).await;
    assert_eq!(outcome, json!({"ok": true, "entries": 20}));
    let all = entries(&b, "").await;
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=20).rev().map(|n| format!("aud_{n:016}")).collect();
    assert_eq!(ids, expected);
    a.shutdown().await;
    b.shutdown().await;
}

/// `migrate` from the embedded store to Redis carries the admin tokens and the audit chain:
/// the token works on the new store, and the chain verifies and grows there.
#[tokio::test]
async fn migrate_carries_tokens_and_the_chain() {
    let upstream = RunningKb::start().await;
    let Some(server) = common::redis::RedisServer::start() else {
        return;
    };
    let gateway = TestGateway::start(&upstream).await;
    let (status, token) = gateway
        .admin(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "ops", "role": "operator"})),
        )
        .await;
    assert_eq!(status, 201);
    let secret = token["secret"].as_str().unwrap().to_string();
    gateway.create_key(json!({"name": "a"})).await;
    let before = entries(&gateway, "").await;
    let TestGateway { running, dir, .. } = gateway;
    running.unwrap().shutdown().await;

    let from = kbgate::keys::StoreConfig::embedded(dir.path().join("kbgate.db"));
    let to = server.store("moved:");
    kbgate::migrate::migrate(&from, &to).await.unwrap();
    let moved = TestGateway::builder()
        .upstream(&upstream)
        .config(|config| config.store = to)
        .start()
        .await;
    assert_eq!(entries(&moved, "").await, before);
    let (status, _) = moved
        .admin_as(Some(&secret), "POST", "/v1/keys", None)
        .await;
    assert_eq!(status, 201, "the token came along");
    assert_eq!(verify(&moved).await, json!({"ok": true, "entries": 3}));
    moved.shutdown().await;
}
