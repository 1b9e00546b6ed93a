//! Starting a gateway on a store filled beforehand with made-up key records (thousands, with
//! chosen ages, states and usage), on either store: what the admin API could not make quickly
//! or at all (keys created in the past, expired keys, usage already counted).
#![allow(dead_code)]

use super::TestGateway;
use super::redis::RedisServer;
use kbgate::authz::Scope;
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::{KeyRecord, KeyStore, StoreConfig, secret};

/// Which store a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Store {
    Embedded,
    Redis,
}

/// A record as the admin API would make it, created at `created_at`.
pub fn record(name: &str, created_at: chrono::DateTime<chrono::Utc>) -> KeyRecord {
    KeyRecord::new(
        name.into(),
        Scope::Read,
        Vec::new(),
        None,
        &secret::generate(),
        created_at,
    )
}

/// A gateway (and its Redis, kept alive with it) whose store holds `records`, usage included.
/// None where redis-server is not installed.
pub async fn start_seeded(
    store: Store,
    records: &[KeyRecord],
) -> Option<(TestGateway, Option<RedisServer>)> {
    let dir = tempfile::tempdir().unwrap();
    let (config, server) = match store {
        Store::Embedded => {
            let db = EmbeddedStore::open(&dir.path().join("kbgate.db")).unwrap();
            db.create_many(records).await.unwrap();
            for record in records.iter().filter(|r| r.usage != Default::default()) {
                db.import(record).await.unwrap();
            }
            // Closed here: the gateway opens the same file.
            (StoreConfig::embedded(dir.path().join("kbgate.db")), None)
        }
        Store::Redis => {
            let server = RedisServer::start()?;
            let config = server.store("seeded:");
            // Thousands of writes in a row on a busy machine: a generous timeout for seeding.
            let StoreConfig::Redis(mut patient) = config.clone() else {
                unreachable!("a Redis store")
            };
            patient.timeout = std::time::Duration::from_secs(10);
            let db = kbgate::app::open_store(&StoreConfig::Redis(patient)).unwrap();
            for record in records {
                db.import(record).await.unwrap();
            }
            (config, Some(server))
        }
    };
    let gateway = TestGateway::builder()
        .dir(dir)
        .config(move |c| c.store = config)
        .start()
        .await;
    Some((gateway, server))
}
