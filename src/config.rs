//! Configuration: YAML -> `${ENV}` expansion -> raw serde structs (unknown fields refused) ->
//! `validate()` -> a typed [`Config`]. Every error names the field it is about.

use crate::authz::DEFAULT_RESOURCES;
use crate::authz::routes::{QueryDefinition, RouteDefinition, RouteTable};
use crate::keys::embedded::DEFAULT_CACHE_SIZE;
use crate::keys::keyring::CacheLimits;
use crate::keys::redis::RedisConfig;
use crate::keys::{KeySources, StoreConfig};
use crate::net::CidrList;
use crate::server::{Limits, TlsFiles};
use crate::upstream::UpstreamConfig;
use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use std::borrow::Cow;
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
    /// The gateway's origin as clients see it: links and redirects to the KB are rewritten to it.
    #[serde(default)]
    public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs or addresses).
    #[serde(default)]
    trusted_proxies: Vec<String>,
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
    keys: RawKeys,
    #[serde(default)]
    usage: RawUsage,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    cors: Option<RawCors>,
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
        }
    }
}

/// `cors:` (absent: off). See [`crate::cors`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Vec<String>,
    #[serde(default = "default_cors_headers")]
    allowed_headers: Vec<String>,
    #[serde(default = "default_cors_max_age", with = "humantime_serde")]
    max_age: Duration,
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
    /// Forward request header names with underscores (nginx's `underscores_in_headers`).
    #[serde(default)]
    forward_underscore_headers: bool,
    #[serde(default)]
    preserve_host: bool,
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
struct RawKeys {
    sources: Vec<String>,
}

impl Default for RawKeys {
    fn default() -> Self {
        RawKeys {
            sources: ["authorization", "x-api-key", "query:key"]
                .map(String::from)
                .to_vec(),
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
    /// Peers whose `X-Forwarded-For` is appended to and read for the client's address.
    pub trusted_proxies: CidrList,
    pub tls: Option<TlsFiles>,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub resources: Vec<String>,
    pub routes: RouteTable,
    pub hot_tier: CacheLimits,
    pub key_sources: KeySources,
    pub usage_flush_interval: Duration,
    pub limits: Limits,
    pub log_format: LogFormat,
    pub log_level: String,
    pub metrics: MetricsConfig,
    /// `None` unless `cors:` is set: browser clients are opt-in.
    pub cors: Option<crate::cors::Cors>,
}

/// Per-key metrics: `kbgate_key_requests_total{key_id}` and `kbgate_key_info`.
#[derive(Debug, Clone, Copy)]
pub struct MetricsConfig {
    pub per_key: bool,
    /// Keys beyond this many are counted under `key_id="other"`.
    pub per_key_limit: usize,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: String,
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
        let dir = config_dir(path);
        Config::parse_in(&text, &|name| std::env::var(name).ok(), Some(&dir))
    }

    /// Parses YAML text, expanding `${ENV}` references from the process environment.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, &|name| std::env::var(name).ok())
    }

    /// Parses YAML text; relative file paths stay relative to the current directory.
    pub fn parse_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_in(text, env, None)
    }

    /// Parses YAML text; relative file paths in it (`store.embedded.path`, `tls.cert`,
    /// `tls.key`, `upstream.ca`) are taken relative to `dir`, the config file's folder.
    pub fn parse_in(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        dir: Option<&Path>,
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
        raw.validate(dir)
    }
}

