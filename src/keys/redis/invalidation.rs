//! Listens on the changes channel and turns what it hears into [`StoreEvent`]s: the hashes of
//! changed keys, and whether the subscription is up (while it is down, changes may be missed).

use crate::keys::{KeyHash, StoreEvent};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Retry delays while the subscription cannot be set up: quick at first, then at most 1 s.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long connecting and subscribing may take before it counts as a failure.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Events waiting for the keyring; a burst beyond this waits (back-pressure, nothing dropped).
const EVENT_BUFFER: usize = 1024;

pub fn spawn(
    client: redis::Client,
    channel: String,
    shutdown: CancellationToken,
) -> mpsc::Receiver<StoreEvent> {
    let (events, receiver) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        let mut delay = RETRY_MIN;
        loop {
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&client, &channel)) => s,
            };
            let mut messages = match subscribed {
                Ok(Ok(pubsub)) => pubsub.into_on_message(),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "invalidation subscription failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {},
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                    continue;
                }
                Err(_elapsed) => continue,
            };
            delay = RETRY_MIN;
            tracing::info!("listening for key changes");
            if events.send(StoreEvent::Subscribed).await.is_err() {
                return;
            }
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = messages.next() => m,
                };
                let Some(message) = message else { break };
                let payload: String = message.get_payload().unwrap_or_default();
                if events.send(parse(&payload)).await.is_err() {
                    return;
                }
            }
            tracing::warn!("lost the key-change subscription; reconnecting");
            if events.send(StoreEvent::Unsubscribed).await.is_err() {
                return;
            }
        }
    });
    receiver
}

/// `created <hex>…` or `changed <hex>…`; anything else is treated as a change (the safe side).
fn parse(payload: &str) -> StoreEvent {
    let mut words = payload.split(' ');
    let kind = words.next().unwrap_or_default();
    let hashes: Vec<KeyHash> = words.filter_map(KeyHash::from_hex).collect();
    match kind {
        "created" => StoreEvent::Created(hashes),
        _ => StoreEvent::Changed(hashes),
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let h = KeyHash::of("kb_x");
        assert_eq!(
            parse(&format!("created {}", h.to_hex())),
            StoreEvent::Created(vec![h])
        );
        assert_eq!(
            parse(&format!("changed {}", h.to_hex())),
            StoreEvent::Changed(vec![h])
        );
        assert_eq!(parse("garbage zz"), StoreEvent::Changed(vec![]));
    }
}
