//! Usage over time: what one key (or all keys) did in one hour. Counted in memory by the usage
//! recorder, added up by the stores (several gateways' counts for the same hour add exactly),
//! and summed into days or totals by the admin API.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Seconds in an hour: hours are numbered from the Unix epoch (`unix seconds / 3600`).
pub const HOUR_SECS: i64 = 3600;

/// The classes of the KB's answers, in the order of [`HourCounts::upstream`].
pub const UPSTREAM_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// The hour (since the epoch) that holds this instant.
pub fn hour_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(HOUR_SECS)
}

/// The index in [`UPSTREAM_CLASSES`] of an HTTP status, if it is one of them.
pub fn upstream_class(status: u16) -> Option<usize> {
    match status {
        200..=599 => Some(usize::from(status / 100 - 2)),
        _ => None,
    }
}

/// One hour's counts. `requests` is `forwarded` plus every refusal; `upstream` counts the KB's
/// answers to forwarded requests by class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCounts {
    pub hour: i64,
    pub requests: u64,
    pub forwarded: u64,
    /// Refusal code -> count, for refusals made after the key was known.
    pub refused: BTreeMap<String, u64>,
    /// 2xx, 3xx, 4xx, 5xx.
    pub upstream: [u64; 4],
}

impl HourCounts {
    pub fn empty(hour: i64) -> HourCounts {
        HourCounts {
            hour,
            ..HourCounts::default()
        }
    }

    /// Adds `other`'s counts to these (the hour stays this one's).
    pub fn add(&mut self, other: &HourCounts) {
        self.requests += other.requests;
        self.forwarded += other.forwarded;
        for (code, n) in &other.refused {
            *self.refused.entry(code.clone()).or_default() += n;
        }
        for (mine, theirs) in self.upstream.iter_mut().zip(other.upstream) {
            *mine += theirs;
        }
    }

    /// The counts as flat fields, as the Redis store keeps them in a hash: `requests`,
    /// `forwarded`, `refused:<code>`, `upstream:<class>` (zeros left out).
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut fields = vec![
            ("requests".to_string(), self.requests),
            ("forwarded".to_string(), self.forwarded),
        ];
        fields.extend(
            self.refused
                .iter()
                .map(|(code, n)| (format!("refused:{code}"), *n)),
        );
        fields.extend(
            UPSTREAM_CLASSES
                .iter()
                .zip(self.upstream)
                .map(|(class, n)| (format!("upstream:{class}"), n)),
        );
        fields.retain(|(_, n)| *n > 0);
        fields
    }

    /// Counts read back from [`HourCounts::fields`]; unknown fields are ignored.
    pub fn from_fields(hour: i64, fields: impl IntoIterator<Item = (String, u64)>) -> HourCounts {
        let mut counts = HourCounts::empty(hour);
        for (field, n) in fields {
            match field.split_once(':') {
                None if field == "requests" => counts.requests += n,
                None if field == "forwarded" => counts.forwarded += n,
                Some(("refused", code)) => {
                    *counts.refused.entry(code.to_string()).or_default() += n
                }
                Some(("upstream", class)) => {
                    if let Some(i) = UPSTREAM_CLASSES.iter().position(|c| *c == class) {
                        counts.upstream[i] += n;
                    }
                }
                _ => {}
            }
        }
        counts
    }
}

/// What the usage overview reads of a store for a range of hours: every hour's totals over all
/// keys, and each key's requests in the range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageOverview {
    pub hours: Vec<HourCounts>,
    /// (key id, requests), in no particular order.
    pub keys: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut counts = HourCounts::empty(7);
        counts.requests = 5;
        counts.forwarded = 3;
        counts.refused.insert("route_not_allowed".into(), 2);
        counts.upstream = [2, 0, 1, 0];
        let fields = counts.fields();
        assert!(!fields.iter().any(|(f, _)| f == "upstream:3xx"));
        assert_eq!(HourCounts::from_fields(7, fields), counts);
    }

    #[test]
    fn hours_and_classes() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(3599), 0);
        assert_eq!(hour_of(3600), 1);
        assert_eq!(hour_of(-1), -1);
        assert_eq!(upstream_class(204), Some(0));
        assert_eq!(upstream_class(503), Some(3));
        assert_eq!(upstream_class(101), None);
    }

    #[test]
    fn adding_adds_every_count() {
        let mut a = HourCounts::empty(1);
        a.requests = 1;
        a.refused.insert("x".into(), 1);
        let mut b = HourCounts::empty(1);
        b.requests = 2;
        b.refused.insert("x".into(), 2);
        b.refused.insert("y".into(), 1);
        b.upstream[3] = 4;
        a.add(&b);
        assert_eq!(a.requests, 3);
        assert_eq!(a.refused["x"], 3);
        assert_eq!(a.refused["y"], 1);
        assert_eq!(a.upstream, [0, 0, 0, 4]);
    }
}
