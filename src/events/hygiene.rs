//! Keys that look after themselves: the `keys.expiry_warnings` and `keys.unused_policy`
//! settings, and the loop every gateway runs that sweeps the keys for them. Each sweep claims
//! what it emits in the store ([`crate::keys::OutboxStore::claim`]), so an event happens once
//! however many gateways sweep and however often they restart.

use crate::events::{expiry, unused};
use crate::keys::audit::Context;
use crate::keys::service::KeyService;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DAY: Duration = Duration::from_secs(86_400);

/// The typed `keys:` hygiene settings. Their file format is the config module's.
#[derive(Clone, Debug, PartialEq)]
pub struct HygieneSettings {
    /// Lead times before a key's expiry at which `key.expiring` is emitted, longest first.
    /// The longest is also when proxied responses start carrying `Kbgate-Key-Expires`.
    pub expiry_warnings: Vec<Duration>,
    /// `keys.unused_policy`; None: off.
    pub unused: Option<UnusedPolicy>,
    /// How often the expiry sweep runs.
    pub sweep_interval: Duration,
    /// How often the unused sweep runs (daily; shorter in tests).
    pub unused_interval: Duration,
}

impl Default for HygieneSettings {
    fn default() -> Self {
        HygieneSettings {
            expiry_warnings: vec![14 * DAY, 7 * DAY, DAY],
            unused: None,
            sweep_interval: Duration::from_secs(600),
            unused_interval: DAY,
        }
    }
}

impl HygieneSettings {
    /// The first (longest) lead time: from then on a key's responses say when it expires.
    pub fn notice_lead(&self) -> Option<Duration> {
        self.expiry_warnings.first().copied()
    }
}

/// `keys.unused_policy`: what to do with keys unused for `after`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnusedPolicy {
    pub after: Duration,
    pub action: UnusedAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnusedAction {
    /// Emit `key.unused` only.
    Report,
    /// Also disable the key (audited, actor `policy`), which emits `key.disabled`.
    Disable,
}

/// Sweeps for expiry every `sweep_interval`, and for unused keys at the first of those ticks
/// and then every `unused_interval`, until shut down (the first sweeps one interval after
/// start: a gateway starting is busy enough). A failed sweep is logged and tried again at the
/// next tick: what it missed is still due then.
pub async fn run(keys: Arc<KeyService>, settings: HygieneSettings, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(settings.sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut last_unused: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = Utc::now();
        if let Err(error) = expiry::sweep(&keys, &settings.expiry_warnings, now).await {
            tracing::warn!(%error, "expiry sweep failed; retried at the next one");
        }
        if let Err(error) = keys.store().prune_claims(now).await {
            tracing::warn!(%error, "event claims could not be pruned; retried later");
        }
        let Some(policy) = &settings.unused else {
            continue;
        };
        if last_unused.is_some_and(|at| at.elapsed() < settings.unused_interval) {
            continue;
        }
        last_unused = Some(tokio::time::Instant::now());
        if let Err(error) = unused::sweep(&keys, policy, false, &Context::policy(), now).await {
            tracing::warn!(%error, "unused-key sweep failed; retried at the next one");
            last_unused = None;
        }
    }
}
