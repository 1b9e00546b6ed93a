//! `kbgate migrate` moves keys between the embedded store and Redis, both ways, without
//! reissuing secrets: ids, hashes (including a rotated secret still in its grace), settings and
//! usage arrive intact.

mod common;

use common::redis::RedisServer;
use common::{RunningKb, TestGateway, bin};
use kbgate::keys::StoreConfig;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The shipped config with its store section replaced, written to `dir/name`.
fn config_file(dir: &Path, name: &str, store: &str) -> PathBuf {
    let text = common::shipped_with(&[("  embedded: { path: data/kbgate.db }", store)]);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn migrate(from: &Path, to: &Path) -> String {
    let mut command = bin::kbgate(&["migrate", "--from"]);
    command.arg(from).arg("--to").arg(to);
    bin::run(&mut command).await.success()
}

async fn start_on(upstream: &RunningKb, store: StoreConfig) -> TestGateway {
    TestGateway::builder()
        .upstream(upstream)
        .config(|config| config.store = store)
        .start()
        .await
}

/// The keys as the admin API shows them, without the fields that change with use.
async fn keys(gateway: &TestGateway) -> Vec<Value> {
    let (_, list) = gateway.admin("GET", "/v1/keys", None).await;
    list["keys"].as_array().unwrap().clone()
}

#[tokio::test]
async fn keys_move_to_redis_and_back_without_new_secrets() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let embedded_path = dir.path().join("first.db");
    let embedded = StoreConfig::embedded(embedded_path.clone());

    // On the embedded store: two keys, used, one rotated with a long grace.
    let gateway = start_on(&upstream, embedded).await;
    let (_, reader) = gateway
        .create_key(json!({"name": "Chatbot Integration"}))
        .await;
    let (writer_id, old_writer) = gateway
        .create_key(json!({"name": "Data Export Tool", "scope": "read_write", "permissions": ["article:read", "article:write"]}))
        .await;
    for _ in 0..3 {
        assert_eq!(gateway.get("/v1/article", &reader).await.0, 200);
    }
    let (_, rotated) = gateway.rotate(&writer_id, 3600).await;
    let writer = rotated["secret"].as_str().unwrap().to_string();
    assert_eq!(gateway.send("POST", "/v1/article", &writer).await.0, 200);
    let before = keys(&gateway).await;
    gateway.shutdown().await;

    // embedded -> Redis
    let from = config_file(
        dir.path(),
        "embedded.yaml",
        &format!("  embedded: {{ path: {} }}", embedded_path.display()),
    );
    let to = config_file(
        dir.path(),
        "redis.yaml",
        &format!(
            "  redis: {{ url: \"{}\", prefix: \"moved:\" }}",
            server.url()
        ),
    );
    assert!(migrate(&from, &to).await.contains("copied 2 keys"));

    let on_redis = start_on(&upstream, server.store("moved:")).await;
    assert_eq!(
        keys(&on_redis).await,
        before,
        "every field arrived, usage included"
    );
    assert_eq!(on_redis.get("/v1/article", &reader).await.0, 200);
    assert_eq!(on_redis.send("POST", "/v1/article", &writer).await.0, 200);
    assert_eq!(
        on_redis.get("/v1/article", &old_writer).await.0,
        200,
        "the rotated secret is still in its grace"
    );
    assert_eq!(
        on_redis.get("/v1/search?query=a", &writer).await.0,
        403,
        "permissions came along"
    );
    let after_use = keys(&on_redis).await;
    on_redis.shutdown().await;

    // Redis -> a fresh embedded file
    let back_path = dir.path().join("back.db");
    let back = config_file(
        dir.path(),
        "back.yaml",
        &format!("  embedded: {{ path: {} }}", back_path.display()),
    );
    assert!(migrate(&to, &back).await.contains("copied 2 keys"));
    let again = start_on(&upstream, StoreConfig::embedded(back_path)).await;
    assert_eq!(keys(&again).await, after_use);
    assert_eq!(again.get("/v1/article", &reader).await.0, 200);
    again.shutdown().await;
}
