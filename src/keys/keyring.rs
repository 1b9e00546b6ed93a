//! Verifying a presented secret: the hot tier (a DashMap keyed by blake3 hash) over the store.
//!
//! A hot-tier entry is a [`KeyGrant`]: what a request needs to know about its key. Every change
//! made through the admin API calls [`Keyring::forget`] before it answers, so the next request
//! reads the store again; entries also age out after `max_age`, which bounds how long a change
//! made elsewhere (another instance on a shared store) can go unseen.

use crate::authz::{Permission, Scope};
use crate::keys::{KeyHash, KeyRecord, KeyStore};
use crate::metrics::{self, StoreOp};
use crate::rejection::Rejection;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the request path needs to know about a verified key.
#[derive(Debug)]
pub struct KeyGrant {
    pub id: Arc<str>,
    pub scope: Scope,
    pub permissions: Box<[Permission]>,
    enabled: bool,
    expires_at: Option<DateTime<Utc>>,
    /// The end of the rotation grace when the presented secret is a rotated-out one.
    secret_retires_at: Option<DateTime<Utc>>,
}

impl KeyGrant {
    fn from_record(record: &KeyRecord, hash: &KeyHash) -> KeyGrant {
        KeyGrant {
            id: record.id.as_str().into(),
            scope: record.scope,
            permissions: record.permissions.clone().into_boxed_slice(),
            enabled: record.enabled,
            expires_at: record.expires_at,
            secret_retires_at: record.secret_for(hash).and_then(|s| s.retires_at),
        }
    }

    /// Is the key usable at `now`? Checked on every request, cached or not, so expiry and the
    /// end of a rotation grace take effect to the second without any invalidation.
    fn check(&self, now: DateTime<Utc>) -> Result<(), Rejection> {
        if !self.enabled {
            return Err(Rejection::KeyDisabled);
        }
        let expired = |at: Option<DateTime<Utc>>| at.is_some_and(|at| at <= now);
        if expired(self.expires_at) || expired(self.secret_retires_at) {
            return Err(Rejection::KeyExpired);
        }
        Ok(())
    }
}

struct HotEntry {
    grant: Arc<KeyGrant>,
    cached_at: Instant,
}

pub struct Keyring {
    store: Arc<dyn KeyStore>,
    hot: DashMap<KeyHash, HotEntry>,
    /// Bumped by every `forget`, so a lookup that raced with a change never caches stale data.
    generation: AtomicU64,
    max_age: Duration,
    max_entries: usize,
}

impl Keyring {
    pub fn new(store: Arc<dyn KeyStore>, max_age: Duration, max_entries: usize) -> Keyring {
        Keyring {
            store,
            hot: DashMap::new(),
            generation: AtomicU64::new(0),
            max_age,
            max_entries,
        }
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Verifies a well-formed secret: hot tier first, then the store (fail closed when it is down).
    pub async fn verify(&self, secret: &str) -> Result<Arc<KeyGrant>, Rejection> {
        let hash = KeyHash::of(secret);
        let now = Utc::now();
        let counters = metrics::fixed();
        if let Some(grant) = self.cached(&hash) {
            counters.hot_tier_hit.increment(1);
            grant.check(now)?;
            return Ok(grant);
        }
        counters.hot_tier_miss.increment(1);
        let generation = self.generation.load(Ordering::SeqCst);
        let record = match self.store.find_by_hash(&hash).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                counters.store_not_found.increment(1);
                return Err(Rejection::InvalidKey);
            }
            Err(error) => {
                counters.store_error.increment(1);
                counters.store_error(StoreOp::Lookup, &error);
                tracing::warn!(%error, "key lookup failed");
                return Err(Rejection::StoreUnavailable);
            }
        };
        counters.store_found.increment(1);
        let grant = Arc::new(KeyGrant::from_record(&record, &hash));
        self.remember(hash, grant.clone(), generation);
        grant.check(now)?;
        Ok(grant)
    }

    /// Drops every hot-tier entry of this key; the next request reads the store.
    pub fn forget(&self, record: &KeyRecord) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for hash in record.hashes() {
            self.hot.remove(&hash);
        }
    }

    /// Drops entries older than `max_age`; run periodically so memory follows live keys.
    pub fn evict_aged(&self) {
        self.hot.retain(|_, e| e.cached_at.elapsed() < self.max_age);
    }

    pub fn hot_len(&self) -> usize {
        self.hot.len()
    }

    fn cached(&self, hash: &KeyHash) -> Option<Arc<KeyGrant>> {
        let entry = self.hot.get(hash)?;
        (entry.cached_at.elapsed() < self.max_age).then(|| entry.grant.clone())
    }

    fn remember(&self, hash: KeyHash, grant: Arc<KeyGrant>, generation: u64) {
        if self.max_age.is_zero() || self.hot.len() >= self.max_entries {
            return;
        }
        self.hot.insert(
            hash,
            HotEntry {
                grant,
                cached_at: Instant::now(),
            },
        );
        // Insert first, then check: a `forget` that ran after our store read either bumped the
        // generation before this check (we undo), or removes our entry itself after it.
        if self.generation.load(Ordering::SeqCst) != generation {
            self.hot.remove(&hash);
        }
    }
}
