//! A page of the key list with a million keys in the store (issue 13: under 50 ms per page of
//! 100), on the embedded store and on Redis (when `redis-server` is installed: the bench starts
//! its own on a free port). Measured below the HTTP layer, where the store is read: the first
//! page, a page from a cursor in the middle, the same newest first, and a filtered page (a name
//! filter that matches about one key in a hundred: the page reads its most, `listing::MAX_SCAN`
//! keys, and answers about 40).
//! Seeding takes about a minute per store; `KEY_PAGES_COUNT` changes the count.
//! Run: `cargo bench --bench key_pages`.

#[path = "common/redis.rs"]
mod redis_server;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::{StreamExt, TryStreamExt};
use kbgate::authz::Scope;
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::listing::{self, Cursor, Filter, ListQuery, Sort};
use kbgate::keys::redis::{RedisConfig, RedisStore};
use kbgate::keys::{KeyRecord, KeyStore, secret};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 50_000;

fn count() -> usize {
    std::env::var("KEY_PAGES_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// `n` keys, one a microsecond (a thousand to a Redis score millisecond); every hundredth is
/// named `needle-…`.
fn records(from: usize, n: usize, base: chrono::DateTime<chrono::Utc>) -> Vec<KeyRecord> {
    // One secret for all: hashing is not what is measured, and ids stay unique.
    let new = secret::generate();
    (from..from + n)
        .map(|i| {
            let name = if i % 100 == 0 {
                format!("needle-{i}")
            } else {
                format!("key-{i}")
            };
            let created = base + chrono::Duration::microseconds(i64::try_from(i).unwrap());
            let mut record = KeyRecord::new(name, Scope::Read, vec![], None, &new, created);
            record.secrets.clear();
            record
        })
        .collect()
}

async fn seed(store: &Seed<'_>, total: usize) {
    let base = chrono::Utc::now() - chrono::Duration::days(1);
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let n = BATCH.min(total - done);
        let batch = records(done, n, base);
        match store {
            Seed::Embedded(store) => store.create_many(&batch).await.unwrap(),
            Seed::Redis(store) => futures_util::stream::iter(&batch)
                .map(|record| store.create(record))
                .buffer_unordered(256)
                .try_collect::<()>()
                .await
                .unwrap(),
        }
        done += n;
    }
    eprintln!(
        "seeded {total} keys in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

enum Seed<'a> {
    Embedded(&'a EmbeddedStore),
    Redis(&'a RedisStore),
}

fn bench_store(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn KeyStore>,
) {
    let no_pending = |_: &mut KeyRecord| {};
    let page = |query: ListQuery| {
        let store = store.clone();
        async move {
            listing::page(store.as_ref(), &query, chrono::Utc::now(), &no_pending)
                .await
                .unwrap()
        }
    };
    // A cursor halfway: walk there by pages of 1,000 (the CLI's page) once.
    let middle = runtime.block_on(async {
        let mut query = ListQuery {
            limit: 1000,
            ..ListQuery::default()
        };
        for _ in 0..count() / 2000 {
            query.cursor = page(query.clone()).await.next_cursor;
        }
        query.cursor
    });
    // The same place for a newest-first walk: the opaque text starts with the sort and order
    // ("ca", hex 6361), which becomes "cd".
    let middle_desc = middle.as_ref().map(|c| {
        Cursor::decode(&c.encode().replacen("6361", "6364", 1), Sort::Created, true).unwrap()
    });
    let cases = [
        ("first", ListQuery::default()),
        (
            "middle",
            ListQuery {
                cursor: middle.clone(),
                ..ListQuery::default()
            },
        ),
        (
            "middle_desc",
            ListQuery {
                cursor: middle_desc,
                descending: true,
                ..ListQuery::default()
            },
        ),
        (
            "filtered",
            ListQuery {
                cursor: middle,
                filter: Filter {
                    name_contains: Some("NEEDLE".into()),
                    ..Filter::default()
                },
                ..ListQuery::default()
            },
        ),
    ];
    // Sorting by usage reads every key: timed once, not a page to bench.
    let started = Instant::now();
    let by_requests = ListQuery {
        sort: Sort::Requests,
        descending: true,
        ..ListQuery::default()
    };
    let keys = runtime.block_on(page(by_requests)).keys.len();
    eprintln!(
        "{name}/sort=requests: {keys} keys in {:.2}s (reads every key)",
        started.elapsed().as_secs_f64()
    );
    for (case, query) in cases {
        let keys = runtime.block_on(page(query.clone())).keys.len();
        eprintln!("{name}/{case}: {keys} keys a page");
        c.bench_function(&format!("{name}_page_100/{case}"), |b| {
            b.to_async(runtime)
                .iter(|| async { black_box(page(query.clone()).await) })
        });
    }
}

fn key_pages(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = Arc::new(EmbeddedStore::open(&dir.path().join("bench.db")).unwrap());
    runtime.block_on(seed(&Seed::Embedded(&embedded), count()));
    bench_store(c, &runtime, "embedded", embedded);

    match redis_server::start_redis() {
        Some((_server, port)) => {
            let config = RedisConfig {
                urls: vec![format!("redis://127.0.0.1:{port}/0")],
                cluster: false,
                prefix: "bench:".into(),
                timeout: Duration::from_secs(5),
            };
            // The connection manager starts on the runtime.
            let redis = Arc::new(
                runtime
                    .block_on(async { RedisStore::open(&config) })
                    .unwrap(),
            );
            runtime.block_on(seed(&Seed::Redis(&redis), count()));
            bench_store(c, &runtime, "redis", redis);
        }
        None => eprintln!("SKIPPED redis: redis-server is not installed"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = key_pages
}
criterion_main!(benches);
