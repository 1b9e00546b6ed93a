//! The embedded store's outbox, webhooks, cursors and deliveries. Key events are appended by
//! the audited writes' own transaction (`audit::append`), so a key change, its audit entry and
//! its event are committed together or not at all.
//!
//! Tables: `outbox` (place -> event JSON), `webhooks` (id -> record JSON), `webhook_cursors`
//! (id -> place), `deliveries` ([`delivery_key`] -> delivery JSON), `event_claims` (claim
//! name -> the end of the claim, Unix milliseconds).

use super::audit::audited;
use super::{EmbeddedStore, unavailable};
use crate::keys::StoreError;
use crate::keys::audit::NewEntry;
use crate::keys::outbox::{Delivery, Event, OutboxStore, Queued, WebhookRecord, delivery_key};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

const OUTBOX: TableDefinition<u64, &str> = TableDefinition::new("outbox");
const WEBHOOKS: TableDefinition<&str, &str> = TableDefinition::new("webhooks");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("webhook_cursors");
const DELIVERIES: TableDefinition<&str, &str> = TableDefinition::new("deliveries");
const CLAIMS: TableDefinition<&str, i64> = TableDefinition::new("event_claims");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(OUTBOX).map_err(unavailable)?;
    txn.open_table(WEBHOOKS).map_err(unavailable)?;
    txn.open_table(CURSORS).map_err(unavailable)?;
    txn.open_table(DELIVERIES).map_err(unavailable)?;
    txn.open_table(CLAIMS).map_err(unavailable)?;
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Appends `event` at the next place, inside the caller's transaction.
pub(super) fn append_in(txn: &WriteTransaction, event: &Event) -> Result<u64, StoreError> {
    let mut outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
    let last = outbox.last().map_err(unavailable)?.map(|(k, _)| k.value());
    let seq = last.unwrap_or(0) + 1;
    outbox
        .insert(seq, event.to_json().as_str())
        .map_err(unavailable)?;
    Ok(seq)
}

fn decode_hook(json: &str) -> Result<WebhookRecord, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

fn decode_delivery(json: &str) -> Result<Delivery, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

