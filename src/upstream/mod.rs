//! The forwarding client: connections to the KB kept open between requests (TLS through
//! rustls; `connections`), header hygiene, and the injection of the KB's own credential. Bodies
//! stream both ways.

mod connections;
mod gateway_headers;
mod hygiene;

use crate::body::{self, Body, BoxError};
use crate::coarse_timer::CoarseTimer;
use crate::links::LinkRewriter;
use crate::metrics::{self, UpstreamError};
use bytes::Bytes;
use connections::{Conn, Connections};
use gateway_headers::GatewayHeaders;
pub use gateway_headers::X_REQUEST_ID;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use http_body::Body as _;
use hygiene::{
    Removed, connection_listed, folds_to_client_only, is_client_only, remove_hop_by_hop,
};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// scheme://authority of the KB.
    pub origin: Uri,
    /// A path prefix the KB's API lives under ("" for none), without a trailing slash.
    pub base_path: String,
    pub inject_headers: Vec<(HeaderName, HeaderValue)>,
    /// `name=value` pairs, already percent-encoded, appended to every forwarded query.
    pub inject_query: String,
    /// The names in `inject_query`, decoded: a client's parameter of one of these names is
    /// dropped, so the KB hears only the injected value.
    pub inject_query_names: Vec<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub ca: Option<PathBuf>,
    pub http2: bool,
    /// Request header names with `_` pass; off, they are dropped (a KB behind CGI-style name
    /// folding would read `X_Api_Key` as `X-Api-Key`).
    pub forward_underscore_headers: bool,
    /// Send the client's `Host` rather than the KB's authority.
    pub preserve_host: bool,
    /// The top-level `public_url` (scheme and authority, no trailing slash): where links and
    /// redirects to the KB are sent instead. None: the request's own scheme and `Host`.
    pub public_origin: Option<String>,
}

/// Why a request could not be forwarded; the gateway turns it into its refusal
/// (`From<ForwardError> for Rejection` in rejection.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// The KB could not be reached, failed before answering, or answered with a status the
    /// gateway cannot pass on (an unrequested 1xx).
    Unavailable,
    /// No response headers within `upstream.timeout`.
    Timeout,
    /// The path and query do not make a request target.
    InvalidTarget,
}

/// What the gateway knows about the request that the upstream should hear.
pub struct ForwardInfo<'a> {
    pub path: &'a str,
    /// The client's query without its key, already encoded.
    pub query: Option<&'a str>,
    /// The value of `X-Forwarded-For`: the peer's address, or behind a trusted proxy its chain
    /// with the peer appended.
    pub client_ip: &'a HeaderValue,
    pub proto: &'static str,
    pub host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
    /// The key's id as a header value (see `KeyGrant::id_header`).
    pub key_id: Option<&'a HeaderValue>,
    /// When forwarding began: the upstream timeout counts from here, and the caller times the
    /// exchange from the same reading of the clock.
    pub started: std::time::Instant,
}

