//! Admin tokens: who may use the admin API, and how much. A token has a role (viewer <
//! operator < admin), the secret format of keys behind its own prefix (`kbadm_`: random,
//! checksummed, shown once) and, at rest, only the blake3 hash of its secret.

use crate::keys::secret::{self, KeyHash, NewSecret};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every admin token starts with this, so it is never mistaken for a key.
pub const PREFIX: &str = "kbadm_";

/// What a token may do; each role may do everything the ones below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads keys, usage and the audit trail.
    Viewer,
    /// Also creates, edits, enables/disables and rotates keys.
    Operator,
    /// Also deletes keys and manages admin tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored admin token: never the secret, only its hash and display start.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// blake3 of the secret, hex.
    pub hash: String,
    pub start: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The actor id of whoever created it.
    pub created_by: String,
}

impl AdminTokenRecord {
    /// A new token record holding `secret`.
    pub fn new(
        name: String,
        role: Role,
        expires_at: Option<DateTime<Utc>>,
        secret: &NewSecret,
        created_by: String,
        now: DateTime<Utc>,
    ) -> AdminTokenRecord {
        AdminTokenRecord {
            id: new_id(),
            name,
            role,
            hash: secret.hash.to_hex(),
            start: secret.start.clone(),
            created_at: now,
            expires_at,
            created_by,
        }
    }

    pub fn key_hash(&self) -> Option<KeyHash> {
        KeyHash::from_hex(&self.hash)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A new admin token secret.
pub fn generate() -> NewSecret {
    secret::generate_prefixed(PREFIX)
}

/// Prefix, length, alphabet and checksum of an admin token: checked before any lookup.
pub fn is_well_formed(candidate: &str) -> bool {
    secret::is_well_formed_prefixed(candidate, PREFIX)
}

/// Public ids: `adm_` + 16 lowercase base36 characters.
fn new_id() -> String {
    crate::keys::record::prefixed_id("adm_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_their_own_prefix_and_checksum() {
        let token = generate();
        assert!(token.secret.starts_with("kbadm_"));
        assert!(is_well_formed(&token.secret));
        assert!(!crate::keys::secret::is_well_formed(&token.secret));
        assert!(!is_well_formed(&crate::keys::secret::generate().secret));
        assert!(token.secret.starts_with(&token.start));
        let mut broken = token.secret.into_bytes();
        broken[8] = if broken[8] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(std::str::from_utf8(&broken).unwrap()));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(
            serde_json::to_string(&Role::Operator).unwrap(),
            "\"operator\""
        );
    }
}
