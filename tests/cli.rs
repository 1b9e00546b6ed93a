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

/// `kbgate keys list` walks every page on its own (2,300 keys: three pages of 1,000) and passes
/// the filters on.
#[tokio::test]
async fn list_pages_on_its_own_and_filters() {
    use common::seed::{Store, record, start_seeded};
    let now = chrono::Utc::now();
    let mut records: Vec<_> = (0..2_300)
        .map(|i| record(&format!("bulk {i:04}"), now - chrono::Duration::days(1)))
        .collect();
    let mut old_chat = record("Old Chat bot", now - chrono::Duration::days(90));
    old_chat.enabled = false;
    records.push(old_chat);
    records.push(record("chat (new)", now));
    let Some((gateway, _)) = start_seeded(Store::Embedded, &records).await else {
        return;
    };
    let cli = Cli { gateway: &gateway };

    let all = cli.json(&["list"]).await;
    let ids: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), records.len());
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no key twice");
    assert_eq!(all["keys"][0]["name"], "Old Chat bot", "oldest first");

    let (ok, table, stderr) = cli
        .run(&["list", "--search", "chat", "--state", "disabled"])
        .await;
    assert!(ok, "{stderr}");
    assert!(
        table.contains("Old Chat bot") && !table.contains("chat (new)"),
        "{table}"
    );
    let unused = cli.json(&["list", "--unused-for", "30d"]).await;
    assert_eq!(unused["keys"].as_array().unwrap().len(), 1, "{unused}");
    let newest = cli.json(&["list", "--desc", "--limit", "2"]).await;
    let names: Vec<&str> = newest["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert_eq!(names[0], "chat (new)");
    let (ok, _, stderr) = cli.run(&["list", "--state", "sleeping"]).await;
    assert!(!ok && stderr.contains("sleeping"), "{stderr}");
    gateway.shutdown().await;
}

/// `kbgate keys usage ID` prints the buckets, a total and a sparkline.
#[tokio::test]
async fn usage_prints_a_table_and_a_sparkline() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let cli = Cli { gateway: &gateway };
    let (id, secret) = gateway
        .create_key(serde_json::json!({"name": "busy"}))
        .await;
    for _ in 0..3 {
        assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
    }
    assert_eq!(gateway.get("/v1/unmapped", &secret).await.0, 403);

    let (ok, text, stderr) = cli.run(&["usage", &id]).await;
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("START") && lines[0].contains("REFUSED"),
        "{text}"
    );
    // Seven days back from now, by day: seven or eight buckets, then the total.
    let total = lines.iter().position(|l| l.starts_with("total")).unwrap();
    assert!((8..=9).contains(&total), "{text}");
    let cells: Vec<&str> = lines[total].split_whitespace().collect();
    assert_eq!(&cells[1..5], ["4", "3", "1", "3"], "{text}");
    assert!(text.contains("refused route_not_allowed: 1"), "{text}");
    let spark = lines.last().unwrap();
    assert!(
        spark.starts_with(&id) && spark.ends_with("(requests per day, most 4)"),
        "{text}"
    );
    assert!(spark.contains('█'), "{text}");

    let by_hour = cli.json(&["usage", &id, "--days", "1"]).await;
    assert_eq!(by_hour["granularity"], "hour");
    assert_eq!(by_hour["total"]["requests"], 4);
    let (ok, _, stderr) = cli.run(&["usage", "key_nope"]).await;
    assert!(!ok && stderr.contains("No such key"), "{stderr}");
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
