//! The default store for one gateway: a crash-safe redb file. Nothing to install.
//!
//! Three tables: `keys` (id -> record JSON), `hashes` (secret hash -> id) and `usage`
//! (id -> (request count, last used as Unix ms)). redb is synchronous, so every call runs on
//! tokio's blocking pool, except usage flushes: they run on a thread of lower CPU priority
//! (see `low_priority`).

use crate::keys::embedded_index as index;
use crate::keys::history::{HourCounts, UsageOverview};
use crate::keys::limits::QuotaCount;
use crate::keys::listing::{AgeMark, UsageMark, UsageSort};
use crate::keys::low_priority::LowPriorityThread;
use crate::keys::{KeyHash, KeyRecord, KeyStore, StoreError, Usage, UsageDelta};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::Arc;

mod audit;
mod outbox;
mod usage_order;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const HASHES: TableDefinition<&[u8], &str> = TableDefinition::new("hashes");
const USAGE: TableDefinition<&str, (u64, i64)> = TableDefinition::new("usage");
/// id -> (quota period start as Unix seconds, count): the gateway's quota counts, kept across
/// restarts (see the limits module).
const QUOTAS: TableDefinition<&str, (i64, u64)> = TableDefinition::new("quotas");

/// redb's own default is 1 GiB, all of it resident once a large store has been read. The hot
/// tier answers most lookups, and the operating system caches the file besides.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 20;

pub struct EmbeddedStore {
    db: Arc<Database>,
    usage_writer: LowPriorityThread,
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, creating its folder and tables.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with_cache_size(path, DEFAULT_CACHE_SIZE)
    }

    /// Like [`EmbeddedStore::open`], keeping up to `cache_size` bytes of pages in memory.
    pub fn open_with_cache_size(path: &Path, cache_size: u64) -> Result<EmbeddedStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::builder()
            .set_cache_size(usize::try_from(cache_size).unwrap_or(usize::MAX))
            .create(path)
            .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(KEYS).map_err(unavailable)?;
        txn.open_table(HASHES).map_err(unavailable)?;
        txn.open_table(USAGE).map_err(unavailable)?;
        usage_order::open_tables(&txn)?;
        audit::create_tables(&txn)?;
        index::open_tables(&txn, KEYS)?;
        txn.open_table(QUOTAS).map_err(unavailable)?;
        outbox::create_tables(&txn)?;
        txn.commit().map_err(unavailable)?;
        let usage_writer = LowPriorityThread::spawn("kbgate-usage").map_err(unavailable)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            usage_writer,
        })
    }

    /// Creates many keys in one transaction (one fsync for the batch, not one per key), for
    /// bulk loads such as the load benchmark's seeding. All or nothing: an id that exists
    /// already is a conflict and nothing of the batch is written.
    pub async fn create_many(&self, records: &[KeyRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            for record in &records {
                let exists = txn
                    .open_table(KEYS)
                    .map_err(unavailable)?
                    .get(record.id.as_str())
                    .map_err(unavailable)?
                    .is_some();
                if exists {
                    return Err(StoreError::Conflict(record.id.clone()));
                }
                write_record(&txn, record, None)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    /// Runs `f` against the database on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(unavailable)?
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The order of listings: creation time, then id.
fn age(record: &KeyRecord) -> (DateTime<Utc>, &str) {
    (record.created_at, &record.id)
}

/// A record ordered by [`age`].
struct ByAge(KeyRecord);

impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        age(&self.0).cmp(&age(&other.0))
    }
}

impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ByAge {
    fn eq(&self, other: &Self) -> bool {
        age(&self.0) == age(&other.0)
    }
}

impl Eq for ByAge {}

fn decode(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode(record: &KeyRecord) -> Vec<u8> {
    // A KeyRecord holds only strings, numbers and timestamps: serialising it cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn usage_of(db_usage: Option<(u64, i64)>) -> Usage {
    match db_usage {
        Some((count, ms)) => Usage {
            request_count: count,
            last_used_at: DateTime::<Utc>::from_timestamp_millis(ms),
        },
        None => Usage::default(),
    }
}

/// Adds each delta to its key's usage in one transaction; keys deleted meanwhile are skipped.
fn write_usage(db: &Database, deltas: &[UsageDelta]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let keys = txn.open_table(KEYS).map_err(unavailable)?;
        let mut usage = txn.open_table(USAGE).map_err(unavailable)?;
        for delta in deltas {
            let Some(json) = keys.get(delta.key_id.as_str()).map_err(unavailable)? else {
                continue;
            };
            let created = usage_order::created_micros(json.value())?;
            let before = usage
                .get(delta.key_id.as_str())
                .map_err(unavailable)?
                .map(|v| v.value());
            let (count, last_ms) = before.unwrap_or((0, i64::MIN));
            let after = (
                count + delta.requests,
                last_ms.max(delta.last_used_at.timestamp_millis()),
            );
            usage
                .insert(delta.key_id.as_str(), after)
                .map_err(unavailable)?;
            usage_order::reorder(
                &txn,
                &delta.key_id,
                Some((created, &usage_of(before))),
                Some((created, &usage_of(Some(after)))),
            )?;
            index::add_history(&txn, delta)?;
        }
    }
    txn.commit().map_err(unavailable)
}

/// Replaces the quota counts of live keys in one transaction.
fn write_quotas(db: &Database, counts: &[QuotaCount]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let keys = txn.open_table(KEYS).map_err(unavailable)?;
        let mut quotas = txn.open_table(QUOTAS).map_err(unavailable)?;
        for count in counts {
            if keys
                .get(count.key_id.as_str())
                .map_err(unavailable)?
                .is_some()
            {
                quotas
                    .insert(count.key_id.as_str(), (count.period_start, count.used))
                    .map_err(unavailable)?;
            }
        }
    }
    txn.commit().map_err(unavailable)
}

