//! Configuration: YAML -> `${ENV}` expansion -> raw serde structs (unknown fields refused) ->
//! `validate()` -> a typed [`Config`]. Every error names the field it is about.

use crate::authz::{DEFAULT_RESOURCES, RouteSpec, RouteTable};
use crate::keys::keyring::CacheLimits;
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error: which field, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

// ---------- raw YAML shape ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    #[serde(default)]
    tls: Option<RawTls>,
    admin: RawAdmin,
    upstream: RawUpstream,
    store: RawStore,
    #[serde(default)]
    resources: Option<Vec<String>>,
    routes: Vec<RouteSpec>,
    #[serde(default)]
    hot_tier: RawHotTier,
    #[serde(default)]
    usage: RawUsage,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    listen: String,
    token: String,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: String,
    #[serde(default)]
    inject: RawInject,
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pool_idle_timeout: Duration,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    http2: bool,
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
struct RawInject {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    embedded: Option<RawEmbedded>,
    #[serde(default)]
    redis: Option<RawRedis>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    cluster: Option<Vec<String>>,
    #[serde(default = "default_redis_prefix")]
    prefix: String,
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    timeout: Duration,
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
struct RawEmbedded {
    path: PathBuf,
    #[serde(default = "default_cache_size")]
    cache_size: ByteSize,
}

/// redb's own default is 1 GiB, all of it resident once a large store has been read. The hot
/// tier answers most lookups, and the operating system caches the file besides.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 20;

fn default_cache_size() -> ByteSize {
    ByteSize(DEFAULT_CACHE_SIZE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHotTier {
    #[serde(with = "humantime_serde")]
    max_age: Duration,
    max_entries: usize,
    #[serde(with = "humantime_serde")]
    negative_ttl: Duration,
    negative_max_entries: usize,
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
struct RawUsage {
    #[serde(with = "humantime_serde")]
    flush_interval: Duration,
}

impl Default for RawUsage {
    fn default() -> Self {
        RawUsage {
            flush_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: usize,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    tls_handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    max_concurrent_streams: u32,
    max_header_size: ByteSize,
    max_uri_length: ByteSize,
    max_body: ByteSize,
    #[serde(with = "humantime_serde")]
    body_timeout: Duration,
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
        }
    }
}

/// A size in bytes, written as a number of bytes or with a unit: `512KiB`, `10MiB`, `1GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 1048576, 512KiB, 10MiB)"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" => 1 << 10,
            "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    per_key: bool,
    per_key_limit: usize,
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

// ---------- typed config ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub resources: Vec<String>,
    pub routes: RouteTable,
    pub hot_tier: CacheLimits,
    pub usage_flush_interval: Duration,
    pub limits: Limits,
    pub log_format: LogFormat,
    pub log_level: String,
    pub metrics: MetricsConfig,
}

/// Per-key metrics: `kbgate_key_requests_total{key_id}` and `kbgate_key_info`.
#[derive(Debug, Clone, Copy)]
pub struct MetricsConfig {
    pub per_key: bool,
    /// Keys beyond this many are counted under `key_id="other"`.
    pub per_key_limit: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// scheme://authority of the KB.
    pub origin: Uri,
    /// A path prefix the KB's API lives under ("" for none), without a trailing slash.
    pub base_path: String,
    pub inject_headers: Vec<(HeaderName, HeaderValue)>,
    /// `name=value` pairs, already percent-encoded, appended to every forwarded query.
    pub inject_query: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub ca: Option<PathBuf>,
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A redb file; `cache_size` bytes of its pages are kept in memory.
    Embedded {
        path: PathBuf,
        cache_size: u64,
    },
    Redis(RedisConfig),
}

impl StoreConfig {
    /// The embedded store at `path`, with the default cache size.
    pub fn embedded(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig::Embedded {
            path: path.into(),
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

#[derive(Clone)]
pub struct RedisConfig {
    /// One URL, or a cluster's seed nodes. May hold a password: never log it.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub prefix: String,
    pub timeout: Duration,
}

/// Shows the nodes without their credentials.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("nodes", &self.urls.len())
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_concurrent_streams: u32,
    /// Request header fields, counted as on the wire (`name: value\r\n`): more is 431.
    pub max_header_size: usize,
    /// The request target: longer is 414.
    pub max_uri_length: usize,
    /// A request body, unless its route sets its own `max_body`: more is 413.
    pub max_body: u64,
    /// The longest wait for the next piece of a request body: longer is 408.
    pub body_timeout: Duration,
}

/// Where `kbgate keys …` finds the admin API.
pub struct AdminTarget {
    pub url: String,
    pub token: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses YAML text, expanding `${ENV}` references from the process environment.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, &|name| std::env::var(name).ok())
    }

    pub fn parse_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        expand_env(&mut value, &mut String::new(), env)?;
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            field_error(
                if field == "." { "config".into() } else { field },
                e.into_inner().to_string(),
            )
        })?;
        raw.validate()
    }
}

