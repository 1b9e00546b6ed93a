//! The request path. [`Gateway::handle`] times, logs and turns refusals into responses;
//! [`Gateway::handle_inner`] is the path of DESIGN.md, read top to bottom.

use crate::authz::{self, RouteTable};
use crate::body::{self, Body};
use crate::keys::{Keyring, secret};
use crate::metrics::requests::{Observation, RequestMetrics};
use crate::metrics::{self, InFlight};
use crate::rejection::Rejection;
use crate::server::{ConnInfo, Handler};
use crate::upstream::{ForwardInfo, Upstream};
use crate::usage::UsageRecorder;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Gateway {
    pub keyring: Arc<Keyring>,
    pub routes: RouteTable,
    pub upstream: Upstream,
    pub usage: Arc<UsageRecorder>,
    pub metrics: RequestMetrics,
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
        let result = self
            .handle_inner(request.map(body::stream), &conn, &request_id, &mut log)
            .await;
        metrics::fixed().auth_decision(result.as_ref().map(|_| ()).map_err(|r| *r));
        let (mut response, outcome) = match result {
            Ok(response) => (response, "forwarded"),
            Err(rejection) => (rejection.into_response(&request_id), rejection.code()),
        };
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", id);
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
            target: "kbgate::access",
            request_id = %request_id,
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
        request_id: &str,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, Rejection> {
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
        let info = ForwardInfo {
            path: &path,
            query: forwarded_query.as_deref(),
            client_ip: conn.remote.ip(),
            proto: if conn.tls { "https" } else { "http" },
            host,
            request_id,
            key_id: &key.id,
        };
        let upstream_started = Instant::now();
        let response = self.upstream.forward(request, info).await;
        log.upstream = Some(upstream_started.elapsed());
        response
    }
}

/// Milliseconds with three decimals (whole microseconds), so log lines stay short and exact.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

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
    for value in headers.get_all("x-api-key") {
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

/// The client's X-Request-Id when it is short and plain, else a new random one.
pub fn request_id(headers: &HeaderMap) -> String {
    let client = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    match client {
        Some(id) => id.to_string(),
        None => random_hex_id(),
    }
}

/// 128 random bits as 32 lowercase hex digits, built in one allocation (it runs per request).
fn random_hex_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 0x0f)] as char);
    }
    id
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
        assert_ne!(id, request_id(&h));
    }
}
