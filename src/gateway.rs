//! The request path. [`Gateway::handle`] times, logs and turns refusals into responses;
//! [`Gateway::handle_inner`] is the path of DESIGN.md, read top to bottom.

#[cfg(test)]
use crate::access_log::millis;
use crate::access_log::{AccessLine, BytesIn};
use crate::authz::{self, routes::RouteTable};
use crate::body::{self, Body, BoxError};
use crate::cors::Cors;
use crate::keys::{KeySources, Keyring, secret};
use crate::metrics::requests::{Observation, RequestMetrics};
use crate::metrics::{self, InFlight};
use crate::net::{self, CidrList};
use crate::path::canonicalize_path;
use crate::rejection::Rejection;
use crate::server::{ConnInfo, Handler, Limits};
use crate::upstream::{ForwardInfo, Upstream, X_REQUEST_ID};
use crate::usage::UsageRecorder;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

pub struct Gateway {
    pub keyring: Arc<Keyring>,
    pub routes: RouteTable,
    pub upstream: Upstream,
    pub usage: Arc<UsageRecorder>,
    pub metrics: RequestMetrics,
    pub limits: Limits,
    pub key_sources: KeySources,
    /// Peers whose `X-Forwarded-For` is believed and appended to.
    pub trusted_proxies: CidrList,
    /// `cors:`; `None` (the default) costs the request path nothing.
    pub cors: Option<Cors>,
}

/// What the access log says about a request beyond its status.
#[derive(Default)]
struct RequestLog {
    key_id: Option<Arc<str>>,
    /// Index in the route table.
    route: Option<usize>,
    upstream: Option<Duration>,
    /// Request body bytes read, counted by the body guard.
    bytes_in: Option<Arc<dyn BytesIn>>,
}

impl Handler for Gateway {
    async fn handle(&self, request: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = InFlight::start();
        let request_id = request_id(request.headers());
        let method = request.method().clone();
        let user_agent = request.headers().get(header::USER_AGENT).cloned();
        let client_ip = self.client_ip_for_log(&conn, request.headers());
        let mut log = RequestLog::default();
        let mut path = None;
        // A CORS preflight is the gateway's to answer: no key, no KB.
        let cors = self
            .cors
            .as_ref()
            .map(|cors| (cors, cors.inspect(&request)));
        let preflight = cors.as_ref().is_some_and(|(_, seen)| seen.preflight);
        let result = match &cors {
            Some((cors, seen)) if seen.preflight => {
                check_request(&request, &self.limits).and_then(|()| cors.preflight(seen))
            }
            _ => {
                let result = self
                    .handle_inner(
                        request.map(body::stream),
                        &conn,
                        &request_id,
                        &mut log,
                        &mut path,
                    )
                    .await;
                metrics::fixed().auth_decision(result.as_ref().map(|_| ()).map_err(|r| *r));
                result
            }
        };
        let (mut response, outcome) = match result {
            Ok(response) if preflight => (response, "preflight"),
            Ok(response) => (response, "forwarded"),
            Err(rejection) => (
                rejection.into_response(request_id_str(&request_id)),
                rejection.code(),
            ),
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.clone());
        if let Some((cors, seen)) = cors {
            cors.finish(seen, &mut response);
        }
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.metrics.observe(&Observation {
            route: log.route,
            method: &method,
            status,
            outcome,
            key_id: log.key_id.as_ref(),
            elapsed,
            upstream: log.upstream,
        });
        let line = AccessLine {
            request_id,
            client_ip,
            key_id: log.key_id,
            method,
            path,
            route: log.route.map(|i| self.routes.routes()[i].log_name.clone()),
            status,
            outcome,
            bytes_in: log.bytes_in,
            latency: elapsed,
            upstream: log.upstream,
            user_agent,
        };
        line.finish(response)
    }
}

impl Gateway {
    /// The client's address: the peer's, or behind a trusted proxy the first untrusted one of
    /// `X-Forwarded-For` from the right (see [`net::client_address`]). For the access log and
    /// per-client limits; the socket peer stays in [`ConnInfo::remote`].
    pub fn client_address(&self, conn: &ConnInfo, headers: &HeaderMap) -> std::net::IpAddr {
        net::client_address(conn.remote.ip(), headers, &self.trusted_proxies)
    }

    /// The client's address as the access log writes it: the peer's, formatted once per
    /// connection, unless a trusted proxy stands in between.
    fn client_ip_for_log(&self, conn: &ConnInfo, headers: &HeaderMap) -> HeaderValue {
        if self.trusted_proxies.is_empty() {
            return conn.client_ip.clone();
        }
        let ip = self.client_address(conn, headers);
        HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
    }

