//! `/v1/webhooks` (role admin): create (the signing secret shown once), list, edit and delete
//! webhooks, each change written with its audit entry; a webhook's deliveries and a retry by
//! hand. URLs are checked as deliveries are (`events::target`), so a refused one is a 422 now.

use super::keys::{parse, timestamp};
use super::{Admin, ApiError, json};
use crate::body::Body;
use crate::events::{sign, target};
use crate::keys::audit::{self, Action, Changes, Context, NewEntry, Target};
use crate::keys::outbox::{Attempt, Delivery, WebhookRecord};
use crate::keys::record::prefixed_id;
use chrono::Utc;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// The longest description kept.
const MAX_DESCRIPTION: usize = 500;
/// The longest type pattern.
const MAX_PATTERN_LEN: usize = 100;
/// The most type patterns one webhook may list.
const MAX_PATTERNS: usize = 64;
/// Deliveries listed, newest first.
const DELIVERIES_LISTED: usize = 100;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct WebhookChange {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such webhook.")
}

fn view(hook: &WebhookRecord) -> Value {
    json!({
        "id": hook.id,
        "url": hook.url,
        "events": hook.events,
        "description": hook.description,
        "created_at": timestamp(Some(hook.created_at)),
        "updated_at": timestamp(Some(hook.updated_at)),
    })
}

/// What the audit trail records of a webhook (never its secret).
fn audited_fields(hook: &WebhookRecord) -> Value {
    json!({"url": hook.url, "events": hook.events, "description": hook.description})
}

fn target_of(hook: &WebhookRecord) -> Target {
    Target {
        kind: "webhook".into(),
        id: hook.id.clone(),
        name: hook.url.clone(),
    }
}

fn attempt_view(a: &Attempt) -> Value {
    json!({
        "time": timestamp(Some(a.time)),
        "status": a.status,
        "duration_ms": a.duration_ms,
        "error": a.error,
    })
}

fn delivery_view(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event.id,
        "event_type": d.event.kind,
        "state": d.state,
        "attempts": d.attempts.iter().map(attempt_view).collect::<Vec<_>>(),
        "next_attempt_at": timestamp(d.next_attempt_at),
    })
}

/// An event type pattern: dotted lowercase words, optionally ending in `.*`, or `*`.
fn valid_pattern(p: &str) -> bool {
    let words = p.strip_suffix(".*").unwrap_or(p);
    p == "*"
        || (p.len() <= MAX_PATTERN_LEN
            && !words.is_empty()
            && words
                .split('.')
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')))
}

fn valid_events(events: Vec<String>) -> Result<Vec<String>, ApiError> {
    if events.is_empty() || events.len() > MAX_PATTERNS {
        return Err(ApiError::invalid(format!(
            "events: list 1 to {MAX_PATTERNS} event types"
        )));
    }
    match events.iter().find(|p| !valid_pattern(p)) {
        Some(bad) => Err(ApiError::invalid(format!(
            "events: {bad:?} is not an event type or pattern (e.g. article.updated, article.*)"
        ))),
        None => Ok(events),
    }
}

fn valid_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::invalid(format!(
            "description: at most {MAX_DESCRIPTION} characters"
        ))),
        d => Ok(d.filter(|d| !d.is_empty())),
    }
}

impl Admin {
    async fn valid_url(&self, url: String) -> Result<String, ApiError> {
        let allow = self.webhooks.settings().allow_private_networks;
        target::check(&url, allow)
            .await
            .map_err(|e| ApiError::invalid(format!("url: {e}")))?;
        Ok(url)
    }

    async fn webhook(&self, id: &str) -> Result<WebhookRecord, ApiError> {
        let hooks = self.keys.store().webhooks().await?;
        hooks.into_iter().find(|h| h.id == id).ok_or_else(not_found)
    }

