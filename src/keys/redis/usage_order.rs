//! The Redis store's usage orders, for key lists sorted by usage: `P by_requests` and
//! `P by_last_used`, sorted sets whose scores are all 0 and whose members are
//! `<value> <created ms> <id>` (values as 16 digits, so text order is number order; a never-used
//! key's last use is 16 dashes, first), read from a cursor by ZRANGEBYLEX in O(log n) however
//! many keys share a value. Every script that changes a key's usage (ADD_USAGE, the import's
//! SET_USAGE), creates it (CREATE) or deletes it (DELETE) moves its members in the same script,
//! so several gateways on one Redis keep one order. A Redis written before the orders is
//! indexed once, by the first sorted list (see [`RedisStore::build_usage_orders`]).

use super::RedisStore;
use crate::keys::listing::{AgeMark, UsageMark, UsageSort};
use crate::keys::{KeyRecord, StoreError};
use redis::Script;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;

/// The Lua every script that moves a key in the usage orders starts with. `usage_reorder`
/// moves `id` (created at `created` ms) in the orders (a table of the two keys) from `before`
/// to `after`, each its usage hash's HMGET of {requests, last_used_ms} (nil: not in them).
macro_rules! usage_order_lua {
    () => {
        r"
local function usage_digits(n)
  if n == nil then return '----------------' end
  return string.format('%016d', math.min(math.max(math.floor(n), 0), 9e15))
end
local function usage_members(id, created, fields)
  local tail = ' ' .. usage_digits(created) .. ' ' .. id
  return usage_digits(tonumber(fields[1]) or 0) .. tail, usage_digits(tonumber(fields[2])) .. tail
end
local function usage_reorder(orders, id, created, before, after)
  if before then
    local requests, last = usage_members(id, created, before)
    redis.call('ZREM', orders[1], requests)
    redis.call('ZREM', orders[2], last)
  end
  if after then
    local requests, last = usage_members(id, created, after)
    redis.call('ZADD', orders[1], 0, requests)
    redis.call('ZADD', orders[2], 0, last)
  end
end
"
    };
}

/// Up to ARGV[6] members of the order ARGV[1] (`requests` or `last_used`) after the mark
/// (ARGV[2] 'after': value ARGV[3] ('' for none), created ms ARGV[4], id ARGV[5]), or before
/// it when ARGV[7] is 'desc'. KEYS: the order.
const PAGE: &str = concat!(
    usage_order_lua!(),
    r"
local max, desc = tonumber(ARGV[6]), ARGV[7] == 'desc'
local from = desc and '+' or '-'
if ARGV[2] == 'after' then
  local requests, last = usage_members(ARGV[5], tonumber(ARGV[4]), {ARGV[3], ARGV[3]})
  from = '(' .. (ARGV[1] == 'requests' and requests or last)
end
if desc then return redis.call('ZREVRANGEBYLEX', KEYS[1], from, '-', 'LIMIT', 0, max) end
return redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, max)"
);

/// Replaces a key's usage (an import) and moves it in the orders.
/// KEYS: usage, ids, by_requests, by_last_used; ARGV: id, requests, last used ms ('' for none).
const SET_USAGE: &str = concat!(
    usage_order_lua!(),
    r"
local created = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')
local before = redis.call('HMGET', KEYS[1], 'requests', 'last_used_ms')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'requests', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'last_used_ms', ARGV[3]) end
local after = redis.call('HMGET', KEYS[1], 'requests', 'last_used_ms')
usage_reorder({KEYS[3], KEYS[4]}, ARGV[1], created, before, after)
return 1"
);

/// Puts the keys ARGV[2..] (those still there) in the orders as their usage stands.
/// KEYS: ids, by_requests, by_last_used; ARGV[1]: the prefix.
const BUILD: &str = concat!(
    usage_order_lua!(),
    r"
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('EXISTS', ARGV[1] .. 'key:' .. id) == 1 then
    local created = tonumber(redis.call('ZSCORE', KEYS[1], id) or '0')
    local usage = redis.call('HMGET', ARGV[1] .. 'usage:' .. id, 'requests', 'last_used_ms')
    usage_reorder({KEYS[2], KEYS[3]}, id, created, nil, usage)
  end
end
return 1"
);

static PAGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PAGE));
static SET_USAGE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SET_USAGE));
static BUILD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BUILD));

/// Ids a build script call indexes: about a millisecond of Redis's time.
const BUILD_BATCH: usize = 500;

/// The value a member carries (see the module's doc).
fn member_value(member: &str) -> Option<(i64, &str)> {
    let (value, rest) = member.split_once(' ')?;
    let (_, id) = rest.split_once(' ')?;
    let value = match value.bytes().all(|b| b == b'-') {
        true => i64::MIN,
        false => value.parse().ok()?,
    };
    Some((value, id))
}

impl RedisStore {
    pub(super) fn by_requests_key(&self) -> String {
        format!("{}by_requests", self.prefix)
    }
    pub(super) fn by_last_used_key(&self) -> String {
        format!("{}by_last_used", self.prefix)
    }
    /// Set once the orders hold every key (see [`RedisStore::build_usage_orders`]).
    fn orders_built_key(&self) -> String {
        format!("{}usage_orders_built", self.prefix)
    }

