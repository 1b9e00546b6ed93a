//! The embedded store with a hook that sees every call first and may fail it: to watch what
//! the gateway asks its store, or to switch the store off as a lost disk or network would.
#![allow(dead_code)]

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kbgate::keys::admin_token::AdminTokenRecord;
use kbgate::keys::audit::{Chain, Entry, NewEntry};
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::{AuditStore, KeyHash, KeyRecord, KeyStore, StoreError, UsageDelta};

/// One call to the store, as the hook sees it.
#[derive(Debug)]
pub enum Call<'a> {
    Create(&'a KeyRecord),
    Get(&'a str),
    FindByHash(&'a KeyHash),
    List,
    Update(&'a KeyRecord),
    Delete(&'a str),
    AddUsage(&'a [UsageDelta]),
    Import(&'a KeyRecord),
    Ping,
    /// An audit entry about to be written with its change (after the change's own call).
    Append(&'a NewEntry),
    /// Any read or write of admin tokens.
    AdminTokens,
    /// Any read or prune of the audit chain.
    AuditRead,
}

pub type Hook = Box<dyn Fn(Call<'_>) -> Result<(), StoreError> + Send + Sync>;

pub struct HookedStore {
    pub inner: EmbeddedStore,
    pub hook: Hook,
}

#[async_trait]
impl KeyStore for HookedStore {
    async fn create(&self, r: &KeyRecord) -> Result<(), StoreError> {
        (self.hook)(Call::Create(r))?;
        self.inner.create(r).await
    }
    async fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        (self.hook)(Call::Get(id))?;
        self.inner.get(id).await
    }
    async fn find_by_hash(&self, h: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        (self.hook)(Call::FindByHash(h))?;
        self.inner.find_by_hash(h).await
    }
    async fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        (self.hook)(Call::List)?;
        self.inner.list().await
    }
    async fn update(&self, r: &KeyRecord) -> Result<bool, StoreError> {
        (self.hook)(Call::Update(r))?;
        self.inner.update(r).await
    }
    async fn delete(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        (self.hook)(Call::Delete(id))?;
        self.inner.delete(id).await
    }
    async fn add_usage(&self, d: &[UsageDelta]) -> Result<(), StoreError> {
        (self.hook)(Call::AddUsage(d))?;
        self.inner.add_usage(d).await
    }
    async fn import(&self, r: &KeyRecord) -> Result<(), StoreError> {
        (self.hook)(Call::Import(r))?;
        self.inner.import(r).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        (self.hook)(Call::Ping)?;
        self.inner.ping().await
    }
}

/// No outbox: the hooked tests are about keys.
impl kbgate::keys::OutboxStore for HookedStore {}

/// Audited writes show the hook their change (`Create`, `Update`, `Delete`), then `Append`.
#[async_trait]
impl AuditStore for HookedStore {
    async fn create_audited(&self, r: &KeyRecord, e: &NewEntry) -> Result<(), StoreError> {
        (self.hook)(Call::Create(r))?;
        (self.hook)(Call::Append(e))?;
        self.inner.create_audited(r, e).await
    }
    async fn update_audited(&self, r: &KeyRecord, e: &NewEntry) -> Result<bool, StoreError> {
        (self.hook)(Call::Update(r))?;
        (self.hook)(Call::Append(e))?;
        self.inner.update_audited(r, e).await
    }
    async fn delete_audited(
        &self,
        id: &str,
        e: &NewEntry,
    ) -> Result<Option<KeyRecord>, StoreError> {
        (self.hook)(Call::Delete(id))?;
        (self.hook)(Call::Append(e))?;
        self.inner.delete_audited(id, e).await
    }
    async fn create_admin_token(
        &self,
        t: &AdminTokenRecord,
        e: &NewEntry,
    ) -> Result<(), StoreError> {
        (self.hook)(Call::AdminTokens)?;
        (self.hook)(Call::Append(e))?;
        self.inner.create_admin_token(t, e).await
    }
    async fn delete_admin_token(
        &self,
        id: &str,
        e: &NewEntry,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        (self.hook)(Call::AdminTokens)?;
        (self.hook)(Call::Append(e))?;
        self.inner.delete_admin_token(id, e).await
    }
    async fn admin_token(&self, id: &str) -> Result<Option<AdminTokenRecord>, StoreError> {
        (self.hook)(Call::AdminTokens)?;
        self.inner.admin_token(id).await
    }
    async fn admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        (self.hook)(Call::AdminTokens)?;
        self.inner.admin_tokens().await
    }
    async fn admin_token_by_hash(
        &self,
        h: &KeyHash,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        (self.hook)(Call::AdminTokens)?;
        self.inner.admin_token_by_hash(h).await
    }
    async fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        (self.hook)(Call::AuditRead)?;
        self.inner.audit_page(before, limit).await
    }
    async fn audit_chain(&self) -> Result<Chain, StoreError> {
        (self.hook)(Call::AuditRead)?;
        self.inner.audit_chain().await
    }
    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        (self.hook)(Call::AuditRead)?;
        self.inner.prune_audit(before).await
    }
    async fn import_audit(&self, t: &[AdminTokenRecord], c: &Chain) -> Result<(), StoreError> {
        (self.hook)(Call::AdminTokens)?;
        self.inner.import_audit(t, c).await
    }
}
