//! The shared store for several gateways: Redis (single server, TLS with `rediss://`, or
//! Cluster). Every change is made by one Lua script, atomically, and published on a channel so
//! every instance drops the key from its hot tier within milliseconds.
//!
//! Layout under the configured prefix `P` (a `{hash tag}` in it keeps a cluster's keys together):
//! `P key:<id>` record JSON · `P hash:<blake3 hex>` -> id · `P usage:<id>` hash {requests,
//! last_used_ms} · `P ids` sorted set of ids by creation time (paged from a mark, see
//! `history`) · channel `P changes`; usage history under `P hist…` (see `history`); usage
//! orders `P by_requests`, `P by_last_used` (see `usage_order`).

mod audit;
mod connection;
mod history;
pub mod invalidation;
pub mod limits;
mod outbox;
mod quota_reads;
#[macro_use]
mod usage_order;

use crate::keys::history::{HourCounts, UsageOverview};
use crate::keys::listing::{AgeMark, UsageMark, UsageSort};
use crate::keys::{KeyHash, KeyRecord, KeyStore, StoreError, StoreEvent, Usage, UsageDelta};
use async_trait::async_trait;
use connection::{Connection, Connector};
use redis::{AsyncCommands, RedisResult, Script};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct RedisConfig {
    /// One URL, or a cluster's seed nodes. May hold a password: never log it.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub prefix: String,
    pub timeout: Duration,
}

/// Shows the nodes without their credentials.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("nodes", &self.urls.len())
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Creates a key unless its id exists; indexes its hashes; publishes them. Creating the very
/// same record twice succeeds, so a call retried after a lost reply is not a conflict.
/// KEYS: record, ids, by_requests, by_last_used, hash keys…; ARGV: json, id, created ms,
/// channel, message.
const CREATE: &str = concat!(
    usage_order_lua!(),
    r"
local current = redis.call('GET', KEYS[1])
if current then return current == ARGV[1] and 1 or 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
usage_reorder({KEYS[3], KEYS[4]}, ARGV[2], tonumber(ARGV[3]), nil, {})
for i = 5, #KEYS do redis.call('SET', KEYS[i], ARGV[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1"
);

/// Replaces a record if it is still what the caller read (-1: gone, 0: changed meanwhile).
/// KEYS: record, old hash keys (ARGV[4] of them), new hash keys…;
/// ARGV: expected json, new json, id, old count, channel, message.
const UPDATE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
local old = tonumber(ARGV[4])
for i = 2, old + 1 do redis.call('DEL', KEYS[i]) end
for i = old + 2, #KEYS do redis.call('SET', KEYS[i], ARGV[3]) end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1";

/// Deletes a record, its usage and hashes if it is still what the caller read.
/// KEYS: record, usage, ids, by_requests, by_last_used, hash keys…; ARGV: expected json, id,
/// channel, message.
const DELETE: &str = concat!(
    usage_order_lua!(),
    r"
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
local created = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[2]) or '0')
local usage = redis.call('HMGET', KEYS[2], 'requests', 'last_used_ms')
usage_reorder({KEYS[4], KEYS[5]}, ARGV[2], created, usage, nil)
for i = 6, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1"
);

/// Finds the record holding a secret hash in one round trip. The record key is derived from the
/// id, so it is not declared; it shares the prefix (and in a cluster, the hash tag and slot).
/// KEYS: hash key; ARGV: record key prefix.
const FIND: &str = r"
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)";

/// Adds requests to a live key's usage; keeps the latest last-used time; moves the key in the
/// usage orders; then its history (`history::ADD_HISTORY`, in the same script so that all or
/// none are counted). KEYS: record, usage, ids, by_requests, by_last_used; ARGV: requests,
/// last used ms, then the history's (ARGV[4]: the id).
const ADD_USAGE: &str = concat!(
    usage_order_lua!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local before = redis.call('HMGET', KEYS[2], 'requests', 'last_used_ms')
redis.call('HINCRBY', KEYS[2], 'requests', ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[2], 'last_used_ms') or '-1')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[2], 'last_used_ms', ARGV[2]) end
local created = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[4]) or '0')
local after = redis.call('HMGET', KEYS[2], 'requests', 'last_used_ms')
usage_reorder({KEYS[4], KEYS[5]}, ARGV[4], created, before, after)"
);

