//! What a store does for the audited admin model: every change to a key or an admin token is
//! written together with its audit entry (one redb transaction, one Redis script), the admin
//! tokens are kept, and the audit chain is read and pruned. Every [`KeyStore`](super::KeyStore)
//! implements it.

use crate::keys::admin_token::AdminTokenRecord;
use crate::keys::audit::{Chain, Entry, NewEntry};
use crate::keys::{KeyHash, KeyRecord, KeyStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a store without an audit trail (a test fake) answers: every audited call fails, so
/// nothing is ever changed without its entry.
fn unsupported<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable(
        "this store keeps no audit trail".into(),
    ))
}

#[async_trait]
#[allow(unused_variables)]
pub trait AuditStore: Send + Sync {
    /// Creates a key and appends `entry`, in one write.
    async fn create_audited(&self, record: &KeyRecord, entry: &NewEntry) -> Result<(), StoreError> {
        unsupported()
    }
    /// Replaces a key's record and appends `entry`, in one write; false when no such key.
    async fn update_audited(
        &self,
        record: &KeyRecord,
        entry: &NewEntry,
    ) -> Result<bool, StoreError> {
        unsupported()
    }
    /// Deletes a key (hashes, usage) and appends `entry`, in one write.
    async fn delete_audited(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<KeyRecord>, StoreError> {
        unsupported()
    }

    /// Stores a new admin token and appends `entry`, in one write.
    async fn create_admin_token(
        &self,
        token: &AdminTokenRecord,
        entry: &NewEntry,
    ) -> Result<(), StoreError> {
        unsupported()
    }
    /// Deletes an admin token and appends `entry`, in one write.
    async fn delete_admin_token(
        &self,
        id: &str,
        entry: &NewEntry,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        unsupported()
    }
    async fn admin_token(&self, id: &str) -> Result<Option<AdminTokenRecord>, StoreError> {
        unsupported()
    }
    /// Every admin token, oldest first.
    async fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        unsupported()
    }
    async fn admin_token_by_hash(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        unsupported()
    }

    /// Up to `limit` entries, newest first, placed before `before` in the chain (None: from
    /// the newest).
    async fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        unsupported()
    }
    /// The whole kept chain, for verification.
    async fn audit_chain(&self) -> Result<Chain, StoreError> {
        unsupported()
    }
    /// Removes the entries older than `before` from the start of the chain, recording the last
    /// removed one as the anchor verification starts from. Returns how many were removed.
    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        unsupported()
    }

    /// Writes admin tokens and an audit chain exactly as read from another store (migration):
    /// the tokens are added, the chain (entries, anchor, head) replaces this store's.
    async fn import_audit(
        &self,
        tokens: &[AdminTokenRecord],
        chain: &Chain,
    ) -> Result<(), StoreError> {
        unsupported()
    }
}

/// How many entries a prune removes from the start of `oldest_first` (entries in chain
/// order): those before the first one at or after `before`, so the kept chain has no gap.
pub fn prunable(oldest_first: &[Entry], before: DateTime<Utc>) -> usize {
    oldest_first
        .iter()
        .position(|e| e.time >= before)
        .unwrap_or(oldest_first.len())
}

/// The longest wait between two prunes: entries outlive their retention by at most this.
const MAX_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest (for the short retentions tests use).
const MIN_PRUNE_INTERVAL: Duration = Duration::from_millis(100);

/// How often entries kept for `retention` are pruned: a tenth of it, within the bounds above.
pub fn prune_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(MIN_PRUNE_INTERVAL, MAX_PRUNE_INTERVAL)
}

/// Prunes entries older than `retention`, at start and every [`prune_interval`], until shut
/// down. Every gateway runs it: a prune is one atomic write that moves the anchor forward
/// only, so a second gateway's prune finds nothing left to do.
pub async fn run_pruning(
    store: Arc<dyn KeyStore>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(prune_interval(retention));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(before) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| Utc::now().checked_sub_signed(r))
        else {
            continue;
        };
        match store.prune_audit(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "audit entries past their retention pruned"),
            Err(error) => tracing::warn!(%error, "audit pruning failed; retried later"),
        }
    }
}
