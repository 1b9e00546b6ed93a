//! The key lifecycle in one place: create, edit (enable/disable), rotate, end a rotation grace,
//! delete, and exact reads. Every change is written to the store first, then forgotten by the
//! hot tier (so it holds from the very next request) and mirrored in the per-key metrics.
//! Callers (the admin API, later the console and the policies) keep only their own protocol.
//! Each change carries its [`Context`] (who, from where) and is written with its audit entry
//! in one store write.

use crate::authz::{Permission, Scope};
use crate::keys::audit::{self, Action, Changes, Context, FieldChange, NewEntry, Target};
use crate::keys::history::{HourCounts, UsageOverview};
use crate::keys::limits::{Quota, RateLimit, check_cidrs};
use crate::keys::listing::{self, ListQuery, Page};
use crate::keys::{KeyRecord, KeyStore, Keyring, StoreError, secret};
use crate::metrics::keys::KeyMetrics;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Default rotation grace: the old secret keeps working for a day.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);
/// The longest rotation grace accepted: a forgotten old secret should not live for months.
const MAX_GRACE_SECONDS: u64 = 90 * 86_400;
const MAX_NAME_LEN: usize = 200;

/// Usage counted in memory but not yet in the store. The usage recorder (a floor above keys)
/// implements it; reads add what is pending, so the figures they show are exact.
#[async_trait]
pub trait PendingUsage: Send + Sync {
    /// Held while reading a record and adding what is pending: no flush falls in between.
    async fn exact(&self) -> tokio::sync::RwLockReadGuard<'_, ()>;
    fn add_pending(&self, record: &mut KeyRecord);
    /// A key's usage history counted but not yet flushed, by hour.
    fn pending_hours(&self, _key_id: &str) -> Vec<crate::keys::history::HourCounts> {
        Vec::new()
    }
}

/// A new key; what is left out takes its default (a name from the time, scope read, no specific
/// permissions, no expiry).
#[derive(Debug, Default)]
pub struct NewKey {
    pub name: Option<String>,
    pub scope: Option<Scope>,
    /// Specific permissions as written (`resource:action`), checked against the scope.
    pub permissions: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    /// Networks the client must come from (none: any).
    pub allowed_cidrs: Option<Vec<String>>,
}

