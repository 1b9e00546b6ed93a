//! The same suite on each store: `for_each_store!` makes one `#[tokio::test]` per suite
//! function and store, and [`embedded`] / [`redis`] start a gateway on each (the Redis one
//! skipped, and said so, where redis-server is not installed).
#![allow(dead_code)]

use super::redis::RedisServer;
use super::{RunningKb, TestGateway};
use kbgate::Config;

/// One `#[tokio::test]` per suite function in module `$store`, each on a gateway from
/// `$start(&upstream)` (an `Option<(TestGateway, Option<RedisServer>)>`; None skips).
#[macro_export]
macro_rules! for_each_store {
    ($store:ident => $start:expr; $($suite:ident),* $(,)?) => {
        mod $store {
            use super::*;
            $(
                #[tokio::test]
                async fn $suite() {
                    let upstream = common::RunningKb::start().await;
                    let Some((gateway, _redis)) = ($start)(&upstream).await else { return };
                    super::$suite(&gateway).await;
                    gateway.shutdown().await;
                }
            )*
        }
    };
}

/// A gateway on the embedded store, with `edit` applied to its config.
pub async fn embedded(
    upstream: &RunningKb,
    edit: impl FnOnce(&mut Config),
) -> Option<(TestGateway, Option<RedisServer>)> {
    let gateway = TestGateway::builder()
        .upstream(upstream)
        .config(edit)
        .start()
        .await;
    Some((gateway, None))
}

/// A gateway on a fresh redis-server under `prefix`, with `edit` applied to its config.
pub async fn redis(
    upstream: &RunningKb,
    prefix: &str,
    edit: impl FnOnce(&mut Config),
) -> Option<(TestGateway, Option<RedisServer>)> {
    let server = RedisServer::start()?;
    let store = server.store(prefix);
    let gateway = TestGateway::builder()
        .upstream(upstream)
        .config(|config| {
            config.store = store;
            edit(config);
        })
        .start()
        .await;
    Some((gateway, Some(server)))
}

/// Two gateways sharing one redis-server under one prefix, in front of one fake KB.
pub struct RedisPair {
    pub a: TestGateway,
    pub b: TestGateway,
    pub server: RedisServer,
    pub upstream: RunningKb,
}

/// A [`RedisPair`] on a fresh redis-server (None: skipped, as [`redis`]).
pub async fn redis_pair(prefix: &str) -> Option<RedisPair> {
    redis_pair_with(prefix, |_| {}).await
}

/// A [`RedisPair`] with `edit` applied to both gateways' configs.
pub async fn redis_pair_with(prefix: &str, edit: fn(&mut Config)) -> Option<RedisPair> {
    let server = RedisServer::start()?;
    let upstream = RunningKb::start().await;
    let start = || {
        TestGateway::builder()
            .upstream(&upstream)
            .config(|config| {
                config.store = server.store(prefix);
                edit(config);
            })
            .start()
    };
    let (a, b) = (start().await, start().await);
    Some(RedisPair {
        a,
        b,
        server,
        upstream,
    })
}
