//! Per-key limit decisions on Redis, each one atomic Lua script (no read-then-write), so N
//! gateways on one Redis admit no more than one gateway would. Time is Redis's own (`TIME`),
//! so the gateways' clocks do not matter to the rate.
//!
//! Keys under the prefix `P`: `P limit:{<id>}:rate` the GCRA TAT in microseconds ·
//! `P limit:{<id>}:quota:<period start>` the quota count of a period (with the requests in
//! flight), expiring a day after the period ends. The `{id}` hash tag keeps both in one
//! cluster slot (a prefix with its own tag keeps everything in its slot anyway).

use super::RedisStore;
use crate::keys::StoreError;
use crate::keys::limits::{Quota, RateLimit};
use redis::Script;
use std::sync::{Arc, LazyLock};

/// Hashed once: a script's SHA is computed when it is made.
static DECIDE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DECIDE));
static PEEK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PEEK));

/// The rate (GCRA, as the limits module's gcra.rs computes it), then the quota, as one step: a request the
/// quota refuses does not use up the rate. Units this gateway's failed requests gave back are
/// returned first, in the same round trip. KEYS: rate, quota; ARGV: has rate, interval µs,
/// burst, has quota, quota requests, quota key ttl s, units given back.
/// Returns {rate ok, µs the TAT is ahead of now after the request, quota ok, quota used}.
const DECIDE: &str = r"
local back = tonumber(ARGV[7])
if back > 0 then
  local held = tonumber(redis.call('GET', KEYS[2]) or '0')
  if held > 0 then redis.call('DECRBY', KEYS[2], math.min(back, held)) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ahead, new_tat = 0, nil
if ARGV[1] == '1' then
  local interval = tonumber(ARGV[2])
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  new_tat = tat + interval
  ahead = new_tat - now
  if ahead > interval * tonumber(ARGV[3]) then return {0, ahead, 0, 0} end
end
local used = 0
if ARGV[4] == '1' then
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= tonumber(ARGV[5]) then return {1, ahead, 0, used} end
  used = redis.call('INCR', KEYS[2])
  if used == 1 then redis.call('EXPIRE', KEYS[2], ARGV[6]) end
end
if new_tat then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ahead / 1000 + 1000))
end
return {1, ahead, 1, used}";

/// Gives back quota units (never below 0, and never making a count that has expired).
/// KEYS: quota; ARGV: units.
const GIVE_BACK: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then return redis.call('DECRBY', KEYS[1], math.min(tonumber(ARGV[1]), used)) end
return 0";

/// Where the rate and the quota stand, nothing written (for the headers of a response refused
/// before the decision), on Redis's clock like [`DECIDE`]. KEYS: rate, quota.
/// Returns {µs the TAT is ahead of now (0 when past), quota used}.
const PEEK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local ahead = 0
if tat > now then ahead = tat - now end
return {ahead, tonumber(redis.call('GET', KEYS[2]) or '0')}";

/// What [`RedisStore::decide_limits`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitDecision {
    pub rate_ok: bool,
    /// How far the rate's TAT is ahead of now, with this request, in nanoseconds.
    pub rate_ahead_nanos: u64,
    pub quota_ok: bool,
    pub quota_used: u64,
}

impl RedisStore {
    fn limit_key(&self, id: &str, what: &str) -> String {
        format!("{}limit:{{{id}}}:{what}", self.prefix)
    }

    /// The key of a quota's count in the period starting at `period` (Unix seconds).
    pub fn quota_key(&self, id: &str, period: i64) -> String {
        self.limit_key(id, &format!("quota:{period}"))
    }

    /// Decides the rate and the quota of one request in one round trip. `quota` is the quota
    /// with its period's start and the seconds its count must be kept; `given_back`, units of
    /// that period to return first.
    pub async fn decide_limits(
        &self,
        id: &str,
        rate: Option<&RateLimit>,
        quota: Option<(&Quota, i64, u64)>,
        given_back: u64,
    ) -> Result<LimitDecision, StoreError> {
        let mut invocation = DECIDE_SCRIPT.key(self.limit_key(id, "rate"));
        invocation.key(match quota {
            Some((_, period, _)) => self.quota_key(id, period),
            None => self.limit_key(id, "quota"),
        });
        invocation
            .arg(u8::from(rate.is_some()))
            .arg(rate.map_or(0, |r| r.interval_nanos().div_ceil(1000)))
            .arg(rate.map_or(0, RateLimit::burst))
            .arg(u8::from(quota.is_some()))
            .arg(quota.map_or(0, |q| q.0.requests))
            .arg(quota.map_or(1, |q| q.2))
            .arg(given_back);
        let invocation = &invocation;
        let (rate_ok, ahead, quota_ok, used): (i64, i64, i64, i64) = self
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok(LimitDecision {
            rate_ok: rate_ok == 1,
            rate_ahead_nanos: u64::try_from(ahead).unwrap_or(0).saturating_mul(1000),
            quota_ok: quota_ok == 1,
            quota_used: u64::try_from(used).unwrap_or(0),
        })
    }

    /// Where the key's rate and its quota of the period starting at `period` stand, in one
    /// round trip and without counting: (nanoseconds the TAT is ahead of now, quota used).
    pub async fn peek_limits(
        &self,
        id: &str,
        period: Option<i64>,
    ) -> Result<(u64, u64), StoreError> {
        let mut invocation = PEEK_SCRIPT.key(self.limit_key(id, "rate"));
        invocation.key(match period {
            Some(period) => self.quota_key(id, period),
            None => self.limit_key(id, "quota"),
        });
        let invocation = &invocation;
        let (ahead, used): (i64, i64) = self
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        Ok((
            u64::try_from(ahead).unwrap_or(0).saturating_mul(1000),
            u64::try_from(used).unwrap_or(0),
        ))
    }

    /// Gives back quota units, `(key id, period start, units)`, in one round trip (a pipeline:
    /// each count lives in its key's own cluster slot).
    pub async fn give_back_quotas(&self, units: &[(Arc<str>, i64, u64)]) -> Result<(), StoreError> {
        if units.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (id, period, count) in units {
            pipe.cmd("EVAL")
                .arg(GIVE_BACK)
                .arg(1)
                .arg(self.quota_key(id, *period))
                .arg(*count)
                .ignore();
        }
        self.call(|mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    /// What is counted for the key in the period starting at `period`.
    pub async fn quota_used(&self, id: &str, period: i64) -> Result<u64, StoreError> {
        let key = &self.quota_key(id, period);
        let used: Option<u64> = self
            .call(|mut c| async move { redis::AsyncCommands::get(&mut c, key).await })
            .await?;
        Ok(used.unwrap_or(0))
    }
}
