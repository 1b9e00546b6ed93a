//! The request path. [`Gateway::handle`] times, meters, logs and turns refusals into
//! responses; under it, [`Gateway::admit`] is the path of DESIGN.md read top to bottom (request
//! checks, canonical path, key, verify, route, grant) and [`Gateway::forward`] sends what was
//! admitted to the KB.

mod body_guard;
mod checks;
mod key_notices;
mod key_source;

use crate::access_log::{AccessLine, BytesIn};
use crate::authz::{self, routes::Route, routes::RouteTable};
use crate::body::{self, Body, BoxError};
use crate::cors::Cors;
use crate::events::content;
use crate::keys::limits::KeyLimits;
use crate::keys::{KeyGrant, KeySources, Keyring};
use crate::limits::{LimitReport, Limiter, QuotaHold};
use crate::metrics::requests::{FORWARDED, Observation, RequestMetrics};
use crate::metrics::{self, InFlight, LimitKind, LimitOutcome};
use crate::net::{self, CidrList};
use crate::rejection::{RefusalClass, Rejection};
use crate::server::{ConnInfo, Handler, Limits};
use crate::upstream::{ForwardInfo, Upstream, X_REQUEST_ID};
use crate::usage::{self, UsageRecorder};
use body_guard::guard_body;
use bytes::Bytes;
use checks::check_request;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
pub use key_notices::KeyNotices;
use key_source::extract_key;
use std::borrow::Cow;
use std::sync::Arc;
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
    /// Per-key rate and quota decisions; a key without limits never reaches it.
    pub limiter: Arc<Limiter>,
    /// Content events (`routes[].event`); None: no route emits any.
    pub content_events: Option<Arc<crate::events::content::ContentEvents>>,
    /// `Kbgate-Key-Expires`, `Deprecation` and `Sunset` on proxied responses.
    pub key_notices: KeyNotices,
    /// `quota.threshold` and `key.rate_limited`; None: not emitted.
    pub limit_events: Option<Arc<crate::events::limit_events::LimitEvents>>,
}

/// What the access log says about a request beyond its status, filled in as the request goes.
/// Public for benches/hot_path.rs, which passes one to [`Gateway::admit`].
#[derive(Default)]
pub struct RequestLog {
    key_id: Option<Arc<str>>,
    /// Index in the route table.
    route: Option<usize>,
    upstream: Option<Duration>,
    /// Request body bytes read, counted by the body guard.
    bytes_in: Option<Arc<dyn BytesIn>>,
    /// Where the key's rate and quota stand, for the response headers.
    limits: Option<LimitReport>,
}

