//! A real `kbgate serve` child process on fixed free ports, with its stderr in a log file.

use super::{ADMIN_TOKEN, UPSTREAM_CREDENTIAL};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A config file written by [`super::GatewayBuilder::write`]: fixed free ports, the store
/// beside it.
pub struct Written {
    pub path: PathBuf,
    /// The log file of [`Written::spawn`].
    pub log: PathBuf,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub env: Vec<(String, String)>,
}

impl Written {
    /// Spawns `kbgate serve` on this config, logging to `kbgate.log` beside it.
    pub async fn spawn(&self) -> Process {
        Process::spawn(self, self.log.clone(), &[]).await
    }

    /// Spawns another process on this config, logging to `log` beside it, with `env` added.
    pub async fn spawn_as(&self, log: &str, env: &[(&str, &str)]) -> Process {
        Process::spawn(self, self.path.with_file_name(log), env).await
    }
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
    /// Spawns with the builder's env and `env` added (RUST_LOG is removed unless given).
    async fn spawn(config: &Written, log: PathBuf, env: &[(&str, &str)]) -> Process {
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kbgate"))
            .args(["serve", "--config"])
            .arg(&config.path)
            .env("KBGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KB_API_KEY", UPSTREAM_CREDENTIAL)
            .env_remove("RUST_LOG")
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
            gateway: config.gateway,
            admin: config.admin,
            client: reqwest::Client::new(),
        };
        process.wait_until_healthy().await;
        process
    }

    /// GETs any URL with no credentials.
    pub async fn plain_get(&self, url: impl reqwest::IntoUrl) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
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

    /// POSTs `body` to `/v1/keys`: the status and the answer.
    pub async fn post_key(&self, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, "/v1/keys", Some(body))
            .await
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
