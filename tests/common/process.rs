//! A real `kbgate serve` child process on fixed free ports, with its stderr in a log file.

use super::{ADMIN_TOKEN, UPSTREAM_CREDENTIAL};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A port that was free a moment ago (the config needs a number; port 0 cannot be read back).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The shipped config on the given ports, in front of `upstream`, storing in `dir`, with
/// `changes` (exact text replacements, each found once) made too.
pub fn write_config(
    dir: &Path,
    gateway: SocketAddr,
    admin: SocketAddr,
    upstream: &str,
    changes: &[(&str, String)],
) -> PathBuf {
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
    ]
    .into_iter()
    .chain(changes.iter().map(|(from, to)| (*from, to.clone())))
    {
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
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    /// A fresh client per process, so no pooled connection outlives the process it was to.
    pub client: reqwest::Client,
}

impl Process {
    pub async fn spawn(
        config: &Path,
        log: PathBuf,
        gateway: SocketAddr,
        admin: SocketAddr,
    ) -> Process {
        Process::spawn_with_env(config, log, gateway, admin, &[]).await
    }

    /// Spawns with `env` added (RUST_LOG is removed unless given here).
    pub async fn spawn_with_env(
        config: &Path,
        log: PathBuf,
        gateway: SocketAddr,
        admin: SocketAddr,
        env: &[(&str, &str)],
    ) -> Process {
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kbgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KB_API_KEY", UPSTREAM_CREDENTIAL)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
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

    pub fn log(&self) -> String {
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

    pub async fn admin(
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

    pub async fn request_count(&self, id: &str) -> Value {
        let (status, key) = self
            .admin(reqwest::Method::GET, &format!("/v1/keys/{id}"), None)
            .await;
        assert_eq!(status, 200, "{key}");
        key["request_count"].clone()
    }

    pub fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit, at most `limit`; returns its exit code.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap().code(),
            Err(_) => panic!("kbgate still running after {limit:?}:\n{}", self.log()),
        }
    }
}
