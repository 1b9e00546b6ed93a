//! API keys: the secret format, the stored record, the stores, and the keyring (hot tier over a
//! store) that verifies a presented secret.

pub mod embedded;
pub mod keyring;
pub mod limits;
mod low_priority;
pub mod record;
pub mod redis;
pub mod secret;
pub mod service;
mod sources;
pub mod store;
pub mod watch;

pub use keyring::{KeyGrant, Keyring, VerifyError};
pub use record::{KeyRecord, SecretEntry, Usage, UsageDelta};
pub use secret::KeyHash;
pub use sources::KeySources;
pub use store::{KeyStore, StoreConfig, StoreError, StoreEvent};