/// Reads one record with its usage inside a read transaction.
fn read_record(txn: &redb::ReadTransaction, id: &str) -> Result<Option<KeyRecord>, StoreError> {
    let keys = txn.open_table(KEYS).map_err(unavailable)?;
    let usage = txn.open_table(USAGE).map_err(unavailable)?;
    let Some(bytes) = keys.get(id).map_err(unavailable)? else {
        return Ok(None);
    };
    let mut record = decode(bytes.value())?;
    record.usage = usage_of(usage.get(id).map_err(unavailable)?.map(|v| v.value()));
    Ok(Some(record))
}

/// The record stored under `id`, read inside a write transaction.
fn stored(txn: &redb::WriteTransaction, id: &str) -> Result<Option<KeyRecord>, StoreError> {
    let keys = txn.open_table(KEYS).map_err(unavailable)?;
    let bytes = keys.get(id).map_err(unavailable)?;
    bytes.map(|b| decode(b.value())).transpose()
}

/// Writes `record` and makes the hash index match its secrets.
fn write_record(
    txn: &redb::WriteTransaction,
    record: &KeyRecord,
    previous: Option<&KeyRecord>,
) -> Result<(), StoreError> {
    let mut keys = txn.open_table(KEYS).map_err(unavailable)?;
    let mut hashes = txn.open_table(HASHES).map_err(unavailable)?;
    for old in previous.iter().flat_map(|p| p.hashes()) {
        hashes.remove(old.0.as_slice()).map_err(unavailable)?;
    }
    for hash in record.hashes() {
        hashes
            .insert(hash.0.as_slice(), record.id.as_str())
            .map_err(unavailable)?;
    }
    keys.insert(record.id.as_str(), encode(record).as_slice())
        .map_err(unavailable)?;
    usage_order::written(txn, record, previous)?;
    index::index(txn, Some(record), previous)
}

