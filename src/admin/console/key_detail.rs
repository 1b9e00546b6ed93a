//! View 4, one key: its settings, the usage chart (per hour or per day, by how requests
//! ended), hints from good key hygiene, and the key's audit trail.

use super::chart::{Bar, usage_chart};
use super::form::{Form, encode};
use super::key_bits::{more_menu, permissions_text, scope_label, status, when};
use super::trail::entries_table;
use super::{Endpoint, Signed};
use crate::admin::audit::Query;
use crate::admin::{Admin, ApiError};
use crate::body::Body;
use crate::keys::KeyRecord;
use crate::keys::audit::Action;
use crate::keys::history::{HourCounts, hour_of};
use chrono::{DateTime, Utc};
use http::{Method, Response};
use maud::{Markup, html};

/// "unused for N days: consider deleting it" from this many days.
const UNUSED_HINT_DAYS: i64 = 30;
/// "older than N days: consider rotating it" from this many days since the last new secret.
const ROTATE_HINT_DAYS: i64 = 90;
/// The chart's spans: 48 hours by hour, or 30 days by day.
const HOURS_SHOWN: i64 = 48;
const DAYS_SHOWN: i64 = 30;
const TRAIL_ENTRIES: usize = 20;

/// Advice the key's use and age call for; `secret_since` is when its secret was made (its
/// last rotation, else its creation).
fn hints(record: &KeyRecord, secret_since: DateTime<Utc>, now: DateTime<Utc>) -> Vec<String> {
    let mut hints = Vec::new();
    let idle_since = record.usage.last_used_at.unwrap_or(record.created_at);
    let idle = (now - idle_since).num_days();
    if idle >= UNUSED_HINT_DAYS {
        hints.push(format!("Unused for {idle} days: consider deleting it."));
    }
    let age = (now - secret_since).num_days();
    if age >= ROTATE_HINT_DAYS {
        hints.push(format!("Older than {age} days: consider rotating it."));
    }
    hints
}

/// `hours` (sparse) as `count` bars of `size` hours each, the last ending with `end`.
fn bars(hours: &[HourCounts], end: i64, size: i64, count: i64) -> Vec<Bar> {
    let first = end - size * count;
    (0..count)
        .map(|i| {
            let start = first + i * size;
            let mut total = HourCounts::empty(start);
            for hour in hours
                .iter()
                .filter(|h| (start..start + size).contains(&h.hour))
            {
                total.add(hour);
            }
            let at = DateTime::from_timestamp(start * 3600, 0).unwrap_or_default();
            let label = match size {
                1 => at.format("%Y-%m-%d %H:00").to_string(),
                _ => at.format("%Y-%m-%d").to_string(),
            };
            Bar::of(label, &total)
        })
        .collect()
}

impl Admin {
    pub(super) async fn key_detail(
        &self,
        signed: &Signed,
        id: &str,
        form: &Form,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Key, Method::GET)?;
        let record = self.keys.get(id).await?;
        let now = Utc::now();
        let by_day = form.get("by") == Some("day");
        let (size, count, end) = match by_day {
            true => (24, DAYS_SHOWN, (hour_of(now.timestamp()) / 24 + 1) * 24),
            false => (1, HOURS_SHOWN, hour_of(now.timestamp()) + 1),
        };
        let hours = self
            .keys
            .usage_history(&record.id, end - size * count, end)
            .await?;
        let chart = usage_chart(&bars(&hours, end, size, count));
        let limit = TRAIL_ENTRIES.to_string();
        let trail_query = encode([("key_id", record.id.as_str()), ("limit", &limit)]);
        let (entries, _) = self.audit_page(Query::parse(Some(&trail_query))?).await?;
        let secret_since = entries
            .iter()
            .find(|e| e.action == Action::KeyRotated)
            .map_or(record.created_at, |e| e.time);
        let content = html! {
            (more_menu(&record, &signed.viewer, "detail"))
            @for hint in hints(&record, secret_since, now) { p.hint { (hint) } }
            (settings(&record, now))
            section aria-labelledby="usage" {
                h2 #usage { "Usage" }
                nav.tabs aria-label="Chart span" {
                    a href={ "?by=hour" } aria-current=[(!by_day).then_some("page")] { "Last 48 hours, by hour" }
                    a href={ "?by=day" } aria-current=[by_day.then_some("page")] { "Last 30 days, by day" }
                }
                (chart)
            }
            section aria-labelledby="trail" {
                h2 #trail { "Audit trail" }
                (entries_table(&entries))
                p { a href={ "/console/audit?key=" (record.id) } { "All of this key's audit entries" } }
            }
        };
        Ok(signed.page(&record.name, content))
    }
}

fn settings(record: &KeyRecord, now: DateTime<Utc>) -> Markup {
    html! {
        dl.settings {
            dt { "Id" } dd { code { (record.id) } }
            dt { "Start" } dd { code { (record.start()) "…" } }
            dt { "Scope" } dd { (scope_label(record.scope)) }
            dt { "Specific permissions" } dd { (permissions_text(record)) }
            dt { "Status" } dd { (status(record, now)) }
            dt { "Created" } dd { (when(Some(record.created_at))) }
            dt { "Expires" } dd { (when(record.expires_at)) }
            dt { "Last used" } dd { (when(record.usage.last_used_at)) }
            dt { "Requests" } dd { (record.usage.request_count) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Scope;
    use crate::keys::secret;

    fn key(created_days_ago: i64, used_days_ago: Option<i64>, now: DateTime<Utc>) -> KeyRecord {
        let created = now - chrono::Duration::days(created_days_ago);
        let mut record = KeyRecord::new(
            "k".into(),
            Scope::Read,
            vec![],
            None,
            &secret::generate(),
            created,
        );
        record.usage.last_used_at = used_days_ago.map(|d| now - chrono::Duration::days(d));
        record
    }

    #[test]
    fn hints_follow_use_and_age() {
        let now = Utc::now();
        let hints_of = |record: KeyRecord| hints(&record, record.created_at, now);
        assert!(hints_of(key(5, Some(1), now)).is_empty());
        assert_eq!(
            hints_of(key(40, None, now)),
            ["Unused for 40 days: consider deleting it."]
        );
        // Rotated a day ago: the secret is new, whatever the key's age.
        let old = key(120, Some(1), now);
        assert!(hints(&old, now - chrono::Duration::days(1), now).is_empty());
        assert_eq!(
            hints_of(key(120, Some(31), now)),
            [
                "Unused for 31 days: consider deleting it.",
                "Older than 120 days: consider rotating it."
            ]
        );
    }

    #[test]
    fn buckets_cover_the_span_with_no_gaps() {
        let mut busy = HourCounts::empty(99);
        busy.requests = 3;
        busy.upstream = [3, 0, 0, 0];
        let bars = bars(&[busy], 100, 1, 48);
        assert_eq!(bars.len(), 48);
        assert_eq!(bars[47].answered, 3);
        assert_eq!(bars.iter().map(Bar::total).sum::<u64>(), 3);
        let days = super::bars(&[HourCounts::empty(0)], 24 * 30, 24, 30);
        assert_eq!(days.len(), 30);
    }
}
