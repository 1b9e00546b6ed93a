//! The keys' background loops: a shared store's change feed applied to the hot tier, the
//! hot-tier sweep, and the `kbgate_key_info` refresh after changes made through other instances.

use crate::keys::{KeyRecord, KeyStore, Keyring, StoreEvent};
use crate::metrics::keys::KeyMetrics;
use crate::metrics::{self, StoreOp};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often aged hot-tier entries are swept out.
const HOT_TIER_SWEEP: Duration = Duration::from_secs(10);
/// How often `kbgate_key_info` may be re-read from a shared store after the change feed told of
/// a change made through another instance (a full listing: not on every event).
const KEY_INFO_REFRESH: Duration = Duration::from_secs(5);

/// Starts the keys' loops until `shutdown`: follows `changes` (a shared store's feed, from
/// [`KeyStore::watch`]), sweeps the hot tier, and keeps `key_metrics` in step with the store.
/// `kbgate_key_info` is filled from the store before this returns, so the first scrape has it.
/// The loops run on `tasks`, so a shutdown can wait until none of them holds the store.
pub async fn spawn(
    tasks: &TaskTracker,
    keyring: Arc<Keyring>,
    changes: Option<mpsc::Receiver<StoreEvent>>,
    key_metrics: Option<Arc<KeyMetrics>>,
    shutdown: CancellationToken,
) {
    // Set by the change feed, read by the `kbgate_key_info` refresh. Without a feed (the
    // embedded store) every change goes through this process's admin API: no refresh needed.
    let changed_elsewhere = changes.as_ref().map(|_| Arc::new(AtomicBool::new(false)));
    if let (Some(changes), Some(flag)) = (changes, &changed_elsewhere) {
        tasks.spawn(follow_changes(keyring.clone(), changes, flag.clone()));
    }
    if let Some(key_metrics) = &key_metrics {
        refresh_key_metrics(key_metrics, keyring.store().as_ref()).await;
    }
    tasks.spawn(sweep_hot_tier(keyring.clone(), shutdown.clone()));
    if let (Some(key_metrics), Some(changed_elsewhere)) = (key_metrics, changed_elsewhere) {
        tasks.spawn(keep_key_metrics(
            key_metrics,
            keyring.clone(),
            changed_elsewhere,
            shutdown.clone(),
        ));
    }
}

/// Applies a shared store's change feed to the hot tier, in order.
async fn follow_changes(
    keyring: Arc<Keyring>,
    mut changes: tokio::sync::mpsc::Receiver<StoreEvent>,
    changed_elsewhere: Arc<AtomicBool>,
) {
    while let Some(event) = changes.recv().await {
        // Any event, including a feed lost and found again (changes may have been missed).
        changed_elsewhere.store(true, Ordering::Release);
        keyring.apply(event).await;
    }
}

async fn sweep_hot_tier(keyring: Arc<Keyring>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(HOT_TIER_SWEEP);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => keyring.evict_aged(),
        }
    }
}

/// Reads the names and scopes of the keys `kbgate_key_info` covers (the oldest, up to
/// `metrics.per_key_limit`); on a store error keeps what it has.
async fn refresh_key_metrics(key_metrics: &KeyMetrics, store: &dyn KeyStore) {
    let changes = key_metrics.changes();
    match store.list_oldest(key_metrics.limit()).await {
        Ok(records) => {
            let labels: Vec<_> = records.iter().map(KeyRecord::metric_labels).collect();
            key_metrics.replace_all(&labels, changes);
        }
        Err(error) => {
            metrics::fixed().store_error(StoreOp::Admin, error.metric_kind());
            tracing::warn!(%error, "cannot list keys for kbgate_key_info; will retry");
        }
    }
}

/// Re-reads `kbgate_key_info` from a shared store when the change feed heard of a change; a
/// full listing of a large store is seconds of work, so never on a timer alone.
async fn keep_key_metrics(
    key_metrics: Arc<KeyMetrics>,
    keyring: Arc<Keyring>,
    changed_elsewhere: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(KEY_INFO_REFRESH);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                if changed_elsewhere.swap(false, Ordering::AcqRel) {
                    refresh_key_metrics(&key_metrics, keyring.store().as_ref()).await;
                }
            }
        }
    }
}
