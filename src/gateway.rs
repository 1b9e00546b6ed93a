//! The request path. [`Gateway::handle`] times, logs and turns refusals into responses;
//! [`Gateway::handle_inner`] is the path of DESIGN.md, read top to bottom.

use crate::authz::{self, RouteTable};
use crate::body::{self, Body, BoxError};
use crate::config::Limits;
use crate::cors::Cors;
use crate::keys::{Keyring, secret};
use crate::metrics::requests::{Observation, RequestMetrics};
use crate::metrics::{self, InFlight};
use crate::rejection::Rejection;
use crate::server::{ConnInfo, Handler};
use crate::upstream::{ForwardInfo, Upstream, X_REQUEST_ID};
use crate::usage::UsageRecorder;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use std::borrow::Cow;
use std::pin::Pin;
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
}

impl Handler for Gateway {
    async fn handle(&self, request: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = InFlight::start();
        let request_id = request_id(request.headers());
        let method = request.method().clone();
        let mut log = RequestLog::default();
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
                    .handle_inner(request.map(body::stream), &conn, &request_id, &mut log)
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
        let route = log.route.map(|i| self.routes.routes()[i].template.as_str());
        tracing::info!(
            target: crate::log_format::ACCESS_TARGET,
            request_id = %request_id_str(&request_id),
            key_id = log.key_id.as_deref().unwrap_or("-"),
            method = %method,
            route = route.unwrap_or("-"),
            status,
            outcome,
            latency_ms = millis(elapsed),
            upstream_ms = log.upstream.map(millis),
        );
        response
    }
}