    async fn handle_inner(
        &self,
        request: Request<Body>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        log: &mut RequestLog,
        canonical_path: &mut Option<String>,
    ) -> Result<Response<Body>, Rejection> {
        check_request(&request, &self.limits)?;
        let path: &str = canonical_path
            .insert(canonicalize_path(request.uri().path()).map_err(|_| Rejection::InvalidPath)?);
        let (secret, forwarded_query) =
            extract_key(request.headers(), request.uri().query(), &self.key_sources)?;
        if !secret::is_well_formed(&secret) {
            return Err(Rejection::InvalidKey);
        }
        let key = self.keyring.verify(&secret).await?;
        log.key_id = Some(key.id.clone());
        self.usage.record(&key.id);

        let route = self
            .routes
            .lookup(request.method(), path)
            .ok_or(Rejection::RouteNotAllowed)?;
        log.route = Some(route.index);
        if !authz::grants(key.scope, &key.permissions, &route.permission) {
            return Err(Rejection::InsufficientPermissions);
        }
        // On the query as forwarded: the client key is not a parameter of the KB's.
        if let Some(rule) = &route.query
            && !rule.permits(forwarded_query.as_deref())
        {
            return Err(Rejection::QueryNotAllowed);
        }

        let forwarded_query = forwarded_query.map(Cow::into_owned);
        let host = request.headers().get(header::HOST).cloned().or_else(|| {
            request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let chain =
            net::forwarded_chain(conn.remote.ip(), request.headers(), &self.trusted_proxies);
        let max_body = route.max_body.unwrap_or(self.limits.max_body);
        let (request, body_fault) = guard_body(request, max_body, self.limits.body_timeout)?;
        log.bytes_in = Some(body_fault.clone());
        let info = ForwardInfo {
            path,
            query: forwarded_query.as_deref(),
            client_ip: chain.as_ref().unwrap_or(&conn.client_ip),
            proto: if conn.tls { "https" } else { "http" },
            host,
            request_id,
            key_id: &key.id,
        };
        let upstream_started = Instant::now();
        let response = self.upstream.forward(request, info).await;
        log.upstream = Some(upstream_started.elapsed());
        // A request that failed because its own body did is the client's fault, not the KB's.
        response.map_err(|rejection| body_fault.fault.get().map_or(rejection, |f| f.rejection()))
    }
}

/// The checks of the request itself that hyper leaves to the application: no tunnels or
/// upgrades (but `Upgrade: h2c` alone, which is ignored), sizes within the limits, one Host
/// that agrees with the target (RFC 9112 §3.2), and a Transfer-Encoding that is exactly
/// `chunked` (anything else cannot be forwarded as it was meant: the gateway re-frames every
/// body).
fn check_request<B>(request: &Request<B>, limits: &Limits) -> Result<(), Rejection> {
    if request.method() == Method::CONNECT {
        return Err(Rejection::ConnectNotAllowed);
    }
    let headers = request.headers();
    if headers.contains_key(header::UPGRADE) && !only_h2c(headers) {
        return Err(Rejection::UpgradeNotAllowed);
    }
    let uri = request.uri();
    let uri_length = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if uri_length > limits.max_uri_length {
        return Err(Rejection::UriTooLong);
    }
    // As on the wire: `name: value\r\n`.
    let header_size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_size > limits.max_header_size {
        return Err(Rejection::HeadersTooLarge);
    }
    check_host(request.version(), uri, headers)?;
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(coding), None) if coding.as_bytes().eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(Rejection::BadRequest),
    }
}

/// Whether every protocol the `Upgrade` lines offer is `h2c`, as `curl --http2 http://…`
/// sends. The gateway does not switch to it; RFC 9110 §7.8 lets a server ignore an upgrade
/// and answer over HTTP/1.1, and the upstream never sees the offer (`Upgrade`, `Connection`
/// and `HTTP2-Settings` are hop-by-hop). Any other protocol (WebSocket…) is refused.
fn only_h2c(headers: &HeaderMap) -> bool {
    let mut offered = false;
    for value in headers.get_all(header::UPGRADE) {
        for protocol in value.as_bytes().split(|&b| b == b',') {
            match protocol.trim_ascii() {
                b"" => {}
                p if p.eq_ignore_ascii_case(b"h2c") => offered = true,
                _ => return false,
            }
        }
    }
    offered
}

