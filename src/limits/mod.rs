//! Per-key limits on the request path: the rate limit (GCRA: one stored time per key) and the
//! quota (a counter per key and calendar period), decided on the embedded store in this
//! process's memory ([`memory`]) or on Redis in one atomic script per request
//! (keys/redis/limits.rs), and the headers that tell a client where it stands ([`headers`]).
//! The address allowlist needs no state: the gateway checks it before the route.

pub mod gcra;
mod given_back;
pub mod headers;
mod memory;
mod period;
mod quota_states;
pub mod settings;

pub use headers::{LimitReport, Standing};
pub use settings::{HeaderStyle, LimitSettings, OnStoreError};

use crate::FastMap;
use crate::keys::limits::{KeyLimits, Quota, QuotaCounts, RateLimit};
use crate::keys::redis::RedisStore;
use crate::keys::{KeyStore, StoreError};
use crate::metrics::{self, LimitKind, LimitOutcome};
use crate::usage::FlushedAlong;
use chrono::{DateTime, Utc};
use given_back::GivenBack;
use memory::{Memory, QuotaVerdict};
use period::{Period, Periods};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a Redis gateway answers a `counts: successful` quota's refusal locally before
/// asking again: a unit given back elsewhere may free it before the period ends.
const QUOTA_RECHECK: Duration = Duration::from_secs(1);

/// Why a request may not pass its key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    RateLimited,
    QuotaExceeded,
    /// Redis could not be asked and `limits.on_store_error` is `deny`.
    StoreUnavailable,
}

/// Where the state lives.
enum Backend {
    Memory(Memory),
    Redis {
        store: Arc<RedisStore>,
        /// Keys refused until a time: answered here without a Redis call until then.
        refused: FastMap<Arc<str>, Refused>,
        /// Quota units given back, sent with the key's next decision or the flush's tick.
        given_back: GivenBack,
    },
}

/// A refusal remembered by a Redis gateway, with the limits it was refused under (a changed
/// limit asks Redis again).
#[derive(Clone, Copy)]
struct Refused {
    /// Until when this gateway answers for Redis.
    until: Instant,
    /// When a request could succeed (`Retry-After`): for a quota, the end of its period.
    retry_at: Instant,
    rate: Option<RateLimit>,
    quota: Option<Quota>,
    error: LimitError,
    report: LimitReport,
}

pub struct Limiter {
    backend: Backend,
    settings: LimitSettings,
    periods: Periods,
}

/// A quota unit taken by a request in flight. Dropped, it is given back (the request failed,
/// was refused later or abandoned); [`QuotaHold::keep`] keeps it (the KB answered 2xx or 3xx).
pub struct QuotaHold<'a> {
    limiter: &'a Limiter,
    key_id: Arc<str>,
    period: i64,
    kept: bool,
}

impl QuotaHold<'_> {
    pub fn keep(mut self) {
        // Not `mem::forget`: that would leak the key id's reference count.
        self.kept = true;
    }
}

impl Drop for QuotaHold<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        match &self.limiter.backend {
            Backend::Memory(memory) => memory.give_back(&self.key_id, self.period),
            Backend::Redis { given_back, .. } => given_back.add(&self.key_id, self.period, 1),
        }
    }
}

/// A quota's current period as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    pub used: u64,
    pub remaining: u64,
    pub resets_at: DateTime<Utc>,
}

impl Limiter {
    /// State in this process's memory (the embedded store, or one gateway alone).
    pub fn memory(settings: LimitSettings) -> Limiter {
        Limiter {
            backend: Backend::Memory(Memory::new()),
            settings,
            periods: Periods::default(),
        }
    }

