//! Per-key limits as a key holds them: a rate limit, a quota and an address allowlist, their
//! checks, and the quota's calendar. The decisions are taken a floor above, in the limits module.

use crate::keys::KeyRecord;
use crate::net::CidrList;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Bounds that keep the arithmetic (nanoseconds in a u64, counters in Lua's doubles) exact.
const MAX_REQUESTS: u64 = 1_000_000_000_000;
const MAX_WINDOW_SECONDS: u64 = 366 * 86_400;
const MAX_BURST: u64 = 1_000_000_000;
/// An allowlist longer than this is a configuration mistake, and each request scans it.
pub const MAX_ALLOWED_CIDRS: usize = 100;

/// At most `requests` per `window_seconds`, with bursts up to `burst` (default `requests`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u64,
    pub window_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl RateLimit {
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.requests)
    }

    /// The time between two requests at the steady rate, in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        let requests = self.requests.max(1);
        // In u64 for any window `check` lets through: a u128 division costs several times more,
        // and a decision needs the interval three times.
        let nanos = match self.window_seconds.checked_mul(1_000_000_000) {
            Some(window) => window / requests,
            None => {
                let nanos = u128::from(self.window_seconds) * 1_000_000_000 / u128::from(requests);
                u64::try_from(nanos).unwrap_or(u64::MAX)
            }
        };
        nanos.max(1)
    }

    /// Why these numbers cannot be a limit, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_REQUESTS).contains(&self.requests) {
            return Err(format!("requests must be between 1 and {MAX_REQUESTS}"));
        }
        if !(1..=MAX_WINDOW_SECONDS).contains(&self.window_seconds) {
            return Err(format!(
                "window_seconds must be between 1 and {MAX_WINDOW_SECONDS}"
            ));
        }
        if self.burst.is_some_and(|b| !(1..=MAX_BURST).contains(&b)) {
            return Err(format!("burst must be between 1 and {MAX_BURST}"));
        }
        Ok(())
    }
}

/// At most `requests` per calendar `period` (UTC).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests: u64,
    pub period: QuotaPeriod,
    #[serde(default)]
    pub counts: QuotaCounts,
}

impl Quota {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_REQUESTS).contains(&self.requests) {
            return Err(format!("requests must be between 1 and {MAX_REQUESTS}"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// From 00:00 UTC to the next.
    Day,
    /// From 00:00 UTC on the 1st to the next 1st.
    Month,
}

impl QuotaPeriod {
    /// The start and end of the period `now` falls in.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let midnight = |y, m, d| {
            Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
                .single()
                .expect("midnight UTC exists every day")
        };
        let (y, m) = (now.year(), now.month());
        match self {
            QuotaPeriod::Day => {
                let start = midnight(y, m, now.day());
                (start, start + chrono::Duration::days(1))
            }
            QuotaPeriod::Month => {
                let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (midnight(y, m, 1), midnight(next.0, next.1, 1))
            }
        }
    }
}

/// Which requests use up the quota.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QuotaCounts {
    /// Those the KB answered 2xx or 3xx; a request in flight holds its unit until then.
    #[default]
    Successful,
    All,
}

/// `key_defaults:` of the config: the limits of keys that set none of their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyDefaults {
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
}

/// The limits a request with this key is held to, resolved once when the key is cached.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLimits {
    pub rate: Option<RateLimit>,
    pub quota: Option<Quota>,
    /// `None`: any address.
    pub allowed: Option<CidrList>,
}

impl KeyLimits {
    /// The key's own limits, else the defaults; `None` for a key with no limit at all, so an
    /// unlimited key costs the request path one `Option` check.
    pub fn resolve(record: &KeyRecord, defaults: &KeyDefaults) -> Option<KeyLimits> {
        let limits = KeyLimits {
            rate: record.rate_limit.or(defaults.rate_limit),
            quota: record.quota.or(defaults.quota),
            // Checked when written: a list that no longer parses allows nobody.
            allowed: (!record.allowed_cidrs.is_empty())
                .then(|| CidrList::parse(&record.allowed_cidrs).unwrap_or_default()),
        };
        let any = limits.rate.is_some() || limits.quota.is_some() || limits.allowed.is_some();
        any.then_some(limits)
    }
}

/// A key's quota count for a period, as the embedded store keeps it between restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaCount {
    pub key_id: String,
    /// The period's start, Unix seconds.
    pub period_start: i64,
    pub used: u64,
}

/// Checks an allowlist as written; the error names the index of the bad entry.
pub fn check_cidrs(cidrs: &[String]) -> Result<(), String> {
    if cidrs.len() > MAX_ALLOWED_CIDRS {
        return Err(format!("at most {MAX_ALLOWED_CIDRS} networks"));
    }
    CidrList::parse(cidrs)
        .map(drop)
        .map_err(|(i, reason)| format!("[{i}]: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn periods_start_at_midnight_utc() {
        let (start, end) = QuotaPeriod::Day.bounds(at("2026-12-31T23:59:59Z"));
        assert_eq!(
            (start, end),
            (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        let (start, end) = QuotaPeriod::Month.bounds(at("2026-12-04T20:00:00Z"));
        assert_eq!(
            (start, end),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        let (start, end) = QuotaPeriod::Month.bounds(at("2028-02-29T12:00:00Z"));
        assert_eq!(
            (start, end),
            (at("2028-02-01T00:00:00Z"), at("2028-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn limits_are_checked() {
        let rate = |requests, window_seconds, burst| RateLimit {
            requests,
            window_seconds,
            burst,
        };
        assert!(rate(100, 60, None).check().is_ok());
        assert_eq!(rate(100, 60, None).burst(), 100);
        assert_eq!(rate(50, 1, Some(10)).interval_nanos(), 20_000_000);
        assert!(rate(0, 60, None).check().unwrap_err().contains("requests"));
        assert!(
            rate(1, 0, None)
                .check()
                .unwrap_err()
                .contains("window_seconds")
        );
        assert!(rate(1, 1, Some(0)).check().unwrap_err().contains("burst"));
        assert!(check_cidrs(&["10.0.0.0/8".into(), "2001:db8::/32".into()]).is_ok());
        assert!(
            check_cidrs(&["10.0.0.0/8".into(), "nope".into()])
                .unwrap_err()
                .starts_with("[1]: ")
        );
    }
}
