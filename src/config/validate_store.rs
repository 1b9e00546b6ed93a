//! The `store` section: embedded or Redis (single node or cluster), each error naming its field.

use super::schema::{RawRedis, RawStore};
use super::{ConfigError, field_error};
use crate::keys::StoreConfig;
use crate::keys::redis::RedisConfig;

impl RawStore {
    pub(super) fn validate(self) -> Result<StoreConfig, ConfigError> {
        match (self.embedded, self.redis) {
            (Some(embedded), None) => Ok(StoreConfig::Embedded {
                path: embedded.path,
                cache_size: embedded.cache_size.0,
            }),
            (None, Some(redis)) => redis.validate().map(StoreConfig::Redis),
            (Some(_), Some(_)) => Err(field_error("store", "choose one store: embedded or redis")),
            (None, None) => Err(field_error(
                "store",
                "choose a store: embedded: { path: … } or redis: { url: … }",
            )),
        }
    }
}

impl RawRedis {
    fn validate(self) -> Result<RedisConfig, ConfigError> {
        let (urls, cluster, field) = match (self.url, self.cluster) {
            (Some(url), None) => (vec![url], false, "store.redis.url"),
            (None, Some(nodes)) if !nodes.is_empty() => (nodes, true, "store.redis.cluster"),
            (None, Some(_)) => {
                return Err(field_error(
                    "store.redis.cluster",
                    "needs at least one node URL",
                ));
            }
            _ => {
                return Err(field_error(
                    "store.redis",
                    "give either url or cluster (a list of node URLs)",
                ));
            }
        };
        for url in &urls {
            let scheme_ok = url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://");
            // Checked without echoing the URL: it may carry a password.
            if !scheme_ok || redis::Client::open(url.as_str()).is_err() {
                return Err(field_error(
                    field,
                    "must be a redis://, rediss:// or unix:// URL",
                ));
            }
        }
        if self.prefix.is_empty() {
            return Err(field_error("store.redis.prefix", "must not be empty"));
        }
        if self.timeout.is_zero() {
            return Err(field_error("store.redis.timeout", "must be above zero"));
        }
        // In a cluster every key of kbgate must live in one slot, so scripts may touch them all.
        let prefix = if cluster && !self.prefix.contains('{') {
            format!("{{{}}}", self.prefix)
        } else {
            self.prefix
        };
        Ok(RedisConfig {
            urls,
            cluster,
            prefix,
            timeout: self.timeout,
        })
    }
}
