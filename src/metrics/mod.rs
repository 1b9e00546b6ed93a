//! Prometheus metrics: every name in one place, one recorder per process, handles registered
//! once. The request path only increments handles it already holds; no metric label ever comes
//! from a raw path or a secret (route templates, key ids and fixed words only).
//!
//! - [`install`] sets up the process-wide recorder (idempotent: tests run several gateways in
//!   one process) and returns the handle that renders `/metrics`.
//! - [`fixed`] holds the handles whose labels are known in advance (auth decisions, lookups,
//!   errors, in-flight); before [`install`] they are no-ops.
//! - [`requests::RequestMetrics`] holds one gateway's per-route and per-key handles.
//! - [`keys::KeyMetrics`] counts requests per key and renders `kbgate_key_info`.
//! - [`latency`] keeps and renders the two request-duration histograms.
//! - [`process`] renders the standard `process_*` metrics from `/proc/self` at each scrape.

pub mod keys;
mod latency;
mod process;
pub mod requests;

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};

pub const REQUESTS: &str = "kbgate_requests_total";
pub const REQUEST_DURATION: &str = "kbgate_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "kbgate_upstream_duration_seconds";
pub const IN_FLIGHT: &str = "kbgate_requests_in_flight";
pub const AUTH_DECISIONS: &str = "kbgate_auth_decisions_total";
pub const HOT_TIER_LOOKUPS: &str = "kbgate_hot_tier_lookups_total";
pub const STORE_LOOKUPS: &str = "kbgate_store_lookups_total";
pub const STORE_ERRORS: &str = "kbgate_store_errors_total";
pub const UPSTREAM_ERRORS: &str = "kbgate_upstream_errors_total";
pub const KEY_REQUESTS: &str = "kbgate_key_requests_total";
pub const KEY_INFO: &str = "kbgate_key_info";
pub const BUILD_INFO: &str = "kbgate_build_info";
pub const LIMIT_DECISIONS: &str = "kbgate_limit_decisions_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static FIXED: OnceLock<Fixed> = OnceLock::new();
static NOOP: Fixed = Fixed::noop();

/// Installs the process-wide Prometheus recorder the first time it is called; every call
/// returns a handle to that one recorder. `auth_refusals` are the outcome codes of
/// `kbgate_auth_decisions_total` besides `allowed`, registered at 0 so that `rate()` sees the
/// first refusal (the first call's list is the one kept).
pub fn install(auth_refusals: impl IntoIterator<Item = &'static str>) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::error!("another metrics recorder is installed; /metrics stays empty");
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            let _ = FIXED.set(Fixed::register(auth_refusals));
            handle
        })
        .clone()
}

/// The fixed-label handles: live once [`install`] ran, no-ops before.
pub fn fixed() -> &'static Fixed {
    FIXED.get().unwrap_or(&NOOP)
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "Gateway requests by route template, method, status class and outcome code."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Gateway requests being handled (until response headers)."
    );
    describe_counter!(
        AUTH_DECISIONS,
        "Key checks by outcome: allowed, or the refusal code."
    );
    describe_counter!(
        HOT_TIER_LOOKUPS,
        "In-process key cache lookups by result (hit, negative_hit, miss)."
    );
    describe_counter!(
        STORE_LOOKUPS,
        "Key store lookups after a hot-tier miss by result (found, not_found, error)."
    );
    describe_counter!(STORE_ERRORS, "Key store errors by operation and kind.");
    describe_counter!(
        UPSTREAM_ERRORS,
        "Failed upstream requests by kind (connect, request, timeout)."
    );
    describe_counter!(
        KEY_REQUESTS,
        "Requests with a verified key, by key id (\"other\" past metrics.per_key_limit)."
    );
    describe_counter!(
        LIMIT_DECISIONS,
        "Per-key limit decisions by limit (rate, quota, address) and outcome (allowed, refused, store_error)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version of the running kbgate.");
}

/// Where a store error happened.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StoreOp {
    /// Verifying a key after a hot-tier miss.
    Lookup = 0,
    /// A key change or read through the admin API.
    Admin = 1,
    /// Writing batched per-key usage.
    UsageFlush = 2,
    /// The readiness check.
    Ping = 3,
}

const STORE_OPS: [&str; 4] = ["lookup", "admin", "usage_flush", "ping"];
const STORE_ERROR_KINDS: [&str; 3] = ["unavailable", "corrupt", "conflict"];

/// What kind of store error it was (the store names its errors' kinds).
#[derive(Clone, Copy, Debug)]
pub enum StoreErrorKind {
    Unavailable = 0,
    Corrupt = 1,
    Conflict = 2,
}

/// Why an upstream request failed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UpstreamError {
    /// No connection could be made.
    Connect = 0,
    /// The connection failed while sending or before the response headers.
    Request = 1,
    /// No response headers within `upstream.timeout`.
    Timeout = 2,
}

const UPSTREAM_ERROR_KINDS: [&str; 3] = ["connect", "request", "timeout"];

/// Which per-key limit decided (`limit` of `kbgate_limit_decisions_total`).
#[derive(Clone, Copy, Debug)]
pub enum LimitKind {
    Rate = 0,
    Quota = 1,
    Address = 2,
}

