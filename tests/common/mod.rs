//! Test harness: a fake KB that records what it received and answers as each test states
//! ([`kb::FakeKb`]), and a real kbgate built by [`TestGateway::builder`] from the shipped config,
//! started in-process on port 0 or spawned as the binary, talked to over sockets.
#![allow(dead_code)]

use kbgate::Config;
use kbgate::keys::StoreConfig;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod bin;
pub mod browser;
pub mod kb;
pub mod limits;
pub mod metrics;
pub mod process;
pub mod raw;
pub mod raw_upstream;
pub mod receiver;
pub mod redis;
pub mod seed;
pub mod store;
pub mod stores;
pub mod tls;

#[allow(unused_imports)]
pub use kb::{FakeKb, RunningKb, Seen, TestBody, streaming_bytes};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const UPSTREAM_CREDENTIAL: &str = "upstream-secret-credential";

/// The text of config/kbgate.yaml: the one place the tests read it.
pub fn shipped_yaml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/kbgate.yaml")).unwrap()
}

/// `text` with each `(from, to)` made: exact replacements, each `from` found exactly once.
pub fn edit_yaml<T: AsRef<str>>(text: &str, changes: &[(&str, T)]) -> String {
    let mut text = text.to_string();
    for (from, to) in changes {
        assert_eq!(text.matches(from).count(), 1, "{from:?} in the config");
        text = text.replacen(from, to.as_ref(), 1);
    }
    text
}

/// The shipped config with `changes` made (see [`edit_yaml`]).
pub fn shipped_with<T: AsRef<str>>(changes: &[(&str, T)]) -> String {
    edit_yaml(&shipped_yaml(), changes)
}

/// Parses config YAML with the test secrets as its environment.
pub fn parse_config(text: &str) -> Config {
    Config::parse_with_env(text, &test_env).unwrap()
}

/// The environment the tests give kbgate: the admin token and the KB credential.
pub fn test_env(name: &str) -> Option<String> {
    match name {
        "KBGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_string()),
        "KB_API_KEY" => Some(UPSTREAM_CREDENTIAL.to_string()),
        _ => None,
    }
}

/// The address of anything a fake KB can be reached at.
pub trait KbUrl {
    fn kb_url(&self) -> String;
}

impl KbUrl for RunningKb {
    fn kb_url(&self) -> String {
        self.url()
    }
}

impl KbUrl for raw_upstream::RawUpstream {
    fn kb_url(&self) -> String {
        self.url()
    }
}

impl<T: KbUrl + ?Sized> KbUrl for &T {
    fn kb_url(&self) -> String {
        (**self).kb_url()
    }
}

impl KbUrl for str {
    fn kb_url(&self) -> String {
        self.to_string()
    }
}

impl KbUrl for String {
    fn kb_url(&self) -> String {
        self.clone()
    }
}

type ConfigEdit<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// The one way the tests start a kbgate: the shipped config (or other YAML), text edits,
/// typed edits, in front of an upstream, on the embedded store (optionally hooked); in process
/// ([`GatewayBuilder::start`]) or as the real binary ([`GatewayBuilder::spawn`]).
pub struct GatewayBuilder<'a> {
    yaml: String,
    upstream: String,
    edits: Vec<ConfigEdit<'a>>,
    hook: Option<store::Hook>,
    env: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

impl<'a> GatewayBuilder<'a> {
    /// Keeps the store in `dir` (e.g. the folder of a gateway shut down before: a restart).
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The upstream (KB) the gateway forwards to.
    pub fn upstream(mut self, kb: &(impl KbUrl + ?Sized)) -> Self {
        self.upstream = kb.kb_url();
        self
    }

    /// Starts from this YAML text instead of the shipped config.
    pub fn yaml(mut self, text: &str) -> Self {
        self.yaml = text.to_string();
        self
    }

    /// Makes exact text replacements in the YAML (each `from` found once).
    pub fn edit<T: AsRef<str>>(mut self, changes: &[(&str, T)]) -> Self {
        self.yaml = edit_yaml(&self.yaml, changes);
        self
    }

