//! The audit trail's model: one entry per change to a key or an admin token, chained by blake3
//! (each entry's `hash` covers the previous entry's hash and its own canonical JSON), so an
//! entry edited or removed in the store breaks the chain where it happened. The stores append
//! an entry in the same write as its change ([`crate::keys::AuditStore`]); this module only
//! builds, seals and checks entries.

use crate::keys::KeyRecord;
use crate::keys::admin_token::Role;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `prev_hash` of the very first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who made a change: an admin token, the config's bootstrap token, or `policy` (automatic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub id: String,
    pub name: String,
    pub role: Role,
}

impl Actor {
    /// The bootstrap token from the config (`admin.token`).
    pub fn config() -> Actor {
        Actor {
            id: "config".into(),
            name: "admin.token from the config".into(),
            role: Role::Admin,
        }
    }

    /// The key-hygiene policies (`keys.unused_policy`): changes no person asked for.
    pub fn policy() -> Actor {
        Actor {
            id: "policy".into(),
            name: "keys.unused_policy".into(),
            role: Role::Operator,
        }
    }
}

/// Who made a change and from where: what every change carries into its audit entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Context {
    /// A change made by the bootstrap actor from no particular client (tools, tests).
    pub fn config() -> Context {
        Context {
            actor: Actor::config(),
            ip: None,
            user_agent: None,
        }
    }

    /// A change the policies make on their own (the daily sweeps).
    pub fn policy() -> Context {
        Context {
            actor: Actor::policy(),
            ip: None,
            user_agent: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.updated")]
    KeyUpdated,
    #[serde(rename = "key.enabled")]
    KeyEnabled,
    #[serde(rename = "key.disabled")]
    KeyDisabled,
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "key.deleted")]
    KeyDeleted,
    #[serde(rename = "admin_token.created")]
    AdminTokenCreated,
    #[serde(rename = "admin_token.deleted")]
    AdminTokenDeleted,
    #[serde(rename = "webhook.created")]
    WebhookCreated,
    #[serde(rename = "webhook.updated")]
    WebhookUpdated,
    #[serde(rename = "webhook.deleted")]
    WebhookDeleted,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::KeyCreated,
        Action::KeyUpdated,
        Action::KeyEnabled,
        Action::KeyDisabled,
        Action::KeyRotated,
        Action::KeyDeleted,
        Action::AdminTokenCreated,
        Action::AdminTokenDeleted,
        Action::WebhookCreated,
        Action::WebhookUpdated,
        Action::WebhookDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::KeyCreated => "key.created",
            Action::KeyUpdated => "key.updated",
            Action::KeyEnabled => "key.enabled",
            Action::KeyDisabled => "key.disabled",
            Action::KeyRotated => "key.rotated",
            Action::KeyDeleted => "key.deleted",
            Action::AdminTokenCreated => "admin_token.created",
            Action::AdminTokenDeleted => "admin_token.deleted",
            Action::WebhookCreated => "webhook.created",
            Action::WebhookUpdated => "webhook.updated",
            Action::WebhookDeleted => "webhook.deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// What a change was made to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `key` or `admin_token`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub name: String,
}

impl Target {
    pub fn key(record: &KeyRecord) -> Target {
        Target {
            kind: "key".into(),
            id: record.id.clone(),
            name: record.name.clone(),
        }
    }
}

/// One field's change in an edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    pub from: Value,
    pub to: Value,
}

pub type Changes = BTreeMap<String, FieldChange>;

/// An entry before the store gives it its place in the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    pub time: DateTime<Utc>,
    pub context: Context,
    pub action: Action,
    pub target: Target,
    pub changes: Changes,
}

impl NewEntry {
    pub fn new(context: &Context, action: Action, target: Target, changes: Changes) -> NewEntry {
        NewEntry {
            time: Utc::now(),
            context: context.clone(),
            action,
            target,
            changes,
        }
    }

    /// The entry that follows `head` in the chain.
    pub fn seal(&self, head: &ChainHead) -> Entry {
        let mut entry = Entry {
            id: entry_id(head.seq + 1),
            time: self.time,
            actor: self.context.actor.clone(),
            ip: self.context.ip.clone(),
            user_agent: self.context.user_agent.clone(),
            action: self.action,
            target: self.target.clone(),
            changes: self.changes.clone(),
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.computed_hash();
        entry
    }
}

/// An audit entry as stored and shown. Never holds a secret or a secret's hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `aud_` + the entry's place in the chain, 16 digits: ids sort as the chain does.
    pub id: String,
    pub time: DateTime<Utc>,
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub action: Action,
    pub target: Target,
    #[serde(default)]
    pub changes: Changes,
    pub prev_hash: String,
    pub hash: String,
}

fn entry_id(seq: u64) -> String {
    format!("aud_{seq:016}")
}

/// The place in the chain an entry id names.
pub fn seq_of(id: &str) -> Option<u64> {
    id.strip_prefix("aud_")
        .filter(|digits| digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
}

impl Entry {
    pub fn seq(&self) -> u64 {
        seq_of(&self.id).unwrap_or(0)
    }

    /// blake3 over the previous hash and the entry's canonical JSON (without `hash`).
    pub fn computed_hash(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.remove("hash");
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical_json(&value).as_bytes());
        hasher.finalize().to_hex().to_string()
    }

    /// The chain's head once this entry is appended.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq(),
            hash: self.hash.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        // Strings, numbers and timestamps only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// JSON with every object's keys sorted and no spaces: the same text for the same value,
/// whatever order the fields were written in.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// The last entry of the chain (or, when none is left, the anchor pruning recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.into(),
        }
    }

    /// `"<seq> <hash>"`, as the stores keep it.
    pub fn to_text(&self) -> String {
        format!("{} {}", self.seq, self.hash)
    }

    pub fn parse(text: &str) -> Option<ChainHead> {
        let (seq, hash) = text.split_once(' ')?;
        Some(ChainHead {
            seq: seq.parse().ok()?,
            hash: hash.to_string(),
        })
    }
}

