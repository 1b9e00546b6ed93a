//! Listeners: accept loop, optional TLS (rustls, ALPN h2 + http/1.1), HTTP/1.1 and HTTP/2
//! (h2c with prior knowledge), connection cap, header read timeout and graceful shutdown.
//! Both the gateway and the admin API are served by [`serve`].

use crate::body::{Body, BoxError};
use crate::coarse_timer::CoarseTimer;
use crate::drain::Drain;
use crate::head_deadline::{ConnActivity, until_sent};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// hyper panics on a smaller HTTP/1 buffer.
const HYPER_MIN_BUF_SIZE: usize = 8192;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_concurrent_streams: u32,
    /// Request header fields, counted as on the wire (`name: value\r\n`): more is 431.
    pub max_header_size: usize,
    /// The request target: longer is 414.
    pub max_uri_length: usize,
    /// A request body, unless its route sets its own `max_body`: more is 413.
    pub max_body: u64,
    /// The longest wait for the next piece of a request body: longer is 408.
    pub body_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// The remote IP address as a header value (`X-Forwarded-For`), formatted once per
    /// connection rather than once per request.
    pub client_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, tls: bool) -> ConnInfo {
        let client_ip = HeaderValue::from_str(&remote.ip().to_string())
            .expect("an IP address is a valid header value");
        ConnInfo {
            remote,
            tls,
            client_ip,
        }
    }
}

/// Something that answers requests: the gateway or the admin API. Any body will do: [`serve`]
/// passes hyper's `Incoming`, tests and benches build requests in process.
pub trait Handler: Send + Sync + 'static {
    fn handle<B>(
        &self,
        request: Request<B>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Response<Body>> + Send
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>;
}

/// Accepts connections until `shutdown` fires, then lets open ones finish within the grace.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let drain = Drain::default();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let timer = CoarseTimer::default();
    let builder = Arc::new(connection_builder(&limits));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let accepted = std::time::Instant::now();
        let _ = stream.set_nodelay(true);
        let drain_watch = drain.clone();
        let builder = builder.clone();
        let handler = handler.clone();
        let tls = tls.clone();
        let timer = timer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // One reference count per request, not a handler's and an address's each.
            let served = Arc::new((handler, ConnInfo::new(remote, tls.is_some())));
            let first_head = limits.tls_handshake_timeout * u32::from(tls.is_some())
                + limits.header_read_timeout;
            let activity = ConnActivity::new(accepted);
            let requests = activity.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let served = served.clone();
                let on_conn = requests.request(request.version());
                async move {
                    let (handler, conn) = &*served;
                    let response = handler.handle(request, conn).await;
                    Ok::<_, Infallible>(response.map(|body| until_sent(body, on_conn)))
                }
            });
            let connection = async {
                match tls {
                    None => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        drain_watch.watch(connection.into_owned()).await
                    }
                    Some(acceptor) => {
                        let accept = acceptor.accept(stream);
                        let stream = match tokio::time::timeout(
                            limits.tls_handshake_timeout,
                            accept,
                        )
                        .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %remote, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return Ok(());
                            }
                        };
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        drain_watch.watch(connection.into_owned()).await
                    }
                }
            };
            // Biased: the connection first, and no random draw on every poll of it.
            let result = tokio::select! {
                biased;
                result = connection => result,
                () = activity.expired(&timer, first_head, limits.header_read_timeout) => {
                    tracing::debug!(%remote, "no request head within the header read timeout");
                    Ok(())
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, drain.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace ended with connections still open");
    }
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    // Heads up to the configured limits reach the gateway, which refuses them with its own JSON
    // (431, 414); only heads far beyond get hyper's bare 431 (or 414 past 64 KiB of target).
    let head_room = 2 * (limits.max_header_size + limits.max_uri_length);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header read timeout is the gateway's own, per connection (head_deadline.rs).
        .header_read_timeout(None)
        .max_buf_size(head_room.max(HYPER_MIN_BUF_SIZE))
        // A response's head and body copied into one buffer, not queued for a vectored write:
        // hyper's queue of buffers cost more per response than copying a body of a few KiB
        // (callgrind, benches/load); a large body is still written a buffer at a time.
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(head_room).unwrap_or(u32::MAX));
    builder
}

/// A rustls acceptor for the configured certificate chain and key, offering h2 and http/1.1.
pub(crate) fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let cert_pem = std::fs::read(&files.cert).map_err(|e| format!("tls.cert: {e}"))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert: {e}"))?;
    if certs.is_empty() {
        return Err("tls.cert: no certificate found in the file".into());
    }
    let key_pem = std::fs::read(&files.key).map_err(|e| format!("tls.key: {e}"))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("tls.key: {e}"))?
        .ok_or("tls.key: no private key found in the file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
