//! The webhook series on the admin `/metrics`, read as Prometheus reads them (and linted by
//! promtool where installed): deliveries by webhook and outcome, and the outbox backlog's
//! depth and oldest age growing while a receiver is down and back to zero once it is up. Its
//! own test binary: the gauges are the process's, and no other gateway may move them.

mod common;

use common::metrics::{prometheus_tool, promtool_check_metrics};
use common::receiver::Receiver;
use common::{TestGateway, eventually};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn deliveries_and_the_backlog_are_measured() {
    let (_kb, gateway) = TestGateway::builder()
        .config(|c| {
            c.webhooks.allow_private_networks = true;
            c.webhooks.retry_initial = Duration::from_millis(100);
            c.webhooks.retry_max = Duration::from_millis(200);
            c.webhooks.poll_interval = Duration::from_millis(50);
        })
        .start_on_echo()
        .await;
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let body = json!({"url": receiver.url(), "events": ["key.created"]});
    let (status, hook) = gateway.admin("POST", "/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_str().unwrap();
    for name in ["a", "b", "c"] {
        gateway.create_key(json!({"name": name})).await;
    }
    eventually("a backlog of three, retried", || async {
        let scrape = gateway.scrape().await;
        scrape.sum("kbgate_webhook_outbox_depth", &[]) == 3.0
            && scrape.sum("kbgate_webhook_outbox_oldest_seconds", &[]) > 0.0
            && scrape.sum(
                "kbgate_webhook_deliveries_total",
                &[("webhook", id), ("outcome", "retrying")],
            ) >= 2.0
    })
    .await;

    receiver.answer(204);
    eventually("the backlog delivered", || async {
        let scrape = gateway.scrape().await;
        scrape.sum("kbgate_webhook_outbox_depth", &[]) == 0.0
            && scrape.sum(
                "kbgate_webhook_deliveries_total",
                &[("webhook", id), ("outcome", "succeeded")],
            ) == 3.0
    })
    .await;
    let scrape = gateway.scrape().await;
    assert_eq!(scrape.sum("kbgate_webhook_outbox_oldest_seconds", &[]), 0.0);
    assert_eq!(receiver.delivered().len(), 3);
    if let Some(promtool) = prometheus_tool("promtool") {
        promtool_check_metrics(&promtool, &scrape.text).unwrap();
    }
    gateway.shutdown().await;
}