    /// State on Redis, shared by every gateway using it.
    pub fn redis(store: Arc<RedisStore>, settings: LimitSettings) -> Limiter {
        Limiter {
            backend: Backend::Redis {
                store,
                refused: FastMap::default(),
                given_back: GivenBack::default(),
            },
            settings,
            periods: Periods::default(),
        }
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Decides the rate, then the quota, of one request with this key; `report` learns where
    /// each limit stands. A quota taken comes back as a hold (for `counts: successful`).
    pub async fn decide(
        &self,
        id: &Arc<str>,
        limits: &KeyLimits,
        report: &mut LimitReport,
    ) -> Result<Option<QuotaHold<'_>>, LimitError> {
        if limits.rate.is_none() && limits.quota.is_none() {
            return Ok(None);
        }
        // The wall clock only for a quota's calendar: the rate runs on the monotonic one.
        let period = limits
            .quota
            .as_ref()
            .map(|q| (q, self.periods.now(q.period)));
        // On Redis, a refusal's wait counts from when Redis was asked, not from its answer:
        // from the answer, this gateway would refuse past the time Redis frees the next unit (by
        // the round trip, each time: measured 7% fewer admitted through two gateways).
        let mut asked = None;
        let (rate, quota) = match &self.backend {
            Backend::Memory(memory) => {
                let quota_in = period.map(|(q, p)| (q, p.start));
                let (rate, quota) = memory.decide(id, limits.rate.as_ref(), quota_in);
                (rate, quota)
            }
            Backend::Redis {
                store,
                refused,
                given_back,
            } => {
                if let Some(answer) = Self::refused_here(refused, id, limits, report) {
                    return Err(answer);
                }
                let quota_in = period.map(|(q, p)| (q, p.start, p.left + 86_400));
                let back = period.map_or(0, |(_, p)| given_back.take(id, p.start));
                asked = Some(Instant::now());
                match store
                    .decide_limits(id, limits.rate.as_ref(), quota_in, back)
                    .await
                {
                    Ok(decision) => {
                        let rate = limits.rate.as_ref().map(|limit| {
                            let ahead = decision.rate_ahead_nanos;
                            gcra::verdict(limit, ahead)
                                .filter(|_| decision.rate_ok)
                                .unwrap_or_else(|| gcra::refused(limit, ahead))
                        });
                        let used = decision.quota_used;
                        let quota = (decision.rate_ok && limits.quota.is_some()).then_some(
                            if decision.quota_ok {
                                QuotaVerdict::Taken { used }
                            } else {
                                QuotaVerdict::Refused { used }
                            },
                        );
                        (rate, quota)
                    }
                    Err(error) => {
                        if let Some((_, p)) = period {
                            given_back.add(id, p.start, back);
                        }
                        return self.store_failed(limits, &error);
                    }
                }
            }
        };
        let fixed = metrics::fixed();
        if let (Some(limit), Some(verdict)) = (&limits.rate, rate) {
            report.rate = Some(Standing::of_rate(
                limit,
                verdict.remaining,
                verdict.reset_nanos,
            ));
            if !verdict.allowed {
                fixed.limit_decision(LimitKind::Rate, LimitOutcome::Refused);
                report.retry_after = Some(headers::seconds_up(verdict.reset_nanos));
                let wait = Duration::from_nanos(verdict.reset_nanos);
                self.remember_refusal(id, limits, LimitError::RateLimited, report, asked, wait);
                return Err(LimitError::RateLimited);
            }
            fixed.limit_decision(LimitKind::Rate, LimitOutcome::Allowed);
        }
        let (
            Some((
                quota,
                Period {
                    start,
                    length,
                    left,
                },
            )),
            Some(verdict),
        ) = (period, quota)
        else {
            return Ok(None);
        };
        match verdict {
            QuotaVerdict::Refused { used } => {
                fixed.limit_decision(LimitKind::Quota, LimitOutcome::Refused);
                report.quota = Some(Standing::of_quota(quota, used, length, left));
                report.retry_after = Some(left);
                let mut wait = Duration::from_secs(left);
                if quota.counts == QuotaCounts::Successful {
                    wait = wait.min(QUOTA_RECHECK);
                }
                self.remember_refusal(id, limits, LimitError::QuotaExceeded, report, asked, wait);
                Err(LimitError::QuotaExceeded)
            }
            QuotaVerdict::Taken { used } => {
                fixed.limit_decision(LimitKind::Quota, LimitOutcome::Allowed);
                report.quota = Some(Standing::of_quota(quota, used, length, left));
                Ok(
                    (quota.counts == QuotaCounts::Successful).then(|| QuotaHold {
                        limiter: self,
                        key_id: id.clone(),
                        period: start,
                        kept: false,
                    }),
                )
            }
        }
    }

    /// A refusal this gateway remembers for the key, if it still holds: counted, and its report
    /// written to `report`.
    fn refused_here(
        refused: &FastMap<Arc<str>, Refused>,
        id: &str,
        limits: &KeyLimits,
        report: &mut LimitReport,
    ) -> Option<LimitError> {
        let (error, remembered) = Self::remembered(refused, id, limits)?;
        let kind = match error {
            LimitError::RateLimited => LimitKind::Rate,
            _ => LimitKind::Quota,
        };
        metrics::fixed().limit_decision(kind, LimitOutcome::Refused);
        *report = remembered;
        Some(error)
    }

    /// The refusal remembered for the key under its current limits, if it still holds, with
    /// where its limits stand now.
    fn remembered(
        refused: &FastMap<Arc<str>, Refused>,
        id: &str,
        limits: &KeyLimits,
    ) -> Option<(LimitError, LimitReport)> {
        let entry = *refused.get(id)?;
        let now = Instant::now();
        if entry.until <= now || entry.rate != limits.rate || entry.quota != limits.quota {
            return None;
        }
        let mut report = entry.report;
        let left = entry.retry_at.saturating_duration_since(now).as_nanos();
        report.retry_after = Some(headers::seconds_up(u64::try_from(left).unwrap_or(u64::MAX)));
        if let Some(rate) = &mut report.rate {
            rate.reset = report.retry_after.unwrap_or(rate.reset);
        }
        Some((entry.error, report))
    }