pub struct Upstream {
    connections: Arc<Connections>,
    /// The `upstream.timeout` of each exchange (see coarse_timer.rs).
    timer: CoarseTimer,
    config: UpstreamConfig,
    /// `Host`, the injected headers and the forwarding headers, hashed once.
    gateway_headers: GatewayHeaders,
    links: LinkRewriter,
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
        let connections = Connections::new(
            connector,
            config.origin.clone(),
            config.http2,
            config.pool_idle_timeout,
        );
        let authority = config
            .origin
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let host = HeaderValue::from_str(authority).map_err(|e| e.to_string())?;
        let links = LinkRewriter::new(
            &config.origin,
            &config.base_path,
            config.preserve_host,
            config.public_origin.clone(),
        );
        Ok(Upstream {
            connections: Arc::new(connections),
            timer: CoarseTimer::default(),
            gateway_headers: GatewayHeaders::new(
                &host,
                config.preserve_host,
                &config.inject_headers,
            ),
            config,
            links,
        })
    }

    /// Sends the client's request (its head, and `body`) upstream and returns the response,
    /// streaming, with hop-by-hop headers removed. The client's key never leaves: its headers
    /// are not copied and its query was rewritten.
    pub async fn forward(
        &self,
        client: &Request<()>,
        body: Body,
        info: ForwardInfo<'_>,
    ) -> Result<Response<Body>, ForwardError> {
        // Safe to send again: an idempotent method (RFC 9110 §9.2.2) and no body, so nothing
        // is lost or sent twice. Bodies are streamed, never kept.
        let replayable = is_idempotent(client.method()) && body.is_end_stream();
        let started = tokio::time::Instant::from_std(info.started);
        let first = self.upstream_request(client, body, &info)?;
        let again = || {
            replayable
                .then(|| self.upstream_request(client, body::empty(), &info).ok())
                .flatten()
        };
        let deadline = started + self.config.timeout;
        // The exchange made inside the call: bound to a name first, its future was copied once
        // more on the way in.
        let exchanged = self
            .timer
            .timeout_at(deadline, self.exchange(first, started, again))
            .await;
        let (mut response, conn) = match exchanged {
            Err(_elapsed) => {
                metrics::fixed().upstream_error(UpstreamError::Timeout);
                return Err(ForwardError::Timeout);
            }
            Ok(Err(failed)) => {
                metrics::fixed().upstream_error(failed.kind);
                tracing::warn!(error = %failed.error, source = ?failed.error.source(), "upstream request failed");
                return Err(ForwardError::Unavailable);
            }
            Ok(Ok(answered)) => answered,
        };
        if response.status().is_informational() {
            // hyper hands back only a 101 (it skips 100, 103 and the other 1xx): kbgate asked
            // for no upgrade, and a 1xx passed on as final is a bare 101 over HTTP/1 and a
            // `:status 101` over HTTP/2, which RFC 9113 §8.1 forbids. The connection is dropped.
            metrics::fixed().upstream_error(UpstreamError::Request);
            tracing::warn!(status = %response.status(), "upstream answered an unrequested informational status");
            return Err(ForwardError::Unavailable);
        }
        let headers = response.headers_mut();
        if remove_hop_by_hop(headers) == Removed::TransferEncoding {
            // The body was read as chunked; a Content-Length beside it is a lie that would
            // frame a cut body as complete (RFC 9112 §6.3).
            headers.remove(header::CONTENT_LENGTH);
        }
        self.links
            .rewrite(headers, info.proto == "https", info.host.as_ref());
        Ok(self.connections.finish(conn, response))
    }

    /// Sends `request` on a connection to the KB and waits for the response headers. A request
    /// that never left (its connection had closed while idle) goes on the next connection; one
    /// that left on a connection the KB then closed without answering is sent once more, as
    /// `again` builds it, when it can be (see [`closed_before_answering`]).
    async fn exchange(
        &self,
        mut request: Request<Body>,
        started: tokio::time::Instant,
        again: impl FnOnce() -> Option<Request<Body>>,
    ) -> Result<(Response<Incoming>, Conn), Failed> {
        let mut again = Some(again);
        loop {
            let mut conn = self
                .connections
                .take(started)
                .await
                .map_err(|error| Failed {
                    kind: UpstreamError::Connect,
                    error,
                })?;
            let mut error = match conn.send(request).await {
                Ok(response) => return Ok((response, conn)),
                Err(error) => error,
            };
            request = match error.take_message() {
                Some(unsent) if conn.reused => unsent,
                _ => {
                    let error = error.into_error();
                    let retry = closed_before_answering(&error)
                        .then(|| again.take().and_then(|again| again()))
                        .flatten();
                    match retry {
                        Some(retry) => {
                            tracing::debug!(%error, "upstream closed the connection before answering; retrying once");
                            retry
                        }
                        None => {
                            return Err(Failed {
                                kind: UpstreamError::Request,
                                error: error.into(),
                            });
                        }
                    }
                }
            };
        }
    }

    /// What goes upstream for the client's request: the target on the KB, the gateway's own
    /// headers (see gateway_headers.rs), and the client's that may pass (not
    /// [`is_client_only`], not named by `Connection`, not one the gateway sets). Built anew
    /// rather than edited in place, so that a retry can build it again.
    fn upstream_request(
        &self,
        client: &Request<()>,
        body: Body,
        info: &ForwardInfo<'_>,
    ) -> Result<Request<Body>, ForwardError> {
        let chunked = !self.config.http2 && has_unknown_length(&body);
        let mut request = Request::new(body);
        *request.method_mut() = client.method().clone();
        *request.uri_mut() = self.target_uri(client.uri(), info.path, info.query)?;
        let mut headers = self.gateway_headers.for_request(info);
        let underscores = self.config.forward_underscore_headers;
        let (mut cookies, mut connection) = (0, false);
        for (name, value) in client.headers() {
            connection |= name == header::CONNECTION;
            if !is_client_only(name)
                && !self.gateway_headers.replaces(name)
                && (!name.as_str().contains('_') || underscores && !folds_to_client_only(name))
            {
                cookies += usize::from(name == header::COOKIE);
                headers.append(name.clone(), value.clone());
            }
        }
        // Looked for only when the client sent a `Connection` line: most send none. The
        // gateway's own headers are not the client's to drop.
        if connection {
            for name in connection_listed(client.headers()) {
                if self.gateway_headers.sets(&name) {
                    continue;
                }
                if name == header::COOKIE {
                    cookies = 0;
                }
                headers.remove(name);
            }
        }
        if chunked && !self.gateway_headers.sets(&header::TRANSFER_ENCODING) {
            // hyper's HTTP/1 client sends a GET or HEAD body of unknown length as no body at
            // all unless the framing is asked for: the body would be lost while the client
            // gets the KB's answer. Other methods are chunked by hyper anyway. (HTTP/2 sends
            // DATA frames whatever the method.)
            headers.insert(header::TRANSFER_ENCODING, CHUNKED);
        }
        if cookies > 1 {
            join_cookies(&mut headers);
        }
        // `Request::new`'s empty map holds no allocation (`HeaderMap::new` "will not
        // allocate"), so it is forgotten rather than dropped: ~60 instructions a request.
        std::mem::forget(std::mem::replace(request.headers_mut(), headers));
        Ok(request)
    }

    /// The request target on the KB: the base path, the canonical path, the query as
    /// forwarded and the injected parameters. When that is the client's own target (no base
    /// path, nothing injected, the path already canonical, the query unchanged: the usual
    /// case), the client's is shared rather than built and parsed again.
    fn target_uri(
        &self,
        client: &Uri,
        path: &str,
        query: Option<&str>,
    ) -> Result<Uri, ForwardError> {
        let inject = self.config.inject_query.as_str();
        let unchanged = client.path_and_query().filter(|target| {
            self.config.base_path.is_empty()
                && inject.is_empty()
                && target.path() == path
                && target.query() == query
        });
        if let Some(target) = unchanged {
            return self.with_origin(target.clone());
        }
        let mut path_and_query = String::with_capacity(
            self.config.base_path.len() + path.len() + query.map_or(0, str::len) + inject.len() + 2,
        );
        path_and_query.push_str(&self.config.base_path);
        path_and_query.push_str(path);
        let mut separator = '?';
        let names = &self.config.inject_query_names;
        match query {
            Some(query) if !names.is_empty() => {
                // The KB must hear only the gateway's value of a parameter it injects.
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                    if !names.iter().any(|injected| query_name_is(name, injected)) {
                        path_and_query.push(separator);
                        path_and_query.push_str(pair);
                        separator = '&';
                    }
                }
            }
            Some(query) if !query.is_empty() => {
                path_and_query.push(separator);
                path_and_query.push_str(query);
                separator = '&';
            }
            _ => {}
        }
        if !inject.is_empty() {
            path_and_query.push(separator);
            path_and_query.push_str(inject);
        }
        let path_and_query = PathAndQuery::from_maybe_shared(Bytes::from(path_and_query))
            .map_err(|_| ForwardError::InvalidTarget)?;
        self.with_origin(path_and_query)
    }

    /// The target as the connection to the KB sends it.
    fn with_origin(&self, path_and_query: PathAndQuery) -> Result<Uri, ForwardError> {
        if !self.config.http2 {
            // HTTP/1 sends the target as it is given: origin form, `/path?query`.
            return Ok(Uri::from(path_and_query));
        }
        let mut parts = self.config.origin.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|_| ForwardError::InvalidTarget)
    }
}

