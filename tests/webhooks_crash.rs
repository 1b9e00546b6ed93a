//! At least once through a crash: the real binary, killed with SIGKILL while a receiver is
//! down and events wait in the outbox, delivers every one of them, in order, after it restarts
//! on the same store.

mod common;

use common::receiver::Receiver;
use common::{RunningKb, TestGateway, shipped_yaml};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_gateway_killed_with_a_backlog_delivers_it_after_a_restart() {
    let kb = RunningKb::start().await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}\nwebhooks: {{ allow_private_networks: true, retry_initial: 100ms, retry_max: 200ms, poll_interval: 50ms }}\n",
        shipped_yaml()
    );
    let written = TestGateway::builder()
        .upstream(&kb)
        .yaml(&yaml)
        .write(dir.path());
    let mut first = written.spawn().await;
    let body = json!({"url": receiver.url(), "events": ["key.created"]});
    let (status, hook) = first.admin(Method::POST, "/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{hook}");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, key) = first.post_key(json!({"name": format!("k{i}")})).await;
        assert_eq!(status, 201, "{key}");
        ids.push(key["id"].clone());
    }
    common::eventually("the first event retried", || async {
        receiver.got().len() >= 2
    })
    .await;
    first.child.start_kill().unwrap();
    first.wait(Duration::from_secs(10)).await;
    assert!(receiver.delivered().is_empty());

    receiver.answer(204);
    let _second = written.spawn_as("kbgate-again.log", &[]).await;
    common::eventually("every event delivered after the restart", || async {
        receiver.delivered().len() >= 5
    })
    .await;
    assert_eq!(receiver.delivered_key_ids(), ids, "all of them, in order");
}
