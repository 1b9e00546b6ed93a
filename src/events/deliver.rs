//! One delivery attempt: the Standard Webhooks request (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, the JSON body), to the addresses the URL was checked at, with no
//! redirect followed, within `webhooks.timeout`, reading at most a bounded answer.

use crate::events::settings::{MAX_RESPONSE_BYTES, WebhookSettings};
use crate::events::{sign, target};
use crate::keys::outbox::{Attempt, Event, WebhookRecord};
use chrono::Utc;
use std::time::Instant;

/// Sends `event` to `hook` once; the attempt says how it went (no error: delivered).
pub async fn attempt(hook: &WebhookRecord, event: &Event, settings: &WebhookSettings) -> Attempt {
    let time = Utc::now();
    let started = Instant::now();
    let (status, error) = match send(hook, event, settings).await {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) if (300..400).contains(&status) => {
            (Some(status), Some("redirect not followed".to_string()))
        }
        Ok(status) => (
            Some(status),
            Some(format!("the receiver answered {status}")),
        ),
        Err(error) => (None, Some(error)),
    };
    Attempt {
        time,
        status,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error,
    }
}

async fn send(
    hook: &WebhookRecord,
    event: &Event,
    settings: &WebhookSettings,
) -> Result<u16, String> {
    let target = target::check(&hook.url, settings.allow_private_networks)
        .await
        .map_err(|e| format!("URL refused: {e}"))?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .no_proxy()
        .resolve_to_addrs(&target.host, &target.addrs)
        .build()
        .map_err(|e| format!("client: {e}"))?;
    let body = event.body();
    let timestamp = Utc::now().timestamp();
    let signature = sign::signature(&hook.secret, &event.id, timestamp, &body)
        .ok_or("the webhook's secret is malformed")?;
    let mut response = client
        .post(target.url)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    let mut read = 0;
    while read < MAX_RESPONSE_BYTES {
        match response.chunk().await.map_err(describe)? {
            Some(chunk) => read += chunk.len(),
            None => break,
        }
    }
    Ok(status)
}

/// What went wrong, without the URL (it may hold credentials).
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "could not connect".into()
    } else {
        error.without_url().to_string()
    }
}
