//! Verification when the hot tier cannot help (caching off): every call reads the store.
//! Embedded (redb) always; Redis when `redis-server` is installed (the bench starts its own on a
//! free port). Compare the Redis figure with `redis-benchmark -c 1 -t get` on the same machine:
//! a miss costs one Redis round trip (a script: hash -> id -> record).
//! Run: `cargo bench --bench miss_path`.

#[path = "common/redis.rs"]
mod redis_server;

use criterion::{Criterion, criterion_group, criterion_main};
use kbgate::authz::Scope;
use kbgate::keys::StoreConfig;
use kbgate::keys::keyring::CacheLimits;
use kbgate::keys::redis::RedisConfig;
use kbgate::keys::{KeyRecord, KeyStore, Keyring, secret};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const NO_CACHE: CacheLimits = CacheLimits {
    max_age: Duration::ZERO,
    max_entries: 0,
    negative_ttl: Duration::ZERO,
    negative_max_entries: 0,
};

fn bench_store(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn KeyStore>,
) {
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
    let keyring = Keyring::new(store, NO_CACHE, false);
    runtime.block_on(keyring.verify(&new.secret)).unwrap();
    c.bench_function(name, |b| {
        b.to_async(runtime)
            .iter(|| async { black_box(keyring.verify(&new.secret).await.unwrap()) })
    });
}

fn miss_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = StoreConfig::embedded(dir.path().join("bench.db"));
    bench_store(
        c,
        &runtime,
        "miss_embedded",
        kbgate::app::open_store(&embedded).unwrap(),
    );

    match redis_server::start_redis() {
        Some((_server, port)) => {
            let redis = StoreConfig::Redis(RedisConfig {
                urls: vec![format!("redis://127.0.0.1:{port}/0")],
                cluster: false,
                prefix: "bench:".into(),
                timeout: Duration::from_secs(1),
            });
            let store = runtime
                .block_on(async { kbgate::app::open_store(&redis) })
                .unwrap();
            bench_store(c, &runtime, "miss_redis", store);
        }
        None => eprintln!("SKIPPED miss_redis: redis-server is not installed"),
    }
}

criterion_group!(benches, miss_path);
criterion_main!(benches);