impl Handler for Gateway {
    /// Times, meters and logs the request, and turns a refusal into its response.
    async fn handle<B>(&self, request: Request<B>, conn: &ConnInfo) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        // Admission reads the head only, lent from here; the body is apart (it is not Sync,
        // and a future that held a reference to it across the key lookup would not be Send).
        let (head, body) = request.into_parts();
        let head = Request::from_parts(head, ());
        let _in_flight = InFlight::start();
        let own = OwnHeaders::of(head.headers());
        let request_id = request_id_or_new(own.request_id);
        let user_agent = own.user_agent.cloned();
        let method = head.method().clone();
        let client_ip = self.client_ip_for_log(conn, head.headers());
        let mut log = RequestLog::default();
        let mut path = None;
        // A CORS preflight is the gateway's to answer: no key, no KB.
        let cors = self.cors.as_ref().map(|cors| (cors, cors.inspect(&head)));
        let preflight = cors.as_ref().is_some_and(|(_, seen)| seen.preflight);
        let result = match &cors {
            Some((cors, seen)) if seen.preflight => {
                check_request(&head, &self.limits).and_then(|()| cors.preflight(seen))
            }
            _ => {
                // No body (nearly every GET): the empty body, which is not allocated, rather
                // than the finished stream boxed (~70 instructions; callgrind, benches/load).
                let body = match body.is_end_stream() {
                    true => body::empty(),
                    false => body::stream(body),
                };
                let lent = Lent {
                    head: &head,
                    host: own.host,
                    conn,
                    request_id: &request_id,
                };
                let result = self.handle_inner(&lent, body, &mut log, &mut path).await;
                count_auth_decision(&result);
                result
            }
        };
        let (mut response, outcome) = match result {
            Ok(response) if preflight => (response, "preflight"),
            Ok(response) => (response, FORWARDED),
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
        if let Some(report) = &log.limits {
            report.write(self.limiter.settings().headers, response.headers_mut());
        }
        if let (Some(events), Some(report), Some(key_id)) =
            (&self.limit_events, &log.limits, &log.key_id)
        {
            let due = events.observe(key_id, report, outcome == Rejection::RateLimited.code());
            if !due.is_empty() {
                events.write(due).await;
            }
        }
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        // How a request of a known key ended, for its usage history (counted in `admit`).
        if let Some(key_id) = &log.key_id {
            let how = match outcome {
                FORWARDED => usage::Outcome::Forwarded(status),
                code => usage::Outcome::Refused(code),
            };
            self.usage.record_outcome(key_id, how);
        }
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

    /// The key's address allowlist, on the client's address behind trusted proxies.
    fn check_address(
        &self,
        limits: &KeyLimits,
        conn: &ConnInfo,
        headers: &HeaderMap,
    ) -> Result<(), Rejection> {
        let Some(allowed) = &limits.allowed else {
            return Ok(());
        };
        let decisions = metrics::fixed();
        if allowed.contains(self.client_address(conn, headers)) {
            decisions.limit_decision(LimitKind::Address, LimitOutcome::Allowed);
            Ok(())
        } else {
            decisions.limit_decision(LimitKind::Address, LimitOutcome::Refused);
            Err(Rejection::IpNotAllowed)
        }
    }

    async fn handle_inner(
        &self,
        request: &Lent<'_>,
        body: Body,
        log: &mut RequestLog,
        canonical_path: &mut Option<String>,
    ) -> Result<Response<Body>, Rejection> {
        let mut admitted = self
            .admit(request.head, request.conn, canonical_path, log)
            .await?;
        let quota = admitted.quota.take();
        let result = self.forward(request, body, admitted, log).await;
        // A quota unit held for the request is kept only for a success (dropped, it is given
        // back); a `counts: all` quota holds none.
        if let (Some(quota), Ok(response)) = (quota, &result)
            && (response.status().is_success() || response.status().is_redirection())
        {
            quota.keep();
        }
        result
    }

    /// Admission, top to bottom: the checks of the request itself, its canonical path, its
    /// key, the key verified, the route the request asks for, and the grant of that route's
    /// permission. Returns what was admitted; what it learned on the way (key id, route) is
    /// written to `log` as it goes, so that a refusal is logged with as much as was known.
    /// Public for benches/hot_path.rs, which times this very function.
    pub async fn admit<'a>(
        &'a self,
        request: &Request<()>,
        conn: &ConnInfo,
        canonical_path: &'a mut Option<String>,
        log: &mut RequestLog,
    ) -> Result<Admitted<'a>, Rejection> {
        check_request(request, &self.limits)?;
        let path: &str =
            canonical_path.insert(crate::path::canonicalize_path(request.uri().path())?);
        let (secret, forwarded_query) =
            extract_key(request.headers(), request.uri().query(), &self.key_sources)?;
        let key = self.keyring.verify(&secret).await?;
        log.key_id = Some(key.id.clone());
        self.usage.record(&key.id);
        let query = forwarded_query.as_deref();
        let route = match self.authorize(&key, request, conn, path, query, log) {
            Ok(route) => route,
            Err(rejection) => {
                // A limited key's response shows its limits even when refused before them.
                if let Some(limits) = &key.limits {
                    log.limits = self.limiter.peek(&key.id, limits).await;
                }
                return Err(rejection);
            }
        };
        let quota = match &key.limits {
            Some(limits) => {
                let report = log.limits.insert(LimitReport::default());
                self.limiter.decide(&key.id, limits, report).await?
            }
            None => None,
        };
        Ok(Admitted {
            key,
            route,
            path,
            query: forwarded_query.map(Cow::into_owned),
            quota,
        })
    }

    /// What the verified key may do here: its address allowlist, the route the request asks
    /// for (written to `log`), that route's permission granted, and the route's query rule.
    fn authorize(
        &self,
        key: &KeyGrant,
        request: &Request<()>,
        conn: &ConnInfo,
        path: &str,
        forwarded_query: Option<&str>,
        log: &mut RequestLog,
    ) -> Result<&Route, Rejection> {
        if let Some(limits) = &key.limits {
            self.check_address(limits, conn, request.headers())?;
        }
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
            && !rule.permits(forwarded_query)
        {
            return Err(Rejection::QueryNotAllowed);
        }
        Ok(route)
    }

    /// Sends an admitted request to the KB, its body under the guard of the route's limits.
    /// The head is lent, not moved: the request path's futures stay small, and the upstream
    /// request copies from it what it sends.
    async fn forward(
        &self,
        request: &Lent<'_>,
        body: Body,
        admitted: Admitted<'_>,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, Rejection> {
        let Lent {
            head,
            host,
            conn,
            request_id,
        } = *request;
        let Admitted {
            key,
            route,
            path,
            query: forwarded_query,
            quota: _,
        } = admitted;
        let host = host.cloned().or_else(|| {
            head.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let chain = net::forwarded_chain(conn.remote.ip(), head.headers(), &self.trusted_proxies);
        let max_body = route.max_body.unwrap_or(self.limits.max_body);
        let (body, body_state) = guard_body(body, max_body, self.limits.body_timeout)?;
        if let Some(state) = &body_state {
            log.bytes_in = Some(state.clone());
        }
        let info = ForwardInfo {
            path,
            query: forwarded_query.as_deref(),
            client_ip: chain.as_ref().unwrap_or(&conn.client_ip),
            proto: if conn.tls { "https" } else { "http" },
            host,
            request_id,
            key_id: key.id_header.as_ref(),
            started: Instant::now(),
        };
        let method = head.method();
        let upstream_started = info.started;
        let mut response = self.upstream.forward(head, body, info).await;
        log.upstream = Some(upstream_started.elapsed());
        if let Ok(answer) = &mut response {
            self.key_notices.write(&key, answer.headers_mut());
        }
        if let (Ok(answer), Some(event), Some(events)) =
            (&mut response, route.event(method), &self.content_events)
            && answer.status().is_success()
        {
            let created_id = if method == http::Method::POST {
                content::take_created_id(answer, self.limits.body_timeout)
                    .await
                    .map_err(|error| match error {
                        content::ReadError::Timeout => Rejection::UpstreamTimeout,
                        content::ReadError::Failed => Rejection::UpstreamUnavailable,
                    })?
            } else {
                None
            };
            let write = content::Write {
                event,
                template: &route.template,
                method: method.as_str(),
                path,
                key_id: &key.id,
                key_name: key.name(),
                status: answer.status().as_u16(),
                request_id: request_id.to_str().unwrap_or_default(),
                created_id,
            };
            // The KB has made the change: the client gets its answer even if the event could
            // not be written, and the loss is logged loudly.
            if let Err(error) = events.emit(&write).await {
                tracing::error!(%error, event, "a content event could not be written to the outbox");
            }
        }
        // A request that failed because its own body did is the client's fault, not the KB's.
        response.map_err(|error| {
            body_state
                .and_then(|state| state.fault.get().copied())
                .map_or(Rejection::from(error), |f| f.rejection())
        })
    }
}

/// Counts the auth decision a request's outcome implies: none for a request refused before
/// any key was looked at (see [`RefusalClass`]).
fn count_auth_decision(result: &Result<Response<Body>, Rejection>) {
    let fixed = metrics::fixed();
    match result {
        Ok(_) => fixed.auth_allowed(),
        Err(rejection) => match rejection.class() {
            RefusalClass::Auth => fixed.auth_refused(rejection.code()),
            RefusalClass::Forwarding => fixed.auth_allowed(),
            RefusalClass::Request => {}
        },
    }
}

/// What the request path lends its inner steps of the request it is serving: the head (the
/// body goes its own way), and what was read from it or the connection on arrival.
#[derive(Clone, Copy)]
struct Lent<'r> {
    head: &'r Request<()>,
    /// The first `Host`, found with the gateway's own headers (see [`OwnHeaders`]).
    host: Option<&'r HeaderValue>,
    conn: &'r ConnInfo,
    request_id: &'r HeaderValue,
}

