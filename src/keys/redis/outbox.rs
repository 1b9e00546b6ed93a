//! The Redis store's outbox, webhooks, cursors and deliveries. Key events are added by the
//! audited scripts themselves (`audit::WRAP`), in the script that makes the change.
//!
//! Layout under the prefix `P`: `P outbox` sorted set (score: place, member: event JSON, unique
//! by its id) · `P outbox:seq` the last place · `P webhook:<id>` record JSON · `P webhooks`
//! sorted set of ids by creation · `P webhook_cursor:<id>` place · `P deliveries:<id>` hash
//! (zero-padded place -> delivery JSON) · `P claim:<name>` a claim, expiring when it ends.

use super::RedisStore;
use crate::keys::StoreError;
use crate::keys::audit::NewEntry;
use crate::keys::outbox::{Delivery, Event, OutboxStore, Queued, WebhookRecord};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};

/// KEYS: outbox, seq; ARGV: event JSON. Answers the event's place.
const APPEND: &str = r"
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
return seq";

/// KEYS: webhook, webhooks; ARGV: json, id, created ms.
const PUT_HOOK: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1";

/// KEYS: webhook, webhooks, cursor, deliveries; ARGV: id.
const DELETE_HOOK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1";

/// KEYS: claim, outbox, seq; ARGV: milliseconds the claim lasts, event JSON ('' for none).
/// Answers 1 when claimed, 0 when a claim of that name is still running.
const CLAIM: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if ARGV[2] ~= '' then
  local seq = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[2], seq, ARGV[2])
end
return 1";

pub(super) struct Scripts {
    append: Script,
    claim: Script,
    put_hook: Script,
    delete_hook: Script,
}

