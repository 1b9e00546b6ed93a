//! What is stored about a key. Never the secret itself: only its blake3 hash and a short `start`.

use crate::authz::{Permission, Scope};
use crate::keys::limits::{Quota, RateLimit};
use crate::keys::secret::{KeyHash, NewSecret};
use crate::metrics::keys::KeyLabels;
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// How many retired secrets a key remembers (to answer `key_expired` rather than `invalid_key`).
const MAX_RETIRED_SECRETS: usize = 5;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// An allowlist that narrows the scope; empty means the whole scope.
    pub permissions: Vec<Permission>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The current secret last; older ones carry the end of their rotation grace.
    pub secrets: Vec<SecretEntry>,
    /// Per-key limits (see `keys::limits`); absent in records written before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// The networks a client must come from; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
    /// Filled in by the store when it reads a record; written only through `add_usage`.
    #[serde(skip)]
    pub usage: Usage,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    /// blake3 hash of the secret, hex.
    pub hash: String,
    pub start: String,
    /// None for the current secret; the end of the grace period for a rotated one.
    pub retires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub request_count: u64,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Requests counted in memory since the last flush, for one key.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageDelta {
    pub key_id: String,
    pub requests: u64,
    pub last_used_at: DateTime<Utc>,
    /// The same requests by hour and outcome (usage history); their `requests` add up to
    /// `requests`.
    pub hours: Vec<crate::keys::history::HourCounts>,
}

impl KeyRecord {
    /// A read key named `name`, created at `created`, with a fresh secret: for unit tests.
    #[cfg(test)]
    pub(crate) fn sample(name: &str, created: DateTime<Utc>) -> KeyRecord {
        let new = crate::keys::secret::generate();
        KeyRecord::new(
            name.into(),
            crate::authz::Scope::Read,
            vec![],
            None,
            &new,
            created,
        )
    }

    /// What `kbgate_key_info` says of this key.
    pub fn metric_labels(&self) -> KeyLabels<'_> {
        KeyLabels {
            id: &self.id,
            name: &self.name,
            scope: match self.scope {
                Scope::Read => "read",
                Scope::ReadWrite => "read_write",
            },
        }
    }

    /// A new enabled key holding `secret` as its only secret.
    pub fn new(
        name: String,
        scope: Scope,
        permissions: Vec<Permission>,
        expires_at: Option<DateTime<Utc>>,
        secret: &NewSecret,
        now: DateTime<Utc>,
    ) -> KeyRecord {
        KeyRecord {
            id: new_id(),
            name,
            scope,
            permissions,
            enabled: true,
            created_at: now,
            updated_at: now,
            expires_at,
            secrets: vec![SecretEntry {
                hash: secret.hash.to_hex(),
                start: secret.start.clone(),
                retires_at: None,
            }],
            rate_limit: None,
            quota: None,
            allowed_cidrs: Vec::new(),
            usage: Usage::default(),
        }
    }

    /// The display start of the current secret.
    pub fn start(&self) -> &str {
        self.secrets.last().map_or("", |s| s.start.as_str())
    }

    pub fn hashes(&self) -> impl Iterator<Item = KeyHash> + '_ {
        self.secrets
            .iter()
            .filter_map(|s| KeyHash::from_hex(&s.hash))
    }

    pub fn secret_for(&self, hash: &KeyHash) -> Option<&SecretEntry> {
        let hex = hash.to_hex();
        self.secrets.iter().find(|s| s.hash == hex)
    }

    /// Makes `secret` current; the secrets in use so far stay valid until `now + grace`.
    pub fn rotate(&mut self, secret: &NewSecret, grace: chrono::Duration, now: DateTime<Utc>) {
        let retires_at = now + grace;
        for old in &mut self.secrets {
            if old.retires_at.is_none_or(|at| at > retires_at) {
                old.retires_at = Some(retires_at);
            }
        }
        self.secrets.push(SecretEntry {
            hash: secret.hash.to_hex(),
            start: secret.start.clone(),
            retires_at: None,
        });
        let excess = self.secrets.len().saturating_sub(MAX_RETIRED_SECRETS + 1);
        self.secrets.drain(..excess);
        self.updated_at = now;
    }
}

/// Public ids: `key_` + 16 lowercase base36 characters (82 bits), safe in URLs, logs and labels.
fn new_id() -> String {
    prefixed_id("key_")
}

/// `prefix` + 16 lowercase base36 characters (82 bits): the public ids of keys and tokens.
pub(crate) fn prefixed_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut id = String::from(prefix);
    for _ in 0..16 {
        id.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::secret;

    fn record() -> KeyRecord {
        KeyRecord::new(
            "t".into(),
            Scope::Read,
            vec![],
            None,
            &secret::generate(),
            Utc::now(),
        )
    }

    #[test]
    fn rotation_keeps_the_old_secret_until_the_grace_ends() {
        let mut rec = record();
        let now = Utc::now();
        let old = rec.secrets[0].hash.clone();
        let new = secret::generate();
        rec.rotate(&new, chrono::Duration::seconds(60), now);
        assert_eq!(rec.secrets.len(), 2);
        assert_eq!(rec.secrets[0].hash, old);
        assert_eq!(
            rec.secrets[0].retires_at,
            Some(now + chrono::Duration::seconds(60))
        );
        assert_eq!(rec.secret_for(&new.hash).unwrap().retires_at, None);
        assert_eq!(rec.start(), new.start);
    }

    #[test]
    fn a_second_rotation_never_extends_an_earlier_grace() {
        let mut rec = record();
        let now = Utc::now();
        rec.rotate(&secret::generate(), chrono::Duration::seconds(10), now);
        rec.rotate(&secret::generate(), chrono::Duration::seconds(100), now);
        assert_eq!(
            rec.secrets[0].retires_at,
            Some(now + chrono::Duration::seconds(10))
        );
        assert_eq!(
            rec.secrets[1].retires_at,
            Some(now + chrono::Duration::seconds(100))
        );
    }

    #[test]
    fn retired_secrets_are_bounded() {
        let mut rec = record();
        for _ in 0..20 {
            rec.rotate(&secret::generate(), chrono::Duration::zero(), Utc::now());
        }
        assert_eq!(rec.secrets.len(), MAX_RETIRED_SECRETS + 1);
        assert_eq!(rec.secrets.last().unwrap().retires_at, None);
    }

    #[test]
    fn ids_look_public() {
        let id = new_id();
        assert!(id.starts_with("key_") && id.len() == 20);
        assert_ne!(id, new_id());
    }
}
