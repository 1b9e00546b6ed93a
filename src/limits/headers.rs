//! What a limited key's response says about its limits: `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers, structured fields), or the legacy `X-RateLimit-*`,
//! and `Retry-After` on a refusal.

use super::HeaderStyle;
use crate::keys::limits::{Quota, RateLimit};
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::cell::RefCell;

const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const LEGACY_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const LEGACY_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const LEGACY_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATE_STATE: &str = "\"rate\";r=";
const QUOTA_STATE: &str = "\"quota\";r=";

/// Where one limit stands after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// `q`: the limit's requests.
    pub quota: u64,
    /// `w`: its window in seconds (a quota's current period).
    pub window: u64,
    /// How many the limit holds in all (the rate's burst), to tell which is nearest to empty.
    pub capacity: u64,
    /// `r`
    pub remaining: u64,
    /// `t`: seconds until it resets (the rate: until the burst is whole again, or until the
    /// next request may pass when none is left).
    pub reset: u64,
}

/// What the limit decisions of one request found, filled in as they are taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitReport {
    pub rate: Option<Standing>,
    pub quota: Option<Standing>,
    /// Seconds until a refused request could succeed.
    pub retry_after: Option<u64>,
}

impl Standing {
    pub fn of_rate(limit: &RateLimit, remaining: u64, reset_nanos: u64) -> Standing {
        Standing {
            quota: limit.requests,
            window: limit.window_seconds,
            capacity: limit.burst(),
            remaining,
            reset: seconds_up(reset_nanos),
        }
    }

    pub fn of_quota(quota: &Quota, used: u64, period_seconds: u64, reset_seconds: u64) -> Standing {
        Standing {
            quota: quota.requests,
            window: period_seconds,
            capacity: quota.requests,
            remaining: quota.requests.saturating_sub(used),
            reset: reset_seconds,
        }
    }
}

