//! The quota's current calendar period, read on every limited request. The calendar arithmetic
//! (chrono, ~600 instructions) is done once per period and kind; each request then reads one
//! atomic word and the wall clock.

use crate::keys::limits::QuotaPeriod;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Bits of the packed word that hold the period's length in seconds (a month of 31 days needs
/// 22); the start's Unix seconds take the 40 above them (until the year 36812).
const LENGTH_BITS: u32 = 24;

/// Where `now` stands in its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Unix seconds of 00:00 UTC on its first day.
    pub start: i64,
    /// Its length in seconds (86,400 for a day; 28 to 31 days for a month).
    pub length: u64,
    /// Whole seconds until it ends, rounded up.
    pub left: u64,
}

impl Period {
    pub fn end(&self) -> DateTime<Utc> {
        let end = self.start.saturating_add_unsigned(self.length);
        DateTime::from_timestamp(end, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The current day and month, each packed as `start << LENGTH_BITS | length` (0: not yet known).
#[derive(Default)]
pub struct Periods {
    day: AtomicU64,
    month: AtomicU64,
}

impl Periods {
    /// The period of `kind` now.
    pub fn now(&self, kind: QuotaPeriod) -> Period {
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.at(kind, since_epoch)
    }

    /// The period of `kind` at `now` (time since the Unix epoch).
    pub fn at(&self, kind: QuotaPeriod, now: Duration) -> Period {
        let cell = match kind {
            QuotaPeriod::Day => &self.day,
            QuotaPeriod::Month => &self.month,
        };
        let seconds = now.as_secs();
        let packed = cell.load(Ordering::Relaxed);
        let (mut start, mut length) = (packed >> LENGTH_BITS, packed & ((1 << LENGTH_BITS) - 1));
        if !(start..start + length).contains(&seconds) {
            (start, length) = bounds(kind, now);
            cell.store(start << LENGTH_BITS | length, Ordering::Relaxed);
        }
        Period {
            start: i64::try_from(start).unwrap_or(i64::MAX),
            length,
            // Whole seconds to the end, rounded up: the end is a whole second and `now` is
            // within the period, so that is the end less `now`'s whole seconds.
            left: (start + length).saturating_sub(seconds),
        }
    }
}

/// The period's start and length in seconds, by the calendar.
fn bounds(kind: QuotaPeriod, now: Duration) -> (u64, u64) {
    let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let now = DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let (start, end) = kind.bounds(now);
    (
        u64::try_from(start.timestamp()).unwrap_or(0),
        u64::try_from((end - start).num_seconds()).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Duration {
        let t: DateTime<Utc> = s.parse().unwrap();
        Duration::from_millis(u64::try_from(t.timestamp_millis()).unwrap())
    }

    #[test]
    fn periods_follow_the_calendar_across_their_ends() {
        let periods = Periods::default();
        let day = periods.at(QuotaPeriod::Day, at("2026-12-31T23:59:59.200Z"));
        assert_eq!(day.start, at("2026-12-31T00:00:00Z").as_secs() as i64);
        assert_eq!((day.length, day.left), (86_400, 1));
        assert_eq!(
            day.end(),
            "2027-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // Read again from the cache within the period, then past its end.
        assert_eq!(
            periods
                .at(QuotaPeriod::Day, at("2026-12-31T00:00:00Z"))
                .left,
            86_400
        );
        let next = periods.at(QuotaPeriod::Day, at("2027-01-01T00:00:00Z"));
        assert_eq!((next.start, next.left), (day.start + 86_400, 86_400));
        // Back in time (a clock set back) is computed anew too.
        assert_eq!(
            periods.at(QuotaPeriod::Day, at("2026-12-31T12:00:00Z")),
            Period {
                left: 43_200,
                ..day
            }
        );

        let feb = periods.at(QuotaPeriod::Month, at("2028-02-29T12:00:00Z"));
        assert_eq!(feb.length, 29 * 86_400);
        assert_eq!(
            feb.end(),
            "2028-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let march = periods.at(QuotaPeriod::Month, at("2028-03-01T00:00:01Z"));
        assert_eq!((march.length, march.left), (31 * 86_400, 31 * 86_400 - 1));
        assert_eq!(
            periods.at(QuotaPeriod::Day, at("2027-01-01T00:00:00Z")),
            next
        );
    }
}
