//! The store interface every backend implements (embedded now, Redis for several gateways).

use crate::keys::{KeyHash, KeyRecord, UsageDelta};
use async_trait::async_trait;

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

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key and indexes its secret hashes.
    async fn create(&self, record: &KeyRecord) -> Result<(), StoreError>;
    async fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError>;
    /// Every key, oldest first.
    async fn list(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Replaces a key's record (not its usage); the hash index follows `record.secrets`.
    /// Returns false when no such key exists.
    async fn update(&self, record: &KeyRecord) -> Result<bool, StoreError>;
    /// Deletes a key, its hashes and its usage; returns the deleted record.
    async fn delete(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// Adds counted requests to each key's usage (keys deleted meanwhile are skipped).
    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError>;
    /// Is the store reachable? Used by readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}