    /// Changes the parsed config (in-process gateways only).
    pub fn config(mut self, edit: impl FnOnce(&mut Config) + 'a) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Puts `hook` in front of every call to the embedded store (in-process gateways only).
    pub fn store(mut self, hook: store::Hook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Sets an environment variable for a spawned process (RUST_LOG is unset unless given).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The config this builder describes, on port 0, with its store in `dir`.
    pub fn build_config(self, dir: &std::path::Path) -> Config {
        let mut config = parse_config(&self.yaml);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.upstream.origin = format!("{}/", self.upstream).parse().unwrap();
        config.store = StoreConfig::embedded(dir.join("kbgate.db"));
        config.usage_flush_interval = Duration::from_millis(100);
        for edit in self.edits {
            edit(&mut config);
        }
        config
    }

    /// Starts kbgate in this process, on port 0, with its store in a fresh folder.
    pub async fn start(mut self) -> TestGateway {
        let dir = self
            .dir
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        let hook = self.hook.take();
        let config = self.build_config(dir.path());
        let running = match hook {
            None => kbgate::start(config).await.unwrap(),
            Some(hook) => {
                let store = store::HookedStore {
                    inner: kbgate::keys::embedded::EmbeddedStore::open(
                        &dir.path().join("kbgate.db"),
                    )
                    .unwrap(),
                    hook,
                };
                kbgate::app::start_with_store(config, Arc::new(store))
                    .await
                    .unwrap()
            }
        };
        TestGateway {
            addr: running.addr,
            admin_addr: running.admin_addr,
            running: Some(running),
            client: reqwest::Client::new(),
            dir,
        }
    }

    /// Starts in front of a new fake KB with the default echo answer; returns both.
    pub async fn start_on_echo(self) -> (RunningKb, TestGateway) {
        let upstream = RunningKb::start().await;
        let gateway = self.upstream(&upstream).start().await;
        (upstream, gateway)
    }

    /// [`GatewayBuilder::start_on_echo`], with a read-write key made.
    pub async fn start_with_key(self) -> (RunningKb, TestGateway, String) {
        let (upstream, gateway) = self.start_on_echo().await;
        let key = gateway.read_write_key().await;
        (upstream, gateway, key)
    }

    /// Writes the config file into `dir` (fixed free ports, store and log in `dir`).
    pub fn write(self, dir: &std::path::Path) -> process::Written {
        assert!(
            self.edits.is_empty(),
            "typed config edits need an in-process gateway"
        );
        let gateway: SocketAddr = free_addr();
        let admin: SocketAddr = free_addr();
        let store = dir.join("kbgate.db");
        let upstream = self.upstream.clone();
        let text = edit_yaml(
            &self.yaml,
            &[
                ("listen: 127.0.0.1:8080", format!("listen: {gateway}")),
                ("listen: 127.0.0.1:9090", format!("listen: {admin}")),
                ("url: http://127.0.0.1:8081", format!("url: {upstream}")),
                (
                    "embedded: { path: data/kbgate.db }",
                    format!("embedded: {{ path: {:?} }}", store.display().to_string()),
                ),
            ],
        );
        let path = dir.join("kbgate.yaml");
        std::fs::write(&path, text).unwrap();
        process::Written {
            path,
            log: dir.join("kbgate.log"),
            gateway,
            admin,
            env: self.env,
        }
    }

    /// Runs the real `kbgate serve` binary with this config (file, store and log in `dir`).
    pub async fn spawn(self, dir: &std::path::Path) -> process::Process {
        self.write(dir).spawn().await
    }
}

/// A running kbgate with an HTTP client and admin helpers.
pub struct TestGateway {
    pub running: Option<kbgate::Running>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// A builder on the shipped config; give it an upstream.
    pub fn builder<'a>() -> GatewayBuilder<'a> {
        GatewayBuilder {
            yaml: shipped_yaml(),
            upstream: String::new(),
            edits: Vec::new(),
            hook: None,
            env: Vec::new(),
            dir: None,
        }
    }

    /// The shipped config in front of `upstream`.
    pub async fn start(upstream: &(impl KbUrl + ?Sized)) -> TestGateway {
        TestGateway::builder().upstream(upstream).start().await
    }

    /// [`TestGateway::start`], with a read-write key made; returns both.
    pub async fn start_keyed(upstream: &(impl KbUrl + ?Sized)) -> (TestGateway, String) {
        let gateway = TestGateway::start(upstream).await;
        let key = gateway.read_write_key().await;
        (gateway, key)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GETs any URL (e.g. [`TestGateway::url`] or [`TestGateway::admin_url`]) with no credentials.
    pub async fn plain_get(&self, url: impl reqwest::IntoUrl) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    /// GETs any URL with `key` as a bearer token.
    pub async fn keyed_get(&self, url: impl reqwest::IntoUrl, key: &str) -> reqwest::Response {
        keyed_get_with(&self.client, url, key).await
    }

    /// Creates a read-write key and returns its secret.
    pub async fn read_write_key(&self) -> String {
        self.create_key(serde_json::json!({"scope": "read_write"}))
            .await
            .1
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// Calls the admin API; returns the status and the JSON body (Null when empty).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin_as(Some(ADMIN_TOKEN), method, path, body).await
    }

    /// Calls the admin API with `token` (None: no Authorization header).
    pub async fn admin_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, self.admin_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs `body` to `/v1/keys`: the status and the answer, whatever they are
    /// ([`TestGateway::create_key`] when the key must be made).
    pub async fn post_key(&self, body: Value) -> (u16, Value) {
        self.admin("POST", "/v1/keys", Some(body)).await
    }

    /// Rotates key `id` with a grace period for the old secret; returns the status and body.
    pub async fn rotate(&self, id: &str, grace_period_seconds: u64) -> (u16, Value) {
        let body = serde_json::json!({ "grace_period_seconds": grace_period_seconds });
        self.admin("POST", &format!("/v1/keys/{id}/rotate"), Some(body))
            .await
    }

    /// Creates a key; returns (id, secret).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let (status, key) = self.post_key(body).await;
        assert_eq!(status, 201, "create failed: {key}");
        (
            key["id"].as_str().unwrap().to_string(),
            key["secret"].as_str().unwrap().to_string(),
        )
    }

    /// Creates an admin token through the admin API; returns (id, secret).
    pub async fn create_admin_token(&self, name: &str, role: &str) -> (String, String) {
        let body = serde_json::json!({"name": name, "role": role});
        let (status, token) = self.admin("POST", "/v1/admin-tokens", Some(body)).await;
        assert_eq!(status, 201, "admin token create failed: {token}");
        (
            token["id"].as_str().unwrap().to_string(),
            token["secret"].as_str().unwrap().to_string(),
        )
    }

    /// GET `path` with `key` as a bearer token; returns (status, error code or "").
    pub async fn get(&self, path: &str, key: &str) -> (u16, String) {
        status_and_code(self.keyed_get(self.url(path), key).await).await
    }

    pub async fn send(&self, method: &str, path: &str, key: &str) -> (u16, String) {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(key)
            .body("{}")
            .send()
            .await
            .unwrap();
        status_and_code(response).await
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// An HTTP client that speaks HTTP/2 with prior knowledge (h2c on the plain listener).
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// GETs `url` with `key` as a bearer token through `client` (h2c, TLS, not following
/// redirects: whatever the test made it for).
pub async fn keyed_get_with(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    key: &str,
) -> reqwest::Response {
    client.get(url).bearer_auth(key).send().await.unwrap()
}

/// The status and, for refusals, the error code of the one JSON error body.
pub async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code)
}

/// Waits until `check` is true, polling; panics with `what` after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on right now (bound, read, released): for configs that need a
/// number (port 0 cannot be read back from a child process) and for a closed upstream.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// 127.0.0.1 on a [`free_port`].
pub fn free_addr() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// An `http://` URL where nothing listens: on 127.0.0.2, where no test server binds, so the
/// port cannot be taken by another test between now and the connection attempt.
pub fn closed_url() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    format!("http://127.0.0.2:{port}")
}
