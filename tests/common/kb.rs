//! The fake KB: a real HTTP server (HTTP/1.1, or h2c with prior knowledge) that records every
//! request and answers as the test says where it starts it:
//!
//! ```ignore
//! let kb = FakeKb::new()
//!     .route("/v1/article/old", |_| kb::status(301).header("location", "/new").body(empty()).unwrap())
//!     .start()
//!     .await;
//! ```
//!
//! A request no route matches gets the default answer: 200 with a small JSON echo
//! (`{"ok":true,"path":…,"body_len":…}`); `?size=N` makes it stream N bytes back. On every
//! route `?delay_ms=N` waits first, before the body is read.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;
pub type Answer = Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>;
type Handler = Arc<dyn Fn(Seen) -> Answer + Send + Sync>;

/// One request as the fake KB saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub version: http::Version,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
    /// The body's bytes, kept only by a KB started with [`FakeKb::keep_bodies`].
    pub body: Vec<u8>,
    /// False when the body ended in an error (the gateway aborted it): a real KB would drop
    /// such a request, so it must never be mistaken for a complete one of `body_len` bytes.
    pub body_complete: bool,
    /// The fake KB's own address (for answers that name it, e.g. redirects).
    pub kb: SocketAddr,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.path_and_query.split_once('?').map_or("", |(_, q)| q)
    }

    /// The number in query parameter `name`, if any.
    pub fn param(&self, name: &str) -> Option<u64> {
        self.query()
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    }
}

/// What the fake KB does, stated by the test: routes by path, a fallback, whether bodies are kept.
pub struct FakeKb {
    routes: Vec<(String, Handler)>,
    fallback: Handler,
    keep_bodies: bool,
}

impl Default for FakeKb {
    fn default() -> Self {
        FakeKb::new()
    }
}

impl FakeKb {
    /// A KB that gives every request the default JSON echo.
    pub fn new() -> FakeKb {
        FakeKb {
            routes: Vec::new(),
            fallback: Arc::new(|seen| Box::pin(async move { echo(&seen) })),
            keep_bodies: false,
        }
    }

    /// Answers requests whose path matches `pattern` (`{name}` matches one segment) with `answer`.
    pub fn route(
        mut self,
        pattern: &str,
        answer: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
    ) -> FakeKb {
        let answer = Arc::new(answer);
        self.routes.push((
            pattern.to_string(),
            Arc::new(move |seen| {
                let response = answer(&seen);
                Box::pin(async move { response })
            }),
        ));
        self
    }

    /// Answers every request no route matches with `answer` (which may wait).
    pub fn otherwise<F>(mut self, answer: impl Fn(Seen) -> F + Send + Sync + 'static) -> FakeKb
    where
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        self.fallback = Arc::new(move |seen| Box::pin(answer(seen)));
        self
    }

    /// Keeps every request body in [`Seen::body`] (only for small bodies).
    pub fn keep_bodies(mut self) -> FakeKb {
        self.keep_bodies = true;
        self
    }

    pub async fn start(self) -> RunningKb {
        let routes = Arc::new(self.routes);
        let fallback = self.fallback;
        let keep = self.keep_bodies;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let server = serve(move |req, kb| {
            let (routes, fallback, log) = (routes.clone(), fallback.clone(), log.clone());
            async move {
                let seen = read(req, kb, keep).await;
                log.lock().unwrap().push(seen.clone());
                let handler = routes
                    .iter()
                    .find(|(pattern, _)| matches(pattern, seen.path()))
                    .map_or(fallback, |(_, h)| h.clone());
                handler(seen).await
            }
        })
        .await;
        RunningKb {
            addr: server.addr,
            server,
            seen,
        }
    }
}

/// A running fake KB with what it has seen.
pub struct RunningKb {
    pub addr: SocketAddr,
    pub server: Server,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// The path [`RunningKb::with_broken_article`] answers with a 500.
pub const BROKEN_ARTICLE: &str = "/v1/article/broken";

impl RunningKb {
    /// A KB that answers every request with the default JSON echo.
    pub async fn start() -> RunningKb {
        FakeKb::new().start().await
    }

    /// The JSON echo, but a 500 at [`BROKEN_ARTICLE`]: requests the KB does not answer well.
    pub async fn with_broken_article() -> RunningKb {
        FakeKb::new()
            .route(BROKEN_ARTICLE, |_| {
                Response::builder().status(500).body(empty()).unwrap()
            })
            .start()
            .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Asserts that the KB has seen exactly `n` requests (`why` says which).
    #[track_caller]
    pub fn assert_count(&self, n: usize, why: &str) {
        assert_eq!(self.count(), n, "{why}");
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

/// A running HTTP server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Lets the server run until the test's runtime ends (instead of until it is dropped);
    /// returns its address.
    pub fn detach(self) -> SocketAddr {
        let addr = self.addr;
        std::mem::forget(self);
        addr
    }
}

/// The one accept loop: serves `handle` (given each request and the server's own address) on
/// a fresh port, HTTP/1.1 or h2c.
pub async fn serve<H, F>(handle: H) -> Server
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_maybe_tls(None, handle).await
}

/// [`serve`] over TLS: each connection is handshaken with `tls` first, and ALPN picks HTTP/2
/// or HTTP/1.1.
pub async fn serve_tls<H, F>(tls: tokio_rustls::TlsAcceptor, handle: H) -> Server
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_maybe_tls(Some(tls), handle).await
}

async fn serve_maybe_tls<H, F>(tls: Option<tokio_rustls::TlsAcceptor>, handle: H) -> Server
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            let service = service_fn(move |req| {
                let answer = handle(req, addr);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => return,
                    },
                };
            });
        }
    });
    Server { addr, task }
}

/// Reads a request to its end (waiting `?delay_ms` first), counting the body as it streams.
async fn read(req: Request<Incoming>, kb: SocketAddr, keep: bool) -> Seen {
    let (parts, mut body) = req.into_parts();
    let mut seen = Seen {
        method: parts.method.to_string(),
        version: parts.version,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body_len: 0,
        body: Vec::new(),
        body_complete: true,
        kb,
    };
    if let Some(ms) = seen.param("delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    seen.body_len += data.len() as u64;
                    if keep {
                        seen.body.extend_from_slice(data);
                    }
                }
            }
            Err(_) => {
                seen.body_complete = false;
                break;
            }
        }
    }
    seen
}

/// Whether `path` matches `pattern`, segment by segment (`{name}` matches any one segment).
fn matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) if want == got || want.starts_with('{') => {}
            _ => return false,
        }
    }
}

/// The default answer: 200, a small JSON echo (or `?size=N` streamed bytes), and a hop-by-hop
/// header the gateway must drop.
pub fn echo(seen: &Seen) -> Response<TestBody> {
    let body = match seen.param("size") {
        Some(size) => streaming_bytes(size),
        None => full(
            serde_json::json!({ "ok": true, "path": seen.path_and_query, "body_len": seen.body_len })
                .to_string(),
        ),
    };
    Response::builder()
        .header("content-type", "application/json")
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "must not reach the client")
        .body(body)
        .unwrap()
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// An empty body.
pub fn empty() -> TestBody {
    full(Bytes::new())
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
