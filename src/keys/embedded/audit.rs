//! The embedded store's audited writes: each change and its audit entry in one redb write
//! transaction (both or neither), the admin tokens, and the audit chain.
//!
//! Tables: `audit` (place in the chain -> entry JSON), `audit_meta` (`head` and `anchor`, each
//! `"<seq> <hash>"`), `admin_tokens` (id -> record JSON), `admin_hashes` (hash -> id).

use super::{EmbeddedStore, remove_record, stored, unavailable, write_record};
use crate::keys::admin_token::AdminTokenRecord;
use crate::keys::audit::{Chain, ChainHead, Entry, NewEntry};
use crate::keys::outbox::Event;
use crate::keys::{AuditStore, KeyHash, KeyRecord, StoreError, prunable};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
const AUDIT_META: TableDefinition<&str, &str> = TableDefinition::new("audit_meta");
const ADMIN_TOKENS: TableDefinition<&str, &str> = TableDefinition::new("admin_tokens");
const ADMIN_HASHES: TableDefinition<&[u8], &str> = TableDefinition::new("admin_hashes");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AUDIT).map_err(unavailable)?;
    txn.open_table(AUDIT_META).map_err(unavailable)?;
    txn.open_table(ADMIN_TOKENS).map_err(unavailable)?;
    txn.open_table(ADMIN_HASHES).map_err(unavailable)?;
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn decode_entry(json: &str) -> Result<Entry, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

fn decode_token(json: &str) -> Result<AdminTokenRecord, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

fn meta(
    txn_table: &impl ReadableTable<&'static str, &'static str>,
    name: &str,
) -> Result<Option<ChainHead>, StoreError> {
    match txn_table.get(name).map_err(unavailable)? {
        Some(text) => ChainHead::parse(text.value())
            .map(Some)
            .ok_or_else(|| corrupt(format!("audit {name}: {:?}", text.value()))),
        None => Ok(None),
    }
}

/// Seals `entry` after the chain's head and appends it, inside the change's transaction.
fn append(txn: &WriteTransaction, entry: &NewEntry) -> Result<(), StoreError> {
    let mut meta_table = txn.open_table(AUDIT_META).map_err(unavailable)?;
    let head = meta(&meta_table, "head")?.unwrap_or_else(ChainHead::genesis);
    let sealed = entry.seal(&head);
    let mut audit = txn.open_table(AUDIT).map_err(unavailable)?;
    audit
        .insert(sealed.seq(), sealed.to_json().as_str())
        .map_err(unavailable)?;
    meta_table
        .insert("head", sealed.head().to_text().as_str())
        .map_err(unavailable)?;
    if let Some(event) = Event::from_audit(&sealed) {
        super::outbox::append_in(txn, &event)?;
    }
    Ok(())
}