#[async_trait]
impl OutboxStore for EmbeddedStore {
    async fn append_event(&self, event: &Event) -> Result<u64, StoreError> {
        let event = event.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let seq = append_in(&txn, &event)?;
            txn.commit().map_err(unavailable)?;
            Ok(seq)
        })
        .await
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
            let mut events = Vec::new();
            for row in outbox.range(after + 1..).map_err(unavailable)?.take(limit) {
                let (seq, json) = row.map_err(unavailable)?;
                events.push(Queued {
                    seq: seq.value(),
                    event: Event::from_json(json.value())?,
                });
            }
            Ok(events)
        })
        .await
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
            let last = outbox.last().map_err(unavailable)?;
            Ok(last.map(|(k, _)| k.value()).unwrap_or(0))
        })
        .await
    }

    async fn put_webhook(&self, hook: &WebhookRecord, entry: &NewEntry) -> Result<(), StoreError> {
        let hook = hook.clone();
        audited(self, entry, move |txn| {
            let json = serde_json::to_string(&hook).map_err(corrupt)?;
            let mut hooks = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            hooks
                .insert(hook.id.as_str(), json.as_str())
                .map_err(unavailable)?;
            Ok(Some(()))
        })
        .await
        .map(drop)
    }

    async fn delete_webhook(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let id = id.to_string();
        audited(self, entry, move |txn| {
            let mut hooks = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            let hook = match hooks.remove(id.as_str()).map_err(unavailable)? {
                Some(json) => decode_hook(json.value())?,
                None => return Ok(None),
            };
            let mut cursors = txn.open_table(CURSORS).map_err(unavailable)?;
            cursors.remove(id.as_str()).map_err(unavailable)?;
            let mut deliveries = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let (from, to) = (delivery_key(&id, 0), delivery_key(&id, u64::MAX));
            deliveries
                .retain_in(from.as_str()..=to.as_str(), |_, _| false)
                .map_err(unavailable)?;
            Ok(Some(hook))
        })
        .await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.run(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let hooks = txn.open_table(WEBHOOKS).map_err(unavailable)?;
            let mut all = Vec::new();
            for row in hooks.iter().map_err(unavailable)? {
                let (_, json) = row.map_err(unavailable)?;
                all.push(decode_hook(json.value())?);
            }
            all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(all)
        })
        .await
    }

    async fn webhook_cursor(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let id = id.to_string();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let cursors = txn.open_table(CURSORS).map_err(unavailable)?;
            let seq = cursors.get(id.as_str()).map_err(unavailable)?;
            Ok(seq.map(|s| s.value()))
        })
        .await
    }

    async fn set_webhook_cursor(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(CURSORS)
                .map_err(unavailable)?
                .insert(id.as_str(), seq)
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn put_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let key = delivery_key(&delivery.webhook_id, delivery.seq);
        let json = serde_json::to_string(delivery).map_err(corrupt)?;
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(DELIVERIES)
                .map_err(unavailable)?
                .insert(key.as_str(), json.as_str())
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (from, to) = (
            delivery_key(webhook_id, 0),
            delivery_key(webhook_id, u64::MAX),
        );
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let mut page = Vec::new();
            let range = table
                .range(from.as_str()..=to.as_str())
                .map_err(unavailable)?;
            for row in range.rev().take(limit) {
                let (_, json) = row.map_err(unavailable)?;
                page.push(decode_delivery(json.value())?);
            }
            Ok(page)
        })
        .await
    }

    async fn delivery(&self, webhook_id: &str, seq: u64) -> Result<Option<Delivery>, StoreError> {
        let key = delivery_key(webhook_id, seq);
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let json = table.get(key.as_str()).map_err(unavailable)?;
            json.map(|j| decode_delivery(j.value())).transpose()
        })
        .await
    }

    async fn claim(
        &self,
        name: &str,
        until: DateTime<Utc>,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let (name, event) = (name.to_string(), event.cloned());
        let now = Utc::now().timestamp_millis();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut claims = txn.open_table(CLAIMS).map_err(unavailable)?;
                let running = claims.get(name.as_str()).map_err(unavailable)?;
                if running.is_some_and(|end| end.value() > now) {
                    return Ok(false);
                }
                claims
                    .insert(name.as_str(), until.timestamp_millis())
                    .map_err(unavailable)?;
            }
            if let Some(event) = &event {
                append_in(&txn, event)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn prune_claims(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now = now.timestamp_millis();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let mut removed = 0;
            txn.open_table(CLAIMS)
                .map_err(unavailable)?
                .retain(|_, end| {
                    let ended = end <= now;
                    removed += usize::from(ended);
                    !ended
                })
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }

    async fn prune_outbox(&self, upto: u64, before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let (removed, last) = {
                let mut outbox = txn.open_table(OUTBOX).map_err(unavailable)?;
                let mut last = None;
                let mut removed = 0;
                for row in outbox.range(..=upto).map_err(unavailable)? {
                    let (seq, json) = row.map_err(unavailable)?;
                    if Event::from_json(json.value())?.timestamp >= before {
                        break;
                    }
                    last = Some(seq.value());
                    removed += 1;
                }
                let Some(last) = last else {
                    return Ok(0);
                };
                outbox
                    .retain_in(..=last, |_, _| false)
                    .map_err(unavailable)?;
                (removed, last)
            };
            {
                let hooks = txn.open_table(WEBHOOKS).map_err(unavailable)?;
                let mut deliveries = txn.open_table(DELIVERIES).map_err(unavailable)?;
                for row in hooks.iter().map_err(unavailable)? {
                    let (id, _) = row.map_err(unavailable)?;
                    let (from, to) = (delivery_key(id.value(), 0), delivery_key(id.value(), last));
                    deliveries
                        .retain_in(from.as_str()..=to.as_str(), |_, _| false)
                        .map_err(unavailable)?;
                }
            }
            txn.commit().map_err(unavailable)?;
            Ok(removed)
        })
        .await
    }
}
