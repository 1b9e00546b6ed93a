//! The rate limit's arithmetic: GCRA (the generic cell rate algorithm). One number is kept per
//! key, the theoretical arrival time (TAT) of the next request at the steady rate; a request
//! is admitted when moving the TAT one interval on leaves it at most `burst` intervals ahead of
//! now. Exact with any number of clients, as long as each decision reads and writes the TAT at
//! once (a DashMap entry here, one Lua script on Redis: keys/redis/limits.rs does the same).

use crate::keys::limits::RateLimit;

/// What one decision says, times in nanoseconds from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateVerdict {
    pub allowed: bool,
    /// Requests that could be sent at once after this one.
    pub remaining: u64,
    /// Until the burst is whole again (allowed), or until the next request may pass (refused).
    pub reset_nanos: u64,
}

/// Decides a request at `now` against the stored `tat`; returns the verdict and, when the
/// request is admitted, the TAT to store.
pub fn decide(limit: &RateLimit, tat: u64, now: u64) -> (RateVerdict, Option<u64>) {
    let interval = limit.interval_nanos();
    let new_tat = tat.max(now).saturating_add(interval);
    match verdict(limit, new_tat - now) {
        Some(verdict) => (verdict, Some(new_tat)),
        None => (refused(limit, new_tat - now), None),
    }
}

/// The verdict for a request that would leave the TAT `ahead` nanoseconds after now; `None`
/// when that is past the burst (the request is refused).
pub fn verdict(limit: &RateLimit, ahead: u64) -> Option<RateVerdict> {
    let capacity = capacity(limit);
    (ahead <= capacity).then(|| RateVerdict {
        allowed: true,
        remaining: (capacity - ahead) / limit.interval_nanos(),
        reset_nanos: ahead,
    })
}

/// The verdict for a refused request whose TAT would be `ahead` nanoseconds after now.
pub fn refused(limit: &RateLimit, ahead: u64) -> RateVerdict {
    RateVerdict {
        allowed: false,
        remaining: 0,
        reset_nanos: ahead.saturating_sub(capacity(limit)),
    }
}

/// Where the limit stands now, the stored TAT `ahead` nanoseconds after now (0 when it is in the
/// past), without a request being counted: the headers of a response refused before the
/// decision. `allowed` says whether the next request would pass.
pub fn peek(limit: &RateLimit, ahead: u64) -> RateVerdict {
    let capacity = capacity(limit);
    let next = ahead.saturating_add(limit.interval_nanos());
    if next <= capacity {
        RateVerdict {
            allowed: true,
            remaining: (capacity - ahead) / limit.interval_nanos(),
            reset_nanos: ahead,
        }
    } else {
        refused(limit, next)
    }
}

/// How far ahead of now the TAT may run: `burst` intervals.
fn capacity(limit: &RateLimit) -> u64 {
    limit.interval_nanos().saturating_mul(limit.burst())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limit = RateLimit {
            requests: 50,
            window_seconds: 1,
            burst: Some(10),
        };
        let (mut tat, now) = (0, 1_000 * MS);
        for i in 0..10 {
            let (verdict, next) = decide(&limit, tat, now);
            assert!(verdict.allowed, "request {i} of the burst");
            assert_eq!(verdict.remaining, 9 - i);
            tat = next.unwrap();
        }
        let (verdict, next) = decide(&limit, tat, now);
        assert_eq!((verdict.allowed, verdict.remaining, next), (false, 0, None));
        assert_eq!(verdict.reset_nanos, 20 * MS, "one interval until the next");
        // After one interval, exactly one more.
        let (verdict, next) = decide(&limit, tat, now + 20 * MS);
        assert!(verdict.allowed);
        assert!(!decide(&limit, next.unwrap(), now + 20 * MS).0.allowed);
        // After a long pause the burst is whole again.
        let (verdict, _) = decide(&limit, tat, now + 10_000 * MS);
        assert_eq!(verdict.remaining, 9);
    }

    #[test]
    fn a_peek_says_what_the_next_request_would_find() {
        let limit = RateLimit {
            requests: 50,
            window_seconds: 1,
            burst: Some(10),
        };
        let fresh = peek(&limit, 0);
        assert_eq!(
            (fresh.allowed, fresh.remaining, fresh.reset_nanos),
            (true, 10, 0)
        );
        // After three requests at once: seven left, and the next sees six after it.
        let (mut tat, now) = (0, 1_000 * MS);
        for _ in 0..3 {
            tat = decide(&limit, tat, now).1.unwrap();
        }
        let seen = peek(&limit, tat - now);
        assert_eq!((seen.remaining, seen.reset_nanos), (7, 60 * MS));
        assert_eq!(decide(&limit, tat, now).0.remaining, 6);
        // Spent: none left, and the wait a refused request would be told.
        for _ in 0..7 {
            tat = decide(&limit, tat, now).1.unwrap();
        }
        let spent = peek(&limit, tat - now);
        assert_eq!(
            (spent.allowed, spent.remaining, spent.reset_nanos),
            (false, 0, decide(&limit, tat, now).0.reset_nanos)
        );
    }
}
