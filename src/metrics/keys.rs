//! Per-key metrics, when `metrics.per_key` is on:
//!
//! - `kbgate_key_requests_total{key_id}`: requests with a verified key. Each existing key's
//!   counter is registered at 0 (at start and on create), so `increase()` sees its first use;
//!   past `per_key_limit` keys, requests count under `key_id="other"`.
//! - `kbgate_key_info{key_id,name,scope} 1`: one series per existing key with its own counter
//!   (the same cap), so PromQL can put names on ids. Rendered here rather than through the
//!   recorder because the recorder cannot drop a series, and a renamed or deleted key must lose
//!   its old one. Keys past the cap get no name series: their requests have no id to join on,
//!   and a million-key store would otherwise put a million series in every scrape.

use super::{KEY_INFO, KEY_REQUESTS, escape};
use crate::FastMap;
use metrics::{Counter, counter};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The key label that counts every key past `metrics.per_key_limit`.
pub(crate) const OTHER_KEYS: &str = "other";

/// What `kbgate_key_info` says of one key.
#[derive(Clone, Copy, Debug)]
pub struct KeyLabels<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// `read` or `read_write`.
    pub scope: &'static str,
}

pub struct KeyMetrics {
    /// key id -> (name, scope), sorted so the output is stable.
    info: RwLock<BTreeMap<String, (String, &'static str)>>,
    /// Bumped by every `set` and `remove`, so a store listing that raced with a change made
    /// here is not allowed to undo it.
    changes: AtomicU64,
    limit: usize,
    counters: FastMap<Arc<str>, Counter>,
    other: Counter,
}

impl KeyMetrics {
    pub fn new(per_key_limit: usize) -> KeyMetrics {
        KeyMetrics {
            info: RwLock::default(),
            changes: AtomicU64::new(0),
            limit: per_key_limit,
            counters: FastMap::default(),
            other: counter!(KEY_REQUESTS, "key_id" => OTHER_KEYS),
        }
    }

    /// Counts one request for a verified key (the request path: a map lookup and an add).
    pub(crate) fn count(&self, id: &Arc<str>) {
        match self.counters.get(id) {
            Some(counter) => counter.increment(1),
            None => self.counter(id).increment(1),
        }
    }

    /// The key's own counter, registered now if the cap allows, else the shared one.
    fn counter(&self, id: &str) -> Counter {
        if let Some(counter) = self.counters.get(id) {
            return counter.clone();
        }
        if self.counters.len() >= self.limit {
            return self.other.clone();
        }
        self.counters
            .entry(id.into())
            .or_insert_with(|| counter!(KEY_REQUESTS, "key_id" => id.to_string()))
            .clone()
    }

    /// Registers the key's counter at 0, so `increase()` sees its first request.
    fn register(&self, id: &str) {
        let _registered = self.counter(id);
    }

    /// Adds or updates a key (after create, edit, rotate).
    pub(crate) fn set(&self, key: KeyLabels<'_>) {
        self.register(key.id);
        let mut keys = self.write();
        if self.counters.contains_key(key.id) {
            keys.insert(key.id.to_string(), (key.name.to_string(), key.scope));
        }
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn remove(&self, id: &str) {
        let mut keys = self.write();
        keys.remove(id);
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// Call before listing the store; pass the result to [`KeyMetrics::replace_all`].
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Replaces everything with the store's keys (at start, and periodically for changes made
    /// through other instances on a shared store), unless a key changed here since `changes`
    /// was read: then the listing may be stale and the next refresh tries again.
    pub(crate) fn replace_all(&self, all: &[KeyLabels<'_>], changes: u64) {
        for key in all {
            self.register(key.id);
        }
        let mut keys = self.write();
        if self.changes() == changes {
            *keys = all
                .iter()
                .filter(|k| self.counters.contains_key(k.id))
                .map(|k| (k.id.to_string(), (k.name.to_string(), k.scope)))
                .collect();
        }
    }

    /// `metrics.per_key_limit`: how many keys have their own series.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the series in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {KEY_INFO} Always 1: one series per key, to join names onto key_id.\n\
             # TYPE {KEY_INFO} gauge"
        );
        for (id, (name, scope)) in self.read().iter() {
            let _ = writeln!(
                out,
                "{KEY_INFO}{{key_id=\"{}\",name=\"{}\",scope=\"{}\"}} 1",
                escape(id),
                escape(name),
                scope
            );
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, (String, &'static str)>> {
        self.info.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, (String, &'static str)>> {
        self.info.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(id: &'a str, name: &'a str) -> KeyLabels<'a> {
        KeyLabels {
            id,
            name,
            scope: "read",
        }
    }

    #[test]
    fn renders_escaped_sorted_series_and_forgets_deleted_keys() {
        let info = KeyMetrics::new(10);
        let a = key("key_a", "Chatbot \"prod\" \\ eu");
        let b = key("key_b", "Export");
        info.set(a);
        info.set(b);
        let mut text = String::new();
        info.render(&mut text);
        assert!(text.starts_with("# HELP kbgate_key_info "), "{text}");
        let line = format!(
            "kbgate_key_info{{key_id=\"{}\",name=\"Chatbot \\\"prod\\\" \\\\ eu\",scope=\"read\"}} 1",
            a.id
        );
        assert!(text.contains(&line), "{text}");
        info.remove(a.id);
        let mut text = String::new();
        info.render(&mut text);
        assert!(!text.contains(a.id) && text.contains(b.id), "{text}");
        let before = info.changes();
        info.set(a);
        info.replace_all(&[], before);
        assert_eq!(
            info.len(),
            2,
            "a listing older than a change is not applied"
        );
        info.replace_all(&[], info.changes());
        assert!(info.is_empty());
    }
}
