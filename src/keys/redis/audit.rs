//! The Redis store's audited writes, admin tokens and audit chain.
//!
//! A change and its audit entry are one script: the key scripts of `super` (CREATE, UPDATE,
//! DELETE) and the token scripts here run inside [`WRAP`], which first checks that the chain's
//! head is still the one the entry was sealed after. Rust seals (blake3) after the head it last
//! saw; when another gateway appended meanwhile, the script answers the new head and Rust
//! reseals and tries again: gateways sharing one Redis form one chain, with no lock held
//! between round trips, and a gateway that appends alone needs no extra round trip for it.
//!
//! Layout under the prefix `P`: `P audit` sorted set (score: place in the chain, member: entry
//! JSON) · `P audit:head`, `P audit:anchor` (`"<seq> <hash>"`) · `P admin:<id>` token JSON ·
//! `P admin_hash:<blake3 hex>` -> id · `P admins` sorted set of ids by creation time.

use super::{CAS_ATTEMPTS, RedisStore, decode, encode};
use crate::keys::admin_token::AdminTokenRecord;
use crate::keys::audit::{Chain, ChainHead, Entry, NewEntry};
use crate::keys::outbox::Event;
use crate::keys::{AuditStore, KeyHash, KeyRecord, StoreError, prunable};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};

/// Runs a change script only if the chain's head is as expected (else answers the current head,
/// a string), then appends the entry when the change answered 1. The change's own KEYS and
/// ARGV follow the wrapper's. A key change's event (ARGV `event`, empty for none) is added to
/// the outbox at the next place in the same script.
/// The log's type is checked first: a failing ZADD after the change would split the two.
const WRAP: &str = r"
local head_key = table.remove(KEYS, 1)
local log_key = table.remove(KEYS, 1)
local outbox_key = table.remove(KEYS, 1)
local outbox_seq_key = table.remove(KEYS, 1)
local expected = table.remove(ARGV, 1)
local seq = table.remove(ARGV, 1)
local entry = table.remove(ARGV, 1)
local new_head = table.remove(ARGV, 1)
local event = table.remove(ARGV, 1)
local current = redis.call('GET', head_key) or ''
if current ~= expected then return current end
local kind = redis.call('TYPE', log_key)['ok']
if kind ~= 'zset' and kind ~= 'none' then return redis.error_reply('the audit log is not a sorted set') end
local result = (function()
CHANGE
end)()
if result == 1 then
  redis.call('ZADD', log_key, seq, entry)
  redis.call('SET', head_key, new_head)
  if event ~= '' then redis.call('ZADD', outbox_key, redis.call('INCR', outbox_seq_key), event) end
end
return result";

/// KEYS: token, admins, hash key; ARGV: json, id, created ms.
const CREATE_TOKEN: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('SET', KEYS[3], ARGV[2])
return 1";

/// KEYS: token, admins, hash key; ARGV: expected json, id.
const DELETE_TOKEN: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1";

/// Removes the entries up to ARGV[1] and records ARGV[2] as the anchor, unless a prune on
/// another gateway went as far already. KEYS: log, anchor.
const PRUNE: &str = r"
local current = redis.call('GET', KEYS[2])
if current and tonumber(string.match(current, '^%d+')) >= tonumber(ARGV[1]) then return 0 end
local n = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return n";

/// How often an append is retried when other gateways keep appending first.
const HEAD_ATTEMPTS: usize = 50;
/// Entries read per command when the whole chain is read.
const CHAIN_BATCH: usize = 1000;

