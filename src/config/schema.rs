//! The configuration file's shape: serde structs that refuse unknown fields, with each
//! default beside the field it fills. [`super::validate`] turns them into typed settings.

use super::LogFormat;
use super::units::ByteSize;
use crate::authz::routes::{QueryDefinition, RouteDefinition};
use crate::keys::embedded::DEFAULT_CACHE_SIZE;
use crate::keys::limits::{Quota, RateLimit};
use crate::limits::{HeaderStyle, OnStoreError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    /// The gateway's origin as clients see it: links and redirects to the KB are rewritten to it.
    #[serde(default)]
    pub(super) public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs or addresses).
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(super) tls: Option<RawTls>,
    pub(super) admin: RawAdmin,
    pub(super) upstream: RawUpstream,
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) resources: Option<Vec<String>>,
    pub(super) routes: Vec<RouteSpec>,
    #[serde(default)]
    pub(super) hot_tier: RawHotTier,
    #[serde(default)]
    pub(super) keys: RawKeys,
    #[serde(default)]
    pub(super) usage: RawUsage,
    #[serde(default)]
    pub(super) limits: RawLimits,
    /// The limits of keys that set none of their own.
    #[serde(default)]
    pub(super) key_defaults: RawKeyDefaults,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) cors: Option<RawCors>,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) webhooks: RawWebhooks,
}

/// One route as written in the YAML config.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub methods: Vec<String>,
    pub path: String,
    pub permission: String,
    /// The largest request body this route accepts, instead of `limits.max_body`.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// With GET listed, HEAD is routed too unless this is `false`.
    #[serde(default)]
    pub head: Option<bool>,
    /// Which query parameters the route lets through (403 `query_not_allowed` for others).
    #[serde(default)]
    pub query: Option<QuerySpec>,
    /// The event a 2xx answer emits to webhooks, e.g. `article.updated`.
    #[serde(default)]
    pub event: Option<crate::authz::routes::RouteEvent>,
}

/// `query: { allow: [...] }` or `query: { deny: [...] }` on a route.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Option<Vec<String>>,
}

impl From<RouteSpec> for RouteDefinition {
    fn from(spec: RouteSpec) -> RouteDefinition {
        RouteDefinition {
            methods: spec.methods,
            path: spec.path,
            permission: spec.permission,
            max_body: spec.max_body.map(|size| size.0),
            head: spec.head,
            query: spec.query.map(|query| QueryDefinition {
                allow: query.allow,
                deny: query.deny,
            }),
            event: spec.event,
        }
    }
}

/// `cors:` (absent: off). See [`crate::cors`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allowed_origins: Vec<String>,
    #[serde(default = "default_cors_headers")]
    pub(super) allowed_headers: Vec<String>,
    #[serde(default = "default_cors_max_age", with = "humantime_serde")]
    pub(super) max_age: Duration,
}

/// The headers a browser client needs to send a key and a JSON body.
fn default_cors_headers() -> Vec<String> {
    ["Authorization", "X-Api-Key", "Content-Type"]
        .map(String::from)
        .to_vec()
}
fn default_cors_max_age() -> Duration {
    Duration::from_secs(600)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    pub(super) listen: String,
    pub(super) token: String,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: String,
    #[serde(default)]
    pub(super) inject: RawInject,
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub(super) timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub(super) connect_timeout: Duration,
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub(super) pool_idle_timeout: Duration,
    #[serde(default)]
    pub(super) ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) http2: bool,
    /// Forward request header names with underscores (nginx's `underscores_in_headers`).
    #[serde(default)]
    pub(super) forward_underscore_headers: bool,
    #[serde(default)]
    pub(super) preserve_host: bool,
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
/// Below the 60-75 s keep-alive most servers use, so the pool never reuses a connection the
/// upstream is about to close.
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInject {
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) query: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    pub(super) embedded: Option<RawEmbedded>,
    #[serde(default)]
    pub(super) redis: Option<RawRedis>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) cluster: Option<Vec<String>>,
    #[serde(default = "default_redis_prefix")]
    pub(super) prefix: String,
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub(super) timeout: Duration,
}

