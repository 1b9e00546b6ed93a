//! `kbgate webhooks …` through the real binary against a running gateway and a real receiver:
//! created (the secret printed once), listed, edited, its deliveries shown and retried, deleted.

mod common;

use common::receiver::Receiver;
use common::{ADMIN_TOKEN, TestGateway, eventually};
use serde_json::{Value, json};
use std::time::Duration;

/// `kbgate webhooks ARGS` with the admin URL and token from the environment; stdout, or a
/// panic with stderr when it failed.
async fn webhooks(gateway: &TestGateway, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kbgate"))
        .arg("webhooks")
        .args(args)
        .env("KBGATE_ADMIN_URL", gateway.admin_url(""))
        .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "webhooks {args:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn webhooks_are_managed_from_the_command_line() {
    let gateway = TestGateway::builder()
        .config(|c| {
            c.webhooks.allow_private_networks = true;
            c.webhooks.poll_interval = Duration::from_millis(50);
        })
        .start()
        .await;
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let created = webhooks(
        &gateway,
        &["create", "--url", &url, "--event", "key.*", "--json"],
    )
    .await;
    let hook: Value = serde_json::from_str(&created).unwrap();
    let id = hook["id"].as_str().unwrap();
    assert!(hook["secret"].as_str().unwrap().starts_with("whsec_"));

    let listed = webhooks(&gateway, &["list"]).await;
    assert!(listed.contains(id) && listed.contains(&url), "{listed}");
    assert!(
        !listed.contains("whsec_"),
        "the secret is shown once: {listed}"
    );

    let edited = webhooks(
        &gateway,
        &["edit", id, "--event", "key.created", "--description", "CRM"],
    )
    .await;
    assert!(
        edited.contains("key.created") && edited.contains("CRM"),
        "{edited}"
    );

    gateway.create_key(json!({"name": "Bot"})).await;
    eventually("the key event delivered", || async {
        receiver.delivered().len() == 1
    })
    .await;
    let deliveries = webhooks(&gateway, &["deliveries", id]).await;
    assert!(
        deliveries.contains("key.created") && deliveries.contains("succeeded"),
        "{deliveries}"
    );
    let retried = webhooks(&gateway, &["retry", id, "dlv_1"]).await;
    assert!(retried.contains("succeeded"), "{retried}");
    assert_eq!(receiver.got().len(), 2, "the retry was sent");

    let deleted = webhooks(&gateway, &["delete", id]).await;
    assert_eq!(deleted, format!("deleted {id}\n"));
    assert!(webhooks(&gateway, &["list"]).await.contains("no webhooks"));
    gateway.shutdown().await;
}
