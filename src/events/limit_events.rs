//! Events of the per-key limits: `quota.threshold` when a key's quota use reaches 80, 90 and
//! 100% (once each per period) and `key.rate_limited` when its rate refuses a request (at most
//! once per key per minute). The gateway hands over each limited request's report; this
//! process remembers what it already emitted, so a flood costs a map lookup, and the store's
//! claims make each event happen once however many gateways see it. An event that is due is
//! claimed (with its outbox entry) before the response goes out, as a content event is, and
//! only when a webhook wants it: the requests that cross a threshold, or are refused first in
//! a minute, wait for that write; the rest cost a map lookup.

use crate::FastMap;
use crate::events::Deliverer;
use crate::keys::KeyStore;
use crate::keys::outbox::Event;
use crate::limits::{LimitReport, Standing};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use std::sync::Arc;

/// The shares of a quota, in percent, that emit `quota.threshold`.
pub const THRESHOLDS: [u64; 3] = [80, 90, 100];

/// What this process emitted last for one key.
#[derive(Default, Clone, Copy)]
struct Seen {
    /// The minute (since the epoch) of the last `key.rate_limited`.
    rate_minute: i64,
    /// The end (Unix seconds) of the quota period of `threshold`.
    period_end: i64,
    /// The highest threshold emitted in that period.
    threshold: u64,
}

/// An event and the claim that makes it happen once.
pub struct Due {
    claim: String,
    until: DateTime<Utc>,
    event: Event,
}

pub struct LimitEvents {
    seen: FastMap<Arc<str>, Seen>,
    store: Arc<dyn KeyStore>,
    deliverer: Arc<Deliverer>,
}

impl LimitEvents {
    pub fn new(store: Arc<dyn KeyStore>, deliverer: Arc<Deliverer>) -> Arc<LimitEvents> {
        Arc::new(LimitEvents {
            seen: FastMap::default(),
            store,
            deliverer,
        })
    }

    /// Claims the events `observe` found due, each with its outbox entry, when some webhook
    /// wants it (frequent, and of use only to a webhook). A store error is logged: the event
    /// is not written, and the request is answered all the same.
    pub async fn write(&self, due: Vec<Due>) {
        let hooks = match self.store.webhooks().await {
            Ok(hooks) => hooks,
            Err(error) => {
                tracing::warn!(%error, "limit events were not written");
                return;
            }
        };
        for Due {
            claim,
            until,
            event,
        } in due
        {
            if !hooks.iter().any(|h| h.wants(&event.kind)) {
                continue;
            }
            match self.store.claim(&claim, until, Some(&event)).await {
                Ok(true) => self.deliverer.wake(),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, event = event.kind, "a limit event was not written")
                }
            }
        }
    }

    /// Looks at one limited request's report (`rate_refused`: the rate turned it away): the
    /// events it makes due, for [`LimitEvents::write`]; mostly none.
    pub fn observe(&self, key_id: &Arc<str>, report: &LimitReport, rate_refused: bool) -> Vec<Due> {
        let reached = report
            .quota
            .as_ref()
            .and_then(|q| reached(q).map(|t| (q, t)));
        if !rate_refused && reached.is_none() {
            return Vec::new();
        }
        let now = Utc::now();
        let mut seen = self.seen.entry(key_id.clone()).or_default();
        let mut events = Vec::new();
        let minute = now.timestamp().div_euclid(60);
        if rate_refused && seen.rate_minute != minute {
            seen.rate_minute = minute;
            let event = Event::new("key.rate_limited", json!({"key": {"id": &**key_id}}));
            let claim = format!("key.rate_limited:{key_id}:{minute}");
            events.push(Due {
                claim,
                until: now + TimeDelta::minutes(2),
                event,
            });
        }
        if let Some((quota, threshold)) = reached {
            let end = period_end(quota, now);
            if seen.period_end != end {
                *seen = Seen {
                    period_end: end,
                    threshold: 0,
                    ..*seen
                };
            }
            for t in THRESHOLDS
                .into_iter()
                .filter(|t| *t > seen.threshold && *t <= threshold)
            {
                let event = Event::new(
                    "quota.threshold",
                    json!({
                        "key": {"id": &**key_id},
                        "threshold_percent": t,
                        "quota": quota.quota,
                        "used": quota.quota.saturating_sub(quota.remaining),
                        "period_ends_at": DateTime::from_timestamp(end, 0),
                    }),
                );
                let claim = format!("quota.threshold:{key_id}:{end}:{t}");
                let until = DateTime::from_timestamp(end, 0).unwrap_or(now) + TimeDelta::days(1);
                events.push(Due {
                    claim,
                    until,
                    event,
                });
            }
            seen.threshold = seen.threshold.max(threshold);
        }
        events
    }
}

/// The highest threshold the quota's use has reached, if any.
fn reached(quota: &Standing) -> Option<u64> {
    let used = quota.quota.saturating_sub(quota.remaining);
    let percent = used.saturating_mul(100) / quota.quota.max(1);
    THRESHOLDS.into_iter().rev().find(|t| percent >= *t)
}

/// The end of the quota's period (Unix seconds): now plus the seconds left, to the minute
/// (periods end at midnight; the seconds left are rounded up, so never a minute off).
fn period_end(quota: &Standing, now: DateTime<Utc>) -> i64 {
    let end = now.timestamp() + i64::try_from(quota.reset).unwrap_or(i64::MAX / 2);
    end - end.rem_euclid(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(quota: u64, remaining: u64) -> Standing {
        Standing {
            quota,
            window: 86_400,
            capacity: quota,
            remaining,
            reset: 3600,
        }
    }

    #[test]
    fn thresholds_are_shares_of_the_quota() {
        assert_eq!(reached(&standing(10, 3)), None);
        assert_eq!(reached(&standing(10, 2)), Some(80));
        assert_eq!(reached(&standing(10, 1)), Some(90));
        assert_eq!(reached(&standing(10, 0)), Some(100));
        assert_eq!(reached(&standing(1000, 150)), Some(80));
    }

    #[test]
    fn the_period_end_is_stable_within_a_period() {
        let midnight = DateTime::from_timestamp(1_700_006_400, 0).unwrap();
        for left in [1, 59, 3599, 86_399] {
            let now = midnight - TimeDelta::seconds(left) + TimeDelta::milliseconds(300);
            let q = Standing {
                reset: left as u64,
                ..standing(10, 0)
            };
            assert_eq!(period_end(&q, now), midnight.timestamp(), "{left}");
        }
    }
}
