//! The access line answers "what did the client call?": the real `kbgate serve` process, JSON
//! logs, requests over sockets. Each line has the canonical path (never the query), the client
//! address, the user agent (escaped: it is client input), bytes in and out (out counted as
//! sent: a streamed body is logged when it ends, or ends early), and the refusal code; admin
//! `/metrics` scrapes write no INFO line.

mod common;

use common::process::Process;
use common::{RunningKb, TestGateway, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(upstream: &RunningKb, dir: &std::path::Path) -> Process {
    start_with(upstream, dir, "").await
}

/// JSON logs, and `top` (top-level YAML) put before the shipped `log:` section.
async fn start_with(upstream: &RunningKb, dir: &std::path::Path, top: &str) -> Process {
    TestGateway::builder()
        .upstream(upstream)
        .edit(&[
            ("format: text", "format: json".to_string()),
            ("\nlog:\n", format!("\n{top}\nlog:\n")),
        ])
        .spawn(dir)
        .await
}

/// The JSON log lines of `process` so far.
fn lines(process: &Process) -> Vec<Value> {
    process
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The fields of the access line of request `id`, once it is written.
async fn access_line(process: &Process, id: &str) -> Value {
    let find = || {
        lines(process)
            .into_iter()
            .find(|l| l["target"] == "kbgate::access" && l["fields"]["request_id"] == id)
    };
    eventually(&format!("the access line of {id}"), || async {
        find().is_some()
    })
    .await;
    find().unwrap()["fields"].clone()
}

#[tokio::test]
async fn access_lines_say_what_the_client_called() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let process = start(&upstream, dir.path()).await;
    let (status, key) = process
        .post_key(json!({"name": "Logged", "scope": "read_write"}))
        .await;
    assert_eq!(status, 201);
    let secret = key["secret"].as_str().unwrap().to_string();
    let key_id = key["id"].as_str().unwrap().to_string();
    let url = |path: &str| format!("http://{}{path}", process.gateway);
    let client = &process.client;

    // A forwarded GET, key in the query, an odd user agent.
    let agent = "kb-client/1.0 (\"quoted\") \\ \t é";
    let response = client
        .get(url(&format!("/v1/article/a1?q=x&key={secret}")))
        .header("x-request-id", "get-1")
        .header("user-agent", agent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    let line = access_line(&process, "get-1").await;
    assert_eq!(line["path"], "/v1/article/a1", "no query: {line}");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["user_agent"], agent);
    assert_eq!(line["key_id"], key_id.as_str());
    assert_eq!(line["route"], "/v1/article/{id}");
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["bytes_in"], 0);
    assert_eq!(line["bytes_out"], body.len() as u64);
    assert!(!line.to_string().contains(&secret));

    // A body in, a streamed body out (logged when it ends).
    let response = client
        .post(url("/v1/article?size=300000"))
        .bearer_auth(&secret)
        .header("x-request-id", "post-1")
        .body(vec![b'a'; 12_345])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 300_000);
    let line = access_line(&process, "post-1").await;
    assert_eq!(
        (&line["bytes_in"], &line["bytes_out"]),
        (&json!(12_345), &json!(300_000))
    );
    assert_eq!(line["user_agent"], "-");

    // Refusals: the code, the path as far as it was known, the bytes of the JSON body.
    for (id, path, status, code, logged_path) in [
        (
            "no-route",
            "/v1/nowhere/1",
            403,
            "route_not_allowed",
            "/v1/nowhere/1",
        ),
        ("bad-path", "/v1/a%2Fb", 400, "invalid_path", "-"),
        ("no-key", "/v1/article", 401, "missing_key", "/v1/article"),
    ] {
        let mut request = client.get(url(path)).header("x-request-id", id);
        if code != "missing_key" {
            request = request.bearer_auth(&secret);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let body = response.bytes().await.unwrap();
        let line = access_line(&process, id).await;
        assert_eq!(line["outcome"], code, "{line}");
        assert_eq!(line["status"], status);
        assert_eq!(line["path"], logged_path, "{line}");
        assert_eq!(line["bytes_out"], body.len() as u64, "{line}");
    }

    // A client that goes away mid-body: the line is written, with what was sent.
    let mut socket = tokio::net::TcpStream::connect(process.gateway)
        .await
        .unwrap();
    let request = format!(
        "GET /v1/article?size={} HTTP/1.1\r\nHost: kb\r\nAuthorization: Bearer {secret}\r\nX-Request-Id: gone-1\r\n\r\n",
        64 << 20
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut read = 0;
    while read < 200_000 {
        let n = socket.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the gateway closed early");
        read += n;
    }
    drop(socket);
    let line = access_line(&process, "gone-1").await;
    let sent = line["bytes_out"].as_u64().unwrap();
    assert!((150_000..64 << 20).contains(&sent), "{line}");
}

#[tokio::test]
async fn metrics_scrapes_write_no_info_line() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut process = start(&upstream, dir.path()).await;
    for _ in 0..3 {
        let response = process
            .client
            .get(format!("http://{}/metrics", process.admin))
            .header("x-request-id", "scrape")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Other admin calls are still logged: wait for this one, written after the scrapes.
    let (status, _) = process.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(status, 200);
    eventually("the admin line of GET /v1/keys", || async {
        lines(&process)
            .iter()
            .any(|l| l["target"] == "kbgate::admin" && l["fields"]["path"] == "/v1/keys")
    })
    .await;
    process.terminate();
    assert_eq!(process.wait(Duration::from_secs(10)).await, Some(0));
    let scrapes: Vec<Value> = lines(&process)
        .into_iter()
        .filter(|l| l["fields"]["path"] == "/metrics" || l["fields"]["request_id"] == "scrape")
        .collect();
    assert!(scrapes.is_empty(), "{scrapes:?}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_line_names_the_forwarded_client() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The test client connects from 127.0.0.1: a trusted proxy here.
    let top = "trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]";
    let process = start_with(&upstream, dir.path(), top).await;
    let (status, key) = process.post_key(json!({"scope": "read"})).await;
    assert_eq!(status, 201);
    let secret = key["secret"].as_str().unwrap();
    for (id, forwarded, expected) in [
        ("xff-1", "203.0.113.9, 10.1.2.3", "203.0.113.9"),
        ("xff-2", "", "127.0.0.1"),
        ("xff-3", "not-an-address", "127.0.0.1"),
    ] {
        let mut request = process
            .client
            .get(format!("http://{}/v1/article/a1", process.gateway))
            .bearer_auth(secret)
            .header("x-request-id", id);
        if !forwarded.is_empty() {
            request = request.header("x-forwarded-for", forwarded);
        }
        assert_eq!(request.send().await.unwrap().status(), 200);
        let line = access_line(&process, id).await;
        assert_eq!(line["client_ip"], expected, "{forwarded:?}: {line}");
    }
}
