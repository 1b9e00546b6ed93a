//! The expiry sweep: `key.expiring` when an enabled key comes within one of
//! `keys.expiry_warnings` of its expiry (the tightest lead passed, once per lead), and
//! `key.expired` once it has expired. Each event is claimed in the store under the key, its
//! expiry and the lead, so a restart or a second gateway does not repeat it, and a key whose
//! expiry is moved is warned again.

use crate::keys::listing::AgeMark;
use crate::keys::outbox::Event;
use crate::keys::service::{KeyService, KeyServiceError};
use crate::keys::{KeyRecord, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use std::time::Duration;

/// Keys read from the store at a time.
pub const PAGE: usize = 500;
/// How long after its expiry a key still gets its `key.expired` (a gateway down longer than
/// this lets it pass unsaid); its claim is kept a day longer.
const EXPIRED_WINDOW: TimeDelta = TimeDelta::days(30);

/// What one sweep emitted.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    pub expiring: usize,
    pub expired: usize,
}

/// Sweeps every key once, oldest first, a page at a time.
pub async fn sweep(
    keys: &KeyService,
    warnings: &[Duration],
    now: DateTime<Utc>,
) -> Result<Swept, KeyServiceError> {
    let mut swept = Swept::default();
    let mut after: Option<AgeMark> = None;
    loop {
        let page = keys.page_exact(after.as_ref(), PAGE).await?;
        for record in &page {
            check(keys, record, warnings, now, &mut swept).await?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(AgeMark::of(last)),
            _ => return Ok(swept),
        }
    }
}

async fn check(
    keys: &KeyService,
    record: &KeyRecord,
    warnings: &[Duration],
    now: DateTime<Utc>,
    swept: &mut Swept,
) -> Result<(), StoreError> {
    let Some(at) = record.expires_at.filter(|_| record.enabled) else {
        return Ok(());
    };
    let key = json!({"id": record.id, "name": record.name});
    let stamp = at.timestamp_millis();
    if at <= now {
        if now - at > EXPIRED_WINDOW {
            return Ok(());
        }
        let event = Event::new("key.expired", json!({"key": key, "expires_at": at}));
        let name = format!("key.expired:{}:{stamp}", record.id);
        let until = at + EXPIRED_WINDOW + TimeDelta::days(1);
        if keys.store().claim(&name, until, Some(&event)).await? {
            swept.expired += 1;
        }
        return Ok(());
    }
    let left = (at - now).to_std().unwrap_or_default();
    let Some(lead) = warnings.iter().filter(|lead| left <= **lead).min() else {
        return Ok(());
    };
    let event = Event::new(
        "key.expiring",
        json!({
            "key": key,
            "expires_at": at,
            "lead_seconds": lead.as_secs(),
            "expires_in_seconds": left.as_secs(),
        }),
    );
    let name = format!("key.expiring:{}:{stamp}:{}", record.id, lead.as_secs());
    if keys
        .store()
        .claim(&name, at + TimeDelta::days(1), Some(&event))
        .await?
    {
        swept.expiring += 1;
    }
    Ok(())
}
