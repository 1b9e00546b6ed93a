//! The admin API's key object, as far as the tables and blocks need it.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::error::CliError;

#[derive(Deserialize, Debug)]
pub struct Key {
    pub id: String,
    pub name: Option<String>,
    pub start: Option<String>,
    pub scope: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    pub enabled: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub request_count: u64,
    /// Oldest first, the current one last (older admin APIs send none).
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Per-key limits, as the API shows them (older admin APIs send none).
    #[serde(default)]
    pub rate_limit: Option<Value>,
    #[serde(default)]
    pub quota: Option<Value>,
    #[serde(default)]
    pub quota_state: Option<Value>,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// One of a key's secrets: its start, and when it stops working (None: the current one).
#[derive(Deserialize, Debug)]
pub struct Secret {
    pub start: String,
    pub retires_at: Option<DateTime<Utc>>,
}

/// `GET /v1/keys` answers `{"keys":[…]}`.
#[derive(Deserialize)]
struct KeyList {
    keys: Vec<Key>,
}

impl Key {
    pub fn from_json(value: &Value) -> Result<Key, CliError> {
        Key::deserialize(value).map_err(|e| unexpected("key", e))
    }

    pub fn list_from_json(value: &Value) -> Result<Vec<Key>, CliError> {
        KeyList::deserialize(value)
            .map(|list| list.keys)
            .map_err(|e| unexpected("key list", e))
    }

    /// `100 per 60 s, bursts of 10`, or `-`.
    pub fn rate_limit_text(&self) -> String {
        let Some(rate) = &self.rate_limit else {
            return "-".into();
        };
        let burst = rate.get("burst").unwrap_or(&rate["requests"]);
        format!(
            "{} per {} s, bursts of {burst}",
            rate["requests"], rate["window_seconds"]
        )
    }

    /// `12 of 1000 per month (successful requests)`, or `-`; a default quota has no own
    /// settings but a state.
    pub fn quota_text(&self) -> String {
        let used = self.quota_state.as_ref().map(|s| s["used"].clone());
        match (&self.quota, used) {
            (Some(q), used) => format!(
                "{} of {} per {} ({} requests)",
                used.unwrap_or(Value::from(0)),
                q["requests"],
                q["period"].as_str().unwrap_or("?"),
                q["counts"].as_str().unwrap_or("successful"),
            ),
            (None, Some(used)) => format!("{used} used (the default quota)"),
            (None, None) => "-".into(),
        }
    }

    /// The allowed networks, or `any`.
    pub fn allowed_text(&self) -> String {
        if self.allowed_cidrs.is_empty() {
            "any".into()
        } else {
            self.allowed_cidrs.join(", ")
        }
    }

    /// Disabled wins over expired: enabling is what the owner can act on first.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        match self.expires_at {
            _ if !self.enabled => "disabled",
            Some(at) if at <= now => "expired",
            _ => "enabled",
        }
    }

    /// Names are free text; control characters could rewrite the terminal, so they become `?`.
    pub fn name_text(&self) -> String {
        match self.name.as_deref() {
            None | Some("") => "-".to_string(),
            Some(name) => name
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        }
    }

    /// An empty list means the whole scope, which is easy to misread as "nothing".
    pub fn permissions_text(&self) -> String {
        if self.permissions.is_empty() {
            format!("all ({})", self.scope)
        } else {
            self.permissions.join(", ")
        }
    }
}

fn unexpected(what: &str, error: serde_json::Error) -> CliError {
    CliError::UnexpectedResponse(format!("{what} not understood: {error}"))
}

/// Times in UTC to the second: the API's sub-second digits only widen the table.
pub fn time_text(time: Option<DateTime<Utc>>, none: &str) -> String {
    match time {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => none.to_string(),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    /// A key as the admin API returns it.
    pub fn sample() -> Value {
        json!({
            "id": "key_01",
            "name": "chatbot",
            "start": "kb_7Hq2",
            "scope": "read",
            "permissions": [],
            "enabled": true,
            "created_at": "2025-01-02T03:04:05.123456Z",
            "updated_at": "2025-01-03T00:00:00Z",
            "expires_at": null,
            "last_used_at": null,
            "request_count": 0
        })
    }

    pub fn now() -> DateTime<Utc> {
        "2025-06-01T00:00:00Z".parse().unwrap()
    }

    fn key_with(field: &str, value: Value) -> Key {
        let mut json = sample();
        json[field] = value;
        Key::from_json(&json).unwrap()
    }

    #[test]
    fn status_follows_enabled_then_expiry() {
        assert_eq!(key_with("enabled", json!(true)).status(now()), "enabled");
        assert_eq!(key_with("enabled", json!(false)).status(now()), "disabled");
        assert_eq!(
            key_with("expires_at", json!("2025-05-31T23:59:59Z")).status(now()),
            "expired"
        );
        assert_eq!(
            key_with("expires_at", json!("2025-06-01T00:00:01Z")).status(now()),
            "enabled"
        );
    }

    #[test]
    fn names_are_made_safe_to_print() {
        assert_eq!(
            key_with("name", json!("ci\u{1b}[2Jbot")).name_text(),
            "ci?[2Jbot"
        );
        assert_eq!(key_with("name", json!(null)).name_text(), "-");
    }

    #[test]
    fn empty_permissions_read_as_the_whole_scope() {
        assert_eq!(
            key_with("permissions", json!([])).permissions_text(),
            "all (read)"
        );
        let narrowed = key_with("permissions", json!(["article:read", "search:read"]));
        assert_eq!(narrowed.permissions_text(), "article:read, search:read");
    }

    #[test]
    fn times_are_shown_to_the_second() {
        let key = Key::from_json(&sample()).unwrap();
        assert_eq!(time_text(key.created_at, "-"), "2025-01-02 03:04:05 UTC");
        assert_eq!(time_text(key.last_used_at, "never"), "never");
    }

    #[test]
    fn odd_responses_are_reported_not_panicked_on() {
        let err = Key::from_json(&json!({"id": 5})).unwrap_err();
        assert!(err.to_string().starts_with("unexpected response"), "{err}");
        assert!(Key::list_from_json(&json!({"items": []})).is_err());
        assert_eq!(
            Key::list_from_json(&json!({"keys": [sample()]}))
                .unwrap()
                .len(),
            1
        );
    }
}
