//! The durable outbox: events (Standard Webhooks' `{type, timestamp, data}` with a stable id)
//! written in the same store write as what caused them, the webhooks they go to, each
//! webhook's place in the outbox and its deliveries. The stores keep them
//! ([`OutboxStore`]); delivering is the events module's job.

use crate::keys::StoreError;
use crate::keys::audit::{Entry, NewEntry};
use crate::keys::record::prefixed_id;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One event, as delivered: its `id` is the `webhook-id` header, the same on every retry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: DateTime<Utc>,
    pub data: Value,
}

impl Event {
    pub fn new(kind: &str, data: Value) -> Event {
        Event {
            id: prefixed_id("msg_"),
            kind: kind.to_string(),
            timestamp: Utc::now(),
            data,
        }
    }

    /// The key event an audited key change makes (`key.created`, … `key.deleted`), with the
    /// entry's actor; None for changes that are not to keys.
    pub fn from_audit(entry: &Entry) -> Option<Event> {
        if entry.target.kind != "key" {
            return None;
        }
        let mut event = Event::new(
            entry.action.as_str(),
            json!({
                "key": {"id": entry.target.id, "name": entry.target.name},
                "actor": entry.actor,
                "changes": entry.changes,
                "audit_id": entry.id,
            }),
        );
        event.timestamp = entry.time;
        Some(event)
    }

    /// The body a delivery sends (what the signature covers).
    pub fn body(&self) -> String {
        json!({"type": self.kind, "timestamp": self.timestamp, "data": self.data}).to_string()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(json: &str) -> Result<Event, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("outbox event: {e}")))
    }
}

/// An event at its place in the outbox (places only grow).
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    pub seq: u64,
    pub event: Event,
}

/// A webhook: where events whose type matches one of `events` go, signed with `secret`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    /// Type patterns: an exact type, `prefix.*`, or `*`.
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `whsec_` + base64 of the signing key. Kept (the signature needs it), shown once.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The outbox place it was created at: it receives the events after it.
    pub start_seq: u64,
}

impl WebhookRecord {
    /// Does this webhook want events of type `kind`?
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|p| type_matches(p, kind))
    }
}

/// `*` matches every type, `article.*` every `article.` type, anything else itself.
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// One attempt to deliver an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub time: DateTime<Utc>,
    /// The receiver's status; None when no answer came.
    pub status: Option<u16>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Succeeded,
    Failed,
}

/// An event's delivery to one webhook: its attempts so far and when the next one is due.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// `dlv_` + the event's place: unique per webhook.
    pub id: String,
    pub webhook_id: String,
    pub seq: u64,
    pub event: Event,
    pub state: DeliveryState,
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Delivery {
    pub fn new(webhook_id: &str, queued: &Queued) -> Delivery {
        Delivery {
            id: format!("dlv_{}", queued.seq),
            webhook_id: webhook_id.to_string(),
            seq: queued.seq,
            event: queued.event.clone(),
            state: DeliveryState::Pending,
            attempts: Vec::new(),
            next_attempt_at: None,
        }
    }
}

fn unsupported<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable("this store keeps no outbox".into()))
}

/// What a store keeps for events and webhooks. Key events are written by the audited key
/// changes themselves ([`crate::keys::AuditStore`]), in the same write.
#[async_trait]
#[allow(unused_variables)]
pub trait OutboxStore: Send + Sync {
    /// Appends an event (content events, sweeps); returns its place.
    async fn append_event(&self, event: &Event) -> Result<u64, StoreError> {
        unsupported()
    }
    /// Up to `limit` events after place `after`, in order.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Queued>, StoreError> {
        unsupported()
    }
    /// The last place used (0: none yet).
    async fn outbox_head(&self) -> Result<u64, StoreError> {
        unsupported()
    }
    /// Creates or replaces a webhook and appends `entry`, in one write.
    async fn put_webhook(&self, hook: &WebhookRecord, entry: &NewEntry) -> Result<(), StoreError> {
        unsupported()
    }
    /// Deletes a webhook (its place and deliveries too) and appends `entry`, in one write.
    async fn delete_webhook(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        unsupported()
    }
    /// Every webhook, oldest first.
    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        unsupported()
    }
    /// The last outbox place this webhook is done with (delivered, failed or not wanted).
    async fn webhook_cursor(&self, id: &str) -> Result<Option<u64>, StoreError> {
        unsupported()
    }
    async fn set_webhook_cursor(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        unsupported()
    }
    async fn put_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        unsupported()
    }
    /// This webhook's deliveries, newest first, up to `limit`.
    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        unsupported()
    }
    async fn delivery(&self, webhook_id: &str, seq: u64) -> Result<Option<Delivery>, StoreError> {
        unsupported()
    }
    /// Claims `name` until `until` and appends `event` (if any), in one write, unless a claim
    /// of that name is still running: true when this call claimed it. What makes an event
    /// that no write caused (sweeps, limits) happen once across restarts and gateways:
    /// however many race for a claim, one wins.
    async fn claim(
        &self,
        name: &str,
        until: DateTime<Utc>,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        unsupported()
    }
    /// Removes the events at places up to `upto` written before `before`, from the start of
    /// the outbox up to the first younger one, with their deliveries. Returns how many.
    async fn prune_outbox(&self, upto: u64, before: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Forgets the claims that ended before `now` (a store whose claims expire by themselves
    /// has nothing to do). Returns how many were forgotten.
    async fn prune_claims(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// The key of a delivery in a store: the webhook, then the place, zero-padded so keys sort.
pub fn delivery_key(webhook_id: &str, seq: u64) -> String {
    format!("{webhook_id}/{seq:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_types() {
        assert!(type_matches("article.*", "article.updated"));
        assert!(!type_matches("article.*", "category.updated"));
        assert!(type_matches("*", "key.created"));
        assert!(type_matches("key.expiring", "key.expiring"));
        assert!(!type_matches("key.expiring", "key.expired"));
    }

    #[test]
    fn the_body_is_type_timestamp_data() {
        let event = Event::new("article.updated", json!({"id": "7"}));
        let body: Value = serde_json::from_str(&event.body()).unwrap();
        assert_eq!(body["type"], "article.updated");
        assert_eq!(body["data"]["id"], "7");
        assert!(body["timestamp"].is_string());
    }
}
