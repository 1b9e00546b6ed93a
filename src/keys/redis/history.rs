//! Paged lists and usage history in Redis.
//!
//! Paging reads the `P ids` sorted set (score: creation ms; ties in id order) from a mark on, in
//! one script so a page is one consistent read. History, under the same prefix (and so the same
//! cluster slot): `P hist:<id>:<hour>` and `P hist_total:<hour>` hashes of the counts' fields
//! (see `HourCounts::fields`), `P hist_keys:<hour>` a sorted set of each key's requests in the
//! hour, and `P hist_hours` the hours held, for pruning. All are added to by HINCRBY/ZINCRBY in
//! the usage script, so several gateways' counts add up exactly.

use super::RedisStore;
use crate::keys::history::{HourCounts, UsageOverview};
use crate::keys::listing::AgeMark;
use crate::keys::{KeyRecord, StoreError, UsageDelta};
use std::collections::HashMap;

/// Up to ARGV[3] ids after the mark (score ARGV[1], id ARGV[2]; ARGV[1] '' for the start),
/// oldest first, or newest first when ARGV[4] is 'desc'. When the mark's key is still there,
/// its rank says where to go on (O(log n), however many keys share its millisecond); else ids
/// tied on the mark's score are skipped up to the mark's id, as Redis orders ties by member.
pub(super) const PAGE: &str = r"
local desc, max = ARGV[4] == 'desc', tonumber(ARGV[3])
local ms, id = tonumber(ARGV[1]), ARGV[2]
if ms ~= nil and tonumber(redis.call('ZSCORE', KEYS[1], id) or 'nan') == ms then
  if desc then
    local rank = redis.call('ZREVRANK', KEYS[1], id)
    return redis.call('ZRANGE', KEYS[1], rank + 1, rank + max, 'REV')
  end
  local rank = redis.call('ZRANK', KEYS[1], id)
  return redis.call('ZRANGE', KEYS[1], rank + 1, rank + max)
