//! Verifying a presented secret: the hot tier (a DashMap keyed by blake3 hash) over the store.
//!
//! A hot-tier entry is a [`KeyGrant`]: what a request needs to know about its key. Every change
//! made through the admin API calls [`Keyring::forget`] before it answers, so the next request
//! reads the store again; entries also age out after `max_age`, which bounds how long a change
//! made elsewhere (another instance on a shared store) can go unseen when its change message is
//! lost. A shared store's change feed ([`StoreEvent`]) drops changed keys everywhere within
//! milliseconds; while that feed is down, nothing new is cached.
//!
//! Well-formed but unknown secrets are remembered briefly (the negative cache), so a flood of
//! wrong keys costs one store lookup each per `negative_ttl`, not one per request.

use crate::FastMap;
use crate::authz::{Permission, Scope};
use crate::keys::limits::{KeyDefaults, KeyLimits};
use crate::keys::{KeyHash, KeyRecord, KeyStore, StoreEvent, secret};
use crate::metrics::{self, StoreOp};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a presented secret does not verify; the gateway turns it into its refusal
/// (`From<VerifyError> for Rejection` in rejection.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// No key holds this secret.
    Unknown,
    Disabled,
    /// The key expired, or the secret is a rotated-out one past its grace.
    Expired,
    /// The store could not be asked: verification fails closed.
    StoreUnavailable,
}

/// What the request path needs to know about a verified key.
#[derive(Debug)]
pub struct KeyGrant {
    pub id: Arc<str>,
    /// The id as the `X-Kbgate-Key-Id` value the KB is sent, made once with the grant rather
    /// than for every request (`None`: an id no header can carry).
    pub id_header: Option<http::HeaderValue>,
    pub scope: Scope,
    pub permissions: Box<[Permission]>,
    /// `None` for a key with no limit (its own or a default): the request path's one check.
    pub limits: Option<Box<KeyLimits>>,
    /// For events about the key's requests (`routes[].event`).
    name: Arc<str>,
    enabled: bool,
    expires_at: Option<DateTime<Utc>>,
    /// The end of the rotation grace when the presented secret is a rotated-out one.
    secret_retires_at: Option<DateTime<Utc>>,
}

impl KeyGrant {
    fn from_record(record: &KeyRecord, hash: &KeyHash, defaults: &KeyDefaults) -> KeyGrant {
        KeyGrant {
            id: record.id.as_str().into(),
            id_header: http::HeaderValue::from_str(&record.id).ok(),
            scope: record.scope,
            permissions: record.permissions.clone().into_boxed_slice(),
            limits: KeyLimits::resolve(record, defaults).map(Box::new),
            name: record.name.as_str().into(),
            enabled: record.enabled,
            expires_at: record.expires_at,
            secret_retires_at: record.secret_for(hash).and_then(|s| s.retires_at),
        }
    }

    /// The key's name when it was read from the store.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the key expires, if ever.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// The end of the rotation grace when the secret presented is a rotated-out one.
    pub fn secret_retires_at(&self) -> Option<DateTime<Utc>> {
        self.secret_retires_at
    }

    /// Is the key usable now? Checked on every request, cached or not, so expiry and the end
    /// of a rotation grace take effect to the second without any invalidation. The clock is
    /// read only for a key that has either (chrono's `Utc::now` is about 200 instructions).
    fn check(&self) -> Result<(), VerifyError> {
        if !self.enabled {
            return Err(VerifyError::Disabled);
        }
        if self.expires_at.is_none() && self.secret_retires_at.is_none() {
            return Ok(());
        }
        let now = Utc::now();
        let expired = |at: Option<DateTime<Utc>>| at.is_some_and(|at| at <= now);
        if expired(self.expires_at) || expired(self.secret_retires_at) {
            return Err(VerifyError::Expired);
        }
        Ok(())
    }
}

struct HotEntry {
    grant: Arc<KeyGrant>,
    /// When the entry goes stale (`max_age` after it was cached; `None`: beyond what an
    /// `Instant` holds). A deadline, not the time cached: a hit compares, with no subtraction.
    fresh_until: Option<Instant>,
}

impl HotEntry {
    fn is_fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|until| now < until)
    }
}

/// How the keyring caches: the hot tier's bounds and the negative cache's.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub max_age: Duration,
    pub max_entries: usize,
    pub negative_ttl: Duration,
    pub negative_max_entries: usize,
}

pub struct Keyring {
    store: Arc<dyn KeyStore>,
    hot: FastMap<KeyHash, HotEntry>,
    /// Unknown secrets and when they were found unknown.
    negative: FastMap<KeyHash, Instant>,
    /// Bumped by every `forget`, so a lookup that raced with a change never caches stale data.
    generation: AtomicU64,
    /// False while a shared store's change feed is down: what is cached then could go stale.
    caching: AtomicBool,
    limits: CacheLimits,
    /// `key_defaults:`, applied to keys that set no limit of their own.
    defaults: KeyDefaults,
}

impl Keyring {
    /// `caching` starts false for a store with a change feed, until the feed is listening.
    pub fn new(store: Arc<dyn KeyStore>, limits: CacheLimits, caching: bool) -> Keyring {
        Keyring {
            store,
            hot: FastMap::default(),
            negative: FastMap::default(),
            generation: AtomicU64::new(0),
            caching: AtomicBool::new(caching),
            limits,
            defaults: KeyDefaults::default(),
        }
    }

