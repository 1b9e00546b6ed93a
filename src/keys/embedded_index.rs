//! The embedded store's creation-order index and usage history tables.
//!
//! `by_age` ((created µs, id) -> ()) orders keys for paged lists. History: `history` ((id,
//! hour) -> HourCounts JSON) answers one key's usage; `hour_keys` ((hour, id) -> requests) and
//! `hour_totals` (hour -> HourCounts JSON) answer the overview and pruning without reading
//! every key.

use crate::keys::history::{HourCounts, UsageOverview};
use crate::keys::listing::AgeMark;
use crate::keys::{KeyRecord, StoreError, UsageDelta};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use std::collections::HashMap;
use std::ops::Bound;

pub(super) const BY_AGE: TableDefinition<(i64, &str), ()> = TableDefinition::new("by_age");
const HISTORY: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("history");
const HOUR_KEYS: TableDefinition<(i64, &str), u64> = TableDefinition::new("hour_keys");
const HOUR_TOTALS: TableDefinition<i64, &[u8]> = TableDefinition::new("hour_totals");

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn decode_counts(bytes: &[u8]) -> Result<HourCounts, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

fn encode_counts(counts: &HourCounts) -> Vec<u8> {
    // Numbers and strings only: serialising cannot fail.
    serde_json::to_vec(counts).unwrap_or_default()
}