/// Removes a key, its hashes and its usage inside a write transaction.
fn remove_record(txn: &redb::WriteTransaction, id: &str) -> Result<Option<KeyRecord>, StoreError> {
    let record = {
        let mut keys = txn.open_table(KEYS).map_err(unavailable)?;
        let removed = keys.remove(id).map_err(unavailable)?;
        match removed {
            Some(bytes) => decode(bytes.value())?,
            None => return Ok(None),
        }
    };
    let mut hashes = txn.open_table(HASHES).map_err(unavailable)?;
    for hash in record.hashes() {
        hashes.remove(hash.0.as_slice()).map_err(unavailable)?;
    }
    let mut usage = txn.open_table(USAGE).map_err(unavailable)?;
    let used = usage_of(usage.remove(id).map_err(unavailable)?.map(|v| v.value()));
    let created = record.created_at.timestamp_micros();
    usage_order::reorder(txn, id, Some((created, &used)), None)?;
    let mut quotas = txn.open_table(QUOTAS).map_err(unavailable)?;
    quotas.remove(id).map_err(unavailable)?;
    index::index(txn, None, Some(&record))?;
    Ok(Some(record))
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn create(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            if stored(&txn, &record.id)?.is_some() {
                return Err(StoreError::Conflict(record.id.clone()));
            }
            write_record(&txn, &record, None)?;
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |db| read_record(&db.begin_read().map_err(unavailable)?, &id))
            .await
    }

    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let hash = *hash;
        self.run(move |db| {
            // One snapshot for the hash and the record it points to.
            let txn = db.begin_read().map_err(unavailable)?;
            let id = {
                let hashes = txn.open_table(HASHES).map_err(unavailable)?;
                match hashes.get(hash.0.as_slice()).map_err(unavailable)? {
                    Some(id) => id.value().to_string(),
                    None => return Ok(None),
                }
            };
            read_record(&txn, &id)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.list_oldest(usize::MAX).await
    }

    /// Reads every record (keys are stored by id, not by age) but keeps only the `limit` oldest.
    async fn list_oldest(&self, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let keys = txn.open_table(KEYS).map_err(unavailable)?;
            let usage = txn.open_table(USAGE).map_err(unavailable)?;
            // The youngest of those kept on top, to be dropped for an older one.
            let mut oldest: BinaryHeap<ByAge> = BinaryHeap::new();
            for entry in keys.iter().map_err(unavailable)? {
                let (id, bytes) = entry.map_err(unavailable)?;
                let mut record = decode(bytes.value())?;
                if oldest.len() == limit {
                    match oldest.peek() {
                        Some(youngest) if age(&record) < age(&youngest.0) => oldest.pop(),
                        _ => continue,
                    };
                }
                record.usage = usage_of(
                    usage
                        .get(id.value())
                        .map_err(unavailable)?
                        .map(|v| v.value()),
                );
                oldest.push(ByAge(record));
            }
            Ok(oldest.into_sorted_vec().into_iter().map(|r| r.0).collect())
        })
        .await
    }

    /// From the `by_age` index: a page costs its own keys, however many the store holds.
    async fn page_by_age(
        &self,
        after: Option<&AgeMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let after = after.cloned();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let ids = index::ids_by_age(&txn, after.as_ref(), descending, max)?;
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                records.extend(read_record(&txn, &id)?);
            }
            Ok(records)
        })
        .await
    }

    /// From the usage orders, kept by the usage flush: a page costs its own keys.
    async fn page_by_usage(
        &self,
        by: UsageSort,
        after: Option<&UsageMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<(UsageMark, KeyRecord)>, StoreError> {
        let after = after.cloned();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let marks = usage_order::marks(&txn, by, after.as_ref(), descending, max)?;
            let mut rows = Vec::with_capacity(marks.len());
            for mark in marks {
                if let Some(record) = read_record(&txn, &mark.age.id)? {
                    rows.push((mark, record));
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn usage_history(
        &self,
        key_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<HourCounts>, StoreError> {
        let id = key_id.to_string();
        self.run(move |db| index::history(&db.begin_read().map_err(unavailable)?, &id, from, to))
            .await
    }

    async fn usage_overview(&self, from: i64, to: i64) -> Result<UsageOverview, StoreError> {
        self.run(move |db| index::overview(&db.begin_read().map_err(unavailable)?, from, to))
            .await
    }

    async fn prune_history(&self, before: i64) -> Result<(), StoreError> {
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            index::prune(&txn, before)?;
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn update(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        let record = record.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let Some(previous) = stored(&txn, &record.id)? else {
                return Ok(false);
            };
            write_record(&txn, &record, Some(&previous))?;
            txn.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let Some(record) = remove_record(&txn, &id)? else {
                return Ok(None);
            };
            txn.commit().map_err(unavailable)?;
            Ok(Some(record))
        })
        .await
    }

    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        let mut deltas = deltas.to_vec();
        let db = self.db.clone();
        self.usage_writer
            .run(move || {
                // In key order, each B-tree page is updated in one go (measured: 10k keys'
                // updates took 50 ms instead of 90 ms on a shared CPU).
                deltas.sort_unstable_by(|a, b| a.key_id.cmp(&b.key_id));
                write_usage(&db, &deltas)
            })
            .await
            .unwrap_or_else(|| Err(unavailable("the usage writer thread stopped")))
    }

    async fn save_quota_counts(&self, counts: &[QuotaCount]) -> Result<(), StoreError> {
        let counts = counts.to_vec();
        let db = self.db.clone();
        self.usage_writer
            .run(move || write_quotas(&db, &counts))
            .await
            .unwrap_or_else(|| Err(unavailable("the usage writer thread stopped")))
    }

    async fn quota_counts(&self) -> Result<Vec<QuotaCount>, StoreError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let quotas = txn.open_table(QUOTAS).map_err(unavailable)?;
            let mut counts = Vec::new();
            for row in quotas.iter().map_err(unavailable)? {
                let (id, value) = row.map_err(unavailable)?;
                let (period_start, used) = value.value();
                counts.push(QuotaCount {
                    key_id: id.value().to_string(),
                    period_start,
                    used,
                });
            }
            Ok(counts)
        })
        .await
    }

    async fn import(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let previous = stored(&txn, &record.id)?;
            write_record(&txn, &record, previous.as_ref())?;
            {
                let mut usage = txn.open_table(USAGE).map_err(unavailable)?;
                let last_ms = record
                    .usage
                    .last_used_at
                    .map_or(i64::MIN, |t| t.timestamp_millis());
                let before = usage
                    .insert(record.id.as_str(), (record.usage.request_count, last_ms))
                    .map_err(unavailable)?
                    .map(|v| v.value());
                let created = record.created_at.timestamp_micros();
                usage_order::reorder(
                    &txn,
                    &record.id,
                    Some((created, &usage_of(before))),
                    Some((created, &record.usage)),
                )?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|db| db.begin_read().map(drop).map_err(unavailable))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Scope;
    use crate::keys::secret;

    fn record(name: &str) -> (KeyRecord, KeyHash) {
        let new = secret::generate();
        let record = KeyRecord::new(name.into(), Scope::Read, vec![], None, &new, Utc::now());
        (record, new.hash)
    }

    #[tokio::test]
    async fn create_many_writes_every_key_and_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let batch: Vec<_> = (0..3).map(|i| record(&format!("k{i}"))).collect();
        let records: Vec<KeyRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        store.create_many(&records).await.unwrap();
        for (record, hash) in &batch {
            let found = store.find_by_hash(hash).await.unwrap().unwrap();
            assert_eq!(found.id, record.id);
        }
        assert_eq!(store.list().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn the_oldest_keys_are_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let start = Utc::now();
        // Created out of age order, so that id order (the table's) says nothing of age.
        for minutes in [5, 1, 4, 0, 3, 2] {
            let (mut record, _) = record(&format!("{minutes}"));
            record.created_at = start + chrono::Duration::minutes(minutes);
            store.create(&record).await.unwrap();
        }
        let names = |records: Vec<KeyRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.name).collect()
        };
        assert_eq!(names(store.list_oldest(3).await.unwrap()), ["0", "1", "2"]);
        assert_eq!(
            names(store.list().await.unwrap()),
            ["0", "1", "2", "3", "4", "5"]
        );
        assert!(store.list_oldest(0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn create_many_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let (existing, _) = record("existing");
        store.create(&existing).await.unwrap();
        let (fresh, fresh_hash) = record("fresh");
        let error = store.create_many(&[fresh, existing]).await.unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)));
        assert!(store.find_by_hash(&fresh_hash).await.unwrap().is_none());
        assert_eq!(store.list().await.unwrap().len(), 1);
    }
}
