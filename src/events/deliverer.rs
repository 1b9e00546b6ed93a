//! The deliverer: every gateway runs one. It walks each webhook's events in outbox order from
//! the webhook's cursor, delivers the ones it wants, and moves the cursor only past events
//! that are delivered, failed for good, or not wanted: a crash or a second gateway may
//! deliver an event twice (receivers de-duplicate by `webhook-id`), never lose one. An event
//! that fails blocks the ones after it for that webhook until it succeeds or `retry_for` runs
//! out, so each webhook gets its events in order.

use crate::events::WebhookSettings;
use crate::events::{deliver, outbox_metrics};
use crate::keys::outbox::{Delivery, DeliveryState, Queued, WebhookRecord};
use crate::keys::{KeyStore, StoreError};
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Events read from the outbox at a time.
const BATCH: usize = 100;

pub struct Deliverer {
    store: Arc<dyn KeyStore>,
    settings: WebhookSettings,
    wake: Notify,
    /// When the outbox was last pruned (see [`Deliverer::prune`]).
    pruned: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Deliverer {
    pub fn new(store: Arc<dyn KeyStore>, settings: WebhookSettings) -> Arc<Deliverer> {
        outbox_metrics::describe();
        Arc::new(Deliverer {
            store,
            settings,
            wake: Notify::new(),
            pruned: std::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// Asks for a pass now (an event was just written here).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Passes over every webhook, when woken and every `poll_interval`, until shut down.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.pass().await {
                tracing::warn!(%error, "webhook deliveries paused; retried later");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// One pass: each webhook's due events, the webhooks side by side; then the backlog.
    pub async fn pass(&self) -> Result<(), StoreError> {
        let hooks = self.store.webhooks().await?;
        let passes = hooks.iter().map(|hook| self.work(hook));
        let mut slowest: Option<u64> = None;
        for result in futures_util::future::join_all(passes).await {
            let cursor = result?;
            slowest = Some(slowest.map_or(cursor, |s| s.min(cursor)));
        }
        self.measure_backlog(slowest).await
    }

    /// Sets the backlog gauges: the events after the slowest webhook's place.
    async fn measure_backlog(&self, slowest: Option<u64>) -> Result<(), StoreError> {
        let head = self.store.outbox_head().await?;
        self.prune(slowest.unwrap_or(head)).await?;
        let Some(slowest) = slowest else {
            outbox_metrics::backlog(0, 0.0);
            return Ok(());
        };
        let depth = head.saturating_sub(slowest);
        let oldest = match depth {
            0 => None,
            _ => self
                .store
                .events_after(slowest, 1)
                .await?
                .into_iter()
                .next(),
        };
        let age = oldest.map_or(0.0, |q| {
            (Utc::now() - q.event.timestamp).num_milliseconds().max(0) as f64 / 1000.0
        });
        outbox_metrics::backlog(depth, age);
        Ok(())
    }

    /// Removes the events every webhook is done with (those up to `done`) once they are
    /// older than `webhooks.outbox_retention`, every tenth of it at most (at most hourly).
    async fn prune(&self, done: u64) -> Result<(), StoreError> {
        let retention = self.settings.outbox_retention;
        let interval = crate::keys::prune_interval(retention);
        let due = match self.pruned.lock() {
            Ok(mut last) if last.is_none_or(|at| at.elapsed() >= interval) => {
                *last = Some(std::time::Instant::now());
                true
            }
            _ => false,
        };
        if !due {
            return Ok(());
        }
        let before =
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
        let removed = self.store.prune_outbox(done, before).await?;
        if removed > 0 {
            tracing::debug!(
                events = removed,
                "delivered events past their retention pruned"
            );
        }
        Ok(())
    }

    /// Delivers `hook`'s due events in order, stopping at one that must wait for a retry.
    /// Returns the place it is done up to.
    async fn work(&self, hook: &WebhookRecord) -> Result<u64, StoreError> {
        let saved = self.store.webhook_cursor(&hook.id).await?;
        let mut cursor = saved.unwrap_or(hook.start_seq);
        'outbox: loop {
            let batch = self.store.events_after(cursor, BATCH).await?;
            if batch.is_empty() {
                break;
            }
            for queued in batch {
                if hook.wants(&queued.event.kind) && !self.deliver_due(hook, &queued).await? {
                    break 'outbox;
                }
                cursor = queued.seq;
            }
        }
        if saved != Some(cursor) {
            self.store.set_webhook_cursor(&hook.id, cursor).await?;
        }
        Ok(cursor)
    }

    /// Attempts `queued` if it is due; true when the webhook is done with it.
    async fn deliver_due(&self, hook: &WebhookRecord, queued: &Queued) -> Result<bool, StoreError> {
        let stored = self.store.delivery(&hook.id, queued.seq).await?;
        let mut delivery = stored.unwrap_or_else(|| Delivery::new(&hook.id, queued));
        if delivery.state != DeliveryState::Pending {
            return Ok(true);
        }
        if delivery
            .next_attempt_at
            .is_some_and(|next| next > Utc::now())
        {
            return Ok(false);
        }
        let attempt = deliver::attempt(hook, &queued.event, &self.settings).await;
        let delivered = attempt.error.is_none();
        delivery.attempts.push(attempt);
        let first = delivery.attempts[0].time;
        let retry_for =
            chrono::Duration::from_std(self.settings.retry_for).unwrap_or(chrono::TimeDelta::MAX);
        delivery.next_attempt_at = None;
        if delivered {
            delivery.state = DeliveryState::Succeeded;
        } else if Utc::now() - first >= retry_for {
            delivery.state = DeliveryState::Failed;
        } else {
            let failures = u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX);
            let wait = chrono::Duration::from_std(self.settings.backoff(failures))
                .unwrap_or(chrono::TimeDelta::MAX);
            delivery.next_attempt_at = Some(Utc::now() + wait);
        }
        outbox_metrics::attempt(&hook.id, &delivery);
        self.store.put_delivery(&delivery).await?;
        Ok(delivery.state != DeliveryState::Pending)
    }

    /// A retry asked for by hand: one attempt now, whatever the delivery's state; a failed
    /// delivery that succeeds now is marked succeeded. None: no such delivery.
    pub async fn retry(
        &self,
        hook: &WebhookRecord,
        seq: u64,
    ) -> Result<Option<Delivery>, StoreError> {
        let Some(mut delivery) = self.store.delivery(&hook.id, seq).await? else {
            return Ok(None);
        };
        let attempt = deliver::attempt(hook, &delivery.event, &self.settings).await;
        if attempt.error.is_none() {
            delivery.state = DeliveryState::Succeeded;
            delivery.next_attempt_at = None;
        }
        delivery.attempts.push(attempt);
        outbox_metrics::attempt(&hook.id, &delivery);
        self.store.put_delivery(&delivery).await?;
        Ok(Some(delivery))
    }
}