/// HTTP/1.1 needs exactly one Host; no version may carry two, one that is not a host (empty
/// included), or one that disagrees with the authority of an absolute-form target or HTTP/2
/// `:authority`, which must be a host too: credentials (`user:pw@`) are refused wherever they
/// come from (RFC 9113 §8.3.1).
fn check_host(version: Version, uri: &http::Uri, headers: &HeaderMap) -> Result<(), Rejection> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (host, second) = (hosts.next(), hosts.next());
    if let Some(authority) = uri.authority()
        && !is_host(authority.as_str().as_bytes())
    {
        return Err(Rejection::BadRequest);
    }
    match (host, second, uri.authority()) {
        (_, Some(_), _) => Err(Rejection::BadRequest),
        (None, None, _) if version == Version::HTTP_11 => Err(Rejection::BadRequest),
        (Some(host), None, _) if !is_host(host.as_bytes()) => Err(Rejection::BadRequest),
        (Some(host), None, Some(authority))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(Rejection::BadRequest)
        }
        _ => Ok(()),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2-3): a registered name or IPv4
/// address, or an IPv6 address in brackets, then a port of digits only. An empty host is not
/// one: an `http` URI must not have one (RFC 9110 §4.2.1), and with origin-form an empty
/// `Host` would leave the target URI without its authority (RFC 9112 §3.3). Userinfo is not
/// part of the grammar. No allocation: this runs on every request.
fn is_host(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        Some(colon) if !value[colon..].contains(&b']') => (&value[..colon], &value[colon + 1..]),
        _ => (value, &[][..]),
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    match host {
        [b'[', literal @ .., b']'] => std::str::from_utf8(literal)
            .is_ok_and(|literal| literal.parse::<std::net::Ipv6Addr>().is_ok()),
        [] => false,
        _ => is_reg_name(host),
    }
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2).
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                if !name
                    .get(i + 1..i + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// Why the gateway cut a request body off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyFault {
    /// More than the route's `max_body`.
    TooLarge,
    /// No data for `limits.body_timeout`.
    Stalled,
    /// Malformed chunking, or the client went away mid-upload.
    Broken,
}

impl BodyFault {
    fn rejection(self) -> Rejection {
        match self {
            BodyFault::TooLarge => Rejection::BodyTooLarge,
            BodyFault::Stalled => Rejection::BodyTimeout,
            BodyFault::Broken => Rejection::BadRequest,
        }
    }
}

impl std::fmt::Display for BodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.rejection().message())
    }
}

impl std::error::Error for BodyFault {}

/// What the guard of a request body tells the gateway: why it failed, if it did, and how many
/// bytes of it were read (for the access log).
#[derive(Default)]
struct BodyState {
    fault: OnceLock<BodyFault>,
    received: AtomicU64,
}

