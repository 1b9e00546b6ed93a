//! API keys: the secret format, the stored record, the stores, and the keyring (hot tier over a
//! store) that verifies a presented secret.

pub mod admin_token;
pub mod audit;
mod audit_store;
pub mod embedded;
mod embedded_index;
pub mod history;
pub mod keyring;
pub mod limits;
pub mod listing;
mod low_priority;
pub mod outbox;
pub mod record;
pub mod redis;
pub mod secret;
pub mod service;
mod sources;
pub mod store;
pub mod watch;

pub use audit_store::{AuditStore, prunable, prune_interval, run_pruning};
pub use keyring::{KeyGrant, Keyring, VerifyError};
pub use outbox::OutboxStore;
pub use record::{KeyRecord, SecretEntry, Usage, UsageDelta};
pub use secret::KeyHash;
pub use sources::KeySources;
pub use store::{KeyStore, StoreConfig, StoreError, StoreEvent};