/// Everything verify needs: where the kept chain starts, its entries oldest first, its head.
#[derive(Debug, Default)]
pub struct Chain {
    /// The last pruned entry (None: nothing was pruned; the chain starts at genesis).
    pub anchor: Option<ChainHead>,
    pub entries: Vec<Entry>,
    pub head: Option<ChainHead>,
}

/// The outcome of walking the chain.
#[derive(Debug, Serialize, PartialEq)]
pub struct Verification {
    pub ok: bool,
    pub entries: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Walks the chain from its anchor: each entry must follow the one before (place, previous
/// hash), hash to its own `hash`, and the last one must be the recorded head.
pub fn verify(chain: &Chain) -> Verification {
    let mut previous = chain.anchor.clone().unwrap_or_else(ChainHead::genesis);
    let bad = |id: &str, reason: &str, n: usize| Verification {
        ok: false,
        entries: n,
        first_bad: Some(id.to_string()),
        reason: Some(reason.to_string()),
    };
    for (n, entry) in chain.entries.iter().enumerate() {
        if entry.seq() != previous.seq + 1 {
            return bad(&entry.id, "an entry before this one is missing", n);
        }
        if entry.prev_hash != previous.hash {
            return bad(&entry.id, "prev_hash is not the previous entry's hash", n);
        }
        if entry.computed_hash() != entry.hash {
            return bad(&entry.id, "the entry does not match its hash", n);
        }
        previous = entry.head();
    }
    let n = chain.entries.len();
    if let Some(head) = &chain.head
        && *head != previous
    {
        return bad(&entry_id(head.seq), "the newest entries are missing", n);
    }
    Verification {
        ok: true,
        entries: n,
        first_bad: None,
        reason: None,
    }
}

/// A key's fields as an edit's `changes` compares them: its stored form without its secrets
/// (hashes) and bookkeeping. Fields added to [`KeyRecord`] later are compared too.
pub fn key_fields(record: &KeyRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for field in ["secrets", "updated_at", "created_at", "id"] {
            map.remove(field);
        }
    }
    value
}

/// `{field: {from, to}}` for every top-level field that differs between two objects.
pub fn diff(before: &Value, after: &Value) -> Changes {
    let empty = serde_json::Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let from = before.get(name).cloned().unwrap_or(Value::Null);
            let to = after.get(name).cloned().unwrap_or(Value::Null);
            (from != to).then(|| (name.clone(), FieldChange { from, to }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(name: &str) -> NewEntry {
        NewEntry::new(
            &Context::config(),
            Action::KeyCreated,
            Target {
                kind: "key".into(),
                id: "key_1".into(),
                name: name.into(),
            },
            Changes::new(),
        )
    }

    fn chain_of(n: usize) -> Chain {
        let mut head = ChainHead::genesis();
        let mut entries = Vec::new();
        for i in 0..n {
            let sealed = entry(&format!("k{i}")).seal(&head);
            head = sealed.head();
            entries.push(sealed);
        }
        Chain {
            anchor: None,
            entries,
            head: Some(head),
        }
    }

    #[test]
    fn a_sealed_chain_verifies() {
        let chain = chain_of(3);
        assert_eq!(chain.entries[0].id, "aud_0000000000000001");
        assert_eq!(chain.entries[1].prev_hash, chain.entries[0].hash);
        assert_eq!(
            verify(&chain),
            Verification {
                ok: true,
                entries: 3,
                first_bad: None,
                reason: None
            }
        );
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut chain = chain_of(3);
        chain.entries[1].target.name = "forged".into();
        let outcome = verify(&chain);
        assert!(!outcome.ok);
        assert_eq!(
            outcome.first_bad.as_deref(),
            Some(chain.entries[1].id.as_str())
        );
    }

    #[test]
    fn removed_entries_are_found() {
        let mut chain = chain_of(4);
        chain.entries.remove(1);
        assert_eq!(
            verify(&chain).first_bad.as_deref(),
            Some("aud_0000000000000003")
        );
        let mut chain = chain_of(4);
        chain.entries.pop();
        assert_eq!(
            verify(&chain).first_bad.as_deref(),
            Some("aud_0000000000000004")
        );
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_anchor() {
        let mut chain = chain_of(4);
        let pruned: Vec<Entry> = chain.entries.drain(..2).collect();
        assert!(!verify(&chain).ok, "without the anchor");
        chain.anchor = Some(pruned[1].head());
        assert!(verify(&chain).ok);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
    }

    #[test]
    fn diff_names_each_changed_field() {
        let changes = diff(
            &json!({"name": "a", "enabled": true, "scope": "read"}),
            &json!({"name": "b", "enabled": true, "scope": "read", "quota": 5}),
        );
        assert_eq!(
            serde_json::to_value(&changes).unwrap(),
            json!({"name": {"from": "a", "to": "b"}, "quota": {"from": null, "to": 5}})
        );
    }

    #[test]
    fn actions_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                json!(action.as_str())
            );
        }
    }
}