pub(super) struct Scripts {
    pub(super) outbox: super::outbox::Scripts,
    /// The chain's head as this gateway last saw it (`""`: none yet), sealed after first.
    head: std::sync::Mutex<String>,
    create: Script,
    update: Script,
    delete: Script,
    create_token: Script,
    delete_token: Script,
    prune: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let wrap = |change: &str| Script::new(&WRAP.replace("CHANGE", change));
        Scripts {
            outbox: super::outbox::Scripts::new(&wrap),
            head: std::sync::Mutex::new(String::new()),
            create: wrap(super::CREATE),
            update: wrap(super::UPDATE),
            delete: wrap(super::DELETE),
            create_token: wrap(CREATE_TOKEN),
            delete_token: wrap(DELETE_TOKEN),
            prune: Script::new(PRUNE),
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn decode_token(json: &str) -> Result<AdminTokenRecord, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

fn parse_head(text: Option<String>, what: &str) -> Result<Option<ChainHead>, StoreError> {
    text.map(|t| ChainHead::parse(&t).ok_or_else(|| corrupt(format!("audit {what}: {t:?}"))))
        .transpose()
}

impl RedisStore {
    fn audit_key(&self) -> String {
        format!("{}audit", self.prefix)
    }
    fn head_key(&self) -> String {
        format!("{}audit:head", self.prefix)
    }
    fn anchor_key(&self) -> String {
        format!("{}audit:anchor", self.prefix)
    }
    fn token_key(&self, id: &str) -> String {
        format!("{}admin:{id}", self.prefix)
    }
    fn token_hash_key(&self, hex: &str) -> String {
        format!("{}admin_hash:{hex}", self.prefix)
    }
    fn tokens_key(&self) -> String {
        format!("{}admins", self.prefix)
    }

    pub(super) async fn get_string(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.call(|mut c| async move { c.get(key).await }).await
    }

    /// Runs the wrapped `script` with the change's `keys` and `args`, sealing `entry` after the
    /// head last seen; again after the head the script answers when another gateway appended
    /// first. Returns the change's answer.
    pub(super) async fn run_audited(
        &self,
        script: &Script,
        entry: &NewEntry,
        keys: &[String],
        args: &[String],
    ) -> Result<i64, StoreError> {
        let mut text = self
            .audit
            .head
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        for _ in 0..HEAD_ATTEMPTS {
            let head = match text.as_str() {
                "" => ChainHead::genesis(),
                _ => parse_head(Some(text.clone()), "head")?.unwrap_or_else(ChainHead::genesis),
            };
            let sealed = entry.seal(&head);
            let mut invocation = script.key(self.head_key());
            invocation.key(self.audit_key());
            invocation.key(self.outbox_key());
            invocation.key(self.outbox_seq_key());
            for key in keys {
                invocation.key(key);
            }
            invocation
                .arg(&text)
                .arg(sealed.seq())
                .arg(sealed.to_json())
                .arg(sealed.head().to_text())
                .arg(
                    Event::from_audit(&sealed)
                        .map(|e| e.to_json())
                        .unwrap_or_default(),
                );
            for arg in args {
                invocation.arg(arg);
            }
            let invocation = &invocation;
            let answer: redis::Value = self
                .call(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await?;
            match answer {
                redis::Value::Int(answer) => {
                    if answer == 1 {
                        text = sealed.head().to_text();
                    }
                    if let Ok(mut last) = self.audit.head.lock() {
                        *last = text;
                    }
                    return Ok(answer);
                }
                moved => {
                    text = redis::from_redis_value(moved)
                        .map_err(|e| corrupt(format!("audit head answer: {e}")))?;
                }
            }
        }
        Err(StoreError::Unavailable(
            "redis: the audit chain kept moving; try again".into(),
        ))
    }

    /// Reads the record at `record_key`, lets `build` make the change's keys and args against
    /// it, and runs it audited; again when the record changed meanwhile. None: no such record.
    async fn change_audited(
        &self,
        record_key: &str,
        script: &Script,
        entry: &NewEntry,
        build: impl Fn(&str) -> Result<(Vec<String>, Vec<String>), StoreError>,
    ) -> Result<Option<String>, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(json) = self.get_string(record_key).await? else {
                return Ok(None);
            };
            let (keys, args) = build(&json)?;
            match self.run_audited(script, entry, &keys, &args).await? {
                1 => return Ok(Some(json)),
                -1 => return Ok(None),
                _ => continue,
            }
        }
        Err(StoreError::Unavailable(
            "redis: the record kept changing; try again".into(),
        ))
    }

    fn hash_keys(&self, hashes: impl Iterator<Item = KeyHash>) -> Vec<String> {
        hashes.map(|h| self.hash_key(&h.to_hex())).collect()
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn create_audited(&self, record: &KeyRecord, entry: &NewEntry) -> Result<(), StoreError> {
        let mut keys = vec![
            self.record_key(&record.id),
            self.ids_key(),
            self.by_requests_key(),
            self.by_last_used_key(),
        ];
        keys.extend(self.hash_keys(record.hashes()));
        let args = vec![
            encode(record),
            record.id.clone(),
            record.created_at.timestamp_millis().to_string(),
            self.channel(),
            Self::message("created", record.hashes()),
        ];
        match self
            .run_audited(&self.audit.create, entry, &keys, &args)
            .await?
        {
            1 => Ok(()),
            _ => Err(StoreError::Conflict(record.id.clone())),
        }
    }

    async fn update_audited(
        &self,
        record: &KeyRecord,
        entry: &NewEntry,
    ) -> Result<bool, StoreError> {
        let new_json = encode(record);
        let replaced = self
            .change_audited(
                &self.record_key(&record.id),
                &self.audit.update,
                entry,
                |json| {
                    let current = decode(json)?;
                    let old: Vec<KeyHash> = current.hashes().collect();
                    let mut keys = vec![self.record_key(&record.id)];
                    keys.extend(self.hash_keys(old.iter().copied().chain(record.hashes())));
                    let args = vec![
                        json.to_string(),
                        new_json.clone(),
                        record.id.clone(),
                        old.len().to_string(),
                        self.channel(),
                        Self::message("changed", old.iter().copied().chain(record.hashes())),
                    ];
                    Ok((keys, args))
                },
            )
            .await?;
        Ok(replaced.is_some())
    }

    async fn delete_audited(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let deleted = self
            .change_audited(&self.record_key(id), &self.audit.delete, entry, |json| {
                let record = decode(json)?;
                let mut keys = vec![
                    self.record_key(id),
                    self.usage_key(id),
                    self.ids_key(),
                    self.by_requests_key(),
                    self.by_last_used_key(),
                ];
                keys.extend(self.hash_keys(record.hashes()));
                let args = vec![
                    json.to_string(),
                    id.to_string(),
                    self.channel(),
                    Self::message("changed", record.hashes()),
                ];
                Ok((keys, args))
            })
            .await?;
        deleted.as_deref().map(decode).transpose()
    }

    async fn create_admin_token(
        &self,
        token: &AdminTokenRecord,
        entry: &NewEntry,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(token).map_err(corrupt)?;
        let keys = vec![
            self.token_key(&token.id),
            self.tokens_key(),
            self.token_hash_key(&token.hash),
        ];
        let args = vec![
            json,
            token.id.clone(),
            token.created_at.timestamp_millis().to_string(),
        ];
        match self
            .run_audited(&self.audit.create_token, entry, &keys, &args)
            .await?
        {
            1 => Ok(()),
            _ => Err(StoreError::Conflict(token.id.clone())),
        }
    }

    async fn delete_admin_token(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        let deleted = self
            .change_audited(
                &self.token_key(id),
                &self.audit.delete_token,
                entry,
                |json| {
                    let token = decode_token(json)?;
                    let keys = vec![
                        self.token_key(id),
                        self.tokens_key(),
                        self.token_hash_key(&token.hash),
                    ];
                    Ok((keys, vec![json.to_string(), id.to_string()]))
                },
            )
            .await?;
        deleted.as_deref().map(decode_token).transpose()
    }

    async fn admin_token(&self, id: &str) -> Result<Option<AdminTokenRecord>, StoreError> {
        let json = self.get_string(&self.token_key(id)).await?;
        json.as_deref().map(decode_token).transpose()
    }

    async fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let tokens_key = &self.tokens_key();
        let ids: Vec<String> = self
            .call(|mut c| async move { c.zrange(tokens_key, 0, -1).await })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &ids.iter().map(|id| self.token_key(id)).collect::<Vec<_>>();
        let jsons: Vec<Option<String>> =
            self.call(|mut c| async move { c.mget(keys).await }).await?;
        jsons.iter().flatten().map(|j| decode_token(j)).collect()
    }

    async fn admin_token_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        let Some(id) = self
            .get_string(&self.token_hash_key(&hash.to_hex()))
            .await?
        else {
            return Ok(None);
        };
        self.admin_token(&id).await
    }

