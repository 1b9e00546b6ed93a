//! The forwarding client: a pooled hyper client (TLS through rustls), header hygiene, and the
//! injection of the KB's own credential. Bodies stream both ways.

use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::metrics::{self, UpstreamError};
use crate::rejection::Rejection;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::Body as _;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;

/// Headers that describe one hop, never the message: dropped in both directions (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Client-sent headers the upstream must not see: hop-by-hop ones; those that would leak the
/// key or let a client pose as the gateway (`X-Kbgate-*` and `X-Forwarded-*` are the
/// gateway's to set); and `Expect`, since the gateway itself answered the client's
/// `100-continue`.
fn is_client_only(name: &str) -> bool {
    is_hop_by_hop(name)
        || matches!(
            name,
            "authorization" | "x-api-key" | "host" | "forwarded" | "x-request-id" | "expect"
        )
        || name.starts_with("x-kbgate-")
        || name.starts_with("x-forwarded-")
}

/// What the gateway knows about the request that the upstream should hear.
pub struct ForwardInfo<'a> {
    pub path: &'a str,
    /// The client's query without its key, already encoded.
    pub query: Option<&'a str>,
    /// The client's IP address, as the value of `X-Forwarded-For`.
    pub client_ip: &'a HeaderValue,
    pub proto: &'static str,
    pub host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
    pub key_id: &'a str,
}

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    config: UpstreamConfig,
    host: HeaderValue,
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Result<Upstream, String> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        let tls = client_tls(config.ca.as_deref())?;
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if config.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(config.http2)
            .build(connector);
        let authority = config
            .origin
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let host = HeaderValue::from_str(authority).map_err(|e| e.to_string())?;
        Ok(Upstream {
            client,
            config,
            host,
        })
    }

    /// Sends the request upstream and returns its response, streaming, with hop-by-hop headers
    /// removed. The client's key never leaves: its headers were removed and its query rewritten.
    pub async fn forward(
        &self,
        mut request: Request<Body>,
        info: ForwardInfo<'_>,
    ) -> Result<Response<Body>, Rejection> {
        *request.uri_mut() = self.target_uri(info.path, info.query)?;
        *request.version_mut() = http::Version::HTTP_11;
        let headers = request.headers_mut();
        remove_headers(headers, is_client_only);
        headers.insert(header::HOST, self.host.clone());
        for (name, value) in &self.config.inject_headers {
            headers.insert(name.clone(), value.clone());
        }
        add_forwarding_headers(headers, &info);

        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let replay = replayable(&request);
        let mut response = tokio::time::timeout_at(deadline, self.client.request(request)).await;
        if let (Some(again), Ok(Err(error))) = (replay, &response)
            && closed_before_answering(error)
        {
            tracing::debug!(%error, "upstream closed the connection before answering; retrying once");
            response = tokio::time::timeout_at(deadline, self.client.request(again)).await;
        }
        let mut response = match response {
            Err(_elapsed) => {
                metrics::fixed().upstream_error(UpstreamError::Timeout);
                return Err(Rejection::UpstreamTimeout);
            }
            Ok(Err(error)) => {
                let kind = if error.is_connect() {
                    UpstreamError::Connect
                } else {
                    UpstreamError::Request
                };
                metrics::fixed().upstream_error(kind);
                tracing::warn!(error = %error, source = ?std::error::Error::source(&error), "upstream request failed");
                return Err(Rejection::UpstreamUnavailable);
            }
            Ok(Ok(response)) => response,
        };
        let headers = response.headers_mut();
        if headers.contains_key(header::TRANSFER_ENCODING) {
            // The body was read as chunked; a Content-Length beside it is a lie that would
            // frame a cut body as complete (RFC 9112 §6.3).
            headers.remove(header::CONTENT_LENGTH);
        }
        remove_headers(headers, is_hop_by_hop);
        Ok(response.map(body::stream))
    }

    fn target_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Rejection> {
        let inject = self.config.inject_query.as_str();
        let mut path_and_query = String::with_capacity(
            self.config.base_path.len() + path.len() + query.map_or(0, str::len) + inject.len() + 2,
        );
        path_and_query.push_str(&self.config.base_path);
        path_and_query.push_str(path);
        let mut separator = '?';
        for part in [query.unwrap_or(""), inject] {
            if !part.is_empty() {
                path_and_query.push(separator);
                path_and_query.push_str(part);
                separator = '&';
            }
        }
        let mut parts = self.config.origin.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| Rejection::InvalidPath)?);
        Uri::from_parts(parts).map_err(|_| Rejection::InvalidPath)
    }
}

