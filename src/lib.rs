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
//!   -> forward                 kept-open connections, header hygiene, upstream/
//!                              body limits (413, 408)                 gateway/body_guard.rs
//!   -> meter                   per-key usage, batched to the store    usage.rs
//!                              Prometheus metrics, access log          metrics/, gateway/mod.rs
//! ```
//!
//! Every refusal is one JSON body from one enum ([`rejection::Rejection`]).
//!
//! # Layout
//!
//! Arrows point down only: a module uses the floors below it, never one above.
//!
//! - floor 1: `body` the boxed body type · `path` canonical request paths, anything ambiguous
//!   refused · `net` CIDR lists and the client address behind trusted proxies · `log_format`,
//!   `log_sink`, `log_filter`, `log_direct` log lines, batched writes, level words, the access
//!   line's route past tracing · `metrics` Prometheus
//!   names and handles on plain labels (`process` the process_* series) · `authz` permissions,
//!   scopes, grants
//! - floor 2: `authz::routes` the route table · `keys` secrets, records, stores (each owns its
//!   settings), `keyring` (hot tier + verify -> `VerifyError`), `service` (the key lifecycle,
//!   audited), `admin_token` (roles), `audit` (entries, the hash chain), `audit_store` (the
//!   audited writes each store makes in one write), `listing` (paged, filtered lists by
//!   cursor), `history` (usage per key per hour), `watch` (change feed, hot-tier sweep,
//!   key-info refresh) · `upstream` the forwarding client (`ForwardError`), header hygiene,
//!   `connections` kept open on hyper's client connections · `links` Location/Link
//!   rewriting · `server` accept loop, TLS, its limits · `cors` browser clients (opt-in)
//! - floor 3: `rejection` the refusal enum, its class, and `From` the domain errors · `usage`
//!   per-key counters and their history by hour and outcome · `access_log` the access line and
//!   when it is written · `limits` per-key rate, quota and address decisions and their headers
//! - floor 4: `gateway` `handle` over `admit` (checks, path, key, verify, route, grant) then
//!   `forward`; `checks`, `key_source`, `body_guard` · `admin` the admin API (with `/metrics`;
//!   `access` tokens and roles, `tokens`, `audit`; `console` the web page at `/console/`)
//!   · `config` the file format: serde shapes, `${ENV}`, units, `validate` -> the parts' settings
//! - floor 5: `app` builds the gateway and the admin API as values and runs them
//! - floor 6: `cli` `kbgate keys …`, `admin-tokens …`, `audit …` · `migrate` copies keys,
//!   admin tokens and the audit trail between stores · `demo` the sample KB and the one-command
//!   tour

mod access_log;
pub mod admin;
#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod app;
pub mod authz;
pub mod body;
pub mod cli;
mod coarse_timer;
pub mod config;
mod cors;
pub mod demo;
mod drain;
pub mod events;
pub mod gateway;
mod head_deadline;
pub mod keys;
pub mod limits;
mod links;
pub mod log_direct;
pub mod log_filter;
pub mod log_format;
pub mod log_sink;
pub mod metrics;
pub mod migrate;
mod net;
pub mod path;
pub mod rejection;
pub mod server;
mod upstream;
pub mod usage;

pub use app::{Running, start};
pub use config::Config;

/// The concurrent maps of the request path (hot tier, metrics, usage), hashed with foldhash
/// instead of the default SipHash: a lookup hashes twice (shard, then slot), and SipHash was
/// most of its cost. Their keys are blake3 hashes and ids the gateway made, not raw input.
pub type FastMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;

/// Locks `mutex`, poisoned or not: a panic elsewhere leaves what it guards (timer slabs,
/// idle connections, log buffers) usable, and the gateway goes on serving.
pub(crate) fn lock<T: ?Sized>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