impl Scripts {
    /// `wrap` makes a change script audited (see `audit::WRAP`).
    pub(super) fn new(wrap: &dyn Fn(&str) -> Script) -> Scripts {
        Scripts {
            append: Script::new(APPEND),
            claim: Script::new(CLAIM),
            put_hook: wrap(PUT_HOOK),
            delete_hook: wrap(DELETE_HOOK),
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Events read at a time when pruning.
const PRUNE_BATCH: usize = 500;

fn padded(seq: u64) -> String {
    format!("{seq:020}")
}

impl RedisStore {
    pub(super) fn outbox_key(&self) -> String {
        format!("{}outbox", self.prefix)
    }
    pub(super) fn outbox_seq_key(&self) -> String {
        format!("{}outbox:seq", self.prefix)
    }
    fn hook_key(&self, id: &str) -> String {
        format!("{}webhook:{id}", self.prefix)
    }
    fn hooks_key(&self) -> String {
        format!("{}webhooks", self.prefix)
    }
    fn cursor_key(&self, id: &str) -> String {
        format!("{}webhook_cursor:{id}", self.prefix)
    }
    fn claim_key(&self, name: &str) -> String {
        format!("{}claim:{name}", self.prefix)
    }
    fn deliveries_key(&self, id: &str) -> String {
        format!("{}deliveries:{id}", self.prefix)
    }

    fn outbox(&self) -> &Scripts {
        &self.audit.outbox
    }
}

#[async_trait]
impl OutboxStore for RedisStore {
    async fn append_event(&self, event: &Event) -> Result<u64, StoreError> {
        let mut invocation = self.outbox().append.key(self.outbox_key());
        invocation.key(self.outbox_seq_key()).arg(event.to_json());
        let invocation = &invocation;
        let seq: i64 = self.run_script(invocation).await?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Queued>, StoreError> {
        let key = self.outbox_key();
        let (key, min) = (&key, format!("({after}"));
        let min = &min;
        let rows: Vec<(String, f64)> = self
            .call(|mut c| async move {
                c.zrangebyscore_limit_withscores(key, min.as_str(), "+inf", 0, limit as isize)
                    .await
            })
            .await?;
        rows.into_iter()
            .map(|(json, seq)| {
                Ok(Queued {
                    seq: seq as u64,
                    event: Event::from_json(&json)?,
                })
            })
            .collect()
    }

    async fn outbox_head(&self) -> Result<u64, StoreError> {
        let seq = self.get_string(&self.outbox_seq_key()).await?;
        Ok(seq.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    async fn put_webhook(&self, hook: &WebhookRecord, entry: &NewEntry) -> Result<(), StoreError> {
        let json = serde_json::to_string(hook).map_err(corrupt)?;
        let keys = vec![self.hook_key(&hook.id), self.hooks_key()];
        let args = vec![
            json,
            hook.id.clone(),
            hook.created_at.timestamp_millis().to_string(),
        ];
        self.run_audited(&self.outbox().put_hook, entry, &keys, &args)
            .await
            .map(drop)
    }

    async fn delete_webhook(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let Some(json) = self.get_string(&self.hook_key(id)).await? else {
            return Ok(None);
        };
        let keys = vec![
            self.hook_key(id),
            self.hooks_key(),
            self.cursor_key(id),
            self.deliveries_key(id),
        ];
        let args = vec![id.to_string()];
        match self
            .run_audited(&self.outbox().delete_hook, entry, &keys, &args)
            .await?
        {
            1 => serde_json::from_str(&json).map(Some).map_err(corrupt),
            _ => Ok(None),
        }
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let ids_key = self.hooks_key();
        let ids_key = &ids_key;
        let ids: Vec<String> = self
            .call(|mut c| async move { c.zrange(ids_key, 0, -1).await })
            .await?;
        let mut hooks = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(json) = self.get_string(&self.hook_key(&id)).await? {
                hooks.push(serde_json::from_str(&json).map_err(corrupt)?);
            }
        }
        Ok(hooks)
    }

    async fn webhook_cursor(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let seq = self.get_string(&self.cursor_key(id)).await?;
        Ok(seq.and_then(|s| s.parse().ok()))
    }

    async fn set_webhook_cursor(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        let key = self.cursor_key(id);
        let key = &key;
        self.call(|mut c| async move { c.set::<_, _, ()>(key, seq).await })
            .await
    }

    async fn put_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let key = self.deliveries_key(&delivery.webhook_id);
        let json = serde_json::to_string(delivery).map_err(corrupt)?;
        let (key, field, json) = (&key, &padded(delivery.seq), &json);
        self.call(|mut c| async move { c.hset::<_, _, _, ()>(key, field, json).await })
            .await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let key = self.deliveries_key(webhook_id);
        let key = &key;
        let mut all: Vec<(String, String)> = self
            .call(|mut c| async move { c.hgetall(key).await })
            .await?;
        all.sort_by(|a, b| b.0.cmp(&a.0));
        all.into_iter()
            .take(limit)
            .map(|(_, json)| serde_json::from_str(&json).map_err(corrupt))
            .collect()
    }

    async fn delivery(&self, webhook_id: &str, seq: u64) -> Result<Option<Delivery>, StoreError> {
        let key = self.deliveries_key(webhook_id);
        let (key, field) = (&key, &padded(seq));
        let json: Option<String> = self
            .call(|mut c| async move { c.hget(key, field).await })
            .await?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn claim(
        &self,
        name: &str,
        until: DateTime<Utc>,
        event: Option<&Event>,
    ) -> Result<bool, StoreError> {
        let lasts = (until - Utc::now()).num_milliseconds().max(1);
        let mut invocation = self.outbox().claim.key(self.claim_key(name));
        invocation
            .key(self.outbox_key())
            .key(self.outbox_seq_key())
            .arg(lasts)
            .arg(event.map(Event::to_json).unwrap_or_default());
        Ok(self.run_script(&invocation).await? == 1)
    }

    /// Reads the prunable events a batch at a time, then removes them (and their deliveries)
    /// by place: an event appended meanwhile has a later place, so it stays.
    async fn prune_outbox(&self, upto: u64, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut last = 0;
        loop {
            let batch = self.events_after(last, PRUNE_BATCH).await?;
            let old: Vec<&Queued> = batch
                .iter()
                .take_while(|q| q.seq <= upto && q.event.timestamp < before)
                .collect();
            removed += old.len();
            last = old.last().map_or(last, |q| q.seq);
            if old.len() < PRUNE_BATCH {
                break;
            }
        }
        if removed == 0 {
            return Ok(0);
        }
        let key = self.outbox_key();
        let (key, last_text) = (&key, &last.to_string());
        self.call(|mut c| async move {
            c.zrembyscore::<_, _, _, ()>(key, "-inf", last_text.as_str())
                .await
        })
        .await?;
        for hook in self.webhooks().await? {
            let key = self.deliveries_key(&hook.id);
            let key = &key;
            let fields: Vec<String> = self.call(|mut c| async move { c.hkeys(key).await }).await?;
            let done: Vec<&String> = fields.iter().filter(|f| **f <= padded(last)).collect();
            if !done.is_empty() {
                let done = &done;
                self.call(|mut c| async move { c.hdel::<_, _, ()>(key, done).await })
                    .await?;
            }
        }
        Ok(removed)
    }
}
