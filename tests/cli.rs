//! `kbgate keys …` end to end: the real binary against a real gateway's admin API.

mod common;

use common::{TestGateway, bin};
use serde_json::Value;

struct Cli<'a> {
    gateway: &'a TestGateway,
}

impl Cli<'_> {
    /// Runs `kbgate keys ARGS` with the admin target in the environment.
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let admin = format!("http://{}", self.gateway.admin_addr);
        let run =
            bin::run(bin::kbgate(&[&["keys"], args].concat()).env("KBGATE_ADMIN_URL", admin)).await;
        (run.ok(), run.stdout, run.stderr)
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
    let config = common::shipped_with(&[(
        "listen: 127.0.0.1:9090",
        format!("listen: {}", gateway.admin_addr),
    )]);
    let path = gateway.dir.path().join("kbgate.yaml");
    std::fs::write(&path, config).unwrap();
    let stdout = bin::run(
        bin::kbgate(&["keys", "create", "--json", "--config"])
            .arg(&path)
            .env_remove("KBGATE_ADMIN_URL")
            .env("KB_API_KEY", "unused"),
    )
    .await
    .success();
    let key: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(key["scope"], "read");

    let run = bin::run(
        bin::kbgate(&["keys", "list"])
            .env_remove("KBGATE_ADMIN_URL")
            .env_remove("KBGATE_ADMIN_TOKEN")
            .env_remove("KB_API_KEY"),
    )
    .await;
    assert!(!run.ok());
    let err = run.stderr;
    assert!(
        err.contains("--config") && err.contains("KBGATE_ADMIN_URL"),
        "{err}"
    );
    gateway.shutdown().await;
}
