//! The embedded store's limit state: in this process's memory, one entry per limited key. A
//! decision holds the key's DashMap entry while it reads and writes, so concurrent requests
//! are counted exactly; no allocation once a key has its entry. Quota counts are written to
//! the store with the usage flush ([`super::Limiter::save`]) and read back at start.

use super::gcra::{self, RateVerdict};
use crate::FastMap;
use crate::keys::limits::{Quota, QuotaCount, RateLimit};
use std::sync::Arc;
use std::time::Instant;

#[derive(Default, Clone, Copy)]
struct KeyState {
    /// GCRA's theoretical arrival time, in nanoseconds since `Memory::epoch`.
    tat: u64,
    /// The start (Unix seconds) of the quota period `used` counts, and the count.
    period: i64,
    used: u64,
}

pub(super) struct Memory {
    keys: FastMap<Arc<str>, KeyState>,
    epoch: Instant,
}

/// What [`Memory::decide`] says about the quota.
pub(super) enum QuotaVerdict {
    /// Counted: `used` now, with this request.
    Taken {
        used: u64,
    },
    Refused {
        used: u64,
    },
}

impl Memory {
    pub(super) fn new() -> Memory {
        Memory {
            keys: FastMap::default(),
            epoch: Instant::now(),
        }
    }

    /// Decides the rate, then (if it passed) the quota of `period`, as one step: a request the
    /// quota refuses does not use up the rate.
    pub(super) fn decide(
        &self,
        id: &Arc<str>,
        rate: Option<&RateLimit>,
        quota: Option<(&Quota, i64)>,
    ) -> (Option<RateVerdict>, Option<QuotaVerdict>) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut state = match self.keys.get_mut(&**id) {
            Some(state) => state,
            None => self.keys.entry(id.clone()).or_default(),
        };
        let mut rate_verdict = None;
        let mut new_tat = None;
        if let Some(limit) = rate {
            let (verdict, tat) = gcra::decide(limit, state.tat, now);
            if !verdict.allowed {
                return (Some(verdict), None);
            }
            rate_verdict = Some(verdict);
            new_tat = tat;
        }
        let quota_verdict = quota.map(|(quota, period)| {
            if state.period != period {
                state.period = period;
                state.used = 0;
            }
            if state.used >= quota.requests {
                QuotaVerdict::Refused { used: state.used }
            } else {
                state.used += 1;
                QuotaVerdict::Taken { used: state.used }
            }
        });
        if matches!(quota_verdict, Some(QuotaVerdict::Refused { .. })) {
            return (rate_verdict, quota_verdict);
        }
        if let Some(tat) = new_tat {
            state.tat = tat;
        }
        (rate_verdict, quota_verdict)
    }

    /// Gives back a unit taken in `period` (a request the KB did not answer with success).
    pub(super) fn give_back(&self, id: &str, period: i64) {
        if let Some(mut state) = self.keys.get_mut(id)
            && state.period == period
        {
            state.used = state.used.saturating_sub(1);
        }
    }

    /// What is counted for the key in `period`.
    pub(super) fn used(&self, id: &str, period: i64) -> u64 {
        self.keys
            .get(id)
            .filter(|s| s.period == period)
            .map_or(0, |s| s.used)
    }

    /// Every quota count, to be written to the store.
    pub(super) fn quota_counts(&self) -> Vec<QuotaCount> {
        self.keys
            .iter()
            .filter(|e| e.period != 0)
            .map(|e| QuotaCount {
                key_id: e.key().to_string(),
                period_start: e.period,
                used: e.used,
            })
            .collect()
    }

    /// Takes back the counts written before a restart.
    pub(super) fn restore(&self, counts: Vec<QuotaCount>) {
        for count in counts {
            let mut state = self.keys.entry(count.key_id.into()).or_default();
            state.period = count.period_start;
            state.used = count.used;
        }
    }
}
