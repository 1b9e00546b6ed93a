//! Events of the per-key limits: `quota.threshold` when a key's quota use reaches 80, 90 and
//! 100% (once each per period) and `key.rate_limited` when its rate refuses a request (at most
//! once per key per minute). The gateway hands over each limited request's report; this
//! process remembers what it already emitted, so a flood costs a map lookup, and the store's
//! claims make each event happen once however many gateways see it. They are written after
//! the response (no change of the store causes them), so a crash in between may lose one, and
//! only when a webhook wants them.

use crate::FastMap;
use crate::events::Deliverer;
use crate::keys::KeyStore;
use crate::keys::outbox::Event;
use crate::limits::{LimitReport, Standing};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::mpsc;

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

/// Events waiting for their claim; beyond this many (a store too slow for a flood of newly
/// limited keys) the newest are dropped, logged.
const QUEUE: usize = 1024;

/// An event and the claim that makes it happen once.
type Claimed = (String, DateTime<Utc>, Event);

pub struct LimitEvents {
    seen: FastMap<Arc<str>, Seen>,
    /// To the one task that claims the events in the store, in the order they happened.
    queue: mpsc::Sender<Claimed>,
}

impl LimitEvents {
    /// Starts the task that writes the events; it ends when this is dropped.
    pub fn new(store: Arc<dyn KeyStore>, deliverer: Arc<Deliverer>) -> Arc<LimitEvents> {
        let (queue, mut events) = mpsc::channel::<Claimed>(QUEUE);
        tokio::spawn(async move {
            while let Some((claim, until, event)) = events.recv().await {
                // Frequent and only of use to a webhook: not written when none wants it.
                match store.webhooks().await {
                    Ok(hooks) if hooks.iter().any(|h| h.wants(&event.kind)) => {}
                    Ok(_) => continue,
                    Err(error) => {
                        tracing::warn!(%error, event = event.kind, "a limit event was not written");
                        continue;
                    }
                }
                match store.claim(&claim, until, Some(&event)).await {
                    Ok(true) => deliverer.wake(),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, event = event.kind, "a limit event was not written")
                    }
                }
            }
        });
        Arc::new(LimitEvents {
            seen: FastMap::default(),
            queue,
        })
    }

    /// Looks at one limited request's report (`rate_refused`: the rate turned it away).
    pub fn observe(&self, key_id: &Arc<str>, report: &LimitReport, rate_refused: bool) {
        let reached = report
            .quota
            .as_ref()
            .and_then(|q| reached(q).map(|t| (q, t)));
        if !rate_refused && reached.is_none() {
            return;
        }
        let now = Utc::now();
        let mut seen = self.seen.entry(key_id.clone()).or_default();
        let mut events = Vec::new();
        let minute = now.timestamp().div_euclid(60);
        if rate_refused && seen.rate_minute != minute {
            seen.rate_minute = minute;
            let event = Event::new("key.rate_limited", json!({"key": {"id": &**key_id}}));
            let claim = format!("key.rate_limited:{key_id}:{minute}");
            events.push((claim, now + TimeDelta::minutes(2), event));
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
                events.push((claim, until, event));
            }
            seen.threshold = seen.threshold.max(threshold);
        }
        drop(seen);
        for claimed in events {
            if let Err(error) = self.queue.try_send(claimed) {
                tracing::warn!(%error, "a limit event was dropped: too many waiting");
            }
        }
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
