//! A single key as a `label: value` block, and the one-time secret after create and rotate.

use chrono::{DateTime, Utc};

use super::key::{Key, time_text};

/// Width of the label column, so values line up.
const LABEL_WIDTH: usize = 13;

/// One line per field, in the order an owner reads them.
pub fn key_block(key: &Key, now: DateTime<Utc>) -> String {
    let fields = [
        ("id", key.id.clone()),
        ("name", key.name_text()),
        (
            "start",
            key.start.clone().unwrap_or_else(|| "-".to_string()),
        ),
        ("scope", key.scope.clone()),
        ("permissions", key.permissions_text()),
        ("status", key.status(now).to_string()),
        ("expires", time_text(key.expires_at, "never")),
        ("last used", time_text(key.last_used_at, "never")),
        ("requests", key.request_count.to_string()),
        ("rate limit", key.rate_limit_text()),
        ("quota", key.quota_text()),
        ("addresses", key.allowed_text()),
        ("created", time_text(key.created_at, "-")),
        ("updated", time_text(key.updated_at, "-")),
    ];
    let mut text: String = fields
        .iter()
        .map(|(label, value)| format!("{:<LABEL_WIDTH$}{value}\n", format!("{label}:")))
        .collect();
    // Each secret on its own line, the current one first; after a rotation, when the old
    // one stops working (`kbgate keys rotate ID --end-grace` ends that now).
    for (i, secret) in key.secrets.iter().rev().enumerate() {
        let label = if i == 0 { "secrets:" } else { "" };
        let state = match secret.retires_at {
            None => "current".to_string(),
            Some(at) if at > now => {
                format!("works until {} (rotation grace)", time_text(Some(at), ""))
            }
            Some(at) => format!("stopped {}", time_text(Some(at), "")),
        };
        text.push_str(&format!("{label:<LABEL_WIDTH$}{}… {state}\n", secret.start));
    }
    text
}

/// The secret goes alone on its line so it can be copied whole; the warning says why to copy it now.
pub fn secret_notice(secret: &str) -> String {
    format!("\nsecret (shown only this once, store it now):\n{secret}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::key::tests::{now, sample};
    use serde_json::json;

    #[test]
    fn a_key_is_shown_as_aligned_fields() {
        let mut json = sample();
        json["permissions"] = json!(["article:read"]);
        json["expires_at"] = json!("2026-01-01T00:00:00Z");
        json["request_count"] = json!(42);
        let want = "\
id:          key_01
name:        chatbot
start:       kb_7Hq2
scope:       read
permissions: article:read
status:      enabled
expires:     2026-01-01 00:00:00 UTC
last used:   never
requests:    42
rate limit:  -
quota:       -
addresses:   any
created:     2025-01-02 03:04:05 UTC
updated:     2025-01-03 00:00:00 UTC
";
        assert_eq!(key_block(&Key::from_json(&json).unwrap(), now()), want);
    }

    #[test]
    fn limits_are_shown_in_words() {
        let mut json = sample();
        json["rate_limit"] = json!({"requests": 100, "window_seconds": 60});
        json["quota"] = json!({"requests": 1000, "period": "month", "counts": "all"});
        json["quota_state"] =
            json!({"used": 12, "remaining": 988, "resets_at": "2026-01-01T00:00:00Z"});
        json["allowed_cidrs"] = json!(["203.0.113.0/24", "2001:db8::/32"]);
        let block = key_block(&Key::from_json(&json).unwrap(), now());
        assert!(
            block.contains("rate limit:  100 per 60 s, bursts of 100\n"),
            "{block}"
        );
        assert!(
            block.contains("quota:       12 of 1000 per month (all requests)\n"),
            "{block}"
        );
        assert!(
            block.contains("addresses:   203.0.113.0/24, 2001:db8::/32\n"),
            "{block}"
        );
    }

    #[test]
    fn secrets_are_listed_current_first_with_their_grace() {
        let mut json = sample();
        json["secrets"] = json!([
            {"start": "kb_old01", "retires_at": "2025-05-01T00:00:00Z"},
            {"start": "kb_prev2", "retires_at": "2025-06-02T00:00:00Z"},
            {"start": "kb_7Hq2", "retires_at": null}
        ]);
        let text = key_block(&Key::from_json(&json).unwrap(), now());
        let want = "\
secrets:     kb_7Hq2… current
             kb_prev2… works until 2025-06-02 00:00:00 UTC (rotation grace)
             kb_old01… stopped 2025-05-01 00:00:00 UTC
";
        assert!(text.ends_with(want), "{text}");
    }

    #[test]
    fn the_secret_stands_alone_on_its_line() {
        let notice = secret_notice("kb_SECRET");
        let lines: Vec<&str> = notice.lines().collect();
        assert_eq!(lines.last(), Some(&"kb_SECRET"));
        assert!(notice.contains("only this once"));
    }
}
