//! The embedded store's usage orders: `by_requests` and `by_last_used`, each ((value, created
//! µs, id) -> ()), for key lists sorted by usage (see `listing::UsageSort` for the values).
//! Kept in the same write transaction as every change to a key's usage (the usage flush, an
//! import), its creation and its deletion, so a page reads from its mark on. A database written
//! before them is indexed once when it is opened.

use super::{KEYS, USAGE, unavailable, usage_of};
use crate::keys::listing::{AgeMark, UsageMark, UsageSort};
use crate::keys::{KeyRecord, StoreError, Usage};
use chrono::{DateTime, Utc};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use std::ops::Bound;

type Order = TableDefinition<'static, (i64, i64, &'static str), ()>;
const BY_REQUESTS: Order = TableDefinition::new("by_requests");
const BY_LAST_USED: Order = TableDefinition::new("by_last_used");
const ORDERS: [(UsageSort, Order); 2] = [
    (UsageSort::Requests, BY_REQUESTS),
    (UsageSort::LastUsed, BY_LAST_USED),
];

/// An entry of an order as redb reads it.
type Entry<'a> = Result<
    (
        redb::AccessGuard<'a, (i64, i64, &'static str)>,
        redb::AccessGuard<'a, ()>,
    ),
    redb::StorageError,
>;

fn table(by: UsageSort) -> Order {
    match by {
        UsageSort::Requests => BY_REQUESTS,
        UsageSort::LastUsed => BY_LAST_USED,
    }
}

/// The one field of a stored record the orders need, read without decoding the rest.
#[derive(serde::Deserialize)]
struct Created {
    created_at: DateTime<Utc>,
}

/// A stored record's creation time in µs.
pub(super) fn created_micros(json: &[u8]) -> Result<i64, StoreError> {
    let created: Created =
        serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(created.created_at.timestamp_micros())
}

/// The usage stored for `id` (none for a key never used or not yet written).
pub(super) fn stored_usage(txn: &WriteTransaction, id: &str) -> Result<Usage, StoreError> {
    let usage = txn.open_table(USAGE).map_err(unavailable)?;
    let row = usage.get(id).map_err(unavailable)?.map(|v| v.value());
    Ok(usage_of(row))
}