/// Creates the tables, and fills `by_age` from the keys of a store written before it existed.
pub(super) fn open_tables(
    txn: &WriteTransaction,
    keys: TableDefinition<&str, &[u8]>,
) -> Result<(), StoreError> {
    txn.open_table(HISTORY).map_err(unavailable)?;
    txn.open_table(HOUR_KEYS).map_err(unavailable)?;
    txn.open_table(HOUR_TOTALS).map_err(unavailable)?;
    let mut by_age = txn.open_table(BY_AGE).map_err(unavailable)?;
    let keys = txn.open_table(keys).map_err(unavailable)?;
    if by_age.is_empty().map_err(unavailable)? {
        for entry in keys.iter().map_err(unavailable)? {
            let (id, bytes) = entry.map_err(unavailable)?;
            let record: KeyRecord = serde_json::from_slice(bytes.value()).map_err(corrupt)?;
            let micros = record.created_at.timestamp_micros();
            by_age
                .insert((micros, id.value()), ())
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Moves a key's entry in `by_age` from `previous` (if any) to `record`.
pub(super) fn index(
    txn: &WriteTransaction,
    record: Option<&KeyRecord>,
    previous: Option<&KeyRecord>,
) -> Result<(), StoreError> {
    let mut by_age = txn.open_table(BY_AGE).map_err(unavailable)?;
    if let Some(previous) = previous {
        let mark = AgeMark::of(previous);
        by_age
            .remove((mark.created_micros, mark.id.as_str()))
            .map_err(unavailable)?;
    }
    if let Some(record) = record {
        let mark = AgeMark::of(record);
        by_age
            .insert((mark.created_micros, mark.id.as_str()), ())
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Up to `max` ids in creation order after `after` (see `KeyStore::page_by_age`).
pub(super) fn ids_by_age(
    txn: &redb::ReadTransaction,
    after: Option<&AgeMark>,
    descending: bool,
    max: usize,
) -> Result<Vec<String>, StoreError> {
    let by_age = txn.open_table(BY_AGE).map_err(unavailable)?;
    let mark = after.map(|m| (m.created_micros, m.id.as_str()));
    let range = match (mark, descending) {
        (None, _) => by_age.range::<(i64, &str)>(..),
        (Some(mark), false) => by_age.range((Bound::Excluded(mark), Bound::Unbounded)),
        (Some(mark), true) => by_age.range((Bound::Unbounded, Bound::Excluded(mark))),
    }
    .map_err(unavailable)?;
    let mut ids = Vec::with_capacity(max.min(1024));
    let mut push = |entry: Result<(redb::AccessGuard<(i64, &str)>, _), redb::StorageError>| {
        let (key, _) = entry.map_err(unavailable)?;
        ids.push(key.value().1.to_string());
        Ok::<_, StoreError>(())
    };
    if descending {
        for entry in range.rev().take(max) {
            push(entry)?;
        }
    } else {
        for entry in range.take(max) {
            push(entry)?;
        }
    }
    Ok(ids)
}

/// Adds a live key's hours to the history tables.
pub(super) fn add_history(txn: &WriteTransaction, delta: &UsageDelta) -> Result<(), StoreError> {
    let mut history = txn.open_table(HISTORY).map_err(unavailable)?;
    let mut hour_keys = txn.open_table(HOUR_KEYS).map_err(unavailable)?;
    let mut totals = txn.open_table(HOUR_TOTALS).map_err(unavailable)?;
    let id = delta.key_id.as_str();
    for hour in &delta.hours {
        let mut counts = match history.get((id, hour.hour)).map_err(unavailable)? {
            Some(bytes) => decode_counts(bytes.value())?,
            None => HourCounts::empty(hour.hour),
        };
        counts.add(hour);
        history
            .insert((id, hour.hour), encode_counts(&counts).as_slice())
            .map_err(unavailable)?;
        let requests = hour_keys
            .get((hour.hour, id))
            .map_err(unavailable)?
            .map_or(0, |v| v.value());
        hour_keys
            .insert((hour.hour, id), requests + hour.requests)
            .map_err(unavailable)?;
        let mut total = match totals.get(hour.hour).map_err(unavailable)? {
            Some(bytes) => decode_counts(bytes.value())?,
            None => HourCounts::empty(hour.hour),
        };
        total.add(hour);
        totals
            .insert(hour.hour, encode_counts(&total).as_slice())
            .map_err(unavailable)?;
    }
    Ok(())
}

/// One key's hours `from..to` that saw requests.
pub(super) fn history(
    txn: &redb::ReadTransaction,
    id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<HourCounts>, StoreError> {
    let history = txn.open_table(HISTORY).map_err(unavailable)?;
    let mut hours = Vec::new();
    for entry in history.range((id, from)..(id, to)).map_err(unavailable)? {
        let (_, bytes) = entry.map_err(unavailable)?;
        hours.push(decode_counts(bytes.value())?);
    }
    Ok(hours)
}

/// Every hour's totals `from..to`, and each key's requests in them.
pub(super) fn overview(
    txn: &redb::ReadTransaction,
    from: i64,
    to: i64,
) -> Result<UsageOverview, StoreError> {
    let totals = txn.open_table(HOUR_TOTALS).map_err(unavailable)?;
    let hour_keys = txn.open_table(HOUR_KEYS).map_err(unavailable)?;
    let mut overview = UsageOverview::default();
    for entry in totals.range(from..to).map_err(unavailable)? {
        let (_, bytes) = entry.map_err(unavailable)?;
        overview.hours.push(decode_counts(bytes.value())?);
    }
    let mut per_key: HashMap<String, u64> = HashMap::new();
    for entry in hour_keys.range((from, "")..(to, "")).map_err(unavailable)? {
        let (key, requests) = entry.map_err(unavailable)?;
        *per_key.entry(key.value().1.to_string()).or_default() += requests.value();
    }
    overview.keys = per_key.into_iter().collect();
    Ok(overview)
}

/// Removes the history of every hour before `before`.
pub(super) fn prune(txn: &WriteTransaction, before: i64) -> Result<(), StoreError> {
    let mut history = txn.open_table(HISTORY).map_err(unavailable)?;
    let mut hour_keys = txn.open_table(HOUR_KEYS).map_err(unavailable)?;
    let mut totals = txn.open_table(HOUR_TOTALS).map_err(unavailable)?;
    let mut old: Vec<(i64, String)> = Vec::new();
    for entry in hour_keys.range(..(before, "")).map_err(unavailable)? {
        let (key, _) = entry.map_err(unavailable)?;
        let (hour, id) = key.value();
        old.push((hour, id.to_string()));
    }
    for (hour, id) in &old {
        history.remove((id.as_str(), *hour)).map_err(unavailable)?;
        hour_keys
            .remove((*hour, id.as_str()))
            .map_err(unavailable)?;
    }
    let hours: Vec<i64> = totals
        .range(..before)
        .map_err(unavailable)?
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .map_err(unavailable)?;
    for hour in hours {
        totals.remove(hour).map_err(unavailable)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::authz::Scope;
    use crate::keys::embedded::EmbeddedStore;
    use crate::keys::history::HourCounts;
    use crate::keys::{KeyRecord, KeyStore, UsageDelta, secret};

    fn hour(hour: i64, requests: u64) -> HourCounts {
        HourCounts {
            requests,
            forwarded: requests,
            ..HourCounts::empty(hour)
        }
    }

    #[tokio::test]
    async fn history_adds_up_and_is_pruned_by_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let now = chrono::Utc::now();
        let record = KeyRecord::new(
            "k".into(),
            Scope::Read,
            vec![],
            None,
            &secret::generate(),
            now,
        );
        store.create(&record).await.unwrap();
        let delta = |hours: Vec<HourCounts>| UsageDelta {
            key_id: record.id.clone(),
            requests: hours.iter().map(|h| h.requests).sum(),
            last_used_at: now,
            hours,
        };
        store
            .add_usage(&[delta(vec![hour(10, 2), hour(20, 3)])])
            .await
            .unwrap();
        store.add_usage(&[delta(vec![hour(20, 4)])]).await.unwrap();
        let history = store.usage_history(&record.id, 0, 100).await.unwrap();
        assert_eq!(history, [hour(10, 2), hour(20, 7)]);
        let overview = store.usage_overview(0, 100).await.unwrap();
        assert_eq!(overview.keys, [(record.id.clone(), 9)]);

        store.prune_history(15).await.unwrap();
        assert_eq!(
            store.usage_history(&record.id, 0, 100).await.unwrap(),
            [hour(20, 7)]
        );
        let overview = store.usage_overview(0, 100).await.unwrap();
        assert_eq!(overview.hours, [hour(20, 7)]);
        assert_eq!(overview.keys, [(record.id.clone(), 7)]);
        assert_eq!(
            store
                .get(&record.id)
                .await
                .unwrap()
                .unwrap()
                .usage
                .request_count,
            9
        );
    }
}
