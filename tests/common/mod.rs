//! Test harness: a real upstream HTTP server that records what it received, and a real kbgate
//! started in-process on port 0 with the shipped route table, talked to over sockets.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kbgate::Config;
use kbgate::keys::StoreConfig;
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod metrics;
pub mod process;
pub mod raw;
pub mod raw_upstream;
pub mod redis;
pub mod store;
pub mod tls;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const UPSTREAM_CREDENTIAL: &str = "upstream-secret-credential";

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
    /// False when the body ended in an error (the gateway aborted it): a real KB would drop
    /// such a request, so it must never be mistaken for a complete one of `body_len` bytes.
    pub body_complete: bool,
}

/// A real HTTP server standing in for the KB. It records every request and answers 200 with
/// a small JSON body; `?size=N` makes it stream N bytes back; `?delay_ms=N` waits first.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, log.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<TestBody>, Infallible> {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| -> Option<u64> {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    if let Some(ms) = param("delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // Count the body as it streams, never holding it whole.
    let mut body = req.into_body();
    let mut body_len = 0u64;
    let mut body_complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_len += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => {
                body_complete = false;
                break;
            }
        }
    }
    log.lock().unwrap().push(Seen {
        method,
        path_and_query: path_and_query.clone(),
        headers,
        body_len,
        body_complete,
    });
    let response_body: TestBody = match param("size") {
        Some(size) => streaming_bytes(size),
        None => Full::new(Bytes::from(
            serde_json::json!({ "ok": true, "path": path_and_query, "body_len": body_len })
                .to_string(),
        ))
        .boxed(),
    };
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "must not reach the client")
        .body(response_body)
        .unwrap())
}

/// `size` bytes in 64 KiB chunks, produced as they are sent.
pub fn streaming_bytes(size: u64) -> TestBody {
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::unfold(size, |left| async move {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK);
        Some((
            Ok(Frame::data(Bytes::from(vec![b'x'; n as usize]))),
            left - n,
        ))
    });
    StreamBody::new(chunks).boxed()
}

/// The shipped config, pointed at `upstream`, on free ports, with its store in `dir`.
pub fn config(upstream: &str, dir: &std::path::Path) -> Config {
    config_from(&shipped_yaml(), upstream, dir)
}

/// The text of config/kbgate.yaml.
pub fn shipped_yaml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/kbgate.yaml")).unwrap()
}

/// [`config`] from other YAML text (e.g. the shipped text with a route changed).
pub fn config_from(text: &str, upstream: &str, dir: &std::path::Path) -> Config {
    let env = |name: &str| match name {
        "KBGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_string()),
        "KB_API_KEY" => Some(UPSTREAM_CREDENTIAL.to_string()),
        _ => None,
    };
    let mut config = Config::parse_with_env(text, &env).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.upstream.origin = format!("{upstream}/").parse().unwrap();
    config.store = StoreConfig::embedded(dir.join("kbgate.db"));
    config.usage_flush_interval = Duration::from_millis(100);
    config
}

/// A running kbgate with an HTTP client and admin helpers.
pub struct Gateway {
    pub running: Option<kbgate::Running>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start(upstream: &Upstream) -> Gateway {
        Gateway::start_with(upstream, |_| {}).await
    }

    /// Starts with the test config, changed by `adjust` first.
    pub async fn start_with(upstream: &Upstream, adjust: impl FnOnce(&mut Config)) -> Gateway {
        Gateway::start_at(&upstream.url(), adjust).await
    }

    /// Starts in front of any upstream URL (e.g. a `raw_upstream::RawUpstream`).
    pub async fn start_at(upstream_url: &str, adjust: impl FnOnce(&mut Config)) -> Gateway {
        Gateway::start_yaml(&shipped_yaml(), upstream_url, adjust).await
    }

    /// Starts from YAML text rather than the shipped config.
    pub async fn start_yaml(
        text: &str,
        upstream_url: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_from(text, upstream_url, dir.path());
        adjust(&mut config);
        Gateway::from_running(kbgate::start(config).await.unwrap(), dir)
    }

    /// Wraps a started kbgate whose store lives in `dir`.
    pub fn from_running(running: kbgate::Running, dir: tempfile::TempDir) -> Gateway {
        Gateway {
            addr: running.addr,
            admin_addr: running.admin_addr,
            running: Some(running),
            client: reqwest::Client::new(),
            dir,
        }
    }

    /// Starts on the embedded store in its folder, with `hook` seeing every store call first.
    pub async fn start_with_hook(upstream: &Upstream, hook: store::Hook) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let store = store::HookedStore {
            inner: kbgate::keys::embedded::EmbeddedStore::open(&dir.path().join("kbgate.db"))
                .unwrap(),
            hook,
        };
        let config = config(&upstream.url(), dir.path());
        let running = kbgate::app::start_with_store(config, std::sync::Arc::new(store))
            .await
            .unwrap();
        Gateway::from_running(running, dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
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
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a key; returns (id, secret).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let (status, key) = self.admin("POST", "/v1/keys", Some(body)).await;
        assert_eq!(status, 201, "create failed: {key}");
        (
            key["id"].as_str().unwrap().to_string(),
            key["secret"].as_str().unwrap().to_string(),
        )
    }

    /// GET `path` with `key` as a bearer token; returns (status, error code or "").
    pub async fn get(&self, path: &str, key: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        status_and_code(response).await
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

/// A port nothing listens on right now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
