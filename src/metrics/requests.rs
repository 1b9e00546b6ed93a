//! One gateway's request metrics. Every handle is registered on first use and cached (per-route
//! slots are laid out when the gateway is built), so a route that sees no traffic adds no
//! series, and a request only hashes a few small words and increments.

use super::keys::KeyMetrics;
use super::latency::{self, Latency};
use super::{REQUEST_DURATION, REQUESTS, UPSTREAM_DURATION};
use crate::FastMap;
use http::Method;
use metrics::{Counter, counter};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The route label of a request refused before its route was known (bad path, key refused).
pub const NO_ROUTE: &str = "none";

/// What a finished request tells the metrics.
pub struct Observation<'a> {
    /// Index in the route table, when a route matched.
    pub route: Option<usize>,
    pub method: &'a Method,
    pub status: u16,
    /// `forwarded`, `preflight` (CORS) or the refusal code.
    pub outcome: &'static str,
    pub key_id: Option<&'a Arc<str>>,
    pub elapsed: Duration,
    pub upstream: Option<Duration>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CounterKey {
    route: usize,
    method: &'static str,
    status_class: u16,
    outcome: &'static str,
}

struct RouteHandles {
    label: String,
    duration: OnceLock<Arc<Latency>>,
    upstream: OnceLock<Arc<Latency>>,
    /// The request counters of forwarded requests, by method and status class (see
    /// [`forwarded_slot`]): the common case, found without hashing its labels.
    forwarded: [OnceLock<Counter>; METHODS.len() * STATUS_CLASSES],
}

/// The method labels; anything else is `other`, so no client can grow the label set.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

pub struct RequestMetrics {
    /// One per route in table order, then one for [`NO_ROUTE`].
    routes: Vec<RouteHandles>,
    requests: FastMap<CounterKey, Counter>,
    per_key: Option<Arc<KeyMetrics>>,
}

impl RequestMetrics {
    /// `route_templates` in route-table order: a request's route is its index there.
    pub fn new<'a>(
        route_templates: impl IntoIterator<Item = &'a str>,
        per_key: Option<Arc<KeyMetrics>>,
    ) -> RequestMetrics {
        let labels = route_templates
            .into_iter()
            .chain([NO_ROUTE])
            .map(str::to_string);
        let routes = labels
            .map(|label| RouteHandles {
                label,
                duration: OnceLock::new(),
                upstream: OnceLock::new(),
                forwarded: std::array::from_fn(|_| OnceLock::new()),
            })
            .collect();
        RequestMetrics {
            routes,
            requests: FastMap::default(),
            per_key,
        }
    }

    pub fn observe(&self, o: &Observation<'_>) {
        let route = o.route.unwrap_or(self.routes.len() - 1);
        let handles = &self.routes[route];
        lazy(&handles.duration, REQUEST_DURATION, &handles.label).record(o.elapsed);
        if let Some(upstream) = o.upstream {
            lazy(&handles.upstream, UPSTREAM_DURATION, &handles.label).record(upstream);
        }
        let method = method_index(o.method);
        let key = CounterKey {
            route,
            method: METHODS[method],
            status_class: o.status / 100,
            outcome: o.outcome,
        };
        let register = || {
            counter!(REQUESTS,
                "route" => handles.label.clone(),
                "method" => key.method,
                "status_class" => format!("{}xx", key.status_class),
                "outcome" => key.outcome)
        };
        if o.outcome == FORWARDED {
            handles.forwarded[forwarded_slot(method, key.status_class)]
                .get_or_init(register)
                .increment(1);
        } else {
            self.count_refusal(key, register);
        }
        if let (Some(per_key), Some(id)) = (&self.per_key, o.key_id) {
            per_key.count(id);
        }
    }

    fn count_refusal(&self, key: CounterKey, register: impl FnOnce() -> Counter) {
        match self.requests.get(&key) {
            Some(counter) => counter.increment(1),
            None => self
                .requests
                .entry(key)
                .or_insert_with(register)
                .increment(1),
        }
    }
}

/// The outcome of a request the KB answered (any other is `preflight` or a refusal's code).
pub const FORWARDED: &str = "forwarded";

/// Status classes `0xx` to `9xx`: a status is three digits.
const STATUS_CLASSES: usize = 10;

/// Where a forwarded request's counter is kept: by method, then by status class.
fn forwarded_slot(method: usize, status_class: u16) -> usize {
    method * STATUS_CLASSES + usize::from(status_class) % STATUS_CLASSES
}

/// The route's histogram `name`, registered on first use.
fn lazy<'a>(slot: &'a OnceLock<Arc<Latency>>, name: &'static str, route: &str) -> &'a Latency {
    slot.get_or_init(|| latency::histogram(name, route))
}

/// The index of the method's label in [`METHODS`].
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}