/// How often a compare-and-set change is retried when another instance changed the key meanwhile.
const CAS_ATTEMPTS: usize = 5;
/// Ids or records a listing reads per command. Redis runs one command at a time: listing a
/// million keys in one ZRANGE and one MGET held it past the store timeout, and every gateway's
/// key lookups with it (503s in the load benchmark's 1M-key run). A batch takes about 1 ms.
const LIST_BATCH: usize = 1000;

pub struct RedisStore {
    connector: Connector,
    prefix: String,
    /// A plain client for pub/sub (for a cluster: its first node; PUBLISH reaches every node).
    pubsub_client: redis::Client,
    create: Script,
    find: Script,
    update: Script,
    delete: Script,
    add_usage: Script,
    /// The audited changes and the audit chain's scripts.
    audit: audit::Scripts,
    page: Script,
    /// The usage orders are known to hold every key (see `usage_order`).
    usage_orders_built: std::sync::atomic::AtomicBool,
}

impl RedisStore {
    /// Prepares the connection; nothing is contacted until the first call.
    pub fn open(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        let invalid = |e: redis::RedisError| StoreError::Unavailable(format!("redis: {e}"));
        let first = config
            .urls
            .first()
            .ok_or_else(|| StoreError::Unavailable("redis: no URL".into()))?;
        let pubsub_client = redis::Client::open(first.as_str()).map_err(invalid)?;
        let connector = if config.cluster {
            let client =
                redis::cluster::ClusterClient::new(config.urls.clone()).map_err(invalid)?;
            Connector::cluster(client, config.timeout)
        } else {
            Connector::single(pubsub_client.clone(), config.timeout).map_err(invalid)?
        };
        Ok(RedisStore {
            connector,
            prefix: config.prefix.clone(),
            pubsub_client,
            create: Script::new(CREATE),
            find: Script::new(FIND),
            update: Script::new(UPDATE),
            delete: Script::new(DELETE),
            audit: audit::Scripts::new(),
            add_usage: Script::new(&format!("{ADD_USAGE}{}\nreturn 1", history::ADD_HISTORY)),
            page: Script::new(history::PAGE),
            usage_orders_built: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}key:{id}", self.prefix)
    }
    fn hash_key(&self, hex: &str) -> String {
        format!("{}hash:{hex}", self.prefix)
    }
    fn usage_key(&self, id: &str) -> String {
        format!("{}usage:{id}", self.prefix)
    }
    fn ids_key(&self) -> String {
        format!("{}ids", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    /// Runs `work` on a connection within the store timeout; every failure is `Unavailable`.
    /// A call that finds its connection dropped (Redis restarted) is tried once more on the
    /// connection the manager re-establishes, so the first request after a recovery succeeds.
    async fn call<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempts = async {
            let mut result = work(self.connector.get().await?).await;
            if let Err(e) = &result
                && (e.is_connection_dropped() || e.is_io_error())
            {
                result = work(self.connector.get().await?).await;
            }
            result
        };
        match tokio::time::timeout(self.connector.timeout(), attempts).await {
            Ok(result) => result.map_err(redis_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: no answer within {:?}",
                self.connector.timeout()
            ))),
        }
    }

