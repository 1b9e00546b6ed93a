//! The per-request work before forwarding, on a hot-tier hit: canonical path, key extraction,
//! format and checksum check, blake3 hash + hot-tier lookup, route lookup and grant check.
//! Run: `cargo bench --bench hot_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use kbgate::authz::{self, DEFAULT_RESOURCES, RouteSpec, RouteTable, Scope};
use kbgate::gateway::extract_key;
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::keyring::CacheLimits;
use kbgate::keys::{KeyRecord, KeyStore, Keyring, secret};
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
    let method = Method::GET;

    c.bench_function("hot_path_hit", |b| {
        b.iter(|| {
            let path = authz::canonicalize_path(black_box("/v1/article/a1")).unwrap();
            let (key, _query) =
                extract_key(black_box(&headers), black_box(Some("lang=en"))).unwrap();
            assert!(secret::is_well_formed(&key));
            let grant = keyring
                .verify(&key)
                .now_or_never()
                .expect("a hot-tier hit never waits")
                .unwrap();
            let route = routes.lookup(&method, &path).unwrap();
            black_box(authz::grants(
                grant.scope,
                &grant.permissions,
                &route.permission,
            ))
        })
    });
    // A random key of the right shape but a wrong checksum: refused with no lookup at all.
    let mut forged = secret::generate().secret;
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    c.bench_function("forged_key_refusal", |b| {
        b.iter(|| secret::is_well_formed(black_box(&forged)))
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
