//! The store interface every backend implements (embedded now, Redis for several gateways).

use crate::keys::history::{HourCounts, UsageOverview};
use crate::keys::limits::QuotaCount;
use crate::keys::listing::{AgeMark, UsageMark, UsageSort};
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
    /// Up to `max` keys (with usage) in creation order, (created_at, id), strictly after
    /// `after` (or before it, `descending`): a walk by this mark is stable while keys are
    /// created and deleted, as a key's mark never changes. Stores index keys by age to answer
    /// from the mark on; this default sorts the whole listing, for small fakes.
    async fn page_by_age(
        &self,
        after: Option<&AgeMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut records = self.list().await?;
        if descending {
            records.reverse();
        }
        records.retain(|r| after.is_none_or(|mark| mark.is_before(r, descending)));
        records.truncate(max);
        Ok(records)
    }
    /// Up to `max` keys (with usage) in the usage order `by`, (value, created_at, id), strictly
    /// after `after` (or before it, `descending`), each with its mark: stores keep this order
    /// in the usage flush's own write, so a page costs its own keys. Fewer than `max` only at
    /// the end. This default sorts the whole listing, for small fakes.
    async fn page_by_usage(
        &self,
        by: UsageSort,
        after: Option<&UsageMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<(UsageMark, KeyRecord)>, StoreError> {
        let mut rows: Vec<(UsageMark, KeyRecord)> = self
            .list()
            .await?
            .into_iter()
            .map(|r| (UsageMark::of(by, &r), r))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if descending {
            rows.reverse();
        }
        rows.retain(|(mark, _)| {
            after.is_none_or(|after| {
                if descending {
                    mark < after
                } else {
                    mark > after
                }
            })
        });
        rows.truncate(max);
        Ok(rows)
    }
    /// A key's usage history for the hours `from..to` (hour numbers since the epoch), only the
    /// hours that saw requests, oldest first.
    async fn usage_history(
        &self,
        _key_id: &str,
        _from: i64,
        _to: i64,
    ) -> Result<Vec<HourCounts>, StoreError> {
        Ok(Vec::new())
    }
    /// Every key's history summed per hour for the hours `from..to`, and each key's requests.
    async fn usage_overview(&self, _from: i64, _to: i64) -> Result<UsageOverview, StoreError> {
        Ok(UsageOverview::default())
    }
    /// Forgets the usage history of the hours before `before` (`usage.history_retention`).
    async fn prune_history(&self, _before: i64) -> Result<(), StoreError> {
        Ok(())
    }
    /// Replaces a key's record (not its usage); the hash index follows `record.secrets`.
    /// Returns false when no such key exists.
    async fn update(&self, record: &KeyRecord) -> Result<bool, StoreError>;
    /// Deletes a key, its hashes and its usage; returns the deleted record.
    async fn delete(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// Adds counted requests to each key's usage and history (keys deleted meanwhile are
    /// skipped).
    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError>;
    /// Writes a key exactly as given, with its usage, replacing any key with its id (migration).
    async fn import(&self, record: &KeyRecord) -> Result<(), StoreError>;
    /// Is the store reachable? Used by readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Quota counts the gateway keeps in memory (the embedded store's limits), written with
    /// the usage flush so that a restart keeps them; a shared store decides limits itself.
    async fn save_quota_counts(&self, _counts: &[QuotaCount]) -> Result<(), StoreError> {
        Ok(())
    }
    /// The counts [`KeyStore::save_quota_counts`] wrote.
    async fn quota_counts(&self) -> Result<Vec<QuotaCount>, StoreError> {
        Ok(Vec::new())
    }
    /// A feed of changes made through other instances; None for a store only this process uses.
    fn watch(&self, _shutdown: CancellationToken) -> Option<mpsc::Receiver<StoreEvent>> {
        None
    }
}