/// Moves a key in both orders from `old` (its creation µs and usage; None: not indexed) to
/// `new` (None: leaves them).
pub(super) fn reorder(
    txn: &WriteTransaction,
    id: &str,
    old: Option<(i64, &Usage)>,
    new: Option<(i64, &Usage)>,
) -> Result<(), StoreError> {
    for (by, definition) in ORDERS {
        let mut order = txn.open_table(definition).map_err(unavailable)?;
        if let Some((created, usage)) = old {
            order
                .remove((by.value(usage), created, id))
                .map_err(unavailable)?;
        }
        if let Some((created, usage)) = new {
            order
                .insert((by.value(usage), created, id), ())
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Creates the orders, and fills them from the keys of a store written before them (or by a
/// gateway that did not keep them: their length then differs from the keys').
pub(super) fn open_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    let keys = txn.open_table(KEYS).map_err(unavailable)?;
    let expected = keys.len().map_err(unavailable)?;
    let mut complete = true;
    for (_, definition) in ORDERS {
        let order = txn.open_table(definition).map_err(unavailable)?;
        complete &= order.len().map_err(unavailable)? == expected;
    }
    if complete {
        return Ok(());
    }
    let usage = txn.open_table(USAGE).map_err(unavailable)?;
    for (_, definition) in ORDERS {
        let mut order = txn.open_table(definition).map_err(unavailable)?;
        order.retain(|_, _| false).map_err(unavailable)?;
    }
    for entry in keys.iter().map_err(unavailable)? {
        let (id, json) = entry.map_err(unavailable)?;
        let id = id.value();
        let created = created_micros(json.value())?;
        let used = usage_of(usage.get(id).map_err(unavailable)?.map(|v| v.value()));
        reorder(txn, id, None, Some((created, &used)))?;
    }
    Ok(())
}

/// Up to `max` (mark, id) in the order `by` after `after` (see `KeyStore::page_by_usage`).
pub(super) fn marks(
    txn: &redb::ReadTransaction,
    by: UsageSort,
    after: Option<&UsageMark>,
    descending: bool,
    max: usize,
) -> Result<Vec<UsageMark>, StoreError> {
    let order = txn.open_table(table(by)).map_err(unavailable)?;
    let mark = after.map(|m| (m.value, m.age.created_micros, m.age.id.as_str()));
    let range = match (mark, descending) {
        (None, _) => order.range::<(i64, i64, &str)>(..),
        (Some(mark), false) => order.range((Bound::Excluded(mark), Bound::Unbounded)),
        (Some(mark), true) => order.range((Bound::Unbounded, Bound::Excluded(mark))),
    }
    .map_err(unavailable)?;
    let to_mark = |entry: Entry| {
        let (key, _) = entry.map_err(unavailable)?;
        let (value, created_micros, id) = key.value();
        Ok(UsageMark {
            value,
            age: AgeMark {
                created_micros,
                id: id.to_string(),
            },
        })
    };
    if descending {
        range.rev().take(max).map(to_mark).collect()
    } else {
        range.take(max).map(to_mark).collect()
    }
}

/// Keeps the orders of a record written by `write_record`: a new key enters them with the
/// usage stored for it (none), a key whose creation time changed (an import) moves.
pub(super) fn written(
    txn: &WriteTransaction,
    record: &KeyRecord,
    previous: Option<&KeyRecord>,
) -> Result<(), StoreError> {
    let created = |r: &KeyRecord| r.created_at.timestamp_micros();
    if previous.map(created) == Some(created(record)) {
        return Ok(());
    }
    let usage = stored_usage(txn, &record.id)?;
    reorder(
        txn,
        &record.id,
        previous.map(|p| (created(p), &usage)),
        Some((created(record), &usage)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::embedded::EmbeddedStore;
    use crate::keys::{KeyStore, UsageDelta};
    use redb::ReadableDatabase;

    async fn names(store: &EmbeddedStore, by: UsageSort, descending: bool) -> Vec<String> {
        let rows = store
            .page_by_usage(by, None, descending, 100)
            .await
            .unwrap();
        rows.into_iter().map(|(_, r)| r.name).collect()
    }

    #[tokio::test]
    async fn usage_moves_keys_and_deletes_remove_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let now = Utc::now();
        let keys: Vec<KeyRecord> = (0..4)
            .map(|i| KeyRecord::sample(&format!("k{i}"), now - chrono::Duration::minutes(10 - i)))
            .collect();
        for record in &keys {
            store.create(record).await.unwrap();
        }
        let used = |i: usize, requests, minutes_ago| UsageDelta {
            key_id: keys[i].id.clone(),
            requests,
            last_used_at: now - chrono::Duration::minutes(minutes_ago),
            hours: vec![],
        };
        store
            .add_usage(&[used(2, 5, 3), used(1, 2, 1)])
            .await
            .unwrap();
        store.add_usage(&[used(1, 1, 2)]).await.unwrap();
        // Never-used keys first (in creation order), then by the value.
        assert_eq!(
            names(&store, UsageSort::Requests, false).await,
            ["k0", "k3", "k1", "k2"]
        );
        assert_eq!(
            names(&store, UsageSort::LastUsed, true).await,
            ["k1", "k2", "k3", "k0"]
        );
        store.delete(&keys[1].id).await.unwrap();
        assert_eq!(
            names(&store, UsageSort::Requests, true).await,
            ["k2", "k3", "k0"]
        );
        // From a mark on: after k3's (0 requests, its age).
        let mark = UsageMark::of(UsageSort::Requests, &keys[3]);
        let rows = store
            .page_by_usage(UsageSort::Requests, Some(&mark), false, 10)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.name, "k2");
        assert_eq!(rows[0].0.value, 5);
    }

    #[tokio::test]
    async fn a_database_without_the_orders_is_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let now = Utc::now();
        {
            let store = EmbeddedStore::open(&path).unwrap();
            let mut old = KeyRecord::sample("old", now - chrono::Duration::days(1));
            old.usage.request_count = 9;
            old.usage.last_used_at = Some(now);
            store.import(&old).await.unwrap();
            store.create(&KeyRecord::sample("new", now)).await.unwrap();
            // As a gateway from before the orders left it.
            let txn = store.db.begin_write().unwrap();
            for (_, definition) in ORDERS {
                txn.delete_table(definition).unwrap();
            }
            txn.commit().unwrap();
            let txn = store.db.begin_read().unwrap();
            assert!(txn.open_table(BY_REQUESTS).is_err(), "the order is gone");
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(
            names(&store, UsageSort::Requests, true).await,
            ["old", "new"]
        );
        assert_eq!(
            names(&store, UsageSort::LastUsed, false).await,
            ["new", "old"]
        );
    }
}
