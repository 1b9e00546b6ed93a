//! Per-key usage: counted in memory on the request path (no store write there), flushed to the
//! store in batches every `usage.flush_interval` and once more at shutdown. Each key's counts
//! carry its usage history too (requests by hour and outcome): a few adds in the same map entry,
//! no allocation on the request path (a refusal code's slot is made once per key and flush).

use crate::FastMap;
use crate::keys::history::{HourCounts, hour_of, upstream_class};
use crate::keys::service::PendingUsage;
use crate::keys::{KeyRecord, KeyStore, StoreError, UsageDelta};
use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, PartialEq)]
struct Pending {
    requests: u64,
    /// A `SystemTime`, made a `DateTime` only when read: chrono's calendar arithmetic in
    /// `Utc::now()` was most of what counting a request cost (callgrind, benches/load).
    last_used_at: SystemTime,
    /// The hour of the latest request.
    hour: Hour,
    /// Hours before `hour` since the last flush: only when a flush window spans an hour's end.
    earlier: Vec<Hour>,
}

/// How one hour's requests ended, as counted on the request path.
#[derive(Clone, Debug, PartialEq)]
struct Hour {
    hour: i64,
    requests: u64,
    forwarded: u64,
    /// Refusal code -> count: the codes are `Rejection::code()`'s static strings, so a new
    /// refusal is counted without a change here.
    refused: Vec<(&'static str, u64)>,
    upstream: [u64; 4],
}

/// How a request of a known key ended.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// Forwarded; the KB answered with this status (or none: 0).
    Forwarded(u16),
    /// Refused with this code after the key was known.
    Refused(&'static str),
}

impl Hour {
    fn new(hour: i64) -> Hour {
        Hour {
            hour,
            requests: 0,
            forwarded: 0,
            refused: Vec::new(),
            upstream: [0; 4],
        }
    }

    fn end(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Forwarded(status) => {
                self.forwarded += 1;
                if let Some(class) = upstream_class(status) {
                    self.upstream[class] += 1;
                }
            }
            Outcome::Refused(code) => match self.refused.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => self.refused.push((code, 1)),
            },
        }
    }

    fn counts(&self) -> HourCounts {
        HourCounts {
            hour: self.hour,
            requests: self.requests,
            forwarded: self.forwarded,
            refused: self
                .refused
                .iter()
                .map(|(code, n)| (code.to_string(), *n))
                .collect(),
            upstream: self.upstream,
        }
    }
}

impl Pending {
    fn new(now: SystemTime) -> Pending {
        Pending {
            requests: 0,
            last_used_at: now,
            hour: Hour::new(hour_of(unix_seconds(now))),
            earlier: Vec::new(),
        }
    }

    fn count(&mut self, now: SystemTime) {
        self.requests += 1;
        self.last_used_at = now;
        let hour = hour_of(unix_seconds(now));
        if hour != self.hour.hour {
            let ended = std::mem::replace(&mut self.hour, Hour::new(hour));
            self.earlier.push(ended);
        }
        self.hour.requests += 1;
    }

    /// Adds counts taken out for a flush that failed.
    fn merge(&mut self, taken: Pending) {
        self.requests += taken.requests;
        self.last_used_at = self.last_used_at.max(taken.last_used_at);
        self.earlier.extend(taken.earlier);
        self.earlier.push(taken.hour);
    }

    /// Every hour counted, one entry per hour.
    fn hours(&self) -> Vec<HourCounts> {
        let mut hours: Vec<HourCounts> = Vec::new();
        for hour in self.earlier.iter().chain(std::iter::once(&self.hour)) {
            let counts = hour.counts();
            match hours.iter_mut().find(|h| h.hour == counts.hour) {
                Some(same) => same.add(&counts),
                None => hours.push(counts),
            }
        }
        hours.retain(|h| *h != HourCounts::empty(h.hour));
        hours
    }
}

