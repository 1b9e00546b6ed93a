//! Quota units that requests on Redis gave back (`counts: successful`, the KB did not answer
//! 2xx or 3xx), waiting here to ride along with the key's next decision, or the usage flush's
//! tick when none comes: a request costs at most one Redis round trip, whatever its outcome.
//! Until then the unit stays counted on Redis: a client is refused too early, never too late.
//! A gateway that crashes loses the units it holds (its keys' counts stay high until the
//! period ends), as it loses one flush interval of usage.

use crate::FastMap;
use std::sync::Arc;

/// Units of one key's quota period.
#[derive(Clone, Copy)]
struct Units {
    period: i64,
    count: u64,
}

#[derive(Default)]
pub(super) struct GivenBack {
    keys: FastMap<Arc<str>, Units>,
}

impl GivenBack {
    /// `count` units of the period starting at `period` (Unix seconds) given back. Units of an
    /// earlier period than the one held are dropped: that period's count limits nothing now.
    pub(super) fn add(&self, id: &Arc<str>, period: i64, count: u64) {
        if count == 0 {
            // A failed decision that carried none: no entry to send on the flush's tick.
            return;
        }
        let mut units = self
            .keys
            .entry(id.clone())
            .or_insert(Units { period, count: 0 });
        if period > units.period {
            *units = Units { period, count: 0 };
        }
        if period == units.period {
            units.count += count;
        }
    }

    /// The key's units of `period`, taken to send with its decision (0 when none wait).
    pub(super) fn take(&self, id: &str, period: i64) -> u64 {
        match self.keys.remove_if(id, |_, units| units.period == period) {
            Some((_, units)) => units.count,
            None => 0,
        }
    }

    /// Every unit waiting, taken to send on the flush's tick: `(key id, period, count)`.
    pub(super) fn take_all(&self) -> Vec<(Arc<str>, i64, u64)> {
        let ids: Vec<Arc<str>> = self.keys.iter().map(|entry| entry.key().clone()).collect();
        ids.into_iter()
            .filter_map(|id| self.keys.remove(&id))
            .map(|(id, units)| (id, units.period, units.count))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up_per_period_and_an_older_period_is_dropped() {
        let given_back = GivenBack::default();
        let id: Arc<str> = Arc::from("key_1");
        given_back.add(&id, 100, 1);
        given_back.add(&id, 100, 2);
        given_back.add(&id, 300, 0);
        assert_eq!(given_back.take(&id, 200), 0, "not of the period asked for");
        given_back.add(&id, 50, 1);
        assert_eq!(
            given_back.take(&id, 100),
            3,
            "the older period's unit dropped"
        );
        assert_eq!(given_back.take(&id, 100), 0, "taken once");
        given_back.add(&id, 100, 1);
        given_back.add(&id, 200, 1);
        assert_eq!(
            given_back.take_all(),
            vec![(id, 200, 1)],
            "the newer period replaces"
        );
        assert!(given_back.take_all().is_empty());
    }
}
