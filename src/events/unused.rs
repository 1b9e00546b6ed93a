//! The unused-key sweep (`keys.unused_policy`): every enabled key not used for `after` (a key
//! never used counts from its creation) gets `key.unused`, and with `action: disable` is
//! disabled through the key lifecycle, audited with the caller's context (actor `policy` on
//! the daily sweep), which emits `key.disabled`. Each key is handled once per unused stretch:
//! the claims are named by the key and the time it was last used (or created), so a key used
//! again and then left again is handled again, while a key an operator enables again by hand
//! is left alone until then. A dry run only lists.

use crate::events::expiry::PAGE;
use crate::events::hygiene::{UnusedAction, UnusedPolicy};
use crate::keys::KeyRecord;
use crate::keys::audit::Context;
use crate::keys::listing::AgeMark;
use crate::keys::outbox::Event;
use crate::keys::service::{KeyService, KeyServiceError};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

/// How long a handled stretch is remembered: past any `after` worth setting.
const CLAIM_FOR: TimeDelta = TimeDelta::days(5 * 365);

/// How long one gateway holds a key's unused handling: ample for a claim and a disable.
const LEASE: TimeDelta = TimeDelta::minutes(10);

/// A key the sweep found unused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnusedKey {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// False when this sweep left it: a dry run, or handled before (here or elsewhere).
    pub handled: bool,
}

/// Lists (and unless `dry_run`, handles) the keys unused for `policy.after` at `now`.
pub async fn sweep(
    keys: &KeyService,
    policy: &UnusedPolicy,
    dry_run: bool,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Vec<UnusedKey>, KeyServiceError> {
    let after = TimeDelta::from_std(policy.after).unwrap_or(TimeDelta::MAX);
    let Some(cutoff) = now.checked_sub_signed(after) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let mut mark: Option<AgeMark> = None;
    loop {
        let page = keys.page_exact(mark.as_ref(), PAGE).await?;
        for record in &page {
            let since = record.usage.last_used_at.unwrap_or(record.created_at);
            if !record.enabled || since > cutoff {
                continue;
            }
            let handled = !dry_run && handle(keys, record, since, policy.action, ctx).await?;
            found.push(UnusedKey {
                id: record.id.clone(),
                name: record.name.clone(),
                created_at: record.created_at,
                last_used_at: record.usage.last_used_at,
                handled,
            });
        }
        match page.last() {
            Some(last) if page.len() == PAGE => mark = Some(AgeMark::of(last)),
            _ => return Ok(found),
        }
    }
}

/// Emits `key.unused` and disables the key when the policy says so; false when this
/// stretch was handled before.
async fn handle(
    keys: &KeyService,
    record: &KeyRecord,
    since: DateTime<Utc>,
    action: UnusedAction,
    ctx: &Context,
) -> Result<bool, KeyServiceError> {
    let event = Event::new(
        "key.unused",
        json!({
            "key": {"id": record.id, "name": record.name},
            "last_used_at": record.usage.last_used_at,
            "created_at": record.created_at,
            "action": action,
        }),
    );
    let name = format!("key.unused:{}:{}", record.id, since.timestamp_millis());
    // One gateway at a time handles a key's unused stretch (it holds the lease), so the key
    // is disabled once. The event's own claim lasts; the lease runs out, so a gateway that
    // stopped between the event and the disable leaves the disable to the next sweep.
    let lease = format!("{name}:lease");
    if !keys.store().claim(&lease, Utc::now() + LEASE, None).await? {
        return Ok(false);
    }
    let until = Utc::now() + CLAIM_FOR;
    let emitted = keys.store().claim(&name, until, Some(&event)).await?;
    if action != UnusedAction::Disable {
        return Ok(emitted);
    }
    match keys.get(&record.id).await {
        Ok(current) if current.enabled => match keys.set_enabled(&record.id, false, ctx).await {
            Ok(_) => Ok(true),
            Err(KeyServiceError::NotFound) => Ok(emitted),
            Err(error) => Err(error),
        },
        Ok(_) | Err(KeyServiceError::NotFound) => Ok(emitted),
        Err(error) => Err(error),
    }
}