/// A copy to send again when `request` is safe to repeat: an idempotent method (RFC 9110
/// §9.2.2) and no body, so nothing is lost or sent twice. Bodies are streamed, never kept,
/// so a request with one is not repeated.
fn replayable(request: &Request<Body>) -> Option<Request<Body>> {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    if !idempotent || !request.body().is_end_stream() {
        return None;
    }
    let mut again = Request::new(body::empty());
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.version_mut() = request.version();
    *again.headers_mut() = request.headers().clone();
    Some(again)
}

/// The upstream took the request on an open connection and closed or reset it without an
/// answer: what a kept-alive connection the KB had just timed out looks like. (A request that
/// never started is retried by hyper-util itself; a refused connection is not this.)
fn closed_before_answering(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled())
        {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Removes every header whose name `unwanted` matches, and every header a `Connection` line
/// names. One pass over the names, then a lookup for each of the few to remove: looking up every
/// unwanted name instead cost about 3,500 instructions per request (issue 5 notes).
pub fn remove_headers(headers: &mut HeaderMap, unwanted: fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| unwanted(name.as_str()))
        .cloned()
        .collect();
    if doomed.contains(&header::CONNECTION) {
        let named = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok());
        doomed.extend(named.collect::<Vec<_>>());
    }
    for name in doomed {
        headers.remove(name);
    }
}

// Header names the gateway sets on every forwarded request, built once: inserting by a string
// literal would copy a custom name into a new buffer on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_KBGATE_KEY_ID: HeaderName = HeaderName::from_static("x-kbgate-key-id");

fn add_forwarding_headers(headers: &mut HeaderMap, info: &ForwardInfo<'_>) {
    headers.insert(X_FORWARDED_FOR, info.client_ip.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(info.proto));
    if let Some(host) = &info.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    headers.insert(X_REQUEST_ID, info.request_id.clone());
    if let Ok(id) = HeaderValue::from_str(info.key_id) {
        headers.insert(X_KBGATE_KEY_ID, id);
    }
}

/// rustls client config: the system's roots, or only the configured CA.
fn client_tls(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("upstream.ca: {e}"))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("upstream.ca: {e}"))?;
                roots.add(cert).map_err(|e| format!("upstream.ca: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_line_is_honoured() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-one"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("X-Two"));
        headers.insert("x-one", HeaderValue::from_static("1"));
        headers.insert("x-two", HeaderValue::from_static("2"));
        headers.insert("x-three", HeaderValue::from_static("3"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        remove_headers(&mut headers, is_hop_by_hop);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-three"]);
    }

    #[test]
    fn client_only_headers_are_removed_and_the_rest_kept() {
        let mut headers = HeaderMap::new();
        for name in [
            "authorization",
            "x-api-key",
            "host",
            "forwarded",
            "x-request-id",
            "expect",
            "x-kbgate-key-id",
            "x-forwarded-for",
            "x-forwarded-host",
            "proxy-authorization",
            "te",
            "x-other",
            "accept",
        ] {
            headers.append(name, HeaderValue::from_static("v"));
        }
        headers.append("x-other", HeaderValue::from_static("second"));
        remove_headers(&mut headers, is_client_only);
        let mut left: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                ("accept", &b"v"[..]),
                ("x-other", &b"second"[..]),
                ("x-other", &b"v"[..])
            ]
        );
    }
}