/// Runs `change` and appends `entry` in one write transaction, committed only when `change`
/// says it changed something (`Some`).
pub(super) async fn audited<T, F>(
    store: &EmbeddedStore,
    entry: &NewEntry,
    change: F,
) -> Result<Option<T>, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<Option<T>, StoreError> + Send + 'static,
{
    let entry = entry.clone();
    store
        .run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let Some(done) = change(&txn)? else {
                return Ok(None);
            };
            append(&txn, &entry)?;
            txn.commit().map_err(unavailable)?;
            Ok(Some(done))
        })
        .await
}

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn create_audited(&self, record: &KeyRecord, entry: &NewEntry) -> Result<(), StoreError> {
        let record = record.clone();
        audited(self, entry, move |txn| {
            if stored(txn, &record.id)?.is_some() {
                return Err(StoreError::Conflict(record.id.clone()));
            }
            write_record(txn, &record, None).map(Some)
        })
        .await
        .map(drop)
    }

    async fn update_audited(
        &self,
        record: &KeyRecord,
        entry: &NewEntry,
    ) -> Result<bool, StoreError> {
        let record = record.clone();
        let updated = audited(self, entry, move |txn| {
            let Some(previous) = stored(txn, &record.id)? else {
                return Ok(None);
            };
            write_record(txn, &record, Some(&previous)).map(Some)
        })
        .await?;
        Ok(updated.is_some())
    }

    async fn delete_audited(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_string();
        audited(self, entry, move |txn| remove_record(txn, &id)).await
    }

    async fn create_admin_token(
        &self,
        token: &AdminTokenRecord,
        entry: &NewEntry,
    ) -> Result<(), StoreError> {
        let token = token.clone();
        let hash = token
            .key_hash()
            .ok_or_else(|| corrupt("admin token hash"))?;
        audited(self, entry, move |txn| {
            let mut tokens = txn.open_table(ADMIN_TOKENS).map_err(unavailable)?;
            if tokens
                .get(token.id.as_str())
                .map_err(unavailable)?
                .is_some()
            {
                return Err(StoreError::Conflict(token.id.clone()));
            }
            let json = serde_json::to_string(&token).map_err(corrupt)?;
            tokens
                .insert(token.id.as_str(), json.as_str())
                .map_err(unavailable)?;
            let mut hashes = txn.open_table(ADMIN_HASHES).map_err(unavailable)?;
            hashes
                .insert(hash.0.as_slice(), token.id.as_str())
                .map_err(unavailable)?;
            Ok(Some(()))
        })
        .await
        .map(drop)
    }

    async fn delete_admin_token(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        let id = id.to_string();
        audited(self, entry, move |txn| {
            let mut tokens = txn.open_table(ADMIN_TOKENS).map_err(unavailable)?;
            let token = match tokens.remove(id.as_str()).map_err(unavailable)? {
                Some(json) => decode_token(json.value())?,
                None => return Ok(None),
            };
            if let Some(hash) = token.key_hash() {
                let mut hashes = txn.open_table(ADMIN_HASHES).map_err(unavailable)?;
                hashes.remove(hash.0.as_slice()).map_err(unavailable)?;
            }
            Ok(Some(token))
        })
        .await
    }

    async fn admin_token(&self, id: &str) -> Result<Option<AdminTokenRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let tokens = txn.open_table(ADMIN_TOKENS).map_err(unavailable)?;
            let json = tokens.get(id.as_str()).map_err(unavailable)?;
            json.map(|j| decode_token(j.value())).transpose()
        })
        .await
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let tokens = txn.open_table(ADMIN_TOKENS).map_err(unavailable)?;
            let mut all = Vec::new();
            for row in tokens.iter().map_err(unavailable)? {
                let (_, json) = row.map_err(unavailable)?;
                all.push(decode_token(json.value())?);
            }
            all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(all)
        })
        .await
    }

    async fn admin_token_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        let hash = *hash;
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let hashes = txn.open_table(ADMIN_HASHES).map_err(unavailable)?;
            let Some(id) = hashes.get(hash.0.as_slice()).map_err(unavailable)? else {
                return Ok(None);
            };
            let tokens = txn.open_table(ADMIN_TOKENS).map_err(unavailable)?;
            let json = tokens.get(id.value()).map_err(unavailable)?;
            json.map(|j| decode_token(j.value())).transpose()
        })
        .await
    }

    async fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let audit = txn.open_table(AUDIT).map_err(unavailable)?;
            let range = audit
                .range(..before.unwrap_or(u64::MAX))
                .map_err(unavailable)?;
            let mut page = Vec::new();
            for row in range.rev().take(limit) {
                let (_, json) = row.map_err(unavailable)?;
                page.push(decode_entry(json.value())?);
            }
            Ok(page)
        })
        .await
    }

    async fn audit_chain(&self) -> Result<Chain, StoreError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let meta_table = txn.open_table(AUDIT_META).map_err(unavailable)?;
            let audit = txn.open_table(AUDIT).map_err(unavailable)?;
            let mut entries = Vec::new();
            for row in audit.iter().map_err(unavailable)? {
                let (_, json) = row.map_err(unavailable)?;
                entries.push(decode_entry(json.value())?);
            }
            Ok(Chain {
                anchor: meta(&meta_table, "anchor")?,
                head: meta(&meta_table, "head")?,
                entries,
            })
        })
        .await
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let removed = {
                let mut audit = txn.open_table(AUDIT).map_err(unavailable)?;
                let mut oldest = Vec::new();
                for row in audit.iter().map_err(unavailable)? {
                    let (_, json) = row.map_err(unavailable)?;
                    let entry = decode_entry(json.value())?;
                    if entry.time >= before {
                        break;
                    }
                    oldest.push(entry);
                }
                let n = prunable(&oldest, before);
                let Some(last) = n.checked_sub(1).map(|i| &oldest[i]) else {
                    return Ok(0);
                };
                audit
                    .retain_in(..=last.seq(), |_, _| false)
                    .map_err(unavailable)?;
                let mut meta_table = txn.open_table(AUDIT_META).map_err(unavailable)?;
                meta_table
                    .insert("anchor", last.head().to_text().as_str())
                    .map_err(unavailable)?;
                n
            };
            txn.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }

    async fn import_audit(
        &self,
        tokens: &[AdminTokenRecord],
        chain: &Chain,
    ) -> Result<(), StoreError> {
        let tokens = tokens.to_vec();
        let (entries, anchor, head) = (
            chain.entries.clone(),
            chain.anchor.clone(),
            chain.head.clone(),
        );
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(ADMIN_TOKENS).map_err(unavailable)?;
                let mut hashes = txn.open_table(ADMIN_HASHES).map_err(unavailable)?;
                for token in &tokens {
                    let json = serde_json::to_string(token).map_err(corrupt)?;
                    table
                        .insert(token.id.as_str(), json.as_str())
                        .map_err(unavailable)?;
                    if let Some(hash) = token.key_hash() {
                        hashes
                            .insert(hash.0.as_slice(), token.id.as_str())
                            .map_err(unavailable)?;
                    }
                }
                let mut audit = txn.open_table(AUDIT).map_err(unavailable)?;
                audit.retain(|_, _| false).map_err(unavailable)?;
                for entry in &entries {
                    audit
                        .insert(entry.seq(), entry.to_json().as_str())
                        .map_err(unavailable)?;
                }
                let mut meta_table = txn.open_table(AUDIT_META).map_err(unavailable)?;
                for (name, value) in [("anchor", &anchor), ("head", &head)] {
                    match value {
                        Some(value) => meta_table.insert(name, value.to_text().as_str()).map(drop),
                        None => meta_table.remove(name).map(drop),
                    }
                    .map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyStore;
    use crate::keys::audit::{self, Action, Context, Target};

    fn entry(record: &KeyRecord) -> NewEntry {
        NewEntry::new(
            &Context::config(),
            Action::KeyCreated,
            Target::key(record),
            Default::default(),
        )
    }

    #[tokio::test]
    async fn a_failed_append_leaves_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let first = KeyRecord::sample("first", Utc::now());
        store.create_audited(&first, &entry(&first)).await.unwrap();
        // A head that cannot be read makes the append fail inside the change's transaction.
        store
            .run(|db| {
                let txn = db.begin_write().map_err(unavailable)?;
                txn.open_table(AUDIT_META)
                    .map_err(unavailable)?
                    .insert("head", "garbage")
                    .map_err(unavailable)?;
                txn.commit().map_err(unavailable)
            })
            .await
            .unwrap();
        let second = KeyRecord::sample("second", Utc::now());
        let error = store
            .create_audited(&second, &entry(&second))
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
        assert!(
            store.get(&second.id).await.unwrap().is_none(),
            "no change without its entry"
        );
        assert_eq!(store.audit_page(None, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn pruning_keeps_a_verifiable_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        for i in 0..4 {
            let r = KeyRecord::sample(&format!("k{i}"), Utc::now());
            store.create_audited(&r, &entry(&r)).await.unwrap();
        }
        let page = store.audit_page(None, 10).await.unwrap();
        let cut = page[1].time;
        assert_eq!(page[0].seq(), 4, "newest first");
        let removed = store.prune_audit(cut).await.unwrap();
        let chain = store.audit_chain().await.unwrap();
        assert_eq!(chain.entries.len(), 4 - removed);
        assert!(audit::verify(&chain).ok);
        assert_eq!(store.prune_audit(cut).await.unwrap(), 0, "idempotent");
    }
}
