//! `kbgate keys …` end to end: the real binary against a real gateway's admin API.

mod common;

use common::{ADMIN_TOKEN, TestGateway};
use serde_json::Value;

struct Cli<'a> {
    gateway: &'a TestGateway,
}

impl Cli<'_> {
    /// Runs `kbgate keys ARGS` with the admin target in the environment.
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kbgate"))
            .arg("keys")
            .args(args)
            .env(
                "KBGATE_ADMIN_URL",
                format!("http://{}", self.gateway.admin_addr),
            )
            .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .await
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (ok, stdout, stderr) = self.run(&all).await;
        assert!(ok, "{args:?}: {stderr}");
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
    }
}

#[tokio::test]
async fn every_keys_command_works_against_the_admin_api() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let cli = Cli { gateway: &gateway };

    let created = cli
        .json(&[
            "create",
            "--name",
            "Data Export Tool",
            "--scope",
            "read-write",
            "--permission",
            "article:read",
        ])
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert_eq!(created["scope"], "read_write");
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
    assert_eq!(gateway.get("/v1/search?query=a", &secret).await.0, 403);

    let (ok, table, _) = cli.run(&["list"]).await;
    assert!(ok);
    assert!(table.lines().next().unwrap().contains("NAME"), "{table}");
    assert!(
        table.contains("Data Export Tool") && table.contains(&id),
        "{table}"
    );
    assert!(!table.contains(&secret), "list never prints a secret");

    let (ok, human, _) = cli.run(&["create", "--name", "Chatbot"]).await;
    assert!(
        ok && human.contains("kb_"),
        "create prints the secret once: {human}"
    );

    let shown = cli.json(&["show", &id]).await;
    assert_eq!(shown["name"], "Data Export Tool");
    assert_eq!(shown["request_count"], 2);

    let edited = cli
        .json(&["edit", &id, "--name", "Exporter", "--clear-permissions"])
        .await;
    assert_eq!(edited["name"], "Exporter");
    assert_eq!(edited["permissions"], serde_json::json!([]));
    assert_eq!(gateway.get("/v1/search?query=a", &secret).await.0, 200);

    assert_eq!(cli.json(&["disable", &id]).await["enabled"], false);
    assert_eq!(
        gateway.get("/v1/article", &secret).await,
        (401, "key_disabled".into())
    );
    assert_eq!(cli.json(&["enable", &id]).await["enabled"], true);
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);

    let rotated = cli.json(&["rotate", &id, "--grace", "0s"]).await;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_eq!(gateway.get("/v1/article", new_secret).await.0, 200);
    assert_eq!(
        gateway.get("/v1/article", &secret).await,
        (401, "key_expired".into())
    );

    let (ok, out, _) = cli.run(&["delete", &id, "--yes"]).await;
    assert!(ok && out.contains(&id), "{out}");
    assert_eq!(
        gateway.get("/v1/article", new_secret).await,
        (401, "invalid_key".into())
    );

    let (ok, _, err) = cli.run(&["show", &id]).await;
    assert!(!ok, "a missing key is an error");
    assert!(err.contains("404"), "{err}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_admin_target_can_come_from_the_config_file() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/kbgate.yaml"))
            .unwrap();
    let config = shipped.replace(
        "listen: 127.0.0.1:9090",
        &format!("listen: {}", gateway.admin_addr),
    );
    let path = gateway.dir.path().join("kbgate.yaml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kbgate"))
        .args(["keys", "create", "--json", "--config"])
        .arg(&path)
        .env_remove("KBGATE_ADMIN_URL")
        .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KB_API_KEY", "unused")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(key["scope"], "read");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kbgate"))
        .args(["keys", "list"])
        .env_remove("KBGATE_ADMIN_URL")
        .env_remove("KBGATE_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--config") && err.contains("KBGATE_ADMIN_URL"),
        "{err}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn limits_are_set_changed_and_removed_from_the_command_line() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let cli = Cli { gateway: &gateway };
    let created = cli
        .json(&[
            "create",
            "--rate-limit",
            "50/1:10",
            "--quota",
            "1/day:all",
            "--allow-cidr",
            "127.0.0.0/8",
            "--allow-cidr",
            "2001:db8::/32",
        ])
        .await;
    assert_eq!(
        created["rate_limit"],
        serde_json::json!({"requests": 50, "window_seconds": 1, "burst": 10})
    );
    assert_eq!(created["quota"]["counts"], "all");
    assert_eq!(created["allowed_cidrs"][1], "2001:db8::/32");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 429);

    let (ok, block, _) = cli.run(&["show", &id]).await;
    assert!(
        ok && block.contains("1 of 1 per day (all requests)"),
        "{block}"
    );

    let edited = cli
        .json(&[
            "edit",
            &id,
            "--no-quota",
            "--any-address",
            "--rate-limit",
            "5/60",
        ])
        .await;
    assert_eq!(edited["quota"], Value::Null);
    assert_eq!(edited["allowed_cidrs"], serde_json::json!([]));
    assert_eq!(edited["rate_limit"]["requests"], 5);
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);

    let (ok, _, stderr) = cli.run(&["edit", &id, "--quota", "10/week"]).await;
    assert!(!ok && stderr.contains("day or month"), "{stderr}");
}