    async fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let key = &self.audit_key();
        let max = before.map_or("+inf".to_string(), |b| format!("({b}"));
        let max = &max;
        let jsons: Vec<String> = self
            .call(|mut c| async move {
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(key)
                    .arg(max)
                    .arg("-inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        jsons
            .iter()
            .map(|j| serde_json::from_str(j).map_err(corrupt))
            .collect()
    }

    /// Reads the anchor and head first, then the entries between them in batches: entries
    /// appended meanwhile (after the head read) are left for the next verification.
    async fn audit_chain(&self) -> Result<Chain, StoreError> {
        let anchor = parse_head(self.get_string(&self.anchor_key()).await?, "anchor")?;
        let head = parse_head(self.get_string(&self.head_key()).await?, "head")?;
        let last = head.as_ref().map_or(0, |h| h.seq);
        let key = &self.audit_key();
        let mut entries: Vec<Entry> = Vec::new();
        loop {
            let from = entries.last().map_or(0, Entry::seq);
            let min = &format!("({from}");
            let jsons: Vec<String> = self
                .call(|mut c| async move {
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(key)
                        .arg(min)
                        .arg(last)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(CHAIN_BATCH)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let done = jsons.len() < CHAIN_BATCH;
            for json in jsons {
                entries.push(serde_json::from_str(&json).map_err(corrupt)?);
            }
            if done {
                break;
            }
        }
        Ok(Chain {
            anchor,
            entries,
            head,
        })
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut removable: Vec<Entry> = Vec::new();
        let key = &self.audit_key();
        // Oldest first, a batch at a time, until an entry young enough to keep.
        loop {
            let offset = removable.len();
            let jsons: Vec<String> = self
                .call(|mut c| async move {
                    c.zrange(key, offset as isize, (offset + CHAIN_BATCH - 1) as isize)
                        .await
                })
                .await?;
            let done = jsons.len() < CHAIN_BATCH;
            let batch: Vec<Entry> = jsons
                .iter()
                .map(|j| serde_json::from_str(j).map_err(corrupt))
                .collect::<Result<_, _>>()?;
            let keep = prunable(&batch, before);
            removable.extend(batch.into_iter().take(keep));
            if done || keep < CHAIN_BATCH {
                break;
            }
        }
        let Some(last) = removable.last() else {
            return Ok(0);
        };
        let mut invocation = self.audit.prune.key(key);
        invocation
            .key(self.anchor_key())
            .arg(last.seq())
            .arg(last.head().to_text());
        let removed = self.run_script(&invocation).await?;
        Ok(usize::try_from(removed).unwrap_or(0))
    }

    /// One MULTI/EXEC: the tokens are set, the chain's entries, anchor and head replaced.
    async fn import_audit(
        &self,
        tokens: &[AdminTokenRecord],
        chain: &Chain,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for token in tokens {
            let json = serde_json::to_string(token).map_err(corrupt)?;
            pipe.set(self.token_key(&token.id), json).ignore();
            pipe.zadd(
                self.tokens_key(),
                &token.id,
                token.created_at.timestamp_millis(),
            )
            .ignore();
            pipe.set(self.token_hash_key(&token.hash), &token.id)
                .ignore();
        }
        pipe.del(self.audit_key()).ignore();
        for entry in &chain.entries {
            pipe.zadd(self.audit_key(), entry.to_json(), entry.seq())
                .ignore();
        }
        for (key, value) in [
            (self.anchor_key(), &chain.anchor),
            (self.head_key(), &chain.head),
        ] {
            match value {
                Some(value) => pipe.set(key, value.to_text()).ignore(),
                None => pipe.del(key).ignore(),
            };
        }
        let pipe = &pipe;
        self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        if let Ok(mut last) = self.audit.head.lock() {
            last.clear();
        }
        Ok(())
    }
}
