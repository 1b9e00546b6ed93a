//! The per-request work before forwarding, on a hot-tier hit: canonical path, key extraction,
//! format and checksum check, blake3 hash + hot-tier lookup, route lookup and grant check; then
//! the same plus metering (in-flight gauge, auth decision, request counter, latency histograms,
//! per-key counter), first with no metrics recorder installed, then with the Prometheus one.
//! Run: `cargo bench --bench hot_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use kbgate::authz::{self, DEFAULT_RESOURCES, Route, RouteSpec, RouteTable, Scope};
use kbgate::config::KeySources;
use kbgate::gateway::{extract_key, request_id};
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::keyring::CacheLimits;
use kbgate::keys::{KeyGrant, KeyRecord, KeyStore, Keyring, secret};
use kbgate::metrics::keys::KeyMetrics;
use kbgate::metrics::requests::{Observation, RequestMetrics};
use kbgate::metrics::{self, InFlight};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// The shipped route table, so the lookup scans what a real deployment scans.
fn shipped_routes() -> RouteTable {
    #[derive(serde::Deserialize)]
    struct Routes {
        routes: Vec<RouteSpec>,
    }
    let routes: Routes = serde_yaml::from_str(include_str!("../config/kbgate.yaml")).unwrap();
    let resources: Vec<String> = DEFAULT_RESOURCES.iter().map(|s| s.to_string()).collect();
    RouteTable::compile(&routes.routes, &resources).unwrap()
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("bench.db")).unwrap());
    let new = secret::generate();
    let record = KeyRecord::new(
        "bench".into(),
        Scope::Read,
        vec![],
        None,
        &new,
        chrono::Utc::now(),
    );
    runtime.block_on(store.create(&record)).unwrap();
    let limits = CacheLimits {
        max_age: Duration::from_secs(3600),
        max_entries: 100_000,
        negative_ttl: Duration::from_secs(5),
        negative_max_entries: 100_000,
    };
    let keyring = Keyring::new(store, limits, true);
    runtime.block_on(keyring.verify(&new.secret)).unwrap();
    let routes = shipped_routes();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", new.secret)).unwrap(),
    );
    headers.insert("accept", HeaderValue::from_static("application/json"));
    let hit = || hot_path_hit(&keyring, &routes, &headers);

    c.bench_function("hot_path_hit", |b| b.iter(|| black_box(hit())));
    // Every request without a usable X-Request-Id gets a fresh random one.
    c.bench_function("request_id_new", |b| {
        b.iter(|| request_id(black_box(&headers)))
    });
    // A random key of the right shape but a wrong checksum: refused with no lookup at all.
    let mut forged = secret::generate().secret;
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    c.bench_function("forged_key_refusal", |b| {
        b.iter(|| secret::is_well_formed(black_box(&forged)))
    });

    // Handles registered before the recorder is installed stay no-ops: the cost of metering
    // code when nothing collects. Then install the recorder (once per process) and register again.
    let noop = RequestMetrics::new(templates(&routes), Some(Arc::new(KeyMetrics::new(10_000))));
    c.bench_function("hot_path_hit_metered_no_recorder", |b| {
        b.iter(|| metered(hit(), &noop))
    });
    let handle = metrics::install(kbgate::rejection::Rejection::auth_codes());
    let live = RequestMetrics::new(templates(&routes), Some(Arc::new(KeyMetrics::new(10_000))));
    c.bench_function("hot_path_hit_metered_prometheus", |b| {
        b.iter(|| metered(hit(), &live))
    });
    assert!(
        handle
            .render()
            .contains("kbgate_key_requests_total{key_id=")
    );
}

/// The path up to forwarding; returns the grant and route for metering.
fn hot_path_hit<'r>(
    keyring: &Keyring,
    routes: &'r RouteTable,
    headers: &HeaderMap,
) -> (Arc<KeyGrant>, &'r Route) {
    let path = authz::canonicalize_path(black_box("/v1/article/a1")).unwrap();
    let (key, _query) = extract_key(
        black_box(headers),
        black_box(Some("lang=en")),
        &KeySources::DEFAULT,
    )
    .unwrap();
    assert!(secret::is_well_formed(&key));
    let grant = keyring
        .verify(&key)
        .now_or_never()
        .expect("a hot-tier hit never waits")
        .unwrap();
    let route = routes.lookup(&Method::GET, &path).unwrap();
    assert!(authz::grants(
        grant.scope,
        &grant.permissions,
        &route.permission
    ));
    (grant, route)
}

/// What `Gateway::handle` records for a forwarded request.
fn metered((grant, route): (Arc<KeyGrant>, &Route), metrics: &RequestMetrics) {
    let _in_flight = InFlight::start();
    metrics::fixed().auth_allowed();
    metrics.observe(&Observation {
        route: Some(route.index),
        method: &Method::GET,
        status: 200,
        outcome: "forwarded",
        key_id: Some(&grant.id),
        elapsed: Duration::from_micros(900),
        upstream: Some(Duration::from_micros(700)),
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);

fn templates(routes: &RouteTable) -> impl Iterator<Item = &str> {
    routes.routes().iter().map(|r| r.template.as_str())
}
