//! The floor of kbgate's stack: a reverse proxy built from the same parts (hyper-util's server
//! and pooled client, tokio's current-thread runtime, mimalloc) that does nothing else — no key,
//! no routes, no metrics, no log. Measuring it beside kbgate and nginx (benches/load) shows how
//! much of kbgate's cost per request is the stack itself.
//!
//!     cargo run --release --example bare_proxy -- 127.0.0.1:18005 http://127.0.0.1:18001

use http::Uri;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy <listen address> <upstream origin>";
    let listen: std::net::SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: Uri = args.next().ok_or(usage)?.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(
    listen: std::net::SocketAddr,
    upstream: Uri,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: http::Request<Incoming>| {
                let client = client.clone();
                let mut parts = upstream.clone().into_parts();
                parts.path_and_query = request.uri().path_and_query().cloned();
                async move {
                    *request.uri_mut() = Uri::from_parts(parts).expect("origin + path");
                    let response = match client.request(request).await {
                        Ok(response) => response.map(http_body_util::Either::Left),
                        Err(_) => http::Response::builder()
                            .status(502)
                            .body(http_body_util::Either::Right(http_body_util::Empty::new()))
                            .expect("a static response"),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
