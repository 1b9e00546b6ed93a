//! Quota counts read for many keys at once (a page of the key list): one pipeline.

use super::RedisStore;
use crate::keys::StoreError;

impl RedisStore {
    /// What is counted for each (key id, period start), in order; one round trip. A pipeline
    /// rather than MGET: each key's counts sit in its own cluster slot.
    pub async fn quota_used_many(&self, keys: &[(&str, i64)]) -> Result<Vec<u64>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, period) in keys {
            pipe.get(self.quota_key(id, *period));
        }
        let pipe = &pipe;
        let counts: Vec<Option<u64>> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(counts.into_iter().map(|n| n.unwrap_or(0)).collect())
    }
}
