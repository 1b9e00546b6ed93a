//! The webhook series: `kbgate_webhook_deliveries_total{webhook, outcome}` (each attempt, by
//! how it left the delivery: `succeeded`, `retrying`, `failed`), and the outbox's backlog,
//! `kbgate_webhook_outbox_depth` (events the slowest webhook is not done with) and
//! `kbgate_webhook_outbox_oldest_seconds` (the age of the oldest of them), set at each pass.

use crate::keys::outbox::{Delivery, DeliveryState};

const DELIVERIES: &str = "kbgate_webhook_deliveries_total";
const DEPTH: &str = "kbgate_webhook_outbox_depth";
const OLDEST: &str = "kbgate_webhook_outbox_oldest_seconds";

/// Describes the series (after the recorder is installed), so a scrape carries their help.
pub fn describe() {
    metrics::describe_counter!(
        DELIVERIES,
        "Webhook delivery attempts by webhook and outcome."
    );
    metrics::describe_gauge!(DEPTH, "Outbox events some webhook is not done with yet.");
    metrics::describe_gauge!(
        OLDEST,
        "Age in seconds of the oldest outbox event some webhook is not done with (0: none)."
    );
}

/// Counts one attempt at `delivery` by the state it left it in.
pub fn attempt(webhook: &str, delivery: &Delivery) {
    let outcome = match delivery.state {
        DeliveryState::Succeeded => "succeeded",
        DeliveryState::Pending => "retrying",
        DeliveryState::Failed => "failed",
    };
    metrics::counter!(DELIVERIES, "webhook" => webhook.to_string(), "outcome" => outcome)
        .increment(1);
}

/// The backlog after a pass.
pub fn backlog(depth: u64, oldest_seconds: f64) {
    metrics::gauge!(DEPTH).set(depth as f64);
    metrics::gauge!(OLDEST).set(oldest_seconds);
}
