//! Per-key usage: counted in memory on the request path (no store write there), flushed to the
//! store in batches every `usage.flush_interval` and once more at shutdown.

use crate::FastMap;
use crate::keys::service::PendingUsage;
use crate::keys::{KeyRecord, KeyStore, StoreError, UsageDelta};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Pending {
    requests: u64,
    last_used_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct UsageRecorder {
    pending: FastMap<Arc<str>, Pending>,
    /// Written by a flush from taking the counts out of `pending` until the store has them;
    /// read by whoever reads a key's usage from the store and then adds what is pending.
    flushing: tokio::sync::RwLock<()>,
}

impl UsageRecorder {
    /// Counts one request for `key_id`.
    pub fn record(&self, key_id: &Arc<str>) {
        let now = Utc::now();
        if let Some(mut pending) = self.pending.get_mut(key_id) {
            pending.requests += 1;
            pending.last_used_at = now;
            return;
        }
        self.pending
            .entry(key_id.clone())
            .and_modify(|p| {
                p.requests += 1;
                p.last_used_at = now;
            })
            .or_insert(Pending {
                requests: 1,
                last_used_at: now,
            });
    }

    /// Requests counted for a key but not yet flushed.
    fn pending(&self, key_id: &str) -> Option<Pending> {
        self.pending.get(key_id).map(|p| *p)
    }

    /// Adds to a record read from the store what is counted for it but not yet flushed, so its
    /// usage is exact. Read the record and call this under [`UsageRecorder::exact`].
    pub fn add_pending(&self, record: &mut KeyRecord) {
        if let Some(pending) = self.pending(&record.id) {
            let usage = &mut record.usage;
            usage.request_count += pending.requests;
            usage.last_used_at = usage.last_used_at.max(Some(pending.last_used_at));
        }
    }

    /// Hold while reading usage from the store and then [`UsageRecorder::add_pending`]: a flush
    /// between the two would show counts in neither place (the store write can take a while
    /// under load: it runs on a low-priority thread).
    pub async fn exact(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.flushing.read().await
    }

    /// Writes everything counted so far to the store. On failure the counts are put back, so
    /// nothing is lost; the next flush tries again.
    pub async fn flush(&self, store: &dyn KeyStore) -> Result<(), StoreError> {
        let _flushing = self.flushing.write().await;
        let ids: Vec<Arc<str>> = self.pending.iter().map(|e| e.key().clone()).collect();
        let taken: Vec<(Arc<str>, Pending)> = ids
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        let deltas: Vec<UsageDelta> = taken
            .iter()
            .map(|(id, p)| UsageDelta {
                key_id: id.to_string(),
                requests: p.requests,
                last_used_at: p.last_used_at,
            })
            .collect();
        let result = store.add_usage(&deltas).await;
        if let Err(error) = &result {
            crate::metrics::fixed()
                .store_error(crate::metrics::StoreOp::UsageFlush, error.metric_kind());
            for (id, p) in taken {
                self.pending
                    .entry(id)
                    .and_modify(|now| {
                        now.requests += p.requests;
                        now.last_used_at = now.last_used_at.max(p.last_used_at);
                    })
                    .or_insert(p);
            }
        }
        result
    }

    /// Flushes every `interval` until `shutdown`; the final flush is the caller's, after the
    /// listeners have drained.
    pub async fn run_flusher(
        self: Arc<Self>,
        store: Arc<dyn KeyStore>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    if let Err(error) = self.flush(store.as_ref()).await {
                        tracing::warn!(%error, "usage flush failed; will retry");
                    }
                }
            }
        }
    }
}

/// The key service reads exact usage through this (keys sit below usage and cannot name it).
#[async_trait::async_trait]
impl PendingUsage for UsageRecorder {
    async fn exact(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        UsageRecorder::exact(self).await
    }

    fn add_pending(&self, record: &mut KeyRecord) {
        UsageRecorder::add_pending(self, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyHash, StoreEvent};
    use async_trait::async_trait;
    use std::sync::Mutex;
    use tokio::sync::{Notify, mpsc};

    /// A store whose usage write waits for `release`, and which keeps what it was given.
    #[derive(Default)]
    struct SlowUsageStore {
        writing: Notify,
        release: Notify,
        written: Mutex<u64>,
    }

    impl crate::keys::AuditStore for SlowUsageStore {}
    impl crate::keys::OutboxStore for SlowUsageStore {}

    #[async_trait]
    impl KeyStore for SlowUsageStore {
        async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
            self.writing.notify_one();
            self.release.notified().await;
            *self.written.lock().unwrap() += deltas.iter().map(|d| d.requests).sum::<u64>();
            Ok(())
        }
        async fn create(&self, _: &KeyRecord) -> Result<(), StoreError> {
            Ok(())
        }
        async fn get(&self, _: &str) -> Result<Option<KeyRecord>, StoreError> {
            Ok(None)
        }
        async fn find_by_hash(&self, _: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
            Ok(None)
        }
        async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
            Ok(Vec::new())
        }
        async fn update(&self, _: &KeyRecord) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn delete(&self, _: &str) -> Result<Option<KeyRecord>, StoreError> {
            Ok(None)
        }
        async fn import(&self, _: &KeyRecord) -> Result<(), StoreError> {
            Ok(())
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn watch(&self, _: CancellationToken) -> Option<mpsc::Receiver<StoreEvent>> {
            None
        }
    }

    #[tokio::test]
    async fn counts_being_written_are_not_read_as_gone() {
        let recorder = Arc::new(UsageRecorder::default());
        let store = Arc::new(SlowUsageStore::default());
        let id: Arc<str> = "key_1".into();
        recorder.record(&id);
        recorder.record(&id);

        let flush = tokio::spawn({
            let (recorder, store) = (recorder.clone(), store.clone());
            async move { recorder.flush(store.as_ref()).await }
        });
        store.writing.notified().await;
        // The counts have left `pending` and are not in the store yet: an exact read waits.
        assert_eq!(recorder.pending(&id), None);
        let early = tokio::time::timeout(Duration::from_millis(100), recorder.exact()).await;
        assert!(early.is_err(), "an exact read went ahead of the write");

        store.release.notify_one();
        let exact = recorder.exact().await;
        assert_eq!(*store.written.lock().unwrap(), 2, "in the store once read");
        drop(exact);
        flush.await.unwrap().unwrap();
    }
}