/// Reads a config file's `admin` section, and only that, for its listener URL and token: the
/// rest (the KB's credential, the store) may name variables the CLI's shell does not set.
pub fn admin_target(path: &Path) -> Result<AdminTarget, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    admin_target_from(&text, &|name| std::env::var(name).ok())
}

fn admin_target_from(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminTarget, ConfigError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let mut admin = value
        .get("admin")
        .cloned()
        .ok_or_else(|| field_error("admin", "missing: the admin listener and its token"))?;
    expand_env(&mut admin, &mut "admin".to_string(), env)?;
    let raw: RawAdmin = serde_path_to_error::deserialize(admin).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "admin".to_string()
        } else {
            format!("admin.{field}")
        };
        field_error(field, e.into_inner().to_string())
    })?;
    let mut addr = parse_addr("admin.listen", &raw.listen)?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(AdminTarget {
        url: format!("http://{addr}"),
        token: raw.token,
    })
}

/// Replaces `${NAME}` in every string; a missing variable is an error naming the field.
fn expand_env(
    value: &mut serde_yaml::Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        serde_yaml::Value::String(s) => {
            *s = expand_string(s, env).map_err(|reason| field_error(path.clone(), reason))?
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env)?;
                path.truncate(len);
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.as_str().unwrap_or("?"));
                expand_env(v, path, env)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_string(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${ reference".to_string())?;
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| field_error(field, format!("{s:?} is not an IP:port address")))
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let admin = AdminConfig {
            listen: parse_addr("admin.listen", &self.admin.listen)?,
            token: self.admin.token,
        };
        if admin.token.len() < 16 {
            return Err(field_error("admin.token", "must be at least 16 characters"));
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if !path.is_file() {
                    return Err(field_error(
                        field,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        let resources: Vec<String> = match self.resources {
            Some(list) if list.is_empty() => {
                return Err(field_error("resources", "must not be empty"));
            }
            Some(list) => list,
            None => DEFAULT_RESOURCES.iter().map(|s| s.to_string()).collect(),
        };
        if self.routes.is_empty() {
            return Err(field_error(
                "routes",
                "at least one route is needed (every unmapped route is denied)",
            ));
        }
        let routes = RouteTable::compile(&self.routes, &resources)
            .map_err(|e| field_error(format!("routes[{}].{}", e.index, e.field), e.reason))?;
        let store = self.store.validate()?;
        if self.hot_tier.max_entries == 0 {
            return Err(field_error("hot_tier.max_entries", "must be at least 1"));
        }
        if self.usage.flush_interval.is_zero() {
            return Err(field_error("usage.flush_interval", "must be above zero"));
        }
        let limits = self.limits;
        if limits.max_connections == 0 {
            return Err(field_error("limits.max_connections", "must be at least 1"));
        }
        let within = |field: &str, size: ByteSize, max_kib: usize| {
            usize::try_from(size.0)
                .ok()
                .filter(|n| (1024..=max_kib * 1024).contains(n))
                .ok_or_else(|| field_error(field, format!("must be between 1KiB and {max_kib}KiB")))
        };
        let max_header_size = within("limits.max_header_size", limits.max_header_size, 1024)?;
        // hyper refuses targets over 64 KiB itself, with a bare 414.
        let max_uri_length = within("limits.max_uri_length", limits.max_uri_length, 64)?;
        if limits.body_timeout.is_zero() {
            return Err(field_error("limits.body_timeout", "must be above zero"));
        }
        if self.metrics.per_key_limit == 0 {
            return Err(field_error(
                "metrics.per_key_limit",
                "must be at least 1 (per_key: false switches per-key metrics off)",
            ));
        }
        let log_level = self.log.level.unwrap_or_else(|| "info".into());
        if log_level
            .parse::<tracing_subscriber::filter::EnvFilter>()
            .is_err()
        {
            return Err(field_error(
                "log.level",
                format!("{log_level:?} is not a log filter"),
            ));
        }
        Ok(Config {
            listen,
            tls: self.tls.map(|t| TlsFiles {
                cert: t.cert,
                key: t.key,
            }),
            admin,
            upstream: self.upstream.validate()?,
            store,
            resources,
            routes,
            hot_tier: CacheLimits {
                max_age: self.hot_tier.max_age,
                max_entries: self.hot_tier.max_entries,
                negative_ttl: self.hot_tier.negative_ttl,
                negative_max_entries: self.hot_tier.negative_max_entries,
            },
            usage_flush_interval: self.usage.flush_interval,
            limits: Limits {
                max_connections: limits.max_connections,
                header_read_timeout: limits.header_read_timeout,
                tls_handshake_timeout: limits.tls_handshake_timeout,
                shutdown_grace: limits.shutdown_grace,
                max_concurrent_streams: limits.max_concurrent_streams,
                max_header_size,
                max_uri_length,
                max_body: limits.max_body.0,
                body_timeout: limits.body_timeout,
            },
            log_format: self.log.format,
            log_level,
            metrics: MetricsConfig {
                per_key: self.metrics.per_key,
                per_key_limit: self.metrics.per_key_limit,
            },
        })
    }
}

impl RawStore {
    fn validate(self) -> Result<StoreConfig, ConfigError> {
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

impl RawUpstream {
    fn validate(self) -> Result<UpstreamConfig, ConfigError> {
        let uri: Uri = self.url.parse().map_err(|e| {
            field_error("upstream.url", format!("{:?} is not a URL: {e}", self.url))
        })?;
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "http" && scheme != "https" {
            return Err(field_error(
                "upstream.url",
                "must start with http:// or https://",
            ));
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(field_error("upstream.url", "must name a host"));
        };
        if uri.query().is_some() {
            return Err(field_error(
                "upstream.url",
                "must not have a query; use upstream.inject.query",
            ));
        }
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| field_error("upstream.url", e.to_string()))?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        let mut inject_headers = Vec::new();
        for (name, value) in &self.inject.headers {
            let field = format!("upstream.inject.headers.{name}");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| field_error(&field, "is not a valid header name"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| field_error(&field, "is not a valid header value"))?;
            value.set_sensitive(true);
            inject_headers.push((name, value));
        }
        let inject_query = self
            .inject
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect::<Vec<_>>()
            .join("&");
        if let Some(ca) = &self.ca
            && !ca.is_file()
        {
            return Err(field_error(
                "upstream.ca",
                format!("{} is not a readable file", ca.display()),
            ));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(field_error(
                "upstream.timeout",
                "timeouts must be above zero",
            ));
        }
        Ok(UpstreamConfig {
            origin,
            base_path,
            inject_headers,
            inject_query,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            ca: self.ca,
            http2: self.http2,
        })
    }
}

fn encode_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090, token: "${ADMIN}" }
upstream:
  url: http://127.0.0.1:8081/api/
  inject:
    headers: { Authorization: "Bearer ${KB}" }
    query: { key: "${KB}" }
store: { embedded: { path: data/kbgate.db } }
routes:
  - { methods: [GET, HEAD], path: "/v1/article/{id}", permission: "article:read" }
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "ADMIN" => Some("admin-token-0123456789".into()),
            "KB" => Some("kb secret".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, &env)
    }

    #[test]
    fn the_cli_reads_only_the_admin_section() {
        let text = "listen: 127.0.0.1:8080\n\
                    admin: { listen: 0.0.0.0:9191, token: \"${ADMIN}\" }\n\
                    upstream: { url: \"${UNSET_KB}\" }\n";
        let target = admin_target_from(text, &env).unwrap();
        assert_eq!(target.url, "http://127.0.0.1:9191");
        assert_eq!(target.token, "admin-token-0123456789");
        let unset = "admin: { token: \"${UNSET_TOKEN}\" }\n";
        let err = admin_target_from(unset, &env).err().unwrap().to_string();
        assert_eq!(
            err,
            "admin.token: environment variable UNSET_TOKEN is not set"
        );
        let err = admin_target_from("listen: x\n", &env)
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("admin: missing"), "{err}");
        let err = admin_target_from("admin: { tokn: x }\n", &env)
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("admin.tokn: unknown field"), "{err}");
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.admin.token, "admin-token-0123456789");
        assert_eq!(config.upstream.origin.to_string(), "http://127.0.0.1:8081/");
        assert_eq!(config.upstream.base_path, "/api");
        assert_eq!(config.upstream.inject_headers[0].1, "Bearer kb secret");
        assert_eq!(config.upstream.inject_query, "key=kb%20secret");
        assert_eq!(config.hot_tier.max_age, Duration::from_secs(30));
        assert_eq!(config.routes.routes().len(), 1);
        assert!(config.metrics.per_key);
        assert_eq!(config.metrics.per_key_limit, 10_000);
        let off = parse(&format!("{GOOD}metrics: {{ per_key: false }}\n")).unwrap();
        assert!(!off.metrics.per_key);
    }

    #[test]
    fn broken_configs_name_the_field_and_the_reason() {
        let cases = [
            (
                GOOD.replace("article:read", "articel:read"),
                "routes[0].permission: unknown resource \"articel\"",
            ),
            (
                GOOD.replace("listen: 127.0.0.1:8080", "listen: nowhere"),
                "listen: \"nowhere\" is not an IP:port address",
            ),
            (
                GOOD.replace("${ADMIN}", "${MISSING}"),
                "admin.token: environment variable MISSING is not set",
            ),
            (
                GOOD.replace("store:", "colour: blue\nstore:"),
                "unknown field `colour`",
            ),
            (
                GOOD.replace("http://127.0.0.1:8081/api/", "ftp://x"),
                "upstream.url: must start with http:// or https://",
            ),
            (GOOD.replace("[GET, HEAD]", "[]"), "routes[0].methods"),
            (
                GOOD.replace(
                    "embedded: { path: data/kbgate.db }",
                    "embedded: { path: data/kbgate.db, size: 3 }",
                ),
                "store.embedded.size: unknown field `size`",
            ),
            (
                GOOD.replace("${ADMIN}", "short"),
                "admin.token: must be at least 16 characters",
            ),
            (
                GOOD.replace("store: { embedded: { path: data/kbgate.db } }", "store: {}"),
                "store: choose a store",
            ),
            (
                format!("{GOOD}metrics: {{ per_key_limit: 0 }}\n"),
                "metrics.per_key_limit: must be at least 1",
            ),
            (
                GOOD.replace("url: http", "url: 5\n  timeout: soon\n  x: http"),
                "upstream",
            ),
        ];
        for (text, expected) in cases {
            let message = error_of(&text);
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn sizes_take_bytes_or_a_unit() {
        let size = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("512KiB"), Ok(512 * 1024));
        assert_eq!(size("10 MiB"), Ok(10 << 20));
        assert_eq!(size("1GB"), Ok(1_000_000_000));
        assert_eq!(size("0"), Ok(0));
        assert!(size("ten").is_err());
        assert!(size("5 parsecs").is_err());
        assert!(size("-1").is_err());
        assert!(size("99999999999999999999GiB").is_err());
        let config = parse(&format!(
            "{GOOD}limits: {{ max_body: 1MiB, max_header_size: 2048, body_timeout: 2s }}\n"
        ))
        .unwrap();
        assert_eq!(config.limits.max_body, 1 << 20);
        assert_eq!(config.limits.max_header_size, 2048);
        assert_eq!(config.limits.body_timeout, Duration::from_secs(2));
        assert_eq!(config.limits.max_uri_length, 8 * 1024, "the default");
        let error = error_of(&format!("{GOOD}limits: {{ max_uri_length: 1MiB }}\n"));
        assert!(
            error.contains("limits.max_uri_length: must be between"),
            "{error}"
        );
        let error = error_of(&format!("{GOOD}limits: {{ max_body: lots }}\n"));
        assert!(error.contains("limits.max_body"), "{error}");
    }

    #[test]
    fn the_embedded_cache_size_is_a_size_with_a_default() {
        let cache_size = |config: Config| match config.store {
            StoreConfig::Embedded { cache_size, .. } => cache_size,
            StoreConfig::Redis(_) => panic!("not embedded"),
        };
        assert_eq!(cache_size(parse(GOOD).unwrap()), 64 << 20);
        let small = GOOD.replace(
            "embedded: { path: data/kbgate.db }",
            "embedded: { path: data/kbgate.db, cache_size: 16MiB }",
        );
        assert_eq!(cache_size(parse(&small).unwrap()), 16 << 20);
        let error = error_of(&GOOD.replace(
            "embedded: { path: data/kbgate.db }",
            "embedded: { path: data/kbgate.db, cache_size: big }",
        ));
        assert!(error.contains("store.embedded.cache_size"), "{error}");
    }

    #[test]
    fn redis_stores() {
        let store = |section: &str| {
            let text = GOOD.replace("store: { embedded: { path: data/kbgate.db } }", section);
            parse(&text).map(|c| c.store)
        };
        let single =
            store("store: { redis: { url: \"rediss://:${KB}@cache.internal:6380/0\" } }").unwrap();
        let StoreConfig::Redis(redis) = single else {
            panic!("not redis")
        };
        assert_eq!(
            redis.urls,
            vec!["rediss://:kb secret@cache.internal:6380/0".to_string()]
        );
        assert!(!redis.cluster);
        assert_eq!(redis.prefix, "kbgate:");
        assert!(
            !format!("{redis:?}").contains("secret"),
            "Debug hides the URL and its password"
        );

        let cluster = store("store: { redis: { cluster: [\"redis://a:7000\", \"redis://b:7001\"], prefix: \"kb:\" } }").unwrap();
        let StoreConfig::Redis(redis) = cluster else {
            panic!("not redis")
        };
        assert!(redis.cluster);
        assert_eq!(
            redis.prefix, "{kb:}",
            "a hash tag keeps every key in one slot"
        );

        let errors = [
            (
                "store: { redis: { url: \"http://x\" } }",
                "store.redis.url: must be a redis://",
            ),
            (
                "store: { redis: { url: \"redis://x\", cluster: [\"redis://y\"] } }",
                "store.redis: give either url or cluster",
            ),
            (
                "store: { redis: { cluster: [] } }",
                "store.redis.cluster: needs at least one node URL",
            ),
            (
                "store: { redis: { url: \"redis://x\", prefix: \"\" } }",
                "store.redis.prefix: must not be empty",
            ),
            (
                "store: { embedded: { path: a.db }, redis: { url: \"redis://x\" } }",
                "store: choose one store",
            ),
        ];
        for (section, expected) in errors {
            let message = store(section).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn env_references_expand_inside_strings() {
        assert_eq!(expand_string("a ${KB} b", &env).unwrap(), "a kb secret b");
        assert!(expand_string("${KB", &env).is_err());
        assert!(expand_string("${a-b}", &env).is_err());
        assert_eq!(expand_string("plain", &env).unwrap(), "plain");
    }
}