/// What [`Gateway::admit`] let through: all that forwarding needs to know of the request
/// beyond its head and body.
pub struct Admitted<'a> {
    pub key: Arc<KeyGrant>,
    pub route: &'a Route,
    /// The canonical path.
    pub path: &'a str,
    /// The query to forward: the client's, without the key's parameter when the query is a
    /// key source.
    pub query: Option<String>,
    /// The quota unit this request holds until the KB answers.
    pub quota: Option<QuotaHold<'a>>,
}

/// The client's X-Request-Id when it is short and plain, else a new random one. Kept as a
/// header value: the response and the upstream request carry it without a copy each.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    request_id_or_new(headers.get(X_REQUEST_ID))
}

/// The first value of each request header the gateway reads for itself, found in one pass
/// over the headers (a lookup by name each cost ~130 instructions per request; callgrind,
/// benches/load).
#[derive(Default, Debug, PartialEq)]
struct OwnHeaders<'h> {
    request_id: Option<&'h HeaderValue>,
    user_agent: Option<&'h HeaderValue>,
    host: Option<&'h HeaderValue>,
}

impl<'h> OwnHeaders<'h> {
    fn of(headers: &'h HeaderMap) -> OwnHeaders<'h> {
        let mut own = OwnHeaders::default();
        for (name, value) in headers {
            let slot = if name == header::HOST {
                &mut own.host
            } else if name == header::USER_AGENT {
                &mut own.user_agent
            } else if name == X_REQUEST_ID {
                &mut own.request_id
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        own
    }
}

/// [`request_id`] of the client's value, if it sent one.
fn request_id_or_new(client: Option<&HeaderValue>) -> HeaderValue {
    client
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

/// 128 random bits as 32 lowercase hex digits. An id names a request in logs; it guards
/// nothing, so a fast generator seeded from the OS once per thread makes it (rand's thread
/// generator, a cryptographic one, cost about 175 instructions per request).
fn random_request_id() -> HeaderValue {
    use rand::RngExt as _;
    use rand::rngs::SmallRng;
    thread_local! {
        static IDS: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(rand::make_rng());
    }
    // One u128, not `[u8; 16]`: rand draws an array's elements one by one (about 250
    // instructions per id; callgrind, benches/load).
    let id = hex_digits(IDS.with_borrow_mut(|rng| rng.random::<u128>()));
    // The digits and their reference count in one allocation: from a slice, the id took one
    // for its bytes and another when first cloned (for the upstream request, the response and
    // the access line), to share them (DHAT, benches/load).
    HeaderValue::from_maybe_shared(Bytes::from_owner(id))
        .expect("hex digits are a valid header value")
}

/// `n` as 32 lowercase hex digits, one table lookup per byte (a lookup per digit cost ~110
/// instructions an id).
fn hex_digits(n: u128) -> [u8; 32] {
    const HEX_PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0; 2]; 256];
        let mut b = 0;
        while b < 256 {
            pairs[b] = [HEX[b >> 4], HEX[b & 0x0f]];
            b += 1;
        }
        pairs
    };
    let mut digits = [0u8; 32];
    for (pair, b) in digits.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    digits
}

/// The request id as text: what [`request_id`] returns is always visible ASCII.
pub fn request_id_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::millis;
    use key_source::tests::headers;

