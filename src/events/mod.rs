//! Events and webhooks: the deliverer that takes events from the store's durable outbox
//! ([`crate::keys::outbox`]) to each webhook, signed per the Standard Webhooks specification,
//! in order per webhook, retried with backoff until `webhooks.retry_for`.
//!
//! - `settings` the typed `webhooks:` settings · `sign` secrets and signatures ·
//!   `target` which URLs may be called (server-side request forgery) · `deliver` one attempt ·
//!   `content` events of KB writes · `deliverer` the loop over webhooks and the outbox ·
//!   `hygiene` the key-hygiene settings and their sweeps: `expiry` (`key.expiring`,
//!   `key.expired`) and `unused` (`keys.unused_policy`) · `limit_events` `quota.threshold`
//!   and `key.rate_limited` · `outbox_metrics` the deliveries and backlog series

pub mod content;
pub mod deliver;
pub mod deliverer;
pub mod expiry;
pub mod hygiene;
pub mod limit_events;
mod outbox_metrics;
pub mod settings;
pub mod sign;
pub mod target;
pub mod unused;

pub use deliverer::Deliverer;
pub use settings::WebhookSettings;
