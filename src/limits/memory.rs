//! The embedded store's limit state: in this process's memory, one entry per limited key. A
//! decision holds the key's DashMap entry while it reads and writes, so concurrent requests
//! are counted exactly; no allocation once a key has its entry. Quota counts are written to
//! the store with the usage flush ([`super::Limiter::save`]) and read back at start.

use super::gcra::{self, RateVerdict};
use crate::FastMap;
use crate::keys::limits::{Quota, QuotaCount, RateLimit};
use std::sync::Arc;
use std::time::Instant;

/// The longest quota period in seconds (a month of 31 days): a count whose period started
/// longer ago than this is of a period that has ended, whatever its kind.
const LONGEST_PERIOD: i64 = 31 * 86_400;

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
        let now = self.now();
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

    /// Nanoseconds since `epoch`, the rate's clock.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How far the key's TAT is ahead of now (0 when it is past), and what is counted in
    /// `period`: the state as it is, nothing taken.
    pub(super) fn peek(&self, id: &str, period: Option<i64>) -> (u64, u64) {
        let Some(state) = self.keys.get(id) else {
            return (0, 0);
        };
        let used = period
            .filter(|p| *p == state.period)
            .map_or(0, |_| state.used);
        (state.tat.saturating_sub(self.now()), used)
    }

    /// Drops the entries that say nothing a fresh one would not: a TAT in the past admits the
    /// same as none, and a count of a period that has ended is reset by the next request. A
    /// count of the current period stays (even at 0: the store may hold more for it).
    pub(super) fn prune(&self, unix_now: i64) {
        self.prune_at(self.now(), unix_now);
    }

    fn prune_at(&self, now: u64, unix_now: i64) {
        self.keys.retain(|_, state| {
            let rate_spent = state.tat > now;
            let counting = state.period != 0 && state.period + LONGEST_PERIOD > unix_now;
            rate_spent || counting
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::limits::{QuotaCounts, QuotaPeriod};

    #[test]
    fn stale_entries_are_pruned_and_live_ones_kept() {
        let memory = Memory::new();
        let rate = RateLimit {
            requests: 1,
            window_seconds: 60,
            burst: None,
        };
        let quota = Quota {
            requests: 10,
            period: QuotaPeriod::Day,
            counts: QuotaCounts::All,
        };
        let (limited, counted) = (Arc::from("k_rate"), Arc::from("k_quota"));
        memory.decide(&limited, Some(&rate), None);
        memory.decide(&counted, None, Some((&quota, 86_400)));
        let now = memory.now();
        memory.prune_at(now, 86_400 + 3_600);
        assert_eq!(
            memory.len(),
            2,
            "a TAT ahead and a count of this period are kept"
        );
        assert!(memory.peek("k_rate", None).0 > 0, "the TAT is ahead");

        // A minute on, the TAT is past: the rate's entry is as good as none.
        memory.prune_at(now + 60_000_000_000, 86_400 + 3_600);
        assert_eq!(memory.len(), 1);
        assert_eq!(memory.used("k_quota", 86_400), 1, "the count is kept");
        // Once the period has ended (by any kind's length), the count goes too.
        memory.prune_at(now, 86_400 + LONGEST_PERIOD);
        assert_eq!(memory.len(), 0);
        // And a pruned key decides as a fresh one.
        let (verdict, _) = memory.decide(&limited, Some(&rate), None);
        assert!(verdict.unwrap().allowed);
    }
}