/// A change to a key; `None` leaves a field unchanged.
#[derive(Debug, Default)]
pub struct KeyEdit {
    pub name: Option<String>,
    pub scope: Option<Scope>,
    pub permissions: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)`: no expiry; `Some(Some(at))`: expires then.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// `Some(None)`: the key's own limit is removed (a default may then apply).
    pub rate_limit: Option<Option<RateLimit>>,
    pub quota: Option<Option<Quota>>,
    /// `Some(empty)`: any address.
    pub allowed_cidrs: Option<Vec<String>>,
}

/// A key and its new secret: the only time the secret is seen (the store keeps its hash).
#[derive(Debug)]
pub struct Issued {
    pub record: KeyRecord,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyServiceError {
    #[error("no such key")]
    NotFound,
    /// `field` is the input's field name; `reason` says what is wrong with it.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> KeyServiceError {
    KeyServiceError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Every key change goes through here: this is where an audit entry will be written.
pub struct KeyService {
    store: Arc<dyn KeyStore>,
    keyring: Arc<Keyring>,
    usage: Arc<dyn PendingUsage>,
    /// Per-key counters and `kbgate_key_info`, when per-key metrics are on.
    key_metrics: Option<Arc<KeyMetrics>>,
    /// The resources permissions may name.
    resources: Vec<String>,
    /// Serialises read-modify-write changes to keys made through this instance.
    writes: tokio::sync::Mutex<()>,
}

impl KeyService {
    pub fn new(
        store: Arc<dyn KeyStore>,
        keyring: Arc<Keyring>,
        usage: Arc<dyn PendingUsage>,
        key_metrics: Option<Arc<KeyMetrics>>,
        resources: Vec<String>,
    ) -> KeyService {
        KeyService {
            store,
            keyring,
            usage,
            key_metrics,
            resources,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// The resources permissions may name (from the config).
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The store, for the admin tokens and the audit trail kept beside the keys.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Is the store reachable?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Every key, with exact usage (see [`KeyService::get`]).
    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyServiceError> {
        let _exact = self.usage.exact().await;
        let mut records = self.store.list().await?;
        for record in &mut records {
            self.usage.add_pending(record);
        }
        Ok(records)
    }

    /// One page of keys (see [`listing::page`]), with exact usage: what is counted but not yet
    /// flushed is added before the filters see it.
    pub async fn list_page(&self, query: &ListQuery) -> Result<Page, KeyServiceError> {
        let _exact = self.usage.exact().await;
        let usage = &self.usage;
        let exact = |record: &mut KeyRecord| usage.add_pending(record);
        Ok(listing::page(self.store.as_ref(), query, Utc::now(), &exact).await?)
    }

    /// Up to `max` keys, oldest first, after `after`, with exact usage: how the key-hygiene
    /// sweeps walk every key a page at a time.
    pub async fn page_exact(
        &self,
        after: Option<&listing::AgeMark>,
        max: usize,
    ) -> Result<Vec<KeyRecord>, KeyServiceError> {
        let _exact = self.usage.exact().await;
        let mut records = self.store.page_by_age(after, false, max).await?;
        for record in &mut records {
            self.usage.add_pending(record);
        }
        Ok(records)
    }

    /// A key's usage in the hours `from..to` (only hours with requests), exact as
    /// [`KeyService::get`] is.
    pub async fn usage_history(
        &self,
        id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<HourCounts>, KeyServiceError> {
        let _exact = self.usage.exact().await;
        self.store.get(id).await?.ok_or(KeyServiceError::NotFound)?;
        let mut hours = self.store.usage_history(id, from, to).await?;
        for pending in self.usage.pending_hours(id) {
            if !(from..to).contains(&pending.hour) {
                continue;
            }
            match hours.iter_mut().find(|h| h.hour == pending.hour) {
                Some(stored) => stored.add(&pending),
                None => hours.push(pending),
            }
        }
        hours.sort_by_key(|h| h.hour);
        Ok(hours)
    }

    /// Every key's usage in the hours `from..to`, as flushed (up to `usage.flush_interval`
    /// behind).
    pub async fn usage_overview(
        &self,
        from: i64,
        to: i64,
    ) -> Result<UsageOverview, KeyServiceError> {
        Ok(self.store.usage_overview(from, to).await?)
    }

    /// A key with exact usage: the store's figures plus what is counted but not yet flushed,
    /// read under [`PendingUsage::exact`] so that no flush falls in between.
    pub async fn get(&self, id: &str) -> Result<KeyRecord, KeyServiceError> {
        let _exact = self.usage.exact().await;
        let mut record = self.store.get(id).await?.ok_or(KeyServiceError::NotFound)?;
        self.usage.add_pending(&mut record);
        Ok(record)
    }

    /// Creates a key with a new secret.
    pub async fn create(&self, new: NewKey, ctx: &Context) -> Result<Issued, KeyServiceError> {
        let now = Utc::now();
        let name = match new.name {
            Some(name) => valid_name(name)?,
            None => now.format("%Y-%m-%d %H:%M:%S").to_string(),
        };
        let scope = new.scope.unwrap_or(Scope::Read);
        let permissions = self.permissions(new.permissions.unwrap_or_default(), scope)?;
        let expires_at = future(new.expires_at, now)?;
        let secret = secret::generate();
        let mut record = KeyRecord::new(name, scope, permissions, expires_at, &secret, now);
        record.rate_limit = valid_rate_limit(new.rate_limit)?;
        record.quota = valid_quota(new.quota)?;
        record.allowed_cidrs = valid_cidrs(new.allowed_cidrs.unwrap_or_default())?;
        let changes = audit::diff(&serde_json::Value::Null, &audit::key_fields(&record));
        let entry = NewEntry::new(ctx, Action::KeyCreated, Target::key(&record), changes);
        self.store.create_audited(&record, &entry).await?;
        self.key_changed(&record);
        tracing::info!(key_id = %record.id, "key created");
        Ok(Issued {
            record,
            secret: secret.secret,
        })
    }

    /// Changes a key's name, scope, permissions, enabled flag or expiry.
    pub async fn edit(
        &self,
        id: &str,
        edit: KeyEdit,
        ctx: &Context,
    ) -> Result<KeyRecord, KeyServiceError> {
        let _write = self.writes.lock().await;
        let mut record = self.get(id).await?;
        let before = audit::key_fields(&record);
        let now = Utc::now();
        if let Some(name) = edit.name {
            record.name = valid_name(name)?;
        }
        let scope = edit.scope.unwrap_or(record.scope);
        let permissions = match edit.permissions {
            Some(list) => self.permissions(list, scope)?,
            None => self.permissions(
                record.permissions.iter().map(|p| p.to_string()).collect(),
                scope,
            )?,
        };
        record.scope = scope;
        record.permissions = permissions;
        if let Some(enabled) = edit.enabled {
            record.enabled = enabled;
        }
        if let Some(expires_at) = edit.expires_at {
            record.expires_at = future(expires_at, now)?;
        }
        // What was counted under a limit stays counted when the limit changes: the counters
        // are the key's, not the limit's.
        if let Some(rate_limit) = edit.rate_limit {
            record.rate_limit = valid_rate_limit(rate_limit)?;
        }
        if let Some(quota) = edit.quota {
            record.quota = valid_quota(quota)?;
        }
        if let Some(cidrs) = edit.allowed_cidrs {
            record.allowed_cidrs = valid_cidrs(cidrs)?;
        }
        record.updated_at = now;
        let changes = audit::diff(&before, &audit::key_fields(&record));
        let action = match (changes.len(), changes.get("enabled")) {
            (1, Some(change)) if change.to == true => Action::KeyEnabled,
            (1, Some(_)) => Action::KeyDisabled,
            _ => Action::KeyUpdated,
        };
        self.save(
            &record,
            &NewEntry::new(ctx, action, Target::key(&record), changes),
        )
        .await?;
        tracing::info!(key_id = %record.id, enabled = record.enabled, "key edited");
        Ok(record)
    }

    /// Enables or disables a key: an edit of its `enabled` flag alone.
    pub async fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
        ctx: &Context,
    ) -> Result<KeyRecord, KeyServiceError> {
        let edit = KeyEdit {
            enabled: Some(enabled),
            ..KeyEdit::default()
        };
        self.edit(id, edit, ctx).await
    }

    /// Gives a key a new secret; the secrets in use so far keep working for `grace`
    /// ([`DEFAULT_GRACE`] when `None`, at most 90 days).
    pub async fn rotate(
        &self,
        id: &str,
        grace: Option<Duration>,
        ctx: &Context,
    ) -> Result<Issued, KeyServiceError> {
        let grace = grace.unwrap_or(DEFAULT_GRACE).as_secs();
        if grace > MAX_GRACE_SECONDS {
            return Err(invalid(
                "grace_period_seconds",
                format!("at most {MAX_GRACE_SECONDS} (90 days)"),
            ));
        }
        let _write = self.writes.lock().await;
        let mut record = self.get(id).await?;
        let new = secret::generate();
        let from = record.start().to_string();
        record.rotate(&new, chrono::Duration::seconds(grace as i64), Utc::now());
        let changes = one_change("start", from.into(), record.start().into());
        let entry = NewEntry::new(ctx, Action::KeyRotated, Target::key(&record), changes);
        self.save(&record, &entry).await?;
        tracing::info!(key_id = %record.id, grace_seconds = grace, "key rotated");
        Ok(Issued {
            record,
            secret: new.secret,
        })
    }

    /// Ends a rotation's grace now: every secret rotated away stops working at once. A key
    /// with no grace running is returned unchanged.
    pub async fn end_rotation(
        &self,
        id: &str,
        ctx: &Context,
    ) -> Result<KeyRecord, KeyServiceError> {
        let _write = self.writes.lock().await;
        let mut record = self.get(id).await?;
        let now = Utc::now();
        let mut ended = 0;
        let mut grace_end = None;
        for secret in &mut record.secrets {
            if secret.retires_at.is_some_and(|at| at > now) {
                grace_end = grace_end.max(secret.retires_at);
                secret.retires_at = Some(now);
                ended += 1;
            }
        }
        if ended > 0 {
            record.updated_at = now;
            let changes = one_change(
                "rotation_grace_ends_at",
                json_time(grace_end),
                json_time(Some(now)),
            );
            let entry = NewEntry::new(ctx, Action::KeyUpdated, Target::key(&record), changes);
            self.save(&record, &entry).await?;
            tracing::info!(key_id = %record.id, secrets = ended, "rotation grace ended");
        }
        Ok(record)
    }

    /// Deletes a key, its secrets and its usage; returns what was deleted.
    pub async fn delete(&self, id: &str, ctx: &Context) -> Result<KeyRecord, KeyServiceError> {
        let _write = self.writes.lock().await;
        let target = Target::key(&self.get(id).await?);
        let entry = NewEntry::new(ctx, Action::KeyDeleted, target, Changes::new());
        let record = self
            .store
            .delete_audited(id, &entry)
            .await?
            .ok_or(KeyServiceError::NotFound)?;
        self.keyring.forget(&record);
        if let Some(key_metrics) = &self.key_metrics {
            key_metrics.remove(&record.id);
        }
        tracing::info!(key_id = %record.id, "key deleted");
        Ok(record)
    }

    /// Writes a changed key, then drops it from the hot tier: the next request sees the change.
    async fn save(&self, record: &KeyRecord, entry: &NewEntry) -> Result<(), KeyServiceError> {
        let found = self.store.update_audited(record, entry).await?;
        self.keyring.forget(record);
        if found {
            self.key_changed(record);
            Ok(())
        } else {
            Err(KeyServiceError::NotFound)
        }
    }

    /// A key was created or changed: its `kbgate_key_info` series follows, and a new key's
    /// request counter starts at 0.
    fn key_changed(&self, record: &KeyRecord) {
        if let Some(key_metrics) = &self.key_metrics {
            key_metrics.set(record.metric_labels());
        }
    }

    /// Parses specific permissions and checks that the scope allows each one.
    fn permissions(
        &self,
        list: Vec<String>,
        scope: Scope,
    ) -> Result<Vec<Permission>, KeyServiceError> {
        let mut permissions: Vec<Permission> = Vec::with_capacity(list.len());
        for text in list {
            let permission = Permission::parse(&text, &self.resources)
                .map_err(|reason| invalid("permissions", reason))?;
            if !scope.allows(&permission) {
                return Err(invalid(
                    "permissions",
                    format!("a read key cannot be given {permission}; use scope read_write"),
                ));
            }
            if !permissions.contains(&permission) {
                permissions.push(permission);
            }
        }
        Ok(permissions)
    }
}

/// `{field: {from, to}}` for one field.
fn one_change(field: &str, from: serde_json::Value, to: serde_json::Value) -> Changes {
    Changes::from([(field.to_string(), FieldChange { from, to })])
}

fn json_time(at: Option<DateTime<Utc>>) -> serde_json::Value {
    serde_json::to_value(at).unwrap_or_default()
}

/// 1 to `MAX_NAME_LEN` characters as sent (the OpenAPI document's `maxLength`), none of them
/// a control character, not only spaces; the spaces around it are removed.
pub fn valid_name(name: String) -> Result<String, KeyServiceError> {
    let too_long = name.chars().count() > MAX_NAME_LEN;
    let name = name.trim().to_string();
    if name.is_empty() || too_long || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} printable characters"),
        ));
    }
    Ok(name)
}

fn valid_rate_limit(limit: Option<RateLimit>) -> Result<Option<RateLimit>, KeyServiceError> {
    limit
        .map(|l| l.check().map(|()| l))
        .transpose()
        .map_err(|reason| invalid("rate_limit", reason))
}

fn valid_quota(quota: Option<Quota>) -> Result<Option<Quota>, KeyServiceError> {
    quota
        .map(|q| q.check().map(|()| q))
        .transpose()
        .map_err(|reason| invalid("quota", reason))
}

/// Trimmed, each a network or an address.
fn valid_cidrs(cidrs: Vec<String>) -> Result<Vec<String>, KeyServiceError> {
    let cidrs: Vec<String> = cidrs.into_iter().map(|c| c.trim().to_string()).collect();
    check_cidrs(&cidrs).map_err(|reason| invalid("allowed_cidrs", reason))?;
    Ok(cidrs)
}

fn future(
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, KeyServiceError> {
    match at {
        Some(at) if at <= now => Err(invalid("expires_at", "must be in the future")),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::embedded::EmbeddedStore;
    use crate::keys::keyring::CacheLimits;
    use std::sync::Mutex;

    /// Stands in for the usage recorder: a fixed count pending for one key.
    #[derive(Default)]
    struct Pending {
        flushing: tokio::sync::RwLock<()>,
        counted: Mutex<Option<(String, u64)>>,
    }

    #[async_trait]
    impl PendingUsage for Pending {
        async fn exact(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
            self.flushing.read().await
        }
        fn add_pending(&self, record: &mut KeyRecord) {
            if let Some((id, n)) = &*self.counted.lock().unwrap()
                && *id == record.id
            {
                record.usage.request_count += n;
            }
        }
    }

    struct Fixture {
        service: KeyService,
        keyring: Arc<Keyring>,
        usage: Arc<Pending>,
        key_metrics: Arc<KeyMetrics>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KeyStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("keys.redb")).unwrap());
        let limits = CacheLimits {
            max_age: Duration::from_secs(60),
            max_entries: 100,
            negative_ttl: Duration::from_secs(60),
            negative_max_entries: 100,
        };
        let keyring = Arc::new(Keyring::new(store.clone(), limits, true));
        let usage = Arc::new(Pending::default());
        let key_metrics = Arc::new(KeyMetrics::new(10));
        let service = KeyService::new(
            store,
            keyring.clone(),
            usage.clone(),
            Some(key_metrics.clone()),
            vec!["articles".into()],
        );
        Fixture {
            service,
            keyring,
            usage,
            key_metrics,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn create_edit_rotate_end_grace_delete() {
        let f = fixture();
        let issued = f
            .service
            .create(
                NewKey {
                    name: Some("  Chatbot ".into()),
                    ..NewKey::default()
                },
                &Context::config(),
            )
            .await
            .unwrap();
        let id = issued.record.id.clone();
        assert_eq!(issued.record.name, "Chatbot");
        assert_eq!(issued.record.scope, Scope::Read);
        assert_eq!(f.key_metrics.len(), 1);
        let grant = f.keyring.verify(&issued.secret).await.unwrap();
        assert_eq!(&*grant.id, id);

        *f.usage.counted.lock().unwrap() = Some((id.clone(), 3));
        assert_eq!(f.service.get(&id).await.unwrap().usage.request_count, 3);
        assert_eq!(f.service.list().await.unwrap()[0].usage.request_count, 3);

        let edited = f
            .service
            .edit(
                &id,
                KeyEdit {
                    scope: Some(Scope::ReadWrite),
                    permissions: Some(vec!["articles:write".into(), "articles:write".into()]),
                    ..KeyEdit::default()
                },
                &Context::config(),
            )
            .await
            .unwrap();
        assert_eq!(edited.scope, Scope::ReadWrite);
        assert_eq!(edited.permissions.len(), 1, "duplicates dropped");
        let disabled = f
            .service
            .set_enabled(&id, false, &Context::config())
            .await
            .unwrap();
        assert!(!disabled.enabled);
        assert!(f.keyring.verify(&issued.secret).await.is_err(), "forgotten");
        f.service
            .set_enabled(&id, true, &Context::config())
            .await
            .unwrap();

        let rotated = f
            .service
            .rotate(&id, None, &Context::config())
            .await
            .unwrap();
        assert_eq!(rotated.record.secrets.len(), 2);
        assert!(f.keyring.verify(&issued.secret).await.is_ok(), "in grace");
        assert!(f.keyring.verify(&rotated.secret).await.is_ok());
        let ended = f
            .service
            .end_rotation(&id, &Context::config())
            .await
            .unwrap();
        assert!(
            ended.secrets[0]
                .retires_at
                .is_some_and(|at| at <= Utc::now())
        );
        assert!(
            f.keyring.verify(&issued.secret).await.is_err(),
            "grace over"
        );
        assert!(f.keyring.verify(&rotated.secret).await.is_ok());

        let deleted = f.service.delete(&id, &Context::config()).await.unwrap();
        assert_eq!(deleted.id, id);
        assert!(f.key_metrics.is_empty());
        assert!(f.keyring.verify(&rotated.secret).await.is_err());
        assert!(f.service.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unknown_keys_are_not_found() {
        let f = fixture();
        let missing = "key_0000000000000000";
        assert!(matches!(
            f.service.get(missing).await,
            Err(KeyServiceError::NotFound)
        ));
        assert!(matches!(
            f.service
                .edit(missing, KeyEdit::default(), &Context::config())
                .await,
            Err(KeyServiceError::NotFound)
        ));
        assert!(matches!(
            f.service.rotate(missing, None, &Context::config()).await,
            Err(KeyServiceError::NotFound)
        ));
        assert!(matches!(
            f.service.end_rotation(missing, &Context::config()).await,
            Err(KeyServiceError::NotFound)
        ));
        assert!(matches!(
            f.service.delete(missing, &Context::config()).await,
            Err(KeyServiceError::NotFound)
        ));
    }

    #[tokio::test]
    async fn invalid_inputs_name_their_field() {
        let f = fixture();
        let err = f
            .service
            .create(
                NewKey {
                    permissions: Some(vec!["articles:write".into()]),
                    ..NewKey::default()
                },
                &Context::config(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "permissions: a read key cannot be given articles:write; use scope read_write"
        );
        let err = f
            .service
            .create(
                NewKey {
                    permissions: Some(vec!["nothing:read".into()]),
                    ..NewKey::default()
                },
                &Context::config(),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            KeyServiceError::Invalid {
                field: "permissions",
                ..
            }
        ));
        let past = Utc::now() - chrono::Duration::seconds(1);
        let err = f
            .service
            .create(
                NewKey {
                    expires_at: Some(past),
                    ..NewKey::default()
                },
                &Context::config(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "expires_at: must be in the future");
        assert!(
            f.service.list().await.unwrap().is_empty(),
            "nothing written"
        );

        let id = f
            .service
            .create(NewKey::default(), &Context::config())
            .await
            .unwrap()
            .record
            .id;
        let too_long = Some(Duration::from_secs(MAX_GRACE_SECONDS + 1));
        let err = f
            .service
            .rotate(&id, too_long, &Context::config())
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            KeyServiceError::Invalid {
                field: "grace_period_seconds",
                ..
            }
        ));
        let err = f
            .service
            .edit(
                &id,
                KeyEdit {
                    name: Some("a\nb".into()),
                    ..KeyEdit::default()
                },
                &Context::config(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "name: must be 1 to 200 printable characters"
        );
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(valid_name("  Chatbot  ".into()).unwrap(), "Chatbot");
        assert!(valid_name("".into()).is_err());
        assert!(valid_name("a\nb".into()).is_err());
        assert!(valid_name("x".repeat(201)).is_err());
        assert!(
            valid_name(format!(" {} ", "x".repeat(199))).is_err(),
            "201 as sent"
        );
        assert!(valid_name(" \u{3000} ".into()).is_err(), "only spaces");
    }
}