#[derive(Default)]
pub struct UsageRecorder {
    pending: FastMap<Arc<str>, Pending>,
    /// Written by a flush from taking the counts out of `pending` until the store has them;
    /// read by whoever reads a key's usage from the store and then adds what is pending.
    flushing: tokio::sync::RwLock<()>,
    /// History older than this is pruned by the flusher when an hour begins; None: kept.
    history_retention: Option<Duration>,
}

impl UsageRecorder {
    /// A recorder whose flusher prunes usage history older than `retention`.
    pub fn with_retention(retention: Duration) -> UsageRecorder {
        UsageRecorder {
            history_retention: Some(retention),
            ..UsageRecorder::default()
        }
    }

    /// Prunes the history past its retention, if the hour changed since `last_pruned`.
    async fn prune(&self, store: &dyn KeyStore, last_pruned: &mut i64) {
        let Some(retention) = self.history_retention else {
            return;
        };
        let hour = hour_of(Utc::now().timestamp());
        if hour == *last_pruned {
            return;
        }
        let keep_hours = i64::try_from(retention.as_secs() / 3600).unwrap_or(i64::MAX);
        match store.prune_history(hour.saturating_sub(keep_hours)).await {
            Ok(()) => *last_pruned = hour,
            Err(error) => tracing::warn!(%error, "usage history pruning failed; will retry"),
        }
    }

    /// Counts one request for `key_id`, once its key is verified (so a request in flight is
    /// already in its key's usage); how it ended is [`UsageRecorder::record_outcome`]'s.
    pub fn record(&self, key_id: &Arc<str>) {
        let now = SystemTime::now();
        if let Some(mut pending) = self.pending.get_mut(key_id) {
            pending.count(now);
            return;
        }
        self.pending
            .entry(key_id.clone())
            .or_insert_with(|| Pending::new(now))
            .count(now);
    }

    /// Counts how a request [`UsageRecorder::record`] counted ended, in the hour counted last
    /// (a request that spans the end of an hour ends in the next).
    pub fn record_outcome(&self, key_id: &Arc<str>, outcome: Outcome) {
        if let Some(mut pending) = self.pending.get_mut(key_id) {
            pending.hour.end(outcome);
            return;
        }
        // Flushed since the request was counted: the outcome is flushed on its own.
        let now = SystemTime::now();
        self.pending
            .entry(key_id.clone())
            .or_insert_with(|| Pending::new(now))
            .hour
            .end(outcome);
    }

    /// Requests counted for a key but not yet flushed.
    fn pending(&self, key_id: &str) -> Option<Pending> {
        self.pending.get(key_id).map(|p| p.clone())
    }

    /// A key's history counted but not yet flushed, by hour.
    pub fn pending_hours(&self, key_id: &str) -> Vec<HourCounts> {
        self.pending
            .get(key_id)
            .map_or_else(Vec::new, |p| p.hours())
    }

    /// Adds to a record read from the store what is counted for it but not yet flushed, so its
    /// usage is exact. Read the record and call this under [`UsageRecorder::exact`].
    pub fn add_pending(&self, record: &mut KeyRecord) {
        if let Some(pending) = self.pending(&record.id) {
            let usage = &mut record.usage;
            usage.request_count += pending.requests;
            usage.last_used_at = usage.last_used_at.max(Some(pending.last_used_at.into()));
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
                last_used_at: p.last_used_at.into(),
                hours: p.hours(),
            })
            .collect();
        let result = store.add_usage(&deltas).await;
        if let Err(error) = &result {
            crate::metrics::fixed()
                .store_error(crate::metrics::StoreOp::UsageFlush, error.metric_kind());
            for (id, p) in taken {
                match self.pending.entry(id) {
                    dashmap::Entry::Occupied(mut now) => now.get_mut().merge(p),
                    dashmap::Entry::Vacant(slot) => {
                        slot.insert(p);
                    }
                }
            }
        }
        result
    }

    /// Flushes every `interval` until `shutdown`, and `along` with each flush; the final flush
    /// is the caller's, after the listeners have drained.
    pub async fn run_flusher(
        self: Arc<Self>,
        store: Arc<dyn KeyStore>,
        interval: Duration,
        shutdown: CancellationToken,
        along: Option<Arc<dyn FlushedAlong>>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Pruned when an hour begins (not at start: a restart should not write to the store
        // while an older instance may still hold it, and the hours pruned are hours old).
        let mut last_pruned = hour_of(Utc::now().timestamp());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    if let Err(error) = self.flush(store.as_ref()).await {
                        tracing::warn!(%error, "usage flush failed; will retry");
                    }
                    if let Some(along) = &along {
                        along.flush_along(store.as_ref()).await;
                    }
                    self.prune(store.as_ref(), &mut last_pruned).await;
                }
            }
        }
    }
}

