//! `kbgate admin-tokens …` and `kbgate audit …` through the real binary against a running
//! gateway: tokens created, listed and deleted, the secret printed once; the audit trail
//! filtered and printed as text or JSON; `audit verify` and its exit status.

mod common;

use common::{ADMIN_TOKEN, TestGateway};
use serde_json::{Value, json};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `kbgate ARGS` with the admin URL and `token` from the environment.
async fn kbgate(gateway: &TestGateway, token: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kbgate"))
        .args(args)
        .env("KBGATE_ADMIN_URL", gateway.admin_url(""))
        .env("KBGATE_ADMIN_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn admin_tokens_are_created_listed_and_deleted() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let run = kbgate(
        &gateway,
        ADMIN_TOKEN,
        &[
            "admin-tokens",
            "create",
            "--name",
            "CI",
            "--role",
            "operator",
            "--expires-in",
            "30d",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("shown only this once"),
        "{}",
        run.stdout
    );
    let secret = run
        .stdout
        .lines()
        .find(|l| l.starts_with("kbadm_"))
        .unwrap()
        .to_string();

    // The new token works with its role: an operator creates keys but cannot list tokens.
    let run = kbgate(&gateway, &secret, &["keys", "create", "--name", "by-ci"]).await;
    assert!(run.ok, "{}", run.stderr);
    let run = kbgate(&gateway, &secret, &["admin-tokens", "list"]).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("insufficient_role") || run.stderr.contains("role"),
        "{}",
        run.stderr
    );

    let run = kbgate(&gateway, ADMIN_TOKEN, &["admin-tokens", "list", "--json"]).await;
    assert!(run.ok, "{}", run.stderr);
    let list: Value = serde_json::from_str(&run.stdout).unwrap();
    let token = &list["tokens"][0];
    assert_eq!(
        (token["name"].as_str(), token["role"].as_str()),
        (Some("CI"), Some("operator"))
    );
    assert!(!run.stdout.contains(&secret));
    let id = token["id"].as_str().unwrap();
    let run = kbgate(&gateway, ADMIN_TOKEN, &["admin-tokens", "list"]).await;
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with(id) && l.contains("operator")),
        "{}",
        run.stdout
    );

    let run = kbgate(&gateway, ADMIN_TOKEN, &["admin-tokens", "delete", id]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, format!("deleted {id}\n"));
    let run = kbgate(&gateway, &secret, &["keys", "list"]).await;
    assert!(!run.ok, "a deleted token is refused");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_audit_trail_is_printed_filtered_and_verified() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, _) = gateway.create_key(json!({"name": "Bot"})).await;
    gateway.create_key(json!({"name": "Other"})).await;
    let path = format!("/v1/keys/{id}");
    assert_eq!(
        gateway
            .admin("PATCH", &path, Some(json!({"name": "Chatbot"})))
            .await
            .0,
        200
    );

    let run = kbgate(
        &gateway,
        ADMIN_TOKEN,
        &["audit", "--key", &id, "--since", "1h"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "header and two entries: {}", run.stdout);
    assert!(lines[1].contains("key.updated") && lines[1].contains("name: Bot -> Chatbot"));
    assert!(lines[2].contains("key.created") && lines[2].contains("config (admin)"));

    let run = kbgate(&gateway, ADMIN_TOKEN, &["audit", "--json"]).await;
    let all: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);

    let run = kbgate(&gateway, ADMIN_TOKEN, &["audit", "verify"]).await;
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout, "audit chain OK: 3 entries\n");
    let run = kbgate(&gateway, ADMIN_TOKEN, &["audit", "--since", "yesterday"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("since"), "{}", run.stderr);
    gateway.shutdown().await;
}
