//! The store interface every backend implements (embedded now, Redis for several gateways).

use crate::keys::redis::RedisConfig;
use crate::keys::{AuditStore, KeyHash, KeyRecord, OutboxStore, UsageDelta};
use crate::metrics::StoreErrorKind;
use async_trait::async_trait;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which store holds the keys, and its settings.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A redb file; `cache_size` bytes of its pages are kept in memory.
    Embedded {
        path: PathBuf,
        cache_size: u64,
    },
    Redis(RedisConfig),
}

impl StoreConfig {
    /// The embedded store at `path`, with the default cache size.
    pub fn embedded(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig::Embedded {
            path: path.into(),
            cache_size: crate::keys::embedded::DEFAULT_CACHE_SIZE,
        }
    }
}

/// What a shared store tells each instance so its hot tier never outlives a change.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// A key with these secret hashes was created somewhere (unknown until now).
    Created(Vec<KeyHash>),
    /// These secret hashes changed (key edited, rotated or deleted) somewhere.
    Changed(Vec<KeyHash>),
    /// The change feed is (again) listening: changes from now on will be heard.
    Subscribed,
    /// The change feed was lost: changes may be missed until `Subscribed`.
    Unsubscribed,
}

/// A store failure. The message is for logs and operators, never for a gateway client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    #[error("key store data is corrupt: {0}")]
    Corrupt(String),
    #[error("a key with id {0} already exists")]
    Conflict(String),
}

impl StoreError {
    /// The `kind` label of `kbgate_store_errors_total`.
    pub fn metric_kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Unavailable(_) => StoreErrorKind::Unavailable,
            StoreError::Corrupt(_) => StoreErrorKind::Corrupt,
            StoreError::Conflict(_) => StoreErrorKind::Conflict,
        }
    }
}

/// The audited writes, admin tokens and audit chain are in [`AuditStore`].
#[async_trait]
pub trait KeyStore: AuditStore + OutboxStore + Send + Sync + 'static {
    /// Stores a new key and indexes its secret hashes.
    async fn create(&self, record: &KeyRecord) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// The key holding this secret hash; its `usage` may be left empty (verification needs none).
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError>;
    /// Every key, oldest first.
    async fn list(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// The `limit` oldest keys, oldest first: what the per-key metrics need of a store that may
    /// hold millions, without holding them all in memory.
    async fn list_oldest(&self, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        let mut records = self.list().await?;
        records.truncate(limit);
        Ok(records)
    }
    /// Replaces a key's record (not its usage); the hash index follows `record.secrets`.
    /// Returns false when no such key exists.
    async fn update(&self, record: &KeyRecord) -> Result<bool, StoreError>;
    /// Deletes a key, its hashes and its usage; returns the deleted record.
    async fn delete(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// Adds counted requests to each key's usage (keys deleted meanwhile are skipped).
    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError>;
    /// Writes a key exactly as given, with its usage, replacing any key with its id (migration).
    async fn import(&self, record: &KeyRecord) -> Result<(), StoreError>;
    /// Is the store reachable? Used by readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A feed of changes made through other instances; None for a store only this process uses.
    fn watch(&self, _shutdown: CancellationToken) -> Option<mpsc::Receiver<StoreEvent>> {
        None
    }
}
