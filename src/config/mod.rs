//! Configuration: YAML -> `${ENV}` expansion (`env.rs`) -> raw serde structs, unknown fields
//! refused (`schema.rs`) -> `validate()` (`validate.rs`) -> a typed [`Config`]. Every error
//! names the field it is about. The typed settings of the gateway's parts are theirs
//! (`server::Limits`, `keys::StoreConfig`, `upstream::UpstreamConfig`, ...): config builds them.

mod env;
mod schema;
mod units;
mod validate;
mod validate_store;
mod validate_upstream;

pub use schema::{QuerySpec, RouteSpec};
pub use units::ByteSize;
pub use validate::PLACEHOLDER_ADMIN_TOKENS;

use crate::authz::routes::RouteTable;
use crate::keys::keyring::CacheLimits;
use crate::keys::{KeySources, StoreConfig};
use crate::net::CidrList;
use crate::server::{Limits, TlsFiles};
use crate::upstream::UpstreamConfig;
use schema::RawConfig;
use serde::Deserialize;
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
    /// `usage.history_retention`: hours older than this are pruned from the usage history.
    pub usage_history_retention: Duration,
    pub limits: Limits,
    /// `limits.headers`, `limits.on_store_error` and `key_defaults`.
    pub limit_settings: crate::limits::LimitSettings,
    pub log_format: LogFormat,
    pub log_level: String,
    pub metrics: MetricsConfig,
    /// `None` unless `cors:` is set: browser clients are opt-in.
    pub cors: Option<crate::cors::Cors>,
    /// How long audit entries are kept (`audit.retention`, default 365d).
    pub audit_retention: Duration,
    /// `webhooks:` event deliveries.
    pub webhooks: crate::events::WebhookSettings,
    /// `keys.expiry_warnings`, `keys.unused_policy`, `keys.sweep_interval`.
    pub hygiene: crate::events::hygiene::HygieneSettings,
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
        env::expand_env(&mut value, &mut String::new(), env)?;
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

/// Where `kbgate keys …` finds the admin API.
pub struct AdminTarget {
    pub url: String,
    pub token: String,
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
    env::expand_env(&mut admin, &mut "admin".to_string(), env)?;
    let raw: schema::RawAdmin = serde_path_to_error::deserialize(admin).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "admin".to_string()
        } else {
            format!("admin.{field}")
        };
        field_error(field, e.into_inner().to_string())
    })?;
    let mut addr = validate::parse_addr("admin.listen", &raw.listen)?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(AdminTarget {
        url: format!("http://{addr}"),
        token: raw.token,
    })
}

#[cfg(test)]
mod tests {
    use super::env::expand_string;
    use super::*;
    use crate::authz::DEFAULT_RESOURCES;

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
        assert_eq!(config.audit_retention, Duration::from_secs(365 * 86_400));
        let kept = parse(&format!("{GOOD}audit: {{ retention: 30d }}\n")).unwrap();
        assert_eq!(kept.audit_retention, Duration::from_secs(30 * 86_400));
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
                format!("{GOOD}audit: {{ retention: 0s }}\n"),
                "audit.retention: must be above zero",
            ),
            (
                format!("{GOOD}audit: {{ retention: a year }}\n"),
                "audit.retention: ",
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
    fn key_hygiene_settings_default_and_are_checked() {
        use crate::events::hygiene::{HygieneSettings, UnusedAction, UnusedPolicy};
        let day = Duration::from_secs(86_400);
        assert_eq!(parse(GOOD).unwrap().hygiene, HygieneSettings::default());
        assert_eq!(
            HygieneSettings::default().expiry_warnings,
            [14 * day, 7 * day, day]
        );
        let keys = |text: &str| parse(&format!("{GOOD}keys: {text}\n")).map(|c| c.hygiene);
        let set = keys(
            "{ expiry_warnings: [1d, 30d], unused_policy: { after: 90d, action: disable }, \
             sweep_interval: 1m }",
        )
        .unwrap();
        assert_eq!(set.expiry_warnings, [30 * day, day], "longest first");
        assert_eq!(set.notice_lead(), Some(30 * day));
        assert_eq!(
            set.unused,
            Some(UnusedPolicy {
                after: 90 * day,
                action: UnusedAction::Disable
            })
        );
        assert_eq!(set.sweep_interval, Duration::from_secs(60));
        for (text, expected) in [
            (
                "{ expiry_warnings: [7d, 0s] }",
                "keys.expiry_warnings[1]: must be above zero",
            ),
            (
                "{ unused_policy: { after: 1h, action: report } }",
                "keys.unused_policy.after: must be at least 1d",
            ),
            (
                "{ unused_policy: { after: 90d, action: delete } }",
                "keys.unused_policy.action",
            ),
            (
                "{ sweep_interval: 0s }",
                "keys.sweep_interval: must be above zero",
            ),
        ] {
            let message = keys(text).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
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
