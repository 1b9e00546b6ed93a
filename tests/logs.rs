//! The real `kbgate serve` process logging at trace level in JSON: one JSON object per line, one
//! access line per request with round latencies, and no secret anywhere — not the client keys
//! (old and rotated), not the admin token, not the upstream credential (sent in a header and in
//! the query here, so both paths are watched).

mod common;

use common::{ADMIN_TOKEN, RunningKb, TestGateway, UPSTREAM_CREDENTIAL};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// The random tail of a secret: the part after its display `start`, which may be shown.
fn tail(secret: &str) -> &str {
    &secret[secret.len() - 16..]
}

#[tokio::test]
async fn json_logs_at_trace_level_carry_no_secret() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let changes = [
        ("format: text", "format: json".to_string()),
        (
            "# query: { key: \"${KB_API_KEY}\" }   for KBs that take ?key=",
            "query: { key: \"${KB_API_KEY}\" }".to_string(),
        ),
    ];
    let mut process = TestGateway::builder()
        .upstream(&upstream)
        .edit(&changes)
        .env("RUST_LOG", "trace")
        .spawn(dir.path())
        .await;
    let gateway = process.gateway;

    let (status, key) = process.post_key(json!({"name": "Logged"})).await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_string();
    let first = key["secret"].as_str().unwrap().to_string();
    let url = |path: &str| format!("http://{gateway}{path}");
    let client = &process.client;
    let sent = [
        client.get(url("/v1/article/a1")).bearer_auth(&first),
        client.get(url("/v1/article")).header("x-api-key", &first),
        client.get(url(&format!("/v1/search?query=x&key={first}"))),
        client.post(url("/v1/article")).bearer_auth(&first),
        client
            .get(url("/v1/article"))
            .bearer_auth(format!("{first}x")),
    ];
    let mut requests = 0;
    for request in sent {
        request.send().await.unwrap();
        requests += 1;
    }
    let (status, rotated) = process
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace_period_seconds": 60})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["secret"].as_str().unwrap().to_string();
    for secret in [&first, &second] {
        let response = client.get(url("/v1/category")).bearer_auth(secret).send();
        assert_eq!(response.await.unwrap().status(), 200);
        requests += 1;
    }
    let (status, _) = process
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let refused = client.get(url("/v1/article")).bearer_auth(&second).send();
    assert_eq!(refused.await.unwrap().status(), 401);
    requests += 1;

    process.terminate();
    assert_eq!(process.wait(Duration::from_secs(30)).await, Some(0));
    let log = process.log();

    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "TRACE"),
        "RUST_LOG=trace took effect"
    );
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "kbgate::access")
        .collect();
    assert_eq!(access.len(), requests, "one access line per request");
    for line in &access {
        let fields = &line["fields"];
        for name in [
            "request_id",
            "key_id",
            "method",
            "route",
            "status",
            "outcome",
        ] {
            assert!(!fields[name].is_null(), "{name} in {line}");
        }
        let mut latencies = vec![&fields["latency_ms"]];
        if fields["outcome"] == "forwarded" {
            latencies.push(&fields["upstream_ms"]);
        }
        for latency in latencies {
            let text = latency.to_string();
            let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(latency.is_f64() || latency.is_u64(), "{line}");
            assert!(decimals <= 3, "latency {text} in {line}");
        }
    }
    assert!(access.iter().any(|l| l["fields"]["key_id"] == id.as_str()));

    let encoded_credential = UPSTREAM_CREDENTIAL.replace('-', "%2D");
    for secret in [
        encoded_credential.as_str(),
        first.as_str(),
        tail(&first),
        second.as_str(),
        tail(&second),
        ADMIN_TOKEN,
        UPSTREAM_CREDENTIAL,
    ] {
        if let Some(line) = log.lines().find(|line| line.contains(secret)) {
            panic!("a secret is in the log: {line}");
        }
    }
    let seen = upstream.last();
    assert!(
        seen.path_and_query.contains(&encoded_credential),
        "the credential did travel in the query, so the check above watched it"
    );
}