    pub(super) async fn create_webhook(
        &self,
        body: &[u8],
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let request: WebhookChange = parse(body)?;
        let url = request
            .url
            .ok_or_else(|| ApiError::invalid("url: missing"))?;
        let url = self.valid_url(url).await?;
        let events = request
            .events
            .ok_or_else(|| ApiError::invalid("events: missing"))?;
        let events = valid_events(events)?;
        let description = valid_description(request.description)?;
        let store = self.keys.store();
        let now = Utc::now();
        let hook = WebhookRecord {
            id: prefixed_id("wh_"),
            url,
            events,
            description,
            secret: sign::new_secret(),
            created_at: now,
            updated_at: now,
            start_seq: store.outbox_head().await?,
        };
        let changes = audit::diff(&Value::Null, &audited_fields(&hook));
        let entry = NewEntry::new(ctx, Action::WebhookCreated, target_of(&hook), changes);
        store.put_webhook(&hook, &entry).await?;
        tracing::info!(webhook_id = %hook.id, "webhook created");
        let mut shown = view(&hook);
        shown["secret"] = Value::String(hook.secret.clone());
        Ok(json(StatusCode::CREATED, &shown))
    }

    pub(super) async fn list_webhooks(&self) -> Result<Response<Body>, ApiError> {
        let hooks = self.keys.store().webhooks().await?;
        let hooks: Vec<Value> = hooks.iter().map(view).collect();
        Ok(json(StatusCode::OK, &json!({ "webhooks": hooks })))
    }

    pub(super) async fn show_webhook(&self, id: &str) -> Result<Response<Body>, ApiError> {
        Ok(json(StatusCode::OK, &view(&self.webhook(id).await?)))
    }

    pub(super) async fn edit_webhook(
        &self,
        id: &str,
        body: &[u8],
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let request: WebhookChange = parse(body)?;
        let before = self.webhook(id).await?;
        let mut hook = before.clone();
        if let Some(url) = request.url {
            hook.url = self.valid_url(url).await?;
        }
        if let Some(events) = request.events {
            hook.events = valid_events(events)?;
        }
        if request.description.is_some() {
            hook.description = valid_description(request.description)?;
        }
        let changes = audit::diff(&audited_fields(&before), &audited_fields(&hook));
        if changes.is_empty() {
            return Ok(json(StatusCode::OK, &view(&hook)));
        }
        hook.updated_at = Utc::now();
        let entry = NewEntry::new(ctx, Action::WebhookUpdated, target_of(&hook), changes);
        self.keys.store().put_webhook(&hook, &entry).await?;
        tracing::info!(webhook_id = %hook.id, "webhook edited");
        Ok(json(StatusCode::OK, &view(&hook)))
    }

    pub(super) async fn delete_webhook(
        &self,
        id: &str,
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let hook = self.webhook(id).await?;
        let entry = NewEntry::new(
            ctx,
            Action::WebhookDeleted,
            target_of(&hook),
            Changes::new(),
        );
        self.keys
            .store()
            .delete_webhook(id, &entry)
            .await?
            .ok_or_else(not_found)?;
        tracing::info!(webhook_id = %id, "webhook deleted");
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    pub(super) async fn list_deliveries(&self, id: &str) -> Result<Response<Body>, ApiError> {
        let hook = self.webhook(id).await?;
        let deliveries = self
            .keys
            .store()
            .deliveries(&hook.id, DELIVERIES_LISTED)
            .await?;
        let deliveries: Vec<Value> = deliveries.iter().map(delivery_view).collect();
        Ok(json(StatusCode::OK, &json!({ "deliveries": deliveries })))
    }

    pub(super) async fn retry_delivery(
        &self,
        id: &str,
        delivery_id: &str,
    ) -> Result<Response<Body>, ApiError> {
        let no_delivery = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such delivery.");
        let hook = self.webhook(id).await?;
        let seq = delivery_id
            .strip_prefix("dlv_")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(no_delivery)?;
        let delivery = self
            .webhooks
            .retry(&hook, seq)
            .await?
            .ok_or_else(no_delivery)?;
        Ok(json(StatusCode::OK, &delivery_view(&delivery)))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_pattern;

    #[test]
    fn patterns() {
        for good in ["*", "article.*", "key.expiring", "quota.threshold"] {
            assert!(valid_pattern(good), "{good}");
        }
        for bad in ["", ".*", "Article.x", "a..b", "a.*.b", "a b", "a.**"] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }
}
