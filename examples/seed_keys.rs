//! Seeds a store with many keys, fast, for the load benchmark (benches/load/run.sh).
//!
//! The admin API writes one key per transaction (one fsync each): right for people, far too slow
//! for 1M keys. This writes straight into the store named by a kbgate config: the embedded store
//! in large transactions (`EmbeddedStore::create_many`), Redis through the store's own `create`
//! (the same Lua script and key layout the gateway uses), many calls in flight at once.
//! Each secret is printed to `--out`, one per line; keep that file out of git.
//!
//! ```sh
//! cargo run --release --example seed_keys -- --config gen.yaml --count 100000 --out keys.txt
//! ```

use clap::Parser;
use futures_util::{StreamExt, TryStreamExt};
use kbgate::authz::Scope;
use kbgate::config::Config;
use kbgate::keys::StoreConfig;
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::{KeyRecord, KeyStore, redis::RedisStore, secret};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Keys per embedded transaction: large enough that the fsync is amortised, small enough that
/// one batch (records and their JSON) stays a few tens of MB.
const BATCH: usize = 50_000;
/// Redis `create` calls in flight at once: they pipeline on the store's one connection.
const REDIS_IN_FLIGHT: usize = 256;

#[derive(Parser)]
struct Args {
    /// A kbgate config; only its `store` section is used.
    #[arg(long)]
    config: PathBuf,
    /// How many keys to create.
    #[arg(long)]
    count: usize,
    /// Where the secrets go, one per line (appended to).
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.store)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)?;
    let mut out = std::io::BufWriter::new(file);
    let started = Instant::now();
    let mut done = 0;
    while done < args.count {
        let n = BATCH.min(args.count - done);
        let (records, secrets) = generate(n);
        store.write(records).await?;
        for secret in secrets {
            writeln!(out, "{secret}")?;
        }
        done += n;
    }
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "seeded {done} keys in {seconds:.1}s ({:.0} keys/s)",
        done as f64 / seconds
    );
    Ok(())
}

/// `n` read-scoped keys and their secrets.
fn generate(n: usize) -> (Vec<KeyRecord>, Vec<String>) {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let new = secret::generate();
            let record = KeyRecord::new(format!("load-{i}"), Scope::Read, vec![], None, &new, now);
            (record, new.secret)
        })
        .unzip()
}

enum Store {
    Embedded(EmbeddedStore),
    Redis(Box<RedisStore>),
}

impl Store {
    fn open(config: &StoreConfig) -> Result<Store, kbgate::keys::StoreError> {
        Ok(match config {
            StoreConfig::Embedded { path, cache_size } => {
                Store::Embedded(EmbeddedStore::open_with_cache_size(path, *cache_size)?)
            }
            StoreConfig::Redis(redis) => Store::Redis(Box::new(RedisStore::open(redis)?)),
        })
    }

    async fn write(&self, records: Vec<KeyRecord>) -> Result<(), kbgate::keys::StoreError> {
        match self {
            Store::Embedded(store) => store.create_many(&records).await,
            Store::Redis(store) => {
                futures_util::stream::iter(&records)
                    .map(|record| store.create(record))
                    .buffer_unordered(REDIS_IN_FLIGHT)
                    .try_collect()
                    .await
            }
        }
    }
}
