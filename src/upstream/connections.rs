//! Connections to the KB on hyper's own client connections (`hyper::client::conn`), kept open
//! between requests. The gateway talks to one origin only, so hyper-util's pooled client (a
//! map keyed by scheme and authority, checkout waiters, a task spawned per request to put the
//! connection back) was about 9k instructions per request for what a stack of idle HTTP/1
//! connections, or one shared HTTP/2 connection, does here.
//!
//! An HTTP/1 connection goes back on the stack when its response has been read: at once when
//! the body came with the headers, else when the response body ends. A connection idle longer
//! than `upstream.pool_idle_timeout` is not used again (set it below the KB's keep-alive, so
//! the gateway never sends on a connection the KB is closing), and hyper closes a connection
//! that failed or whose body was dropped unfinished.

use crate::body::{Body, BoxError};
use crate::lock;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

pub(super) struct Connections {
    connector: HttpsConnector<HttpConnector>,
    origin: Uri,
    http2: bool,
    idle_timeout: Duration,
    /// HTTP/1 connections waiting for a request, the most recently used last, each with when
    /// it was last taken (an upper bound of how long it has been idle).
    idle: Mutex<VecDeque<(http1::SendRequest<Body>, Instant)>>,
    /// The HTTP/2 connection every request shares.
    shared: Mutex<Option<http2::SendRequest<Body>>>,
}

/// A connection taken for one request.
pub(super) struct Conn {
    sender: Sender,
    /// Taken from the idle stack rather than opened for this request.
    pub(super) reused: bool,
    /// When the request that took it started.
    taken: Instant,
}

enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

/// Why no connection could be had: the connector's error (TCP, TLS) or the handshake's.
pub(super) type ConnectError = BoxError;

impl Connections {
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: Uri,
        http2: bool,
        idle_timeout: Duration,
    ) -> Connections {
        Connections {
            connector,
            origin,
            http2,
            idle_timeout,
            idle: Mutex::new(VecDeque::new()),
            shared: Mutex::new(None),
        }
    }

    /// A connection ready for a request started at `now`: the most recently used idle one
    /// still open and not idle too long, else a new one.
    pub(super) async fn take(&self, now: Instant) -> Result<Conn, ConnectError> {
        let reused = match self.http2 {
            true => lock(&self.shared)
                .clone()
                .filter(|c| !c.is_closed())
                .map(Sender::Http2),
            false => self.take_idle(now),
        };
        if let Some(sender) = reused {
            return Ok(Conn::new(sender, true, now));
        }
        // Boxed: the connecting futures (TCP, TLS, handshake) are large and rarely needed; held
        // inline, every request's future would carry (and move) them.
        let sender = Box::pin(self.open()).await?;
        Ok(Conn::new(sender, false, now))
    }

    fn take_idle(&self, now: Instant) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        // One not ready, closed or idle too long is dropped: hyper closes it.
        while let Some((sender, taken)) = idle.pop_back() {
            if sender.is_ready() && now.saturating_duration_since(taken) < self.idle_timeout {
                return Some(Sender::Http1(sender));
            }
        }
        None
    }

    async fn open(&self) -> Result<Sender, ConnectError> {
        let io = self.connect().await?;
        if !self.http2 {
            // Flattened, as the gateway's own connections are (see server.rs).
            let (sender, connection) = http1::Builder::new().writev(false).handshake(io).await?;
            drive(connection);
            return Ok(Sender::Http1(sender));
        }
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        drive(connection);
        *lock(&self.shared) = Some(sender.clone());
        Ok(Sender::Http2(sender))
    }

    async fn connect(
        &self,
    ) -> Result<<HttpsConnector<HttpConnector> as Service<Uri>>::Response, ConnectError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        connector.call(self.origin.clone()).await
    }

    /// Puts an HTTP/1 connection whose response has been read back on the idle stack, first
    /// dropping those at the bottom that have been idle too long.
    fn put_back(&self, sender: http1::SendRequest<Body>, taken: Instant) {
        let mut idle = lock(&self.idle);
        while idle
            .front()
            .is_some_and(|(_, since)| taken.saturating_duration_since(*since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        idle.push_back((sender, taken));
    }

    /// The response, its body set to give the connection back when it has been read.
    pub(super) fn finish(
        self: &Arc<Self>,
        conn: Conn,
        response: Response<Incoming>,
    ) -> Response<Body> {
        let Sender::Http1(sender) = conn.sender else {
            return response.map(crate::body::stream);
        };
        if sender.is_ready() || response.body().is_end_stream() {
            // The body came whole with the headers.
            self.give_back(sender, conn.taken);
            return response.map(crate::body::stream);
        }
        response.map(|body| {
            crate::body::stream(GivesBack {
                body,
                ended: false,
                conn: Some((sender, conn.taken)),
                connections: self.clone(),
            })
        })
    }

    /// Puts a connection whose response has been read back on the stack once hyper has taken
    /// its next turn on it (at once, nearly always).
    fn give_back(self: &Arc<Self>, mut sender: http1::SendRequest<Body>, taken: Instant) {
        if sender.is_ready() {
            return self.put_back(sender, taken);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let connections = self.clone();
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                connections.put_back(sender, taken);
            }
        });
    }
}

/// Runs a connection's I/O (hyper's connection future, HTTP/1 or HTTP/2) until it ends.
fn drive<C, E>(connection: C)
where
    C: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended");
        }
    });
}

impl Conn {
    fn new(sender: Sender, reused: bool, taken: Instant) -> Conn {
        Conn {
            sender,
            reused,
            taken,
        }
    }

    /// Sends `request`; an error that gives the request back means it never left.
    pub(super) async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        match &mut self.sender {
            Sender::Http1(sender) => sender.try_send_request(request).await,
            Sender::Http2(sender) => sender.try_send_request(request).await,
        }
    }
}

/// A response body that puts its HTTP/1 connection back on the idle stack when it has been
/// read to the end. Dropped before that, the connection is dropped and hyper closes it.
struct GivesBack {
    body: Incoming,
    ended: bool,
    conn: Option<(http1::SendRequest<Body>, Instant)>,
    connections: Arc<Connections>,
}

impl Drop for GivesBack {
    fn drop(&mut self) {
        let Some((sender, taken)) = self.conn.take() else {
            return;
        };
        if self.ended || self.body.is_end_stream() {
            self.connections.give_back(sender, taken);
        }
    }
}

impl http_body::Body for GivesBack {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