impl BytesIn for BodyState {
    fn bytes_in(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Refuses a body declared larger than `max_body` at once; wraps any other non-empty body so
/// that it fails, and the upstream request with it, when it grows past `max_body` or stalls
/// for `idle`. The returned state says why, once it has failed, and counts what was read.
fn guard_body(
    request: Request<Body>,
    max_body: u64,
    idle: Duration,
) -> Result<(Request<Body>, Arc<BodyState>), Rejection> {
    let fault = Arc::new(BodyState::default());
    if request.body().is_end_stream() {
        return Ok((request, fault));
    }
    if request.body().size_hint().lower() > max_body {
        return Err(Rejection::BodyTooLarge);
    }
    let guarded = request.map(|inner| {
        body::stream(GuardedBody {
            inner,
            left: max_body,
            idle,
            stall: None,
            fault: fault.clone(),
        })
    });
    Ok((guarded, fault))
}

/// A request body with a size limit and an idle timeout (see [`guard_body`]).
struct GuardedBody {
    inner: Body,
    left: u64,
    idle: Duration,
    /// Armed while the gateway waits on the client; disarmed by every frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: Arc<BodyState>,
}

impl GuardedBody {
    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let _ = self.fault.fault.set(fault);
        Poll::Ready(Some(Err(Box::new(fault))))
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(&fault) = this.fault.fault.get() {
            // Never end cleanly after a failure: that would frame a cut body as complete.
            return this.fail(fault);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall = None;
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                match this.left.checked_sub(len) {
                    Some(left) => this.left = left,
                    None => return this.fail(BodyFault::TooLarge),
                }
                this.fault.received.fetch_add(len, Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let _ = this.fault.fault.set(BodyFault::Broken);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(stall.as_mut().poll(cx));
                this.fail(BodyFault::Stalled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Built once: looking a header up by a string literal parses the name on every request.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Finds the client's key in the configured sources (by default `Authorization: Bearer`,
/// `X-Api-Key` and `?key=`). Returns the key and the query to forward (without the key's
/// parameter, when the query is a source). Two different keys in one request are ambiguous;
/// the same key twice is fine; an empty value is no key at all.
pub fn extract_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    sources: &KeySources,
) -> Result<(Cow<'a, str>, Option<Cow<'a, str>>), Rejection> {
    let mut found: Option<Cow<'a, str>> = None;
    let mut offer = |candidate: Cow<'a, str>| match &found {
        _ if candidate.is_empty() => Ok(()),
        Some(existing) if *existing != candidate => Err(Rejection::AmbiguousKey),
        Some(_) => Ok(()),
        None => {
            found = Some(candidate);
            Ok(())
        }
    };
    if sources.authorization {
        for value in headers.get_all(header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| Rejection::InvalidKey)?;
            if let Some((scheme, token)) = value.split_once(' ')
                && scheme.eq_ignore_ascii_case("bearer")
            {
                offer(Cow::Borrowed(token.trim()))?;
            }
        }
    }
    if sources.x_api_key {
        for value in headers.get_all(X_API_KEY) {
            offer(Cow::Borrowed(
                value.to_str().map_err(|_| Rejection::InvalidKey)?.trim(),
            ))?;
        }
    }
    let mut query_has_key = false;
    if let Some(param) = sources.query.as_deref() {
        for (name, value) in query_pairs(query.unwrap_or("")) {
            if decode(name) == param {
                query_has_key = true;
                offer(decode(value))?;
            }
        }
    }
    let secret = found.ok_or(Rejection::MissingKey)?;
    let forwarded_query = match (query, sources.query.as_deref()) {
        (Some(q), Some(param)) if query_has_key => Some(query_without(q, param))
            .filter(|q| !q.is_empty())
            .map(Cow::Owned),
        (other, _) => other.map(Cow::Borrowed),
    };
    Ok((secret, forwarded_query))
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The query without the parameter `param` (compared decoded).
fn query_without(query: &str, param: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| decode(pair.split_once('=').map_or(*pair, |(n, _)| n)) != param)
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes a query component (`+` is a space); bytes that are not UTF-8 are replaced.
fn decode(component: &str) -> Cow<'_, str> {
    if !component.contains(['%', '+']) {
        return Cow::Borrowed(component);
    }
    let spaced = component.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The client's X-Request-Id when it is short and plain, else a new random one. Kept as a
/// header value: the response and the upstream request carry it without a copy each.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(X_REQUEST_ID)
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        })
        .cloned()
        .unwrap_or_else(random_request_id)
}

/// 128 random bits as 32 lowercase hex digits.
fn random_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::random();
    let mut id = [0u8; 32];
    for (pair, b) in id.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// The request id as text: what [`request_id`] returns is always visible ASCII.
pub fn request_id_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    type Extracted<'a> = Result<(Cow<'a, str>, Option<Cow<'a, str>>), Rejection>;

