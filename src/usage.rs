//! Per-key usage: counted in memory on the request path (no store write there), flushed to the
//! store in batches every `usage.flush_interval` and once more at shutdown.

use crate::FastMap;
use crate::keys::{KeyStore, StoreError, UsageDelta};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pending {
    pub requests: u64,
    pub last_used_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct UsageRecorder {
    pending: FastMap<Arc<str>, Pending>,
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

    /// Requests counted but not yet flushed, so the admin API can show exact figures.
    pub fn pending(&self, key_id: &str) -> Option<Pending> {
        self.pending.get(key_id).map(|p| *p)
    }

    /// Writes everything counted so far to the store. On failure the counts are put back, so
    /// nothing is lost; the next flush tries again.
    pub async fn flush(&self, store: &dyn KeyStore) -> Result<(), StoreError> {
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
            crate::metrics::fixed().store_error(crate::metrics::StoreOp::UsageFlush, error);
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
