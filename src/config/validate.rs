//! From the file's shape to typed settings: one function per section, each error naming its
//! field. The settings types belong to the modules that use them (server, keys, upstream,
//! authz); this is where they are built.

use super::schema::{
    RawAdmin, RawAudit, RawConfig, RawCors, RawHotTier, RawKeyDefaults, RawKeys, RawLimits, RawLog,
    RawMetrics, RawTls, RawUsage, RawWebhooks, RouteSpec,
};
use super::units::ByteSize;
use super::{AdminConfig, Config, ConfigError, LogFormat, MetricsConfig, field_error};
use crate::authz::DEFAULT_RESOURCES;
use crate::authz::routes::{RouteDefinition, RouteTable};
use crate::cors::Cors;
use crate::events::hygiene::{HygieneSettings, UnusedPolicy};
use crate::keys::KeySources;
use crate::keys::keyring::CacheLimits;
use crate::keys::limits::KeyDefaults;
use crate::limits::LimitSettings;
use crate::net::CidrList;
use crate::server::{Limits, TlsFiles};
use crate::upstream::UpstreamConfig;
use http::Uri;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
pub(super) fn parse_addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
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

/// `path` relative to `dir` when it is relative and a folder is given.
fn resolve(dir: Option<&Path>, path: PathBuf) -> PathBuf {
    match dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

impl RawConfig {
    /// Checks the sections in file order, each by its own function, and builds the typed
    /// settings; the first problem found is returned. Relative file paths are taken relative
    /// to `dir` first.
    pub(super) fn validate(mut self, dir: Option<&Path>) -> Result<Config, ConfigError> {
        self.resolve_paths(dir);
        let (listen, admin) = listeners(&self.listen, self.admin)?;
        let tls = self.tls.map(RawTls::validate).transpose()?;
        let (resources, routes) = route_table(self.resources, &self.routes)?;
        let cors = self.cors.map(|c| c.validate(&self.routes)).transpose()?;
        let store = self.store.validate()?;
        let hot_tier = self.hot_tier.validate()?;
        let hygiene = self.keys.hygiene()?;
        let key_sources = self.keys.validate()?;
        let usage_history_retention = self.usage.history_retention()?;
        let usage_flush_interval = self.usage.validate()?;
        let limit_settings = LimitSettings {
            headers: self.limits.headers,
            on_store_error: self.limits.on_store_error,
            defaults: self.key_defaults.validate()?,
        };
        let limits = self.limits.validate()?;
        let metrics = self.metrics.validate()?;
        let audit_retention = self.audit.validate()?;
        let webhooks = self.webhooks.validate()?;
        let (log_format, log_level) = self.log.validate()?;
        let trusted_proxies = CidrList::parse(&self.trusted_proxies)
            .map_err(|(i, reason)| field_error(format!("trusted_proxies[{i}]"), reason))?;
        Ok(Config {
            listen,
            trusted_proxies,
            tls,
            admin,
            upstream: UpstreamConfig {
                public_origin: self.public_url.as_deref().map(public_origin).transpose()?,
                ..self.upstream.validate()?
            },
            store,
            resources,
            routes,
            hot_tier,
            key_sources,
            usage_flush_interval,
            usage_history_retention,
            limits,
            limit_settings,
            log_format,
            log_level,
            metrics,
            cors,
            audit_retention,
            webhooks,
            hygiene,
        })
    }

    /// `store.embedded.path`, `tls.cert`, `tls.key` and `upstream.ca`, relative to `dir`.
    fn resolve_paths(&mut self, dir: Option<&Path>) {
        if let Some(tls) = &mut self.tls {
            tls.cert = resolve(dir, std::mem::take(&mut tls.cert));
            tls.key = resolve(dir, std::mem::take(&mut tls.key));
        }
        self.upstream.ca = self.upstream.ca.take().map(|ca| resolve(dir, ca));
        if let Some(embedded) = &mut self.store.embedded {
            embedded.path = resolve(dir, std::mem::take(&mut embedded.path));
        }
    }
}

/// `listen` and `admin`: two addresses that do not clash, and an admin token that is long and
/// not one kbgate's own files published.
fn listeners(listen: &str, raw: RawAdmin) -> Result<(SocketAddr, AdminConfig), ConfigError> {
    let listen = parse_addr("listen", listen)?;
    let admin = AdminConfig {
        listen: parse_addr("admin.listen", &raw.listen)?,
        token: raw.token,
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
    Ok((listen, admin))
}

impl RawTls {
    fn validate(self) -> Result<TlsFiles, ConfigError> {
        for (field, path) in [("tls.cert", &self.cert), ("tls.key", &self.key)] {
            if !path.is_file() {
                return Err(field_error(
                    field,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        Ok(TlsFiles {
            cert: self.cert,
            key: self.key,
        })
    }
}

/// `resources` (the HelpDocs ones when absent) and `routes`, compiled against them.
fn route_table(
    resources: Option<Vec<String>>,
    specs: &[RouteSpec],
) -> Result<(Vec<String>, RouteTable), ConfigError> {
    let resources: Vec<String> = match resources {
        Some(list) if list.is_empty() => {
            return Err(field_error("resources", "must not be empty"));
        }
        Some(list) => list,
        None => DEFAULT_RESOURCES.iter().map(|s| s.to_string()).collect(),
    };
    if specs.is_empty() {
        return Err(field_error(
            "routes",
            "at least one route is needed (every unmapped route is denied)",
        ));
    }
    let definitions: Vec<RouteDefinition> = specs.iter().cloned().map(Into::into).collect();
    let routes = RouteTable::compile(&definitions, &resources)
        .map_err(|e| field_error(format!("routes[{}].{}", e.index, e.field), e.reason))?;
    Ok((resources, routes))
}

impl RawCors {
    /// Preflights answer for the methods the routes list.
    fn validate(self, routes: &[RouteSpec]) -> Result<Cors, ConfigError> {
        let methods = routes.iter().flat_map(|r| &r.methods);
        Cors::new(
            &self.allowed_origins,
            &self.allowed_headers,
            self.max_age,
            methods.filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok()),
        )
        .map_err(|(field, reason)| field_error(field, reason))
    }
}

impl RawHotTier {
    fn validate(self) -> Result<CacheLimits, ConfigError> {
        if self.max_entries == 0 {
            return Err(field_error("hot_tier.max_entries", "must be at least 1"));
        }
        Ok(CacheLimits {
            max_age: self.max_age,
            max_entries: self.max_entries,
            negative_ttl: self.negative_ttl,
            negative_max_entries: self.negative_max_entries,
        })
    }
}

impl RawAudit {
    /// The retention.
    fn validate(self) -> Result<Duration, ConfigError> {
        if self.retention.is_zero() {
            return Err(field_error("audit.retention", "must be above zero"));
        }
        Ok(self.retention)
    }
}

impl RawWebhooks {
    /// Every duration above zero: a zero timeout or wait would spin.
    fn validate(self) -> Result<crate::events::WebhookSettings, ConfigError> {
        for (field, value) in [
            ("webhooks.timeout", self.timeout),
            ("webhooks.retry_for", self.retry_for),
            ("webhooks.retry_initial", self.retry_initial),
            ("webhooks.retry_max", self.retry_max),
            ("webhooks.poll_interval", self.poll_interval),
            ("webhooks.outbox_retention", self.outbox_retention),
        ] {
            if value.is_zero() {
                return Err(field_error(field, "must be above zero"));
            }
        }
        Ok(crate::events::WebhookSettings {
            allow_private_networks: self.allow_private_networks,
            timeout: self.timeout,
            retry_for: self.retry_for,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            poll_interval: self.poll_interval,
            outbox_retention: self.outbox_retention,
        })
    }
}

impl RawUsage {
    /// The history retention: at least an hour, the history's unit.
    fn history_retention(&self) -> Result<Duration, ConfigError> {
        if self.history_retention < Duration::from_secs(3600) {
            return Err(field_error(
                "usage.history_retention",
                "must be at least 1h (history is kept by the hour)",
            ));
        }
        Ok(self.history_retention)
    }

    /// The flush interval.
    fn validate(self) -> Result<Duration, ConfigError> {
        if self.flush_interval.is_zero() {
            return Err(field_error("usage.flush_interval", "must be above zero"));
        }
        Ok(self.flush_interval)
    }
}

impl RawKeyDefaults {
    fn validate(self) -> Result<KeyDefaults, ConfigError> {
        if let Some(rate) = &self.rate_limit {
            rate.check()
                .map_err(|reason| field_error("key_defaults.rate_limit", reason))?;
        }
        if let Some(quota) = &self.quota {
            quota
                .check()
                .map_err(|reason| field_error("key_defaults.quota", reason))?;
        }
        Ok(KeyDefaults {
            rate_limit: self.rate_limit,
            quota: self.quota,
        })
    }
}

impl RawLimits {
    fn validate(self) -> Result<Limits, ConfigError> {
        let limits = self;
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
        Ok(Limits {
            max_connections: limits.max_connections,
            header_read_timeout: limits.header_read_timeout,
            tls_handshake_timeout: limits.tls_handshake_timeout,
            shutdown_grace: limits.shutdown_grace,
            max_concurrent_streams: limits.max_concurrent_streams,
            max_header_size,
            max_uri_length,
            max_body: limits.max_body.0,
            body_timeout: limits.body_timeout,
        })
    }
}

impl RawMetrics {
    fn validate(self) -> Result<MetricsConfig, ConfigError> {
        if self.per_key_limit == 0 {
            return Err(field_error(
                "metrics.per_key_limit",
                "must be at least 1 (per_key: false switches per-key metrics off)",
            ));
        }
        Ok(MetricsConfig {
            per_key: self.per_key,
            per_key_limit: self.per_key_limit,
        })
    }
}

impl RawLog {
    /// The format, and the level normalized (`info` when absent).
    fn validate(self) -> Result<(LogFormat, String), ConfigError> {
        let level = crate::log_filter::normalize(self.level.as_deref().unwrap_or("info"))
            .map_err(|reason| field_error("log.level", reason))?;
        Ok((self.format, level))
    }
}

impl RawKeys {
    /// `expiry_warnings` (each above zero, longest first, none twice), `unused_policy`
    /// (`after` at least a day: a shorter one would disable keys between two uses) and
    /// `sweep_interval` (above zero).
    fn hygiene(&self) -> Result<HygieneSettings, ConfigError> {
        let mut warnings: Vec<Duration> = self.expiry_warnings.iter().map(|d| **d).collect();
        if let Some(i) = warnings.iter().position(Duration::is_zero) {
            return Err(field_error(
                format!("keys.expiry_warnings[{i}]"),
                "must be above zero",
            ));
        }
        warnings.sort_unstable_by(|a, b| b.cmp(a));
        warnings.dedup();
        if self.sweep_interval.is_zero() {
            return Err(field_error("keys.sweep_interval", "must be above zero"));
        }
        let unused = match &self.unused_policy {
            Some(policy) if policy.after < Duration::from_secs(86_400) => {
                return Err(field_error(
                    "keys.unused_policy.after",
                    "must be at least 1d",
                ));
            }
            Some(policy) => Some(UnusedPolicy {
                after: policy.after,
                action: policy.action,
            }),
            None => None,
        };
        Ok(HygieneSettings {
            expiry_warnings: warnings,
            unused,
            sweep_interval: self.sweep_interval,
            ..HygieneSettings::default()
        })
    }

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