fn default_redis_prefix() -> String {
    "kbgate:".into()
}
/// A verification waits at most this long for Redis before failing closed with 503.
fn default_redis_timeout() -> Duration {
    Duration::from_millis(500)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmbedded {
    pub(super) path: PathBuf,
    #[serde(default = "default_cache_size")]
    pub(super) cache_size: ByteSize,
}

fn default_cache_size() -> ByteSize {
    ByteSize(DEFAULT_CACHE_SIZE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHotTier {
    #[serde(with = "humantime_serde")]
    pub(super) max_age: Duration,
    pub(super) max_entries: usize,
    #[serde(with = "humantime_serde")]
    pub(super) negative_ttl: Duration,
    pub(super) negative_max_entries: usize,
}

impl Default for RawHotTier {
    fn default() -> Self {
        RawHotTier {
            max_age: Duration::from_secs(30),
            max_entries: 100_000,
            negative_ttl: Duration::from_secs(5),
            negative_max_entries: 100_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKeys {
    pub(super) sources: Vec<String>,
    /// Lead times before expiry for `key.expiring` (and the `Kbgate-Key-Expires` header).
    pub(super) expiry_warnings: Vec<humantime_serde::Serde<Duration>>,
    /// Unused keys reported or disabled (absent: off).
    pub(super) unused_policy: Option<RawUnusedPolicy>,
    /// How often the expiry sweep runs.
    #[serde(with = "humantime_serde")]
    pub(super) sweep_interval: Duration,
}

impl Default for RawKeys {
    fn default() -> Self {
        let hygiene = crate::events::hygiene::HygieneSettings::default();
        RawKeys {
            sources: ["authorization", "x-api-key", "query:key"]
                .map(String::from)
                .to_vec(),
            expiry_warnings: hygiene
                .expiry_warnings
                .into_iter()
                .map(Into::into)
                .collect(),
            unused_policy: None,
            sweep_interval: hygiene.sweep_interval,
        }
    }
}

/// `keys.unused_policy: {after: 90d, action: report|disable}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnusedPolicy {
    #[serde(with = "humantime_serde")]
    pub(super) after: Duration,
    pub(super) action: crate::events::hygiene::UnusedAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUsage {
    #[serde(with = "humantime_serde")]
    pub(super) flush_interval: Duration,
    /// How long usage history (per key per hour) is kept.
    #[serde(with = "humantime_serde")]
    pub(super) history_retention: Duration,
}

impl Default for RawUsage {
    fn default() -> Self {
        RawUsage {
            flush_interval: Duration::from_secs(1),
            history_retention: Duration::from_secs(90 * 86_400),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    pub(super) max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub(super) header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) tls_handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) shutdown_grace: Duration,
    pub(super) max_concurrent_streams: u32,
    pub(super) max_header_size: ByteSize,
    pub(super) max_uri_length: ByteSize,
    pub(super) max_body: ByteSize,
    #[serde(with = "humantime_serde")]
    pub(super) body_timeout: Duration,
    /// How per-key limits are shown on responses (`draft`, `legacy`, `off`).
    pub(super) headers: HeaderStyle,
    /// Per-key limits when Redis cannot be asked: `allow` (default) or `deny`.
    pub(super) on_store_error: OnStoreError,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyDefaults {
    #[serde(default)]
    pub(super) rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub(super) quota: Option<Quota>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_concurrent_streams: 100,
            // What browsers and most proxies accept; a KB API needs far less.
            max_header_size: ByteSize(32 * 1024),
            // RFC 9112 §3: senders and recipients should support at least 8000 octets.
            max_uri_length: ByteSize(8 * 1024),
            // Article bodies with inline images; a route's own `max_body` replaces it.
            max_body: ByteSize(100 * 1024 * 1024),
            body_timeout: Duration::from_secs(10),
            headers: HeaderStyle::default(),
            on_store_error: OnStoreError::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) format: LogFormat,
    pub(super) level: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub(super) per_key: bool,
    pub(super) per_key_limit: usize,
}

/// Per-key series on, capped so a flood of keys cannot grow the scrape without bound.
impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            per_key: true,
            per_key_limit: 10_000,
        }
    }
}

/// `audit:` the audit trail's settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAudit {
    /// Entries older than this are pruned (the chain keeps an anchor, so it still verifies).
    #[serde(with = "humantime_serde")]
    pub(super) retention: Duration,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            retention: Duration::from_secs(365 * 86_400),
        }
    }
}

/// `webhooks:` how events are delivered (see `crate::events::WebhookSettings`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWebhooks {
    pub(super) allow_private_networks: bool,
    #[serde(with = "humantime_serde")]
    pub(super) timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) retry_for: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) retry_max: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub(super) outbox_retention: Duration,
}

impl Default for RawWebhooks {
    fn default() -> Self {
        let d = crate::events::WebhookSettings::default();
        RawWebhooks {
            allow_private_networks: d.allow_private_networks,
            timeout: d.timeout,
            retry_for: d.retry_for,
            retry_initial: d.retry_initial,
            retry_max: d.retry_max,
            poll_interval: d.poll_interval,
            outbox_retention: d.outbox_retention,
        }
    }
}
