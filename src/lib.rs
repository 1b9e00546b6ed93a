//! kbgate: an authenticating reverse proxy that puts named, scoped, revocable API keys in front
//! of an existing knowledge-base HTTP API.
//!
//! # The request path
//!
//! ```text
//! accept (HTTP/1.1, HTTP/2, optional TLS)      server.rs
//!   -> check the request       CONNECT, Upgrade, sizes, Host, framing gateway/checks.rs
//!   -> canonical path          400 invalid_path                       path.rs   
//!   -> extract key             401 missing_key / 400 ambiguous_key    gateway/key_source.rs
//!   -> check key format        401 invalid_key (no lookup)            keys/secret.rs
//!   -> verify                  hot tier, then store                   keys/keyring.rs
//!   -> authorize               route table -> permission -> grant?    authz/
//!   -> forward                 pooled client, header hygiene,         upstream.rs
//!                              body limits (413, 408)                 gateway/body_guard.rs
//!   -> meter                   per-key usage, batched to the store    usage.rs
//!                              Prometheus metrics, access log          metrics/, gateway/mod.rs
//! ```
//!
//! Every refusal is one JSON body from one enum ([`rejection::Rejection`]).
//!
//! # Layout
//!
//! `config` the file format: serde shapes, `${ENV}`, units, validate() -> the parts' settings ·
//! `path` canonical request paths, anything ambiguous refused ·
//! `authz` permissions, scopes, grants; `authz::routes` the route table (compile, lookup, print) ·
//! `cors` browser clients (opt-in) · `app` wires the parts and runs them · `server` listeners,
//! TLS, limits, graceful shutdown · `gateway` the request path: `handle` over `admit` (checks,
//! path, key, verify, route, grant) then `forward`; `checks`, `key_source`, `body_guard` · `rejection` refusals -> responses ·
//! `keys` secrets, records, stores, hot tier ·
//! `upstream` the forwarding client · `usage` per-key counters · `metrics` Prometheus names and
//! handles, per-key series · `admin` the admin API (with `/metrics`) · `cli` `kbgate keys …` ·
//! `migrate` copies keys between stores · `log_format` lays out log lines (the access line
//! fast) · `log_sink` writes them in batches off the request path · `access_log` the access
//! line and when it is written · `log_filter` checks `log.level`/`RUST_LOG` · `demo` the sample
//! KB and the one-command tour.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod authz;
pub mod body;
pub mod cli;
pub mod config;
pub mod cors;
pub mod demo;
pub mod gateway;
pub mod keys;
pub mod links;
pub mod log_filter;
pub mod log_format;
pub mod log_sink;
pub mod metrics;
pub mod migrate;
pub mod net;
pub mod path;
pub mod rejection;
pub mod server;
pub mod upstream;
pub mod usage;

pub use app::{Running, start};
pub use config::Config;

/// The concurrent maps of the request path (hot tier, metrics, usage), hashed with foldhash
/// instead of the default SipHash: a lookup hashes twice (shard, then slot), and SipHash was
/// most of its cost. Their keys are blake3 hashes and ids the gateway made, not raw input.
pub type FastMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;
