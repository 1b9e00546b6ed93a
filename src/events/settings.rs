//! The `webhooks:` settings, typed. Their file format is the config module's.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookSettings {
    /// Allow URLs whose host is loopback, link-local or private (tests, internal receivers).
    pub allow_private_networks: bool,
    /// The longest a delivery attempt may take.
    pub timeout: Duration,
    /// How long a delivery is retried before it is marked failed.
    pub retry_for: Duration,
    /// The wait after the first failure; it doubles after each further one (with jitter).
    pub retry_initial: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
    /// How often the outbox is looked at for events other gateways wrote.
    pub poll_interval: Duration,
    /// How long an event every webhook is done with stays in the outbox (with its deliveries,
    /// shown by `GET /v1/webhooks/{id}/deliveries`).
    pub outbox_retention: Duration,
}

/// How much of a receiver's answer is read: enough for an error message, not a flood.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private_networks: false,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(24 * 3600),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(1),
            outbox_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

impl WebhookSettings {
    /// The wait before attempt `failures + 1`: `retry_initial` doubled per failure, at most
    /// `retry_max`, with up to a fifth of it taken off at random so gateways spread out.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .retry_initial
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)));
        let wait = exp.min(self.retry_max);
        let jitter = rand::random_range(0.0..0.2);
        wait.mul_f64(1.0 - jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let s = WebhookSettings {
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            ..WebhookSettings::default()
        };
        let first = s.backoff(1);
        assert!(first <= Duration::from_secs(10) && first >= Duration::from_secs(8));
        let third = s.backoff(3);
        assert!(third <= Duration::from_secs(40) && third >= Duration::from_secs(32));
        assert!(s.backoff(30) <= Duration::from_secs(60));
    }
}