    /// Where the key's limits stand, nothing counted: the headers of a response refused before
    /// the decision (an address not allowed, a route or permission refused). `None` for a key
    /// with neither a rate nor a quota, or when Redis cannot be asked (headers are not worth
    /// an error). At most one Redis round trip, none for a key refused here.
    pub async fn peek(&self, id: &str, limits: &KeyLimits) -> Option<LimitReport> {
        if limits.rate.is_none() && limits.quota.is_none() {
            return None;
        }
        let period = limits
            .quota
            .as_ref()
            .map(|q| (q, self.periods.now(q.period)));
        let start = period.map(|(_, p)| p.start);
        let (ahead, used) = match &self.backend {
            Backend::Memory(memory) => memory.peek(id, start),
            Backend::Redis { store, refused, .. } => {
                if let Some((_, mut report)) = Self::remembered(refused, id, limits) {
                    // This response was not refused for its limits: retrying would not help.
                    report.retry_after = None;
                    return Some(report);
                }
                match store.peek_limits(id, start).await {
                    Ok(found) => found,
                    Err(error) => {
                        tracing::debug!(%error, "limit headers left out: Redis not reachable");
                        return None;
                    }
                }
            }
        };
        let rate = limits.rate.as_ref().map(|limit| {
            let seen = gcra::peek(limit, ahead);
            Standing::of_rate(limit, seen.remaining, seen.reset_nanos)
        });
        let quota = period.map(|(quota, p)| Standing::of_quota(quota, used, p.length, p.left));
        Some(LimitReport {
            rate,
            quota,
            retry_after: None,
        })
    }

    /// On Redis, remembers that the key is refused for `wait` from when Redis was `asked` (for
    /// a rate, the exact wait, not the whole seconds of its header).
    fn remember_refusal(
        &self,
        id: &Arc<str>,
        limits: &KeyLimits,
        error: LimitError,
        report: &LimitReport,
        asked: Option<Instant>,
        wait: Duration,
    ) {
        let (Backend::Redis { refused, .. }, Some(asked)) = (&self.backend, asked) else {
            return;
        };
        let until = asked + wait;
        let retry_after = Duration::from_secs(report.retry_after.unwrap_or(0));
        refused.insert(
            id.clone(),
            Refused {
                until,
                retry_at: match error {
                    LimitError::RateLimited => until,
                    _ => until.max(Instant::now() + retry_after),
                },
                rate: limits.rate,
                quota: limits.quota,
                error,
                report: *report,
            },
        );
    }

    /// Redis could not be asked: `limits.on_store_error` decides.
    fn store_failed(
        &self,
        limits: &KeyLimits,
        error: &StoreError,
    ) -> Result<Option<QuotaHold<'_>>, LimitError> {
        let fixed = metrics::fixed();
        for (set, kind) in [
            (limits.rate.is_some(), LimitKind::Rate),
            (limits.quota.is_some(), LimitKind::Quota),
        ] {
            if set {
                fixed.limit_decision(kind, LimitOutcome::StoreError);
            }
        }
        match self.settings.on_store_error {
            OnStoreError::Allow => {
                tracing::warn!(%error, "limit store unavailable; request allowed (limits.on_store_error: allow)");
                Ok(None)
            }
            OnStoreError::Deny => {
                tracing::warn!(%error, "limit store unavailable; request refused (limits.on_store_error: deny)");
                Err(LimitError::StoreUnavailable)
            }
        }
    }

    /// The key's quota now: `None` when it has none.
    pub async fn quota_state(
        &self,
        id: &str,
        quota: Option<&Quota>,
    ) -> Result<Option<QuotaState>, StoreError> {
        Ok(self.quota_states(&[(id, quota)]).await?.pop().flatten())
    }

    /// Reads the quota counts an embedded store kept (at start).
    pub async fn restore(&self, store: &dyn KeyStore) -> Result<(), StoreError> {
        if let Backend::Memory(memory) = &self.backend {
            memory.restore(store.quota_counts().await?);
        }
        Ok(())
    }

    /// Forgets the state that says nothing any more (a TAT in the past, a count of an ended
    /// period, a refusal remembered past its time), so the maps hold only keys in use.
    pub fn prune(&self) {
        match &self.backend {
            Backend::Memory(memory) => memory.prune(Utc::now().timestamp()),
            Backend::Redis { refused, .. } => {
                let now = Instant::now();
                refused.retain(|_, entry| entry.until > now);
            }
        }
    }

    /// Writes what is held here to the store (with each usage flush, and at shutdown): an
    /// embedded store's quota counts, or the units given back that no decision took to Redis.
    pub async fn save(&self, store: &dyn KeyStore) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(memory) => {
                let counts = memory.quota_counts();
                if !counts.is_empty() {
                    store.save_quota_counts(&counts).await?;
                }
            }
            Backend::Redis {
                store: redis,
                given_back,
                ..
            } => {
                let units = given_back.take_all();
                if let Err(error) = redis.give_back_quotas(&units).await {
                    for (id, period, count) in &units {
                        given_back.add(id, *period, *count);
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

/// On each usage flush's tick: the quota counts are written with the usage (a crash loses at
/// most one flush interval of both), and the limit state is pruned on the same timer.
#[async_trait::async_trait]
impl FlushedAlong for Limiter {
    async fn flush_along(&self, store: &dyn KeyStore) {
        self.prune();
        if let Err(error) = self.save(store).await {
            tracing::warn!(%error, "quota save failed; will retry");
        }
    }
}