    async fn run_script(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<i64, StoreError> {
        self.call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    async fn read_json(&self, id: &str) -> Result<Option<String>, StoreError> {
        let key = self.record_key(id);
        let key = &key;
        self.call(|mut c| async move { c.get(key).await }).await
    }

    async fn read_usage(&self, ids: &[String]) -> Result<Vec<Usage>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.usage_key(id))
                .arg("requests")
                .arg("last_used_ms");
        }
        let rows: Vec<(Option<u64>, Option<i64>)> = self
            .call(|mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(requests, last)| Usage {
                request_count: requests.unwrap_or(0),
                last_used_at: last.and_then(chrono::DateTime::from_timestamp_millis),
            })
            .collect())
    }

    /// Every key id, oldest first. Read with ZSCAN, [`LIST_BATCH`] at a time: one ZRANGE over a
    /// million ids held Redis for 0.3 s. ZSCAN returns every id present throughout the scan,
    /// some maybe twice; sorting by creation time (the score), then id, restores ZRANGE's order.
    async fn all_ids(&self) -> Result<Vec<String>, StoreError> {
        let ids_key = &self.ids_key();
        let mut scored: Vec<(i64, String)> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = self
                .call(|mut c| async move {
                    redis::cmd("ZSCAN")
                        .arg(ids_key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(LIST_BATCH)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for pair in page.chunks_exact(2) {
                scored.push((pair[1].parse().unwrap_or(0), pair[0].clone()));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        scored.sort_unstable();
        scored.dedup();
        Ok(scored.into_iter().map(|(_, id)| id).collect())
    }

    /// The records (with usage) of these ids, in their order, read [`LIST_BATCH`] at a time.
    async fn records(&self, ids: &[String]) -> Result<Vec<KeyRecord>, StoreError> {
        let mut records = Vec::with_capacity(ids.len());
        for batch in ids.chunks(LIST_BATCH) {
            let keys = &batch
                .iter()
                .map(|id| self.record_key(id))
                .collect::<Vec<_>>();
            let jsons: Vec<Option<String>> =
                self.call(|mut c| async move { c.mget(keys).await }).await?;
            let usage = self.read_usage(batch).await?;
            for (json, usage) in jsons.into_iter().zip(usage) {
                // A key deleted between the reads is simply not listed.
                if let Some(json) = json {
                    let mut record = decode(&json)?;
                    record.usage = usage;
                    records.push(record);
                }
            }
        }
        Ok(records)
    }

    /// The change message: `created` or `changed`, then the hex hashes concerned.
    fn message(kind: &str, hashes: impl Iterator<Item = KeyHash>) -> String {
        std::iter::once(kind.to_string())
            .chain(hashes.map(|h| h.to_hex()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads the key, lets `change` build a script against what was read, and runs it; tried
    /// again when another instance changed the key meanwhile. Returns the record the script
    /// replaced or removed (None: no such key).
    async fn compare_and_set<'s>(
        &'s self,
        id: &str,
        change: impl Fn(&str, &KeyRecord) -> redis::ScriptInvocation<'s>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(json) = self.read_json(id).await? else {
                return Ok(None);
            };
            let current = decode(&json)?;
            match self.run_script(&change(&json, &current)).await? {
                1 => return Ok(Some(current)),
                -1 => return Ok(None),
                _ => continue,
            }
        }
        Err(StoreError::Unavailable(
            "redis: the key kept changing; try again".into(),
        ))
    }

    /// Replaces a record by compare-and-set against what is stored now.
    async fn replace(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        let new_json = encode(record);
        let replaced = self
            .compare_and_set(&record.id, |current_json, current| {
                let old_hashes: Vec<KeyHash> = current.hashes().collect();
                let mut invocation = self.update.key(self.record_key(&record.id));
                for hash in old_hashes.iter().copied().chain(record.hashes()) {
                    invocation.key(self.hash_key(&hash.to_hex()));
                }
                invocation
                    .arg(current_json)
                    .arg(&new_json)
                    .arg(&record.id)
                    .arg(old_hashes.len())
                    .arg(self.channel())
                    .arg(Self::message(
                        "changed",
                        old_hashes.iter().copied().chain(record.hashes()),
                    ));
                invocation
            })
            .await?;
        Ok(replaced.is_some())
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn decode(json: &str) -> Result<KeyRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode(record: &KeyRecord) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn create(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut invocation = self.create.key(self.record_key(&record.id));
        invocation
            .key(self.ids_key())
            .key(self.by_requests_key())
            .key(self.by_last_used_key());
        for hash in record.hashes() {
            invocation.key(self.hash_key(&hash.to_hex()));
        }
        invocation
            .arg(encode(record))
            .arg(&record.id)
            .arg(record.created_at.timestamp_millis())
            .arg(self.channel())
            .arg(Self::message("created", record.hashes()));
        let created: i64 = self.run_script(&invocation).await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(record.id.clone()))
        }
    }

    async fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let Some(json) = self.read_json(id).await? else {
            return Ok(None);
        };
        let mut record = decode(&json)?;
        record.usage = self
            .read_usage(&[record.id.clone()])
            .await?
            .pop()
            .unwrap_or_default();
        Ok(Some(record))
    }

    /// One round trip (a script). Usage is not read: verification needs none.
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let mut invocation = self.find.key(self.hash_key(&hash.to_hex()));
        invocation.arg(format!("{}key:", self.prefix));
        let invocation = &invocation;
        let json: Option<String> = self
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        json.as_deref().map(decode).transpose()
    }

    async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let ids = self.all_ids().await?;
        self.records(&ids).await
    }

    /// Pages through the ids by rank, [`LIST_BATCH`] at a time. A key deleted meanwhile can
    /// shift a page and let another be skipped once: fine for the metrics' names, which the
    /// next change refreshes (the complete listing, `list`, scans instead).
    async fn list_oldest(&self, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        let ids_key = &self.ids_key();
        let rank = |n: usize| isize::try_from(n).unwrap_or(isize::MAX);
        let mut ids: Vec<String> = Vec::new();
        while ids.len() < limit {
            let (first, wanted) = (ids.len(), LIST_BATCH.min(limit - ids.len()));
            let (start, stop) = (rank(first), rank(first + wanted - 1));
            let page: Vec<String> = self
                .call(|mut c| async move { c.zrange(ids_key, start, stop).await })
                .await?;
            let last_page = page.len() < wanted;
            ids.extend(page);
            if last_page {
                break;
            }
        }
        self.records(&ids).await
    }

    async fn page_by_age(
        &self,
        after: Option<&AgeMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.page_by_age_impl(after, descending, max).await
    }

    async fn page_by_usage(
        &self,
        by: UsageSort,
        after: Option<&UsageMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<(UsageMark, KeyRecord)>, StoreError> {
        self.page_by_usage_impl(by, after, descending, max).await
    }

    async fn usage_history(
        &self,
        key_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<HourCounts>, StoreError> {
        self.usage_history_impl(key_id, from, to).await
    }

    async fn usage_overview(&self, from: i64, to: i64) -> Result<UsageOverview, StoreError> {
        self.usage_overview_impl(from, to).await
    }

    async fn prune_history(&self, before: i64) -> Result<(), StoreError> {
        self.prune_history_impl(before).await
    }

    async fn update(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        self.replace(record).await
    }

    async fn delete(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.compare_and_set(id, |json, record| {
            let mut invocation = self.delete.key(self.record_key(id));
            invocation
                .key(self.usage_key(id))
                .key(self.ids_key())
                .key(self.by_requests_key())
                .key(self.by_last_used_key());
            for hash in record.hashes() {
                invocation.key(self.hash_key(&hash.to_hex()));
            }
            invocation
                .arg(json)
                .arg(id)
                .arg(self.channel())
                .arg(Self::message("changed", record.hashes()));
            invocation
        })
        .await
    }

    async fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        for delta in deltas {
            let mut invocation = self.add_usage.key(self.record_key(&delta.key_id));
            invocation
                .key(self.usage_key(&delta.key_id))
                .key(self.ids_key())
                .key(self.by_requests_key())
                .key(self.by_last_used_key())
                .arg(delta.requests)
                .arg(delta.last_used_at.timestamp_millis());
            self.history_args(&mut invocation, delta);
            let _: i64 = self.run_script(&invocation).await?;
        }
        Ok(())
    }

    async fn import(&self, record: &KeyRecord) -> Result<(), StoreError> {
        if !self.replace(record).await? {
            self.create(record).await?;
        }
        self.set_usage(record).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|mut c| async move {
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
            Ok(())
        })
        .await
    }

    fn watch(&self, shutdown: CancellationToken) -> Option<mpsc::Receiver<StoreEvent>> {
        Some(invalidation::spawn(
            self.pubsub_client.clone(),
            self.channel(),
            shutdown,
        ))
    }
}