    fn default_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Extracted<'a> {
        extract_key(headers, query, &KeySources::DEFAULT)
    }

    #[test]
    fn key_sources() {
        let h = headers(&[("authorization", "Bearer kb_a")]);
        assert_eq!(default_key(&h, None).unwrap().0, "kb_a");
        let h = headers(&[("authorization", "bearer  kb_a ")]);
        assert_eq!(default_key(&h, None).unwrap().0, "kb_a");
        let h = headers(&[("x-api-key", "kb_b")]);
        assert_eq!(default_key(&h, None).unwrap().0, "kb_b");
        let none = HeaderMap::new();
        let (key, query) = default_key(&none, Some("a=1&key=kb_c&b=2")).unwrap();
        assert_eq!(key, "kb_c");
        assert_eq!(query.as_deref(), Some("a=1&b=2"));
        let (_, query) = default_key(&none, Some("k%65y=kb_c")).unwrap();
        assert_eq!(query, None, "an encoded key name is still the key");
    }

    #[test]
    fn missing_and_ambiguous_keys() {
        assert_eq!(
            default_key(&HeaderMap::new(), Some("q=1")).unwrap_err(),
            Rejection::MissingKey
        );
        let h = headers(&[("authorization", "Basic abc")]);
        assert_eq!(default_key(&h, None).unwrap_err(), Rejection::MissingKey);
        let h = headers(&[("authorization", "Bearer kb_a"), ("x-api-key", "kb_b")]);
        assert_eq!(default_key(&h, None).unwrap_err(), Rejection::AmbiguousKey);
        let h = headers(&[("x-api-key", "kb_a"), ("x-api-key", "kb_b")]);
        assert_eq!(default_key(&h, None).unwrap_err(), Rejection::AmbiguousKey);
        let h = headers(&[("x-api-key", "kb_a")]);
        assert_eq!(
            default_key(&h, Some("key=kb_b")).unwrap_err(),
            Rejection::AmbiguousKey
        );
        let (key, query) = default_key(&h, Some("key=kb_a")).unwrap();
        assert_eq!(
            (key.as_ref(), query),
            ("kb_a", None),
            "the same key twice is fine"
        );
    }

    #[test]
    fn hosts_are_told_from_what_is_not_a_host() {
        for host in [
            "kb.test",
            "KB.Test:8080",
            "kb.test:",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--bcher-kva.example",
            "a%41b.test",
            "under_score.test",
        ] {
            assert!(is_host(host.as_bytes()), "{host}");
        }
        for not_a_host in [
            "",
            ":80",
            "kb.test:-1",
            "kb.test:8o",
            "kb.test:+80",
            "kb.test:0x50",
            "kb.test: 80",
            "kb.test:80:80",
            "[zzz]",
            "[zzz]:80",
            "[::1",
            "::1",
            "[::1]x",
            "[::1]:8o",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "user:pw@kb.test",
            "user@kb.test",
            "kb test",
            "kb.test/x",
            "kb%4.test",
            "kb%zz.test",
            "k\\b.test",
        ] {
            assert!(!is_host(not_a_host.as_bytes()), "{not_a_host:?}");
        }
    }

    #[test]
    fn empty_values_are_no_key() {
        let h = headers(&[("authorization", "Bearer kb_a"), ("x-api-key", "")]);
        let (key, query) = default_key(&h, Some("key=&q=1")).unwrap();
        assert_eq!(
            (key.as_ref(), query.as_deref()),
            ("kb_a", Some("q=1")),
            "an empty X-Api-Key or ?key= is not a second key"
        );
        let h = headers(&[("x-api-key", "kb_a"), ("authorization", "Bearer  ")]);
        assert_eq!(default_key(&h, Some("key")).unwrap().0, "kb_a");
        let h = headers(&[("authorization", "Bearer "), ("x-api-key", " ")]);
        assert_eq!(
            default_key(&h, Some("key=&key")).unwrap_err(),
            Rejection::MissingKey
        );
    }

    #[test]
    fn configured_sources_only() {
        let h = headers(&[("authorization", "Bearer kb_a"), ("x-api-key", "kb_b")]);
        let bearer_only = KeySources {
            authorization: true,
            x_api_key: false,
            query: None,
        };
        let (key, query) = extract_key(&h, Some("key=name&x=1"), &bearer_only).unwrap();
        assert_eq!(
            (key.as_ref(), query.as_deref()),
            ("kb_a", Some("key=name&x=1")),
            "no query source: ?key= is the KB's, untouched, never a key"
        );
        let renamed = KeySources {
            authorization: false,
            x_api_key: false,
            query: Some("kbgate_key".into()),
        };
        let (key, query) = extract_key(&h, Some("key=1&kbgate%5Fkey=kb_c"), &renamed).unwrap();
        assert_eq!((key.as_ref(), query.as_deref()), ("kb_c", Some("key=1")));
        assert_eq!(
            extract_key(&h, Some("key=kb_a"), &renamed).unwrap_err(),
            Rejection::MissingKey,
            "headers that are not sources are not read"
        );
    }

    #[test]
    fn latencies_are_logged_as_round_milliseconds() {
        assert_eq!(millis(Duration::from_nanos(1_234_567)).to_string(), "1.234");
        assert_eq!(millis(Duration::from_micros(42)).to_string(), "0.042");
        assert_eq!(millis(Duration::from_secs(2)).to_string(), "2000");
    }

    #[test]
    fn request_ids() {
        let h = headers(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&h), "abc-123");
        let h = headers(&[("x-request-id", "bad id with spaces")]);
        let id = request_id(&h);
        assert_eq!(id.len(), 32);
        assert!(
            request_id_str(&id)
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id:?}"
        );
        assert_ne!(id, request_id(&h));
    }
}