/// Nanoseconds as whole seconds, rounded up: waiting that long is always enough.
pub fn seconds_up(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

impl LimitReport {
    /// The limit nearest to exhaustion (the smaller share of its capacity left), with the start
    /// of its `RateLimit` member.
    fn nearest(&self) -> Option<(&'static str, &Standing)> {
        match (&self.rate, &self.quota) {
            (Some(rate), Some(quota)) => {
                let rate_share = u128::from(rate.remaining) * u128::from(quota.capacity);
                let quota_share = u128::from(quota.remaining) * u128::from(rate.capacity);
                Some(if quota_share < rate_share {
                    (QUOTA_STATE, quota)
                } else {
                    (RATE_STATE, rate)
                })
            }
            (Some(rate), None) => Some((RATE_STATE, rate)),
            (None, Some(quota)) => Some((QUOTA_STATE, quota)),
            (None, None) => None,
        }
    }

    /// Writes the headers of `style` and `Retry-After`.
    pub fn write(&self, style: HeaderStyle, headers: &mut HeaderMap) {
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        let Some((state_prefix, nearest)) = self.nearest() else {
            return;
        };
        match style {
            HeaderStyle::Off => {}
            HeaderStyle::Legacy => {
                headers.insert(LEGACY_LIMIT, HeaderValue::from(nearest.quota));
                headers.insert(LEGACY_REMAINING, HeaderValue::from(nearest.remaining));
                headers.insert(LEGACY_RESET, HeaderValue::from(nearest.reset));
            }
            HeaderStyle::Draft => {
                if let Some(policy) = self.policy() {
                    headers.insert(POLICY, policy);
                }
                let mut state = Line::<64>::new();
                state.push(state_prefix).number(nearest.remaining);
                state.push(";t=").number(nearest.reset);
                if let Ok(value) = HeaderValue::from_bytes(state.as_bytes()) {
                    headers.insert(RATELIMIT, value);
                }
            }
        }
    }

    /// `RateLimit-Policy`: the same for every response of a key until its limits (or the
    /// month) change, so each thread reuses the last one it made when it says the same
    /// (callgrind: formatting and copying it was ~600 instructions a response).
    fn policy(&self) -> Option<HeaderValue> {
        thread_local! {
            static LAST: RefCell<Option<(Policy, HeaderValue)>> = const { RefCell::new(None) };
        }
        let policy = [
            self.rate.map(|s| (s.quota, s.window)),
            self.quota.map(|s| (s.quota, s.window)),
        ];
        LAST.with_borrow_mut(|last| match last {
            Some((made_for, value)) if *made_for == policy => Some(value.clone()),
            _ => {
                let value = policy_value(&policy)?;
                *last = Some((policy, value.clone()));
                Some(value)
            }
        })
    }
}

/// Each limit's `(q, w)`: the rate's, then the quota's.
type Policy = [Option<(u64, u64)>; 2];

fn policy_value(policy: &Policy) -> Option<HeaderValue> {
    let mut line = Line::<112>::new();
    for (prefix, limit) in ["\"rate\";q=", "\"quota\";q="].into_iter().zip(policy) {
        if let Some((quota, window)) = limit {
            if line.len > 0 {
                line.push(", ");
            }
            line.push(prefix).number(*quota).push(";w=").number(*window);
        }
    }
    HeaderValue::from_bytes(line.as_bytes()).ok()
}

/// A header value put together on the stack: `write!` and `format!` cost more than the limit
/// decision itself (callgrind: ~2,800 instructions a response); itoa and one copy, a tenth.
struct Line<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    fn new() -> Self {
        Line {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends `text`; what would not fit is left out (the longest policy, two limits of
    /// 20-digit numbers, is 107 bytes; the longest state 53).
    fn push(&mut self, text: &str) -> &mut Self {
        if let Some(room) = self.bytes.get_mut(self.len..self.len + text.len()) {
            room.copy_from_slice(text.as_bytes());
            self.len += text.len();
        }
        self
    }

    fn number(&mut self, n: u64) -> &mut Self {
        self.push(itoa::Buffer::new().format(n))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(quota: u64, capacity: u64, remaining: u64) -> Standing {
        Standing {
            quota,
            window: 60,
            capacity,
            remaining,
            reset: 3,
        }
    }

    #[test]
    fn the_nearest_limit_is_shown_and_every_one_listed() {
        let report = LimitReport {
            rate: Some(standing(100, 100, 42)),
            quota: Some(Standing {
                window: 2_592_000,
                ..standing(100_000, 100_000, 99_000)
            }),
            retry_after: None,
        };
        let mut headers = HeaderMap::new();
        report.write(HeaderStyle::Draft, &mut headers);
        assert_eq!(
            headers["ratelimit-policy"],
            "\"rate\";q=100;w=60, \"quota\";q=100000;w=2592000"
        );
        assert_eq!(headers["ratelimit"], "\"rate\";r=42;t=3");
        assert!(headers.get("retry-after").is_none());
        // Another key's limits on the same thread: its own policy, not the one made before.
        let quota_only = LimitReport {
            rate: None,
            quota: Some(standing(5, 5, 1)),
            retry_after: None,
        };
        let mut headers = HeaderMap::new();
        quota_only.write(HeaderStyle::Draft, &mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"quota\";q=5;w=60");
        let mut headers = HeaderMap::new();
        report.write(HeaderStyle::Draft, &mut headers);
        assert_eq!(
            headers["ratelimit-policy"],
            "\"rate\";q=100;w=60, \"quota\";q=100000;w=2592000"
        );

        let low_quota = LimitReport {
            quota: Some(standing(1000, 1000, 10)),
            retry_after: Some(0),
            ..report
        };
        let mut headers = HeaderMap::new();
        low_quota.write(HeaderStyle::Legacy, &mut headers);
        assert_eq!(headers["x-ratelimit-limit"], "1000");
        assert_eq!(headers["x-ratelimit-remaining"], "10");
        assert_eq!(headers["x-ratelimit-reset"], "3");
        assert_eq!(headers["retry-after"], "1", "never 0");
        assert!(headers.get("ratelimit").is_none());
        let mut headers = HeaderMap::new();
        low_quota.write(HeaderStyle::Off, &mut headers);
        assert_eq!(headers.len(), 1, "only Retry-After");
    }
}