    /// Applies `defaults` to every key that sets no limit of its own.
    pub fn with_defaults(mut self, defaults: KeyDefaults) -> Keyring {
        self.defaults = defaults;
        self
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Verifies a well-formed secret: hot tier first, then the store (fail closed when it is down).
    pub async fn verify(&self, secret: &str) -> Result<Arc<KeyGrant>, VerifyError> {
        let hash = KeyHash::of(secret);
        let counters = metrics::fixed();
        if let Some(grant) = self.cached(&hash) {
            counters.hot_tier_hit.increment(1);
            grant.check()?;
            return Ok(grant);
        }
        // Checked after the hot tier, which holds only secrets that were well formed when
        // verified (so a hit needs no checksum), and before anything that could reach the store.
        if !secret::is_well_formed(secret) {
            return Err(VerifyError::Unknown);
        }
        if self.known_unknown(&hash) {
            counters.hot_tier_negative_hit.increment(1);
            return Err(VerifyError::Unknown);
        }
        counters.hot_tier_miss.increment(1);
        let generation = self.generation.load(Ordering::SeqCst);
        let record = match self.store.find_by_hash(&hash).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                counters.store_not_found.increment(1);
                self.remember_unknown(hash, generation);
                return Err(VerifyError::Unknown);
            }
            Err(error) => {
                counters.store_error.increment(1);
                counters.store_error(StoreOp::Lookup, error.metric_kind());
                tracing::warn!(%error, "key lookup failed");
                return Err(VerifyError::StoreUnavailable);
            }
        };
        counters.store_found.increment(1);
        let grant = Arc::new(KeyGrant::from_record(&record, &hash, &self.defaults));
        self.remember(hash, grant.clone(), generation);
        grant.check()?;
        Ok(grant)
    }

    /// Drops every cached entry of this key; the next request reads the store.
    pub fn forget(&self, record: &KeyRecord) {
        self.forget_hashes(&record.hashes().collect::<Vec<_>>());
    }

    pub fn forget_hashes(&self, hashes: &[KeyHash]) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for hash in hashes {
            self.hot.remove(hash);
            self.negative.remove(hash);
        }
    }

    /// A new key exists: these hashes are no longer unknown. What is cached for them stays
    /// (it can only be the new key itself, read from the store after it was created).
    pub fn forget_unknown(&self, hashes: &[KeyHash]) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for hash in hashes {
            self.negative.remove(hash);
        }
    }

    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.hot.clear();
        self.negative.clear();
    }

    /// Applies what a shared store's change feed says.
    pub async fn apply(&self, event: StoreEvent) {
        match event {
            StoreEvent::Changed(hashes) => self.forget_hashes(&hashes),
            StoreEvent::Created(hashes) => self.forget_unknown(&hashes),
            StoreEvent::Subscribed => {
                // Changes may have been missed before the feed was up: start afresh.
                self.forget_all();
                self.caching.store(true, Ordering::SeqCst);
            }
            StoreEvent::Unsubscribed => {
                self.caching.store(false, Ordering::SeqCst);
                // With the store reachable, others can change keys we would not hear of: forget.
                // With it down, nobody can change a key, so what is cached stays (until max_age).
                if self.store.ping().await.is_ok() {
                    tracing::warn!("change feed lost while the store is up: hot tier emptied");
                    self.forget_all();
                }
            }
        }
    }

    /// Drops entries older than their bounds; run periodically so memory follows live keys.
    pub fn evict_aged(&self) {
        let now = Instant::now();
        self.hot.retain(|_, e| e.is_fresh(now));
        self.negative
            .retain(|_, at| at.elapsed() < self.limits.negative_ttl);
    }

    pub fn hot_len(&self) -> usize {
        self.hot.len()
    }

    fn cached(&self, hash: &KeyHash) -> Option<Arc<KeyGrant>> {
        let entry = self.hot.get(hash)?;
        entry.is_fresh(Instant::now()).then(|| entry.grant.clone())
    }

    fn known_unknown(&self, hash: &KeyHash) -> bool {
        self.negative
            .get(hash)
            .is_some_and(|at| at.elapsed() < self.limits.negative_ttl)
    }

    fn may_cache(&self, len: usize, max_entries: usize, ttl: Duration) -> bool {
        self.caching.load(Ordering::SeqCst) && !ttl.is_zero() && len < max_entries
    }

    fn remember(&self, hash: KeyHash, grant: Arc<KeyGrant>, generation: u64) {
        if !self.may_cache(self.hot.len(), self.limits.max_entries, self.limits.max_age) {
            return;
        }
        let entry = HotEntry {
            grant,
            fresh_until: Instant::now().checked_add(self.limits.max_age),
        };
        self.hot.insert(hash, entry);
        if self.raced(generation) {
            self.hot.remove(&hash);
        }
    }

    fn remember_unknown(&self, hash: KeyHash, generation: u64) {
        let limits = &self.limits;
        if !self.may_cache(
            self.negative.len(),
            limits.negative_max_entries,
            limits.negative_ttl,
        ) {
            return;
        }
        self.negative.insert(hash, Instant::now());
        if self.raced(generation) {
            self.negative.remove(&hash);
        }
    }

    /// Insert first, then check: a `forget` that ran after our store read either bumped the
    /// generation before this check (the caller undoes its insert), or removes the entry itself.
    fn raced(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) != generation
    }
}