/// The folder of a config file, absolute when the current directory is known, so the paths
/// resolved against it do not change meaning if the process changes directory.
fn config_dir(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// `path` relative to `dir` when it is relative and a folder is given.
fn resolve(dir: Option<&Path>, path: PathBuf) -> PathBuf {
    match dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

/// Reads a config file and returns its admin listener URL and token.
pub fn admin_target(path: &Path) -> Result<AdminTarget, ConfigError> {
    let config = Config::load(path)?;
    let mut addr = config.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(AdminTarget {
        url: format!("http://{addr}"),
        token: config.admin.token,
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

/// Admin tokens that kbgate's own files have published as examples (deploy/, README, config/):
/// long enough to pass the length check, so refused by name. Compared ignoring ASCII case.
pub const PLACEHOLDER_ADMIN_TOKENS: &[&str] = &[
    "REPLACE-with-at-least-16-random-characters",
    "REPLACE-with-the-knowledge-base-credential",
];

/// A known placeholder, or any token written as an instruction to replace it.
fn is_placeholder_token(token: &str) -> bool {
    PLACEHOLDER_ADMIN_TOKENS
        .iter()
        .any(|p| token.eq_ignore_ascii_case(p))
        || token
            .get(..8)
            .is_some_and(|start| start.eq_ignore_ascii_case("replace-"))
}

/// `IP:port`, `[IPv6]:port`, or `localhost:port`, which is 127.0.0.1 (one listener binds one
/// address; IPv6 clients can use `[::1]:port`). No other name is looked up.
fn parse_addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let localhost = s
        .rsplit_once(':')
        .filter(|(host, _)| host.eq_ignore_ascii_case("localhost"))
        .and_then(|(_, port)| port.parse::<u16>().ok());
    if let Some(port) = localhost {
        return Ok((std::net::Ipv4Addr::LOCALHOST, port).into());
    }
    s.parse()
        .map_err(|_| field_error(field, format!("{s:?} is not an IP:port address")))
}

/// Would binding both addresses clash? The same port on the same IP, or on any IP when
/// either is a wildcard (0.0.0.0 or ::). Port 0 picks a free port for each: no clash.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl RawConfig {
    fn validate(mut self, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let admin = AdminConfig {
            listen: parse_addr("admin.listen", &self.admin.listen)?,
            token: self.admin.token,
        };
        if same_socket(listen, admin.listen) {
            return Err(field_error(
                "admin.listen",
                format!(
                    "{} is the gateway's own address (listen: {listen}); give the admin API \
                     another port",
                    admin.listen
                ),
            ));
        }
        if let Some(tls) = &mut self.tls {
            tls.cert = resolve(dir, std::mem::take(&mut tls.cert));
            tls.key = resolve(dir, std::mem::take(&mut tls.key));
        }
        self.upstream.ca = self.upstream.ca.take().map(|ca| resolve(dir, ca));
        if let Some(embedded) = &mut self.store.embedded {
            embedded.path = resolve(dir, std::mem::take(&mut embedded.path));
        }
        if admin.token.len() < 16 {
            return Err(field_error("admin.token", "must be at least 16 characters"));
        }
        if is_placeholder_token(&admin.token) {
            return Err(field_error(
                "admin.token",
                "is a placeholder published in kbgate's own files: generate a secret one \
                 (e.g. `head -c 24 /dev/urandom | base64`)",
            ));
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
        let definitions: Vec<RouteDefinition> =
            self.routes.iter().cloned().map(Into::into).collect();
        let routes = RouteTable::compile(&definitions, &resources)
            .map_err(|e| field_error(format!("routes[{}].{}", e.index, e.field), e.reason))?;
        let cors = self
            .cors
            .map(|c| {
                let methods = self.routes.iter().flat_map(|r| &r.methods);
                crate::cors::Cors::new(
                    &c.allowed_origins,
                    &c.allowed_headers,
                    c.max_age,
                    methods.filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok()),
                )
                .map_err(|(field, reason)| field_error(field, reason))
            })
            .transpose()?;
        let store = self.store.validate()?;
        if self.hot_tier.max_entries == 0 {
            return Err(field_error("hot_tier.max_entries", "must be at least 1"));
        }
        let key_sources = self.keys.validate()?;
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
        let log_level = crate::log_filter::normalize(self.log.level.as_deref().unwrap_or("info"))
            .map_err(|reason| field_error("log.level", reason))?;
        let trusted_proxies = CidrList::parse(&self.trusted_proxies)
            .map_err(|(i, reason)| field_error(format!("trusted_proxies[{i}]"), reason))?;
        Ok(Config {
            listen,
            trusted_proxies,
            tls: self.tls.map(|t| TlsFiles {
                cert: t.cert,
                key: t.key,
            }),
            admin,
            upstream: UpstreamConfig {
                public_origin: self.public_url.as_deref().map(public_origin).transpose()?,
                ..self.upstream.validate()?
            },
            store,
            resources,
            routes,
            hot_tier: CacheLimits {
                max_age: self.hot_tier.max_age,
                max_entries: self.hot_tier.max_entries,
                negative_ttl: self.hot_tier.negative_ttl,
                negative_max_entries: self.hot_tier.negative_max_entries,
            },
            key_sources,
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
            cors,
        })
    }
}

impl RawKeys {
    fn validate(self) -> Result<KeySources, ConfigError> {
        if self.sources.is_empty() {
            return Err(field_error(
                "keys.sources",
                "must name at least one source (authorization, x-api-key, query:<name>)",
            ));
        }
        let mut sources = KeySources {
            authorization: false,
            x_api_key: false,
            query: None,
        };
        for (i, source) in self.sources.iter().enumerate() {
            let field = format!("keys.sources[{i}]");
            let twice = || field_error(&field, format!("{source:?}: a source is listed twice"));
            if source.eq_ignore_ascii_case("authorization") {
                if std::mem::replace(&mut sources.authorization, true) {
                    return Err(twice());
                }
            } else if source.eq_ignore_ascii_case("x-api-key") {
                if std::mem::replace(&mut sources.x_api_key, true) {
                    return Err(twice());
                }
            } else if let Some(name) = source.strip_prefix("query:") {
                if name.is_empty() {
                    return Err(field_error(
                        &field,
                        "query: needs the parameter's name, e.g. query:key",
                    ));
                }
                if sources.query.is_some() {
                    return Err(field_error(
                        &field,
                        "only one query parameter may hold a key",
                    ));
                }
                sources.query = Some(Cow::Owned(name.to_string()));
            } else {
                return Err(field_error(
                    &field,
                    format!(
                        "unknown key source {source:?} (authorization, x-api-key, query:<name>)"
                    ),
                ));
            }
        }
        Ok(sources)
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
            inject_query_names: self.inject.query.into_keys().collect(),
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            ca: self.ca,
            http2: self.http2,
            forward_underscore_headers: self.forward_underscore_headers,
            preserve_host: self.preserve_host,
            public_origin: None,
        })
    }
}

/// `public_url`: an origin, `http://` or `https://` and a host, nothing after but one `/`.
fn public_origin(url: &str) -> Result<String, ConfigError> {
    let field = "public_url";
    let uri: Uri = url
        .parse()
        .map_err(|e| field_error(field, format!("{url:?} is not a URL: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(field_error(field, "must start with http:// or https://"));
    }
    let authority = match uri.authority() {
        Some(a) if a.as_str().contains('@') => {
            return Err(field_error(field, "must not hold user information"));
        }
        Some(a) if !a.host().is_empty() => a.as_str(),
        _ => return Err(field_error(field, "must name a host")),
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || url.contains('#') {
        return Err(field_error(
            field,
            "must be an origin (scheme://host[:port]), with no path, query or fragment",
        ));
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
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
                GOOD.replace("${ADMIN}", "replace-with-at-least-16-random-characters"),
                "admin.token: is a placeholder",
            ),
            (
                GOOD.replace("${ADMIN}", "REPLACE-me-with-a-random-token"),
                "admin.token: is a placeholder",
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
    fn key_sources_default_and_can_be_narrowed_or_renamed() {
        assert_eq!(parse(GOOD).unwrap().key_sources, KeySources::DEFAULT);
        let sources = |list: &str| {
            parse(&format!("{GOOD}keys: {{ sources: {list} }}\n")).map(|c| c.key_sources)
        };
        assert_eq!(
            sources("[authorization, X-Api-Key]").unwrap(),
            KeySources {
                authorization: true,
                x_api_key: true,
                query: None
            }
        );
        assert_eq!(
            sources("[\"query:kbgate_key\"]").unwrap(),
            KeySources {
                authorization: false,
                x_api_key: false,
                query: Some("kbgate_key".into())
            }
        );
        assert_eq!(
            sources("[authorization, x-api-key, query:key]").unwrap(),
            KeySources::DEFAULT,
            "query:key needs no quotes in a YAML flow list"
        );
        let errors = [
            ("[]", "keys.sources: must name at least one source"),
            (
                "[authorization, cookie]",
                "keys.sources[1]: unknown key source \"cookie\"",
            ),
            (
                "[x-api-key, x-api-key]",
                "keys.sources[1]: \"x-api-key\": a source is listed twice",
            ),
            (
                "[\"query:\"]",
                "keys.sources[0]: query: needs the parameter's name",
            ),
            (
                "[\"query:a\", \"query:b\"]",
                "keys.sources[1]: only one query parameter may hold a key",
            ),
        ];
        for (list, expected) in errors {
            let message = sources(list).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
        let message = error_of(&format!("{GOOD}keys: {{ source: [authorization] }}\n"));
        assert!(
            message.contains("keys.source: unknown field `source`"),
            "{message}"
        );
    }

    #[test]
    fn trusted_proxies_are_networks() {
        assert!(parse(GOOD).unwrap().trusted_proxies.is_empty());
        let config = parse(&format!("trusted_proxies: [10.0.0.0/8, \"::1\"]\n{GOOD}")).unwrap();
        assert!(config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(config.trusted_proxies.contains("::1".parse().unwrap()));
        let error = error_of(&format!(
            "trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n{GOOD}"
        ));
        assert!(
            error
                .starts_with("trusted_proxies[1]: \"10.0.0.0/33\" is not an IP address or network"),
            "{error}"
        );
    }

    #[test]
    fn public_url_is_an_origin() {
        assert_eq!(parse(GOOD).unwrap().upstream.public_origin, None);
        for (url, origin) in [
            (
                "https://KB-Gateway.example.com",
                "https://kb-gateway.example.com",
            ),
            (
                "https://kb-gateway.example.com/",
                "https://kb-gateway.example.com",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
        ] {
            let config = parse(&format!("public_url: \"{url}\"\n{GOOD}")).unwrap();
            assert_eq!(
                config.upstream.public_origin.as_deref(),
                Some(origin),
                "{url}"
            );
        }
        for (url, reason) in [
            (
                "kb-gateway.example.com",
                "must start with http:// or https://",
            ),
            (
                "ftp://kb-gateway.example.com",
                "must start with http:// or https://",
            ),
            ("https://kb-gateway.example.com/kb", "must be an origin"),
            ("https://kb-gateway.example.com/?a=1", "must be an origin"),
            ("https://kb-gateway.example.com/#top", "must be an origin"),
            (
                "https://user:pw@kb-gateway.example.com",
                "must not hold user information",
            ),
            ("https://", "is not a URL"),
            ("not a url", "is not a URL"),
        ] {
            let error = error_of(&format!("public_url: \"{url}\"\n{GOOD}"));
            assert!(
                error.starts_with("public_url: ") && error.contains(reason),
                "{url}: {error}"
            );
        }
        let config =
            parse(&GOOD.replace("  url: http", "  preserve_host: true\n  url: http")).unwrap();
        assert!(config.upstream.preserve_host);
        assert!(!parse(GOOD).unwrap().upstream.preserve_host);
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

    #[test]
    fn route_spec_deserializes_and_denies_unknown_fields() {
        let json = r#"{"methods":["GET"],"path":"/v1/article","permission":"article:read"}"#;
        let spec: RouteSpec = serde_json::from_str(json).expect("deserialize");
        assert_eq!(spec.methods, vec!["GET"]);
        assert_eq!(spec.max_body, None);
        let limited = r#"{"methods":["POST"],"path":"/v1/article","permission":"article:write","max_body":"1MiB"}"#;
        let spec: RouteSpec = serde_json::from_str(limited).expect("deserialize");
        let known: Vec<String> = DEFAULT_RESOURCES.iter().map(|r| r.to_string()).collect();
        let table = RouteTable::compile(&[spec.into()], &known).expect("compile");
        assert_eq!(table.routes()[0].max_body, Some(1 << 20));
        let extra = r#"{"methods":["GET"],"path":"/","permission":"article:read","x":1}"#;
        assert!(serde_json::from_str::<RouteSpec>(extra).is_err());
    }
}