/// How a per-key limit decided: `StoreError` when the shared store could not be asked (the
/// request then went by `limits.on_store_error`).
#[derive(Clone, Copy, Debug)]
pub enum LimitOutcome {
    Allowed = 0,
    Refused = 1,
    StoreError = 2,
}

const LIMIT_KINDS: [&str; 3] = ["rate", "quota", "address"];
const LIMIT_OUTCOMES: [&str; 3] = ["allowed", "refused", "store_error"];

/// Handles whose label sets are known before the first request.
pub struct Fixed {
    auth_allowed: Counter,
    /// One per refusal code given to [`install`].
    auth_refused: Vec<(&'static str, Counter)>,
    pub(crate) hot_tier_hit: Counter,
    pub(crate) hot_tier_miss: Counter,
    /// A well-formed secret the negative cache already knows to be unknown.
    pub(crate) hot_tier_negative_hit: Counter,
    pub(crate) store_found: Counter,
    pub(crate) store_not_found: Counter,
    pub(crate) store_error: Counter,
    store_errors: [[Counter; STORE_ERROR_KINDS.len()]; STORE_OPS.len()],
    upstream_errors: [Counter; UPSTREAM_ERROR_KINDS.len()],
    limit_decisions: [[Counter; LIMIT_OUTCOMES.len()]; LIMIT_KINDS.len()],
    pub(crate) in_flight: Gauge,
}

impl Fixed {
    const fn noop() -> Fixed {
        Fixed {
            auth_allowed: Counter::noop(),
            auth_refused: Vec::new(),
            hot_tier_hit: Counter::noop(),
            hot_tier_miss: Counter::noop(),
            hot_tier_negative_hit: Counter::noop(),
            store_found: Counter::noop(),
            store_not_found: Counter::noop(),
            store_error: Counter::noop(),
            store_errors: [const { [const { Counter::noop() }; STORE_ERROR_KINDS.len()] };
                STORE_OPS.len()],
            upstream_errors: [const { Counter::noop() }; UPSTREAM_ERROR_KINDS.len()],
            limit_decisions: [const { [const { Counter::noop() }; LIMIT_OUTCOMES.len()] };
                LIMIT_KINDS.len()],
            in_flight: Gauge::noop(),
        }
    }

    fn register(auth_refusals: impl IntoIterator<Item = &'static str>) -> Fixed {
        let lookup = |name: &'static str, result: &'static str| counter!(name, "result" => result);
        Fixed {
            auth_allowed: counter!(AUTH_DECISIONS, "outcome" => "allowed"),
            auth_refused: auth_refusals
                .into_iter()
                .map(|code| (code, counter!(AUTH_DECISIONS, "outcome" => code)))
                .collect(),
            hot_tier_hit: lookup(HOT_TIER_LOOKUPS, "hit"),
            hot_tier_miss: lookup(HOT_TIER_LOOKUPS, "miss"),
            hot_tier_negative_hit: lookup(HOT_TIER_LOOKUPS, "negative_hit"),
            store_found: lookup(STORE_LOOKUPS, "found"),
            store_not_found: lookup(STORE_LOOKUPS, "not_found"),
            store_error: lookup(STORE_LOOKUPS, "error"),
            store_errors: STORE_OPS.map(|op| {
                STORE_ERROR_KINDS.map(|kind| counter!(STORE_ERRORS, "op" => op, "kind" => kind))
            }),
            upstream_errors: UPSTREAM_ERROR_KINDS
                .map(|kind| counter!(UPSTREAM_ERRORS, "kind" => kind)),
            limit_decisions: LIMIT_KINDS.map(|limit| {
                LIMIT_OUTCOMES.map(
                    |outcome| counter!(LIMIT_DECISIONS, "limit" => limit, "outcome" => outcome),
                )
            }),
            in_flight: metrics::gauge!(IN_FLIGHT),
        }
    }

    /// Counts a request whose key was allowed (its forwarding may still have failed).
    pub fn auth_allowed(&self) {
        self.auth_allowed.increment(1);
    }

    /// Counts a key check refused with `code`, one of the codes given to [`install`].
    pub(crate) fn auth_refused(&self, code: &str) {
        if let Some((_, counter)) = self.auth_refused.iter().find(|(c, _)| *c == code) {
            counter.increment(1);
        }
    }

    pub(crate) fn store_error(&self, op: StoreOp, kind: StoreErrorKind) {
        self.store_errors[op as usize][kind as usize].increment(1);
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].increment(1);
    }

    pub fn limit_decision(&self, limit: LimitKind, outcome: LimitOutcome) {
        self.limit_decisions[limit as usize][outcome as usize].increment(1);
    }
}

/// Counts a request as in flight until dropped, however the request ends.
pub struct InFlight(&'static Fixed);

impl InFlight {
    pub fn start() -> InFlight {
        let fixed = fixed();
        fixed.in_flight.increment(1.0);
        InFlight(fixed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.decrement(1.0);
    }
}

/// `/metrics`: the recorder's text followed by the latency histograms and `kbgate_key_info`.
pub(crate) fn render(handle: &PrometheusHandle, per_key: Option<&Arc<keys::KeyMetrics>>) -> String {
    let mut text = handle.render();
    latency::render(&mut text);
    if let Some(per_key) = per_key {
        per_key.render(&mut text);
    }
    process::render(&mut text);
    text
}

/// Escapes a label value as the text format requires: backslash, double quote, newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