impl Gateway {
    async fn handle_inner(
        &self,
        request: Request<Body>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, Rejection> {
        check_request(&request, &self.limits)?;
        let path =
            authz::canonicalize_path(request.uri().path()).map_err(|_| Rejection::InvalidPath)?;
        let (secret, forwarded_query) = extract_key(request.headers(), request.uri().query())?;
        if !secret::is_well_formed(&secret) {
            return Err(Rejection::InvalidKey);
        }
        let key = self.keyring.verify(&secret).await?;
        log.key_id = Some(key.id.clone());
        self.usage.record(&key.id);

        let route = self
            .routes
            .lookup(request.method(), &path)
            .ok_or(Rejection::RouteNotAllowed)?;
        log.route = Some(route.index);
        if !authz::grants(key.scope, &key.permissions, &route.permission) {
            return Err(Rejection::InsufficientPermissions);
        }

        let forwarded_query = forwarded_query.map(Cow::into_owned);
        let host = request.headers().get(header::HOST).cloned().or_else(|| {
            request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let max_body = route.max_body.unwrap_or(self.limits.max_body);
        let (request, body_fault) = guard_body(request, max_body, self.limits.body_timeout)?;
        let info = ForwardInfo {
            path: &path,
            query: forwarded_query.as_deref(),
            client_ip: &conn.client_ip,
            proto: if conn.tls { "https" } else { "http" },
            host,
            request_id,
            key_id: &key.id,
        };
        let upstream_started = Instant::now();
        let response = self.upstream.forward(request, info).await;
        log.upstream = Some(upstream_started.elapsed());
        // A request that failed because its own body did is the client's fault, not the KB's.
        response.map_err(|rejection| body_fault.get().map_or(rejection, |f| f.rejection()))
    }
}

/// The checks of the request itself that hyper leaves to the application: no tunnels or
/// upgrades, sizes within the limits, one Host that agrees with the target (RFC 9112 §3.2),
/// and a Transfer-Encoding that is exactly `chunked` (anything else cannot be forwarded as
/// it was meant: the gateway re-frames every body).
fn check_request<B>(request: &Request<B>, limits: &Limits) -> Result<(), Rejection> {
    if request.method() == Method::CONNECT {
        return Err(Rejection::ConnectNotAllowed);
    }
    let headers = request.headers();
    if headers.contains_key(header::UPGRADE) {
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

/// HTTP/1.1 needs exactly one Host; no version may carry two, an invalid one, or one that
/// disagrees with the authority of an absolute-form target or HTTP/2 `:authority`.
fn check_host(version: Version, uri: &http::Uri, headers: &HeaderMap) -> Result<(), Rejection> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (host, second) = (hosts.next(), hosts.next());
    let valid = |host: &HeaderValue| {
        host.is_empty()
            || http::uri::Authority::try_from(host.as_bytes())
                .is_ok_and(|a| !a.as_str().contains('@'))
    };
    match (host, second, uri.authority()) {
        (_, Some(_), _) => Err(Rejection::BadRequest),
        (None, None, _) if version == Version::HTTP_11 => Err(Rejection::BadRequest),
        (Some(host), None, _) if !valid(host) => Err(Rejection::BadRequest),
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

/// Refuses a body declared larger than `max_body` at once; wraps any other non-empty body so
/// that it fails, and the upstream request with it, when it grows past `max_body` or stalls
/// for `idle`. The returned cell says why, once it has failed.
fn guard_body(
    request: Request<Body>,
    max_body: u64,
    idle: Duration,
) -> Result<(Request<Body>, Arc<OnceLock<BodyFault>>), Rejection> {
    let fault = Arc::new(OnceLock::new());
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
    fault: Arc<OnceLock<BodyFault>>,
}

impl GuardedBody {
    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let _ = self.fault.set(fault);
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
        if let Some(&fault) = this.fault.get() {
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
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let _ = this.fault.set(BodyFault::Broken);
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

/// Milliseconds with three decimals (whole microseconds), so log lines stay short and exact.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// Built once: looking a header up by a string literal parses the name on every request.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Finds the client's key in `Authorization: Bearer`, `X-Api-Key` and `?key=`.
/// Returns the key and the query to forward (without any `key` parameter).
/// Two different keys in one request are ambiguous; the same key twice is fine.
pub fn extract_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<(Cow<'a, str>, Option<Cow<'a, str>>), Rejection> {
    let mut found: Option<Cow<'a, str>> = None;
    let mut offer = |candidate: Cow<'a, str>| match &found {
        Some(existing) if *existing != candidate => Err(Rejection::AmbiguousKey),
        Some(_) => Ok(()),
        None => {
            found = Some(candidate);
            Ok(())
        }
    };
    for value in headers.get_all(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Rejection::InvalidKey)?;
        if let Some((scheme, token)) = value.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
        {
            offer(Cow::Borrowed(token.trim()))?;
        }
    }
    for value in headers.get_all(X_API_KEY) {
        offer(Cow::Borrowed(
            value.to_str().map_err(|_| Rejection::InvalidKey)?.trim(),
        ))?;
    }
    let mut query_has_key = false;
    for (name, value) in query_pairs(query.unwrap_or("")) {
        if decode(name) == "key" {
            query_has_key = true;
            offer(decode(value))?;
        }
    }
    let secret = found.ok_or(Rejection::MissingKey)?;
    let forwarded_query = match query {
        Some(q) if query_has_key => Some(query_without_key(q))
            .filter(|q| !q.is_empty())
            .map(Cow::Owned),
        other => other.map(Cow::Borrowed),
    };
    Ok((secret, forwarded_query))
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

fn query_without_key(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| decode(pair.split_once('=').map_or(*pair, |(n, _)| n)) != "key")
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

    #[test]
    fn key_sources() {
        let h = headers(&[("authorization", "Bearer kb_a")]);
        assert_eq!(extract_key(&h, None).unwrap().0, "kb_a");
        let h = headers(&[("authorization", "bearer  kb_a ")]);
        assert_eq!(extract_key(&h, None).unwrap().0, "kb_a");
        let h = headers(&[("x-api-key", "kb_b")]);
        assert_eq!(extract_key(&h, None).unwrap().0, "kb_b");
        let none = HeaderMap::new();
        let (key, query) = extract_key(&none, Some("a=1&key=kb_c&b=2")).unwrap();
        assert_eq!(key, "kb_c");
        assert_eq!(query.as_deref(), Some("a=1&b=2"));
        let (_, query) = extract_key(&none, Some("k%65y=kb_c")).unwrap();
        assert_eq!(query, None, "an encoded key name is still the key");
    }

    #[test]
    fn missing_and_ambiguous_keys() {
        assert_eq!(
            extract_key(&HeaderMap::new(), Some("q=1")).unwrap_err(),
            Rejection::MissingKey
        );
        let h = headers(&[("authorization", "Basic abc")]);
        assert_eq!(extract_key(&h, None).unwrap_err(), Rejection::MissingKey);
        let h = headers(&[("authorization", "Bearer kb_a"), ("x-api-key", "kb_b")]);
        assert_eq!(extract_key(&h, None).unwrap_err(), Rejection::AmbiguousKey);
        let h = headers(&[("x-api-key", "kb_a"), ("x-api-key", "kb_b")]);
        assert_eq!(extract_key(&h, None).unwrap_err(), Rejection::AmbiguousKey);
        let h = headers(&[("x-api-key", "kb_a")]);
        assert_eq!(
            extract_key(&h, Some("key=kb_b")).unwrap_err(),
            Rejection::AmbiguousKey
        );
        let (key, query) = extract_key(&h, Some("key=kb_a")).unwrap();
        assert_eq!(
            (key.as_ref(), query),
            ("kb_a", None),
            "the same key twice is fine"
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