end
local from = ARGV[1] == '' and (desc and '+inf' or '-inf') or ARGV[1]
local to = desc and '-inf' or '+inf'
local out, offset, chunk = {}, 0, max + 16
while true do
  local page
  if desc then
    page = redis.call('ZRANGE', KEYS[1], from, to, 'BYSCORE', 'REV', 'LIMIT', offset, chunk, 'WITHSCORES')
  else
    page = redis.call('ZRANGE', KEYS[1], from, to, 'BYSCORE', 'LIMIT', offset, chunk, 'WITHSCORES')
  end
  for i = 1, #page, 2 do
    local member = page[i]
    local tie = ms ~= nil and tonumber(page[i + 1]) == ms
    if not tie or (desc and member < id) or (not desc and member > id) then
      out[#out + 1] = member
      if #out == max then return out end
    end
  end
  if #page < 2 * chunk then return out end
  offset = offset + chunk
end";

/// The part of the usage script that adds a key's hours (appended to `ADD_USAGE`'s arguments):
/// ARGV[3] prefix, ARGV[4] id, then per hour: hour, field count n, n (field, value) pairs.
pub(super) const ADD_HISTORY: &str = r"
local prefix, id, i = ARGV[3], ARGV[4], 5
while i <= #ARGV do
  local hour, n = ARGV[i], tonumber(ARGV[i + 1])
  local hist, total = prefix .. 'hist:' .. id .. ':' .. hour, prefix .. 'hist_total:' .. hour
  for j = 0, n - 1 do
    local field, value = ARGV[i + 2 + 2 * j], ARGV[i + 3 + 2 * j]
    redis.call('HINCRBY', hist, field, value)
    redis.call('HINCRBY', total, field, value)
    if field == 'requests' then
      redis.call('ZINCRBY', prefix .. 'hist_keys:' .. hour, value, id)
    end
  end
  redis.call('ZADD', prefix .. 'hist_hours', hour, hour)
  i = i + 2 + 2 * n
end";

/// Hours whose history one pipeline reads or prunes.
const HOURS_PER_CALL: usize = 500;

impl RedisStore {
    fn hist_key(&self, id: &str, hour: i64) -> String {
        format!("{}hist:{id}:{hour}", self.prefix)
    }
    fn hist_total_key(&self, hour: i64) -> String {
        format!("{}hist_total:{hour}", self.prefix)
    }
    fn hist_keys_key(&self, hour: i64) -> String {
        format!("{}hist_keys:{hour}", self.prefix)
    }
    fn hist_hours_key(&self) -> String {
        format!("{}hist_hours", self.prefix)
    }

    /// The history arguments of the usage script for one key's delta.
    pub(super) fn history_args(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        delta: &UsageDelta,
    ) {
        invocation.arg(&self.prefix).arg(&delta.key_id);
        for hour in &delta.hours {
            let fields = hour.fields();
            invocation.arg(hour.hour).arg(fields.len());
            for (field, value) in fields {
                invocation.arg(field).arg(value);
            }
        }
    }

    pub(super) async fn page_by_age_impl(
        &self,
        after: Option<&AgeMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut records: Vec<KeyRecord> = Vec::with_capacity(max);
        let mut after = after.cloned();
        loop {
            let wanted = max - records.len();
            let mut invocation = self.page.key(self.ids_key());
            match &after {
                // The index scores keys by creation millisecond.
                Some(mark) => invocation
                    .arg(mark.created_micros.div_euclid(1000))
                    .arg(&mark.id),
                None => invocation.arg("").arg(""),
            };
            invocation
                .arg(wanted)
                .arg(if descending { "desc" } else { "asc" });
            let invocation = &invocation;
            let ids: Vec<String> = self
                .call(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await?;
            let more = ids.len() == wanted;
            records.extend(self.records(&ids).await?);
            // A key deleted between the two reads left the index with its record, so a short
            // read of records is not the end: read on after the last key kept.
            if !more || records.len() == max {
                return Ok(records);
            }
            if let Some(last) = records.last() {
                after = Some(AgeMark::of(last));
            }
        }
    }

    /// Runs HGETALL on each key, [`HOURS_PER_CALL`] per pipeline.
    async fn hash_counts(&self, keys: &[(i64, String)]) -> Result<Vec<HourCounts>, StoreError> {
        let mut hours = Vec::new();
        for batch in keys.chunks(HOURS_PER_CALL) {
            let mut pipe = redis::pipe();
            for (_, key) in batch {
                pipe.hgetall(key);
            }
            let pipe = &pipe;
            let maps: Vec<HashMap<String, u64>> = self
                .call(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            for ((hour, _), fields) in batch.iter().zip(maps) {
                if !fields.is_empty() {
                    hours.push(HourCounts::from_fields(*hour, fields));
                }
            }
        }
        Ok(hours)
    }

    pub(super) async fn usage_history_impl(
        &self,
        key_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<HourCounts>, StoreError> {
        let keys: Vec<(i64, String)> = (from..to).map(|h| (h, self.hist_key(key_id, h))).collect();
        self.hash_counts(&keys).await
    }

    pub(super) async fn usage_overview_impl(
        &self,
        from: i64,
        to: i64,
    ) -> Result<UsageOverview, StoreError> {
        let totals: Vec<(i64, String)> = (from..to).map(|h| (h, self.hist_total_key(h))).collect();
        let hours = self.hash_counts(&totals).await?;
        let mut per_key: HashMap<String, u64> = HashMap::new();
        // Only the hours that saw requests have a set of keys.
        let active: Vec<i64> = hours.iter().map(|h| h.hour).collect();
        for batch in active.chunks(HOURS_PER_CALL) {
            let mut pipe = redis::pipe();
            for hour in batch {
                pipe.zrange_withscores(self.hist_keys_key(*hour), 0, -1);
            }
            let pipe = &pipe;
            let sets: Vec<Vec<(String, u64)>> = self
                .call(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            for (id, requests) in sets.into_iter().flatten() {
                *per_key.entry(id).or_default() += requests;
            }
        }
        Ok(UsageOverview {
            hours,
            keys: per_key.into_iter().collect(),
        })
    }

    pub(super) async fn prune_history_impl(&self, before: i64) -> Result<(), StoreError> {
        let hours_key = &self.hist_hours_key();
        let old: Vec<i64> = self
            .call(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(hours_key)
                    .arg("-inf")
                    .arg(format!("({before}"))
                    .arg("BYSCORE")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        for hour in old {
            let keys_key = &self.hist_keys_key(hour);
            let ids: Vec<String> = self
                .call(|mut c| async move {
                    redis::cmd("ZRANGE")
                        .arg(keys_key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for batch in ids.chunks(HOURS_PER_CALL) {
                let keys: Vec<String> = batch.iter().map(|id| self.hist_key(id, hour)).collect();
                let keys = &keys;
                self.call(|mut c| async move {
                    redis::cmd("DEL").arg(keys).query_async::<()>(&mut c).await
                })
                .await?;
            }
            let total_key = &self.hist_total_key(hour);
            self.call(|mut c| async move {
                redis::pipe()
                    .del(keys_key)
                    .del(total_key)
                    .zrem(hours_key, hour)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        Ok(())
    }
}