    #[test]
    fn latencies_are_logged_as_round_milliseconds() {
        assert_eq!(millis(Duration::from_nanos(1_234_567)).to_string(), "1.234");
        assert_eq!(millis(Duration::from_micros(42)).to_string(), "0.042");
        assert_eq!(millis(Duration::from_secs(2)).to_string(), "2000");
    }

    #[test]
    fn the_gateways_own_headers_are_the_first_of_their_names() {
        let h = headers(&[
            ("accept", "*/*"),
            ("user-agent", "first"),
            ("x-request-id", "one"),
            ("host", "kb.example"),
            ("user-agent", "second"),
            ("x-request-id", "two"),
            ("host", "other.example"),
        ]);
        let own = OwnHeaders::of(&h);
        assert_eq!(own.request_id, h.get(X_REQUEST_ID));
        assert_eq!(own.user_agent, h.get(header::USER_AGENT));
        assert_eq!(own.host, h.get(header::HOST));
        assert_eq!(own.request_id.unwrap(), "one");
        assert_eq!(own.user_agent.unwrap(), "first");
        assert_eq!(own.host.unwrap(), "kb.example");
        assert_eq!(
            OwnHeaders::of(&headers(&[("accept", "*/*")])),
            OwnHeaders::default()
        );
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

    #[test]
    fn hex_digits_are_those_of_the_formatter() {
        let mut n = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for _ in 0..1000 {
            assert_eq!(hex_digits(n), format!("{n:032x}").as_bytes(), "{n}");
            n = n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ (n >> 7);
        }
        assert_eq!(hex_digits(0), [b'0'; 32]);
        assert_eq!(hex_digits(u128::MAX), [b'f'; 32]);
    }
}
