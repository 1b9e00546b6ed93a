//! The floor of kbgate's stack: a reverse proxy built from the same parts (hyper-util's server,
//! hyper's own HTTP/1 client connections kept on a stack of idle ones as in
//! src/upstream/connections.rs, tokio's current-thread runtime, mimalloc) that does nothing
//! else: no key, no routes, no header hygiene, no metrics, no log. Measuring it beside kbgate
//! and nginx (benches/load, arm H) shows how much of kbgate's cost per request is the stack.
//!
//!     cargo run --release --example bare_proxy -- 127.0.0.1:18005 http://127.0.0.1:18001

use http::Uri;
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::cell::RefCell;
use std::convert::Infallible;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: kbgate::allocator::Mimalloc = kbgate::allocator::Mimalloc;

type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;
type Sender = http1::SendRequest<Body>;
type Error = Box<dyn std::error::Error + Send + Sync>;

thread_local! {
    /// Idle upstream connections: the runtime has one thread, so the stack needs no lock.
    static IDLE: RefCell<Vec<Sender>> = const { RefCell::new(Vec::new()) };
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy <listen address> <upstream origin>";
    let listen: std::net::SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: Uri = args.next().ok_or(usage)?.parse()?;
    let upstream = upstream.authority().ok_or(usage)?.as_str().to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream.leak()))
}

async fn serve(listen: std::net::SocketAddr, upstream: &'static str) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<Incoming>| async move {
                let response = match forward(request.map(BodyExt::boxed_unsync), upstream).await {
                    Ok(response) => response.map(Either::Left),
                    Err(_) => http::Response::builder()
                        .status(502)
                        .body(Either::Right(Empty::new()))
                        .expect("a static response"),
                };
                Ok::<_, Infallible>(response)
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Flattened writes, as kbgate's own (src/server.rs).
            builder.http1().writev(false);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends the request (its origin-form target as the client gave it) on an idle connection or
/// a new one, and puts the connection back once hyper is ready to send on it again.
async fn forward(
    request: http::Request<Body>,
    upstream: &str,
) -> Result<http::Response<Incoming>, Error> {
    let mut sender = match IDLE.with_borrow_mut(|idle| idle.pop().filter(Sender::is_ready)) {
        Some(sender) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = http1::Builder::new()
                .writev(false)
                .handshake(TokioIo::new(stream))
                .await?;
            tokio::spawn(connection);
            sender
        }
    };
    let response = sender.send_request(request).await?;
    if sender.is_ready() {
        IDLE.with_borrow_mut(|idle| idle.push(sender));
    } else {
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                IDLE.with_borrow_mut(|idle| idle.push(sender));
            }
        });
    }
    Ok(response)
}