/// A body that has data to come and no declared length: what a client sends chunked over
/// HTTP/1.1, or as HTTP/2 DATA frames without `content-length`.
fn has_unknown_length(body: &Body) -> bool {
    !body.is_end_stream() && body.size_hint().exact().is_none()
}

/// Whether a query component, percent-decoded with `+` as a space, is `name`; no allocation.
fn query_name_is(encoded: &str, name: &str) -> bool {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let (mut bytes, mut expected) = (encoded.as_bytes(), name.as_bytes().iter());
    while let Some((&first, rest)) = bytes.split_first() {
        let (byte, rest) = match (first, rest) {
            (b'+', _) => (b' ', rest),
            (b'%', [high, low, after @ ..]) => match (hex(*high), hex(*low)) {
                (Some(high), Some(low)) => (high << 4 | low, after),
                _ => (b'%', rest),
            },
            _ => (first, rest),
        };
        if expected.next() != Some(&byte) {
            return false;
        }
        bytes = rest;
    }
    expected.next().is_none()
}

/// Several `cookie` fields (HTTP/2 sends one per cookie) become one, joined with `; ` as
/// RFC 9113 §8.2.3 asks before a message goes on to HTTP/1.
fn join_cookies(headers: &mut HeaderMap) {
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(header::COOKIE, value);
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Why a request got no response: the error and how the metrics count it.
struct Failed {
    kind: UpstreamError,
    error: BoxError,
}

/// The upstream took the request on an open connection and closed or reset it without an
/// answer: what a kept-alive connection the KB had just timed out looks like. (A request that
/// never left goes on another connection without this; a refused connection is not this.)
fn closed_before_answering(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() {
        return true;
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

const CHUNKED: HeaderValue = HeaderValue::from_static("chunked");

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
    fn query_names_are_compared_decoded() {
        assert!(query_name_is("key", "key"));
        assert!(query_name_is("k%65y", "key"));
        assert!(query_name_is("k%65Y", "keY"));
        assert!(query_name_is("a+b", "a b"));
        assert!(query_name_is("a%2Bb", "a+b"));
        assert!(query_name_is("%", "%"));
        assert!(query_name_is("%4", "%4"));
        assert!(query_name_is("%zz", "%zz"));
        assert!(query_name_is("", ""));
        assert!(!query_name_is("key", "ke"));
        assert!(!query_name_is("ke", "key"));
        assert!(!query_name_is("a+b", "a+b"));
        assert!(!query_name_is("KEY", "key"));
        assert!(query_name_is("%C3%A9", "é"));
    }

    #[test]
    fn cookies_are_joined_into_one_field() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2; c=3"));
        join_cookies(&mut headers);
        let cookies: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, vec!["a=1; b=2; c=3"]);
        assert_eq!(headers.len(), 2);
    }
}
