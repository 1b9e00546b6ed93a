//! Graceful shutdown of the real `kbgate serve` process: on SIGTERM it stops accepting at once,
//! lets the request in flight finish, flushes usage to the store and exits 0.

mod common;

use common::{ADMIN_TOKEN, UPSTREAM_CREDENTIAL, Upstream};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The shutdown grace written in the config: the process must be gone within it.
const GRACE: Duration = Duration::from_secs(10);
/// How long the upstream holds the in-flight request: far longer than the gateway needs to
/// handle the signal and close its listeners, so the ordering checks below hold under load.
const UPSTREAM_DELAY_MS: u64 = 3000;

/// A port that was free a moment ago (the config needs a number; port 0 cannot be read back).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The shipped config on the given ports, in front of `upstream`, storing in `dir`, flushing
/// usage only hourly (so only the shutdown flush can write it in this test).
fn write_config(dir: &Path, gateway: SocketAddr, admin: SocketAddr, upstream: &str) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/kbgate.yaml"))
        .unwrap();
    let store = dir.join("kbgate.db");
    let mut text = text;
    for (from, to) in [
        ("listen: 127.0.0.1:8080", format!("listen: {gateway}")),
        ("listen: 127.0.0.1:9090", format!("listen: {admin}")),
        ("url: http://127.0.0.1:8081", format!("url: {upstream}")),
        (
            "embedded: { path: data/kbgate.db }",
            format!("embedded: {{ path: {:?} }}", store.display().to_string()),
        ),
        ("flush_interval: 1s", "flush_interval: 1h".to_string()),
        (
            "shutdown_grace: 30s",
            format!("shutdown_grace: {}s", GRACE.as_secs()),
        ),
    ] {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} in the shipped config"
        );
        text = text.replacen(from, &to, 1);
    }
    let path = dir.join("kbgate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `kbgate serve` child process, its log file and addresses.
struct Process {
    child: Child,
    log: PathBuf,
    gateway: SocketAddr,
    admin: SocketAddr,
    /// A fresh client per process, so no pooled connection outlives the process it was to.
    client: reqwest::Client,
}

impl Process {
    async fn spawn(config: &Path, log: PathBuf, gateway: SocketAddr, admin: SocketAddr) -> Process {
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kbgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KB_API_KEY", UPSTREAM_CREDENTIAL)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kbgate serve");
        let mut process = Process {
            child,
            log,
            gateway,
            admin,
            client: reqwest::Client::new(),
        };
        process.wait_until_healthy().await;
        process
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the admin `/healthz` until it answers 200; fails at once if the process died.
    async fn wait_until_healthy(&mut self) {
        let url = format!("http://{}/healthz", self.admin);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("kbgate exited during start-up ({status}):\n{}", self.log());
            }
            let response = self.client.get(&url).send().await;
            if response.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never answered:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn request_count(&self, id: &str) -> Value {
        let (status, key) = self
            .admin(reqwest::Method::GET, &format!("/v1/keys/{id}"), None)
            .await;
        assert_eq!(status, 200, "{key}");
        key["request_count"].clone()
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit, at most `limit`; returns its exit code.
    async fn wait(&mut self, limit: Duration) -> Option<i32> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap().code(),
            Err(_) => panic!("kbgate still running after {limit:?}:\n{}", self.log()),
        }
    }
}

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
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gateway_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = write_config(dir.path(), gateway_addr, admin_addr, &upstream.url());

    let mut first = Process::spawn(
        &config,
        dir.path().join("first.log"),
        gateway_addr,
        admin_addr,
    )
    .await;
    let (status, key) = first
        .admin(
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"name": "shutdown", "scope": "read"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_string();
    let secret = key["secret"].as_str().unwrap().to_string();

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
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path_and_query, target);

    // Restart on the same config and store: the usage counted before shutdown was written.
    let mut second = Process::spawn(
        &config,
        dir.path().join("second.log"),
        gateway_addr,
        admin_addr,
    )
    .await;
    let (status, key) = second
        .admin(reqwest::Method::GET, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(
        key["request_count"], 1,
        "usage was not flushed on shutdown: {key}"
    );
    assert!(key["last_used_at"].is_string(), "{key}");
    second.terminate();
    assert_eq!(second.wait(GRACE).await, Some(0), "{}", second.log());
}
