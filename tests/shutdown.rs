//! Graceful shutdown of the real `kbgate serve` process: on SIGTERM it stops accepting at once,
//! lets the request in flight finish, flushes usage to the store and exits 0.

mod common;

use common::{RunningKb, TestGateway};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The shutdown grace written in the config: the process must be gone within it.
const GRACE: Duration = Duration::from_secs(10);
/// How long the upstream holds the in-flight request: far longer than the gateway needs to
/// handle the signal and close its listeners, so the ordering checks below hold under load.
const UPSTREAM_DELAY_MS: u64 = 3000;

/// Polls until a new TCP connection to `addr` is refused.
async fn wait_until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_flushes_usage_and_exits_0() {
    let upstream = RunningKb::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Usage is flushed only hourly, so only the shutdown flush can write it in this test.
    let changes = [
        ("flush_interval: 1s", "flush_interval: 1h".to_string()),
        (
            "shutdown_grace: 30s",
            format!("shutdown_grace: {}s", GRACE.as_secs()),
        ),
    ];
    let config = TestGateway::builder()
        .upstream(&upstream)
        .edit(&changes)
        .write(dir.path());

    // The first process runs on one thread (the current-thread runtime kbgate picks on a
    // one-CPU machine), the second on the machine's CPUs: the drain works on both.
    let mut first = config
        .spawn_as("first.log", &[("TOKIO_WORKER_THREADS", "1")])
        .await;
    let (status, key) = first
        .post_key(json!({"name": "shutdown", "scope": "read"}))
        .await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_string();
    let secret = key["secret"].as_str().unwrap().to_string();
    let secret_again = secret.clone();

    // A request the upstream answers slowly, on its own connection.
    let target = format!("/v1/article/a1?delay_ms={UPSTREAM_DELAY_MS}");
    let url = format!("http://{}{target}", first.gateway);
    let in_flight = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(secret)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.text().await?))
    });
    // The gateway counts a request once the key is verified, just before forwarding it; the
    // admin view includes usage not yet flushed. (The test upstream only records a request
    // after its delay, so it cannot tell us the request has arrived.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.request_count(&id).await != 1 {
        assert!(
            !in_flight.is_finished(),
            "the request ended before it was counted"
        );
        assert!(
            Instant::now() < deadline,
            "the request never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A client that keeps its connection open, idle, after its answer: the drain closes it
    // rather than waiting out the grace for it.
    let idle_client = reqwest::Client::new();
    let idle_answer = idle_client
        .get(format!("http://{}/v1/article/a1", first.gateway))
        .bearer_auth(&secret_again)
        .send()
        .await
        .unwrap();
    assert_eq!(idle_answer.status(), 200);
    idle_answer.bytes().await.unwrap();

    first.terminate();
    let signalled = Instant::now();
    // New connections are refused while the request is still being served.
    wait_until_refused(first.gateway).await;
    wait_until_refused(first.admin).await;
    assert!(
        !in_flight.is_finished(),
        "the listeners closed only after the in-flight request ended; nothing was drained"
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the process exited with a request in flight"
    );

    let (status, body) = in_flight
        .await
        .unwrap()
        .expect("the in-flight request failed");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["path"],
        target.as_str(),
        "the upstream's own answer came back"
    );

    let code = first.wait(GRACE).await;
    drop(idle_client);
    assert_eq!(code, Some(0), "exit status; log:\n{}", first.log());
    assert!(
        signalled.elapsed() < GRACE,
        "exited after {:?}",
        signalled.elapsed()
    );
    let log = first.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("kbgate stopped"), "{log}");
    assert!(!log.contains("flush failed"), "{log}");
    let seen: Vec<_> = upstream
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        seen.len(),
        2,
        "the slow request and the idle client's: {seen:?}"
    );
    assert!(seen.contains(&target), "{seen:?}");

    // Restart on the same config and store: the usage counted before shutdown was written.
    let mut second = config.spawn_as("second.log", &[]).await;
    let (status, key) = second
        .admin(reqwest::Method::GET, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(
        key["request_count"], 2,
        "usage was not flushed on shutdown: {key}"
    );
    assert!(key["last_used_at"].is_string(), "{key}");
    second.terminate();
    assert_eq!(second.wait(GRACE).await, Some(0), "{}", second.log());
}