/// Other counts kept in memory on the request path and written on the usage flush's tick (the
/// embedded store's quota counts), so that one timer loop writes them all.
#[async_trait::async_trait]
pub trait FlushedAlong: Send + Sync {
    /// Writes what is counted (logging its own failure, to be retried on the next tick).
    async fn flush_along(&self, store: &dyn KeyStore);
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

    fn pending_hours(&self, key_id: &str) -> Vec<HourCounts> {
        UsageRecorder::pending_hours(self, key_id)
    }
}

/// Whole seconds since the epoch, rounded down as `DateTime::timestamp` rounds them.
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            -i64::try_from(before.as_secs()).unwrap_or(i64::MAX)
                - i64::from(before.subsec_nanos() > 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyHash, StoreEvent};
    use async_trait::async_trait;
    use chrono::DateTime;
    use std::sync::Mutex;
    use tokio::sync::{Notify, mpsc};

    #[test]
    fn unix_seconds_round_down_as_chrono_does() {
        let epoch = SystemTime::UNIX_EPOCH;
        for nanos in [
            0i64,
            1,
            999_999_999,
            1_000_000_000,
            1_765_000_000_123_456_789,
            -1,
            -999_999_999,
            -1_000_000_000,
            -1_000_000_001,
            -86_400_000_000_001,
        ] {
            let offset = Duration::from_nanos(nanos.unsigned_abs());
            let time = if nanos < 0 {
                epoch - offset
            } else {
                epoch + offset
            };
            let chrono = DateTime::<Utc>::from(time);
            assert_eq!(unix_seconds(time), chrono.timestamp(), "{nanos} ns");
            assert_eq!(chrono.timestamp_nanos_opt(), Some(nanos));
        }
    }

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

    #[test]
    fn history_counts_each_outcome_in_its_hour() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 3600 + 3590);
        let mut pending = Pending::new(start);
        for outcome in [
            Outcome::Forwarded(200),
            Outcome::Forwarded(503),
            Outcome::Refused("route_not_allowed"),
        ] {
            pending.count(start);
            pending.hour.end(outcome);
        }
        // The next hour begins before the flush.
        let later = start + Duration::from_secs(20);
        for outcome in [Outcome::Refused("route_not_allowed"), Outcome::Forwarded(0)] {
            pending.count(later);
            pending.hour.end(outcome);
        }
        let hours = pending.hours();
        assert_eq!(pending.requests, 5);
        assert_eq!(hours.len(), 2);
        assert_eq!((hours[0].hour, hours[1].hour), (10, 11));
        assert_eq!(hours[0].requests, 3);
        assert_eq!(hours[0].forwarded, 2);
        assert_eq!(hours[0].upstream, [1, 0, 0, 1]);
        assert_eq!(hours[0].refused["route_not_allowed"], 1);
        assert_eq!(hours[1].requests, 2);
        assert_eq!(hours[1].upstream, [0; 4], "no answer, no class");
        assert_eq!(
            hours.iter().map(|h| h.requests).sum::<u64>(),
            pending.requests
        );
    }

    #[tokio::test]
    async fn counts_being_written_are_not_read_as_gone() {
        let recorder = Arc::new(UsageRecorder::default());
        let store = Arc::new(SlowUsageStore::default());
        let id: Arc<str> = "key_1".into();
        recorder.record(&id);
        recorder.record_outcome(&id, Outcome::Forwarded(200));
        recorder.record(&id);
        recorder.record_outcome(&id, Outcome::Refused("route_not_allowed"));

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
