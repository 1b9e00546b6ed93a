//! A page of the key list with a million keys in the store (issue 13: under 50 ms per page of
//! 100), on the embedded store and on Redis (when `redis-server` is installed: the bench starts
//! its own on a free port). Measured below the HTTP layer, where the store is read: the first
//! page, a page from a cursor in the middle, the same newest first, and a filtered page (a name
//! filter that matches about one key in a hundred: the page reads its most, `listing::MAX_SCAN`
//! keys, and answers about 40); then the same sorted by requests (most first) and by last use
//! (never-used first), from the usage orders the usage flush keeps. Every key but each tenth
//! has usage, added through `add_usage` (the flush's own write, timed: its cost with the
//! orders kept).
//! Seeding takes a few minutes per store; `KEY_PAGES_COUNT` changes the count.
//! Run: `cargo bench --bench key_pages`.

#[path = "common/redis.rs"]
mod redis_server;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::{StreamExt, TryStreamExt};
use kbgate::authz::Scope;
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::listing::{self, Cursor, Filter, ListQuery, Sort};
use kbgate::keys::redis::{RedisConfig, RedisStore};
use kbgate::keys::{KeyRecord, KeyStore, UsageDelta, secret};
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

/// Usage for every key but each tenth: requests `i % 1000`, last used within the last day.
async fn seed_usage(store: &dyn KeyStore, total: usize) {
    let keys = store.list_oldest(total).await.unwrap();
    let now = chrono::Utc::now();
    let started = Instant::now();
    let deltas: Vec<UsageDelta> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(i, record)| UsageDelta {
            key_id: record.id.clone(),
            requests: u64::try_from(i % 1000).unwrap() + 1,
            last_used_at: now
                - chrono::Duration::milliseconds(i64::try_from(i * 7919 % 86_400_000).unwrap()),
            hours: Vec::new(),
        })
        .collect();
    // Flushes of 10,000 keys (a busy gateway's), four at a time.
    futures_util::stream::iter(deltas.chunks(10_000))
        .map(|chunk| store.add_usage(chunk))
        .buffer_unordered(4)
        .try_collect::<()>()
        .await
        .unwrap();
    eprintln!(
        "added usage to {} keys in {:.1}s ({:.0} ms per flush of 10,000 keys)",
        deltas.len(),
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1000.0 / deltas.len().div_ceil(10_000) as f64
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
    let halfway = |sort: Sort, descending: bool| {
        runtime.block_on(async {
            let mut query = ListQuery {
                limit: 1000,
                sort,
                descending,
                ..ListQuery::default()
            };
            for _ in 0..count() / 2000 {
                query.cursor = page(query.clone()).await.next_cursor;
            }
            query.cursor
        })
    };
    let middle = halfway(Sort::Created, false);
    // The same place for a newest-first walk: the opaque text starts with the sort and order
    // ("ca", hex 6361), which becomes "cd".
    let middle_desc = middle.as_ref().map(|c| {
        Cursor::decode(&c.encode().replacen("6361", "6364", 1), Sort::Created, true).unwrap()
    });
    let needle = || Filter {
        name_contains: Some("NEEDLE".into()),
        ..Filter::default()
    };
    let started = Instant::now();
    let requests_middle = halfway(Sort::Requests, true);
    let last_used_middle = halfway(Sort::LastUsed, false);
    eprintln!(
        "{name}: walked half the keys by requests and by last use, a page of 1,000 at a time, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let by = |sort, descending, cursor: &Option<Cursor>, filter: Filter| ListQuery {
        sort,
        descending,
        cursor: cursor.clone(),
        filter,
        ..ListQuery::default()
    };
    let cases = [
        (
            "requests_desc_first",
            by(Sort::Requests, true, &None, Filter::default()),
        ),
        (
            "requests_desc_middle",
            by(Sort::Requests, true, &requests_middle, Filter::default()),
        ),
        (
            "requests_desc_filtered",
            by(Sort::Requests, true, &requests_middle, needle()),
        ),
        (
            "last_used_asc_first",
            by(Sort::LastUsed, false, &None, Filter::default()),
        ),
        (
            "last_used_asc_middle",
            by(Sort::LastUsed, false, &last_used_middle, Filter::default()),
        ),
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
                filter: needle(),
                ..ListQuery::default()
            },
        ),
    ];
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
    runtime.block_on(seed_usage(embedded.as_ref(), count()));
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
            runtime.block_on(seed_usage(redis.as_ref(), count()));
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