    /// Up to `max` keys in the order `by` after `after` (see `KeyStore::page_by_usage`). Keys
    /// deleted between the order's read and the records' are left out, and more are read in
    /// their place, so a short answer means the end.
    pub(super) async fn page_by_usage_impl(
        &self,
        by: UsageSort,
        after: Option<&UsageMark>,
        descending: bool,
        max: usize,
    ) -> Result<Vec<(UsageMark, KeyRecord)>, StoreError> {
        self.build_usage_orders().await?;
        let (order, name) = match by {
            UsageSort::Requests => (self.by_requests_key(), "requests"),
            UsageSort::LastUsed => (self.by_last_used_key(), "last_used"),
        };
        let mut rows: Vec<(UsageMark, KeyRecord)> = Vec::new();
        let mut mark = after.cloned();
        while rows.len() < max {
            let wanted = max - rows.len();
            let mut invocation = PAGE_SCRIPT.key(&order);
            invocation.arg(name);
            match &mark {
                Some(m) => invocation
                    .arg("after")
                    .arg(if m.value == i64::MIN {
                        String::new()
                    } else {
                        m.value.to_string()
                    })
                    // The ids set scores keys by creation millisecond.
                    .arg(m.age.created_micros.div_euclid(1000))
                    .arg(&m.age.id),
                None => invocation.arg("start").arg("").arg(0).arg(""),
            };
            invocation
                .arg(wanted)
                .arg(if descending { "desc" } else { "asc" });
            let invocation = &invocation;
            let members: Vec<String> = self
                .call(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await?;
            let marked: Vec<(i64, String)> = members
                .iter()
                .map(|m| {
                    member_value(m)
                        .map(|(value, id)| (value, id.to_string()))
                        .ok_or_else(|| StoreError::Corrupt(format!("usage order member {m:?}")))
                })
                .collect::<Result<_, _>>()?;
            let ids: Vec<String> = marked.iter().map(|(_, id)| id.clone()).collect();
            let mut records = self.records(&ids).await?.into_iter().peekable();
            for (value, id) in &marked {
                if let Some(record) = records.next_if(|r| r.id == *id) {
                    rows.push((
                        UsageMark {
                            value: *value,
                            age: AgeMark::of(&record),
                        },
                        record,
                    ));
                }
            }
            match members.last() {
                // The next read goes on from the last member read, its key kept or deleted.
                Some(last) if members.len() == wanted => mark = Some(mark_of_member(last)?),
                _ => break,
            }
        }
        Ok(rows)
    }

    /// Replaces a key's usage (an import) and moves it in the orders, in one script.
    pub(super) async fn set_usage(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let mut invocation = SET_USAGE_SCRIPT.key(self.usage_key(&record.id));
        invocation
            .key(self.ids_key())
            .key(self.by_requests_key())
            .key(self.by_last_used_key())
            .arg(&record.id)
            .arg(record.usage.request_count)
            .arg(
                record
                    .usage
                    .last_used_at
                    .map_or(String::new(), |t| t.timestamp_millis().to_string()),
            );
        self.run_script(&invocation).await.map(drop)
    }

    /// Indexes the keys of a Redis written before the usage orders, once: every id, a batch
    /// per script (idempotent, and safe beside other gateways' changes, which keep the orders
    /// themselves), then the mark that it is done.
    pub(super) async fn build_usage_orders(&self) -> Result<(), StoreError> {
        if self.usage_orders_built.load(Ordering::Relaxed) {
            return Ok(());
        }
        let built_key = &self.orders_built_key();
        let built: bool = self
            .call(|mut c| async move {
                redis::cmd("EXISTS")
                    .arg(built_key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if !built {
            let ids = self.all_ids().await?;
            for batch in ids.chunks(BUILD_BATCH) {
                let mut invocation = BUILD_SCRIPT.key(self.ids_key());
                invocation
                    .key(self.by_requests_key())
                    .key(self.by_last_used_key())
                    .arg(&self.prefix);
                for id in batch {
                    invocation.arg(id);
                }
                self.run_script(&invocation).await?;
            }
            self.call(|mut c| async move {
                redis::cmd("SET")
                    .arg(built_key)
                    .arg(1)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        self.usage_orders_built.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The mark a member stands for (its creation in ms, as µs).
fn mark_of_member(member: &str) -> Result<UsageMark, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("usage order member {member:?}"));
    let (value, id) = member_value(member).ok_or_else(corrupt)?;
    let created: i64 = member
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(corrupt)?;
    Ok(UsageMark {
        value,
        age: AgeMark {
            created_micros: created * 1000,
            id: id.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_back() {
        let member = "0000000000000042 0001733350000123 key_a b";
        assert_eq!(member_value(member), Some((42, "key_a b")));
        let mark = mark_of_member("---------------- 0001733350000123 key_x").unwrap();
        assert_eq!(mark.value, i64::MIN);
        assert_eq!(mark.age.created_micros, 1_733_350_000_123_000);
        assert!(member_value("garbage").is_none());
    }
}
