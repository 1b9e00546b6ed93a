//! The embedded store with a hook that sees every call first and may fail it: to watch what
//! the gateway asks its store, or to switch the store off as a lost disk or network would.
#![allow(dead_code)]

use async_trait::async_trait;
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::{KeyHash, KeyRecord, KeyStore, StoreError, UsageDelta};

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
