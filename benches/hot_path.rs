//! The per-request work before forwarding, on a hot-tier hit: the gateway's own
//! [`Gateway::admit`] (request checks, canonical path, key extraction, blake3 hash + hot-tier
//! lookup (the format and checksum are checked only on a miss), usage count, route lookup and
//! grant check), on a gateway built from the shipped config; then the same plus metering (in-flight gauge, auth
//! decision, request counter, latency histograms, per-key counter), first with no metrics
//! recorder installed (the histograms, kbgate's own, count even then), then with the Prometheus one; and admission for a key with a rate limit.
//! Run: `cargo bench --bench hot_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request};
use kbgate::authz::Scope;
use kbgate::gateway::{Gateway, RequestLog, request_id};
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::limits::RateLimit;
use kbgate::keys::{KeyGrant, KeyRecord, KeyStore, Keyring, secret};
use kbgate::metrics::keys::KeyMetrics;
use kbgate::metrics::requests::{Observation, RequestMetrics};
use kbgate::metrics::{self, InFlight};
use kbgate::rejection::Rejection;
use kbgate::server::ConnInfo;
use kbgate::usage::UsageRecorder;
use std::hint::black_box;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The shipped config, so admission checks and scans what a real deployment does.
fn shipped_config() -> kbgate::Config {
    let env = |name: &str| match name {
        "KBGATE_ADMIN_TOKEN" => Some("bench-admin-token-0123456789".to_string()),
        _ => Some("bench".to_string()),
    };
    kbgate::Config::parse_with_env(include_str!("../config/kbgate.yaml"), &env).unwrap()
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
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
    // The same key with a rate limit it never reaches (10^12 per second, bursts of 10^9): the
    // decision's cost without refusals.
    let limited_secret = secret::generate();
    let mut limited = KeyRecord::new(
        "bench-limited".into(),
        Scope::Read,
        vec![],
        None,
        &limited_secret,
        chrono::Utc::now(),
    );
    limited.rate_limit = Some(RateLimit {
        requests: 1_000_000_000_000,
        window_seconds: 1,
        burst: Some(1_000_000_000),
    });
    runtime.block_on(store.create(&limited)).unwrap();
    let mut config = shipped_config();
    // The shipped 30 s would send a long run back to the store.
    config.hot_tier.max_age = Duration::from_secs(3600);
    let keyring = Arc::new(Keyring::new(store, config.hot_tier, true));
    runtime.block_on(keyring.verify(&new.secret)).unwrap();
    runtime
        .block_on(keyring.verify(&limited_secret.secret))
        .unwrap();
    let usage = Arc::new(UsageRecorder::default());
    let gateway = kbgate::app::gateway(&config, keyring, usage, None).unwrap();
    let request = Request::builder()
        .uri("/v1/article/a1?lang=en")
        .header("host", "kb.example.com")
        .header(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", new.secret)).unwrap(),
        )
        .header("accept", "application/json")
        .body(())
        .unwrap();
    let hit = || admit(&gateway, black_box(&request));
    let mut limited_request = request.clone();
    limited_request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", limited_secret.secret)).unwrap(),
    );

    c.bench_function("hot_path_hit", |b| b.iter(|| black_box(hit())));
    // The same with the key's rate limit decided (embedded: in memory).
    c.bench_function("hot_path_hit_rate_limited", |b| {
        b.iter(|| black_box(admit(&gateway, black_box(&limited_request))))
    });
    // Every request without a usable X-Request-Id gets a fresh random one.
    c.bench_function("request_id_new", |b| {
        b.iter(|| request_id(black_box(request.headers())))
    });
    // A random key of the right shape but a wrong checksum: after the hot tier misses, refused
    // by this check with no store lookup.
    let mut forged = secret::generate().secret;
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    c.bench_function("forged_key_refusal", |b| {
        b.iter(|| secret::is_well_formed(black_box(&forged)))
    });

    // The recorder's handles registered before it is installed stay no-ops: the cost of
    // metering code when nothing collects (the latency histograms, kbgate's own, count either
    // way). Then install the recorder (once per process) and register again.
    let templates = || gateway.routes.routes().iter().map(|r| r.template.as_str());
    let noop = RequestMetrics::new(templates(), Some(Arc::new(KeyMetrics::new(10_000))));
    c.bench_function("hot_path_hit_metered_no_recorder", |b| {
        b.iter(|| metered(hit(), &noop))
    });
    let handle = metrics::install(Rejection::auth_codes());
    let live = RequestMetrics::new(templates(), Some(Arc::new(KeyMetrics::new(10_000))));
    c.bench_function("hot_path_hit_metered_prometheus", |b| {
        b.iter(|| metered(hit(), &live))
    });
    assert!(
        handle
            .render()
            .contains("kbgate_key_requests_total{key_id=")
    );
}

/// The connection the benched requests come in on (made once, as the server does).
static CONN: LazyLock<ConnInfo> =
    LazyLock::new(|| ConnInfo::new(([127, 0, 0, 1], 40000).into(), false));

/// The gateway's admission of `request`; returns the grant and route index for metering.
fn admit(gateway: &Gateway, request: &Request<()>) -> (Arc<KeyGrant>, usize) {
    let mut path = None;
    let mut log = RequestLog::default();
    let admitted = gateway
        .admit(request, &CONN, &mut path, &mut log)
        .now_or_never()
        .expect("a hot-tier hit never waits")
        .unwrap();
    (admitted.key, admitted.route.index)
}

/// What `Gateway::handle` records for a forwarded request.
fn metered((grant, route): (Arc<KeyGrant>, usize), metrics: &RequestMetrics) {
    let _in_flight = InFlight::start();
    metrics::fixed().auth_allowed();
    metrics.observe(&Observation {
        route: Some(route),
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
