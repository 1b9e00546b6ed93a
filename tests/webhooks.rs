//! Webhooks end to end: a real receiver over HTTP gets key events signed per the Standard
//! Webhooks specification (checked with the `standardwebhooks` PyPI package), in order, on both
//! stores and with two gateways on one Redis; a receiver that is down, slow or redirects is
//! retried with backoff and never loses an event; private-network URLs are refused.

mod common;

use common::receiver::{Got, Receiver};
use common::{RunningKb, TestGateway, eventually, stores};
use kbgate::Config;
use serde_json::{Value, json};
use std::time::Duration;

/// Deliveries to the loopback receiver, retried within a test's patience.
fn fast(config: &mut Config) {
    config.webhooks.allow_private_networks = true;
    config.webhooks.retry_initial = Duration::from_millis(100);
    config.webhooks.retry_max = Duration::from_millis(400);
    config.webhooks.poll_interval = Duration::from_millis(50);
    config.webhooks.timeout = Duration::from_millis(500);
}

async fn add_webhook(gateway: &TestGateway, url: &str, events: Value) -> Value {
    let (status, hook) = gateway
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": url, "events": events})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    hook
}

async fn deliveries(gateway: &TestGateway, hook: &Value) -> Vec<Value> {
    let path = format!("/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap());
    let (status, list) = gateway.admin("GET", &path, None).await;
    assert_eq!(status, 200, "{list}");
    list["deliveries"].as_array().unwrap().clone()
}

/// Verifies `got` with the `standardwebhooks` package (Python), after `tamper`ing with it;
/// None when the package is not installed (KBGATE_REQUIRE_STANDARDWEBHOOKS makes that a failure).
fn verified_by_standardwebhooks(
    secret: &str,
    got: &Got,
    body: &str,
    timestamp: &str,
) -> Option<bool> {
    const SCRIPT: &str = "
import sys, json
from standardwebhooks.webhooks import Webhook
secret, body, msg_id, ts, sig = sys.argv[1:6]
try:
    Webhook(secret).verify(body, {'webhook-id': msg_id, 'webhook-timestamp': ts, 'webhook-signature': sig})
    print('valid')
except Exception as e:
    print('invalid', e)
";
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            secret,
            body,
            got.header("webhook-id"),
            timestamp,
        ])
        .arg(got.header("webhook-signature"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            std::env::var("KBGATE_REQUIRE_STANDARDWEBHOOKS").is_err(),
            "standardwebhooks is required: {err}"
        );
        eprintln!("SKIPPED: the standardwebhooks Python package is not installed: {err}");
        return None;
    }
    Some(text.starts_with("valid"))
}

/// Key changes reach the webhook in order, with the audit entry's actor, signed so the
/// specification's own library accepts them and refuses a tampered body or a stale timestamp.
async fn key_events_are_delivered_signed_and_in_order(gateway: &TestGateway) {
    let receiver = Receiver::start().await;
    let hook = add_webhook(gateway, &receiver.url(), json!(["key.*"])).await;
    let secret = hook["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let (_, listed) = gateway.admin("GET", "/v1/webhooks", None).await;
    assert!(
        !listed.to_string().contains(secret),
        "the secret is shown once"
    );

    let (id, _) = gateway.create_key(json!({"name": "Bot"})).await;
    let path = format!("/v1/keys/{id}");
    let (status, _) = gateway
        .admin("PATCH", &path, Some(json!({"enabled": false})))
        .await;
    assert_eq!(status, 200);
    let (status, _) = gateway.admin("DELETE", &path, None).await;
    assert_eq!(status, 204);
    eventually("three key events delivered", || async {
        receiver.delivered().len() >= 3
    })
    .await;
    assert_eq!(
        receiver.delivered_types(),
        ["key.created", "key.disabled", "key.deleted"]
    );
    let first = &receiver.delivered()[0];
    let event = first.json();
    assert_eq!(event["data"]["key"]["id"], id.as_str());
    assert_eq!(event["data"]["actor"]["id"], "config");
    assert!(first.header("webhook-id").starts_with("msg_"));
    assert!(first.header("webhook-signature").starts_with("v1,"));

    let ts = first.header("webhook-timestamp").to_string();
    if let Some(valid) = verified_by_standardwebhooks(secret, first, &first.body, &ts) {
        assert!(valid, "a genuine delivery verifies");
        let tampered = first.body.replace("key.created", "key.deleted");
        let stale = (ts.parse::<i64>().unwrap() - 3600).to_string();
        assert_eq!(
            verified_by_standardwebhooks(secret, first, &tampered, &ts),
            Some(false)
        );
        assert_eq!(
            verified_by_standardwebhooks(secret, first, &first.body, &stale),
            Some(false)
        );
    }
    let (_, audit) = gateway
        .admin("GET", "/v1/audit?action=webhook.created", None)
        .await;
    assert_eq!(audit["entries"][0]["target"]["id"], hook["id"], "{audit}");
}

/// A receiver that answers 503 is retried with backoff, then gets every event, in order.
async fn a_receiver_that_was_down_gets_everything_in_order(gateway: &TestGateway) {
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let hook = add_webhook(gateway, &receiver.url(), json!(["key.created"])).await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(gateway.create_key(json!({"name": name})).await.0);
    }
    eventually(
        "the first event retried while the receiver is down",
        || async { receiver.got().len() >= 3 },
    )
    .await;
    assert!(receiver.delivered().is_empty());
    let pending = deliveries(gateway, &hook).await;
    assert_eq!(pending[0]["state"], "pending", "{pending:?}");
    assert_eq!(pending[0]["attempts"][0]["status"], 503);
    assert!(pending[0]["next_attempt_at"].is_string());
    receiver.answer(204);
    eventually("every event delivered", || async {
        receiver.delivered().len() >= 3
    })
    .await;
    assert_eq!(receiver.delivered_key_ids(), ids, "in order");
    let done = deliveries(gateway, &hook).await;
    assert!(done.iter().all(|d| d["state"] == "succeeded"), "{done:?}");
}

/// A receiver that hangs is cut off at `webhooks.timeout` and retried; one that redirects is
/// not followed.
async fn slow_and_redirecting_receivers(gateway: &TestGateway) {
    let receiver = Receiver::start().await;
    receiver.hang(true);
    let hook = add_webhook(gateway, &receiver.url(), json!(["key.created"])).await;
    gateway.create_key(json!({"name": "slow"})).await;
    eventually("an attempt timed out", || async {
        let list = deliveries(gateway, &hook).await;
        list.first()
            .is_some_and(|d| d["attempts"][0]["error"] == "timed out")
    })
    .await;
    receiver.hang(false);
    receiver.answer(302);
    eventually("a redirect answered and not followed", || async {
        let list = deliveries(gateway, &hook).await;
        list.first().is_some_and(|d| {
            d["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["status"] == 302 && a["error"] == "redirect not followed")
        })
    })
    .await;
    receiver.answer(200);
    eventually("delivered at last", || async {
        receiver.delivered().len() == 1
    })
    .await;
    assert!(
        receiver.got().iter().all(|g| g.path == "/hook"),
        "the redirect's location was never asked for"
    );
}

/// A delivery whose `retry_for` ran out is failed, and a retry by hand delivers it.
async fn a_failed_delivery_is_retried_by_hand(gateway: &TestGateway) {
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let hook = add_webhook(gateway, &receiver.url(), json!(["key.*"])).await;
    gateway.create_key(json!({"name": "x"})).await;
    eventually("the delivery failed for good", || async {
        deliveries(gateway, &hook)
            .await
            .first()
            .is_some_and(|d| d["state"] == "failed")
    })
    .await;
    let failed = deliveries(gateway, &hook).await[0].clone();
    receiver.answer(204);
    let path = format!(
        "/v1/webhooks/{}/deliveries/{}/retry",
        hook["id"].as_str().unwrap(),
        failed["id"].as_str().unwrap()
    );
    let (status, retried) = gateway.admin("POST", &path, None).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["state"], "succeeded");
    assert_eq!(receiver.delivered_types(), ["key.created"]);
    let (status, _) = gateway
        .admin(
            "POST",
            &format!(
                "/v1/webhooks/{}/deliveries/dlv_999/retry",
                hook["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// A delivery still pending (its next attempt an hour away) is retried by hand at once: it
/// succeeds, and the deliverer does not send it again.
async fn a_pending_delivery_is_retried_by_hand(gateway: &TestGateway) {
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let hook = add_webhook(gateway, &receiver.url(), json!(["key.*"])).await;
    gateway.create_key(json!({"name": "x"})).await;
    eventually("a first attempt failed, the delivery pending", || async {
        deliveries(gateway, &hook).await.first().is_some_and(|d| {
            d["state"] == "pending" && d["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
    })
    .await;
    let pending = deliveries(gateway, &hook).await[0].clone();
    receiver.answer(204);
    let path = format!(
        "/v1/webhooks/{}/deliveries/{}/retry",
        hook["id"].as_str().unwrap(),
        pending["id"].as_str().unwrap()
    );
    let (status, retried) = gateway.admin("POST", &path, None).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["state"], "succeeded");
    assert_eq!(receiver.delivered_types(), ["key.created"]);
    let listed = deliveries(gateway, &hook).await[0].clone();
    assert_eq!(listed["state"], "succeeded", "{listed}");
}

/// Events every webhook is done with go after `webhooks.outbox_retention`, with their
/// deliveries; one a webhook still retries stays, however old.
async fn delivered_events_are_pruned_after_their_retention(gateway: &TestGateway) {
    let store = gateway.running.as_ref().unwrap().keyring.store().clone();
    let up = Receiver::start().await;
    let fine = add_webhook(gateway, &up.url(), json!(["key.created"])).await;
    gateway.create_key(json!({"name": "a"})).await;
    eventually("delivered, then pruned", || async {
        up.delivered().len() == 1 && store.events_after(0, 10).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(deliveries(gateway, &fine).await, Vec::<Value>::new());

    let down = Receiver::start().await;
    down.answer(503);
    add_webhook(gateway, &down.url(), json!(["key.created"])).await;
    let (id, _) = gateway.create_key(json!({"name": "b"})).await;
    // Attempts 100, 200, 400 ms apart: the fourth comes after the retention and a prune.
    eventually("four attempts at the receiver that is down", || async {
        down.got().len() >= 4
    })
    .await;
    let kept = store.events_after(0, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].event.data["key"]["id"], id.as_str());
}

/// [`fast`], keeping delivered events 200 ms.
fn short_retention(config: &mut Config) {
    fast(config);
    config.webhooks.outbox_retention = Duration::from_millis(200);
}

for_each_store!(pruning_embedded => |kb| stores::embedded(kb, short_retention);
    delivered_events_are_pruned_after_their_retention);
for_each_store!(pruning_redis => |kb| stores::redis(kb, "prune:", short_retention);
    delivered_events_are_pruned_after_their_retention);
for_each_store!(embedded => |kb| stores::embedded(kb, fast);
    key_events_are_delivered_signed_and_in_order,
    a_receiver_that_was_down_gets_everything_in_order,
    slow_and_redirecting_receivers);
for_each_store!(redis => |kb| stores::redis(kb, "hooks:", fast);
    key_events_are_delivered_signed_and_in_order,
    a_receiver_that_was_down_gets_everything_in_order);
for_each_store!(short_retry => |kb| stores::embedded(kb, |c| {
        fast(c);
        c.webhooks.retry_for = Duration::from_millis(300);
    });
    a_failed_delivery_is_retried_by_hand);
for_each_store!(long_retry => |kb| stores::embedded(kb, |c| {
        fast(c);
        c.webhooks.retry_initial = Duration::from_secs(3600);
        c.webhooks.retry_max = Duration::from_secs(3600);
    });
    a_pending_delivery_is_retried_by_hand);

/// Without `webhooks.allow_private_networks`, a loopback or private URL is refused at once.
#[tokio::test]
async fn private_network_urls_are_refused_without_the_setting() {
    let kb = RunningKb::start().await;
    let gateway = TestGateway::start(&kb).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.7/",
        "http://169.254.169.254/",
    ] {
        let (status, body) = gateway
            .admin(
                "POST",
                "/v1/webhooks",
                Some(json!({"url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("private"),
            "{body}"
        );
    }
    let (status, _) = gateway
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": "ftp://x/", "events": ["*"]})),
        )
        .await;
    assert_eq!(status, 422);
    gateway.shutdown().await;
}

/// Two gateways on one Redis: events made through either reach the webhook, each at least once.
#[tokio::test]
async fn two_gateways_on_redis_deliver_every_event() {
    // The server and the KB are bound: dropped, they would stop.
    let Some(common::stores::RedisPair {
        a,
        b,
        server: _server,
        upstream: _kb,
    }) = common::stores::redis_pair_with("pair:", fast).await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    add_webhook(&a, &receiver.url(), json!(["key.created"])).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let gateway = if i % 2 == 0 { &a } else { &b };
        ids.push(gateway.create_key(json!({"name": format!("k{i}")})).await.0);
    }
    eventually("every event delivered", || async {
        receiver.delivered().len() >= 6
    })
    .await;
    let mut got: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|g| g.json()["data"]["key"]["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    a.shutdown().await;
    b.shutdown().await;
}

/// A PATCH the KB accepts emits `article.updated` with the path's id; a create carries the new
/// resource's id from the KB's JSON answer, which the client gets byte for byte; a write
/// refused by the gateway or failed by the KB emits nothing.
#[tokio::test]
async fn accepted_writes_emit_content_events() {
    const CREATED: &str = r#"{"article": {"id": 77, "title": "New"}}"#;
    let kb = common::FakeKb::new()
        .route("/v1/article/broken", |_| {
            http::Response::builder()
                .status(500)
                .body(common::kb::full("down"))
                .unwrap()
        })
        .route("/v1/article", |_| {
            http::Response::builder()
                .status(201)
                .header("content-type", "application/json")
                .body(common::kb::full(CREATED))
                .unwrap()
        })
        .start()
        .await;
    let gateway = TestGateway::builder()
        .upstream(&kb)
        .config(fast)
        .start()
        .await;
    let receiver = Receiver::start().await;
    add_webhook(
        &gateway,
        &receiver.url(),
        json!(["article.*", "category.*"]),
    )
    .await;
    let (key_id, writer) = gateway
        .create_key(json!({"scope": "read_write", "name": "Sync job"}))
        .await;
    let (_, reader) = gateway.create_key(json!({"scope": "read"})).await;

    assert_eq!(
        gateway.send("PATCH", "/v1/article/42", &reader).await.0,
        403
    );
    assert_eq!(
        gateway.send("PATCH", "/v1/article/broken", &writer).await.0,
        500
    );
    assert_eq!(
        gateway.send("PATCH", "/v1/article/42", &writer).await.0,
        200
    );
    assert_eq!(
        gateway.send("DELETE", "/v1/article/43", &writer).await.0,
        200
    );
    let created = reqwest::Client::new()
        .post(gateway.url("/v1/article"))
        .bearer_auth(&writer)
        .body(r#"{"title": "New"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.text().await.unwrap(), CREATED);
    // The KB's echo holds no id: the event goes without one.
    assert_eq!(gateway.send("POST", "/v1/category", &writer).await.0, 200);
    eventually("four content events delivered", || async {
        receiver.delivered().len() >= 4
    })
    .await;
    assert_eq!(
        receiver.delivered_types(),
        [
            "article.updated",
            "article.deleted",
            "article.created",
            "category.created"
        ]
    );
    let created = receiver.delivered()[2].json()["data"].clone();
    assert_eq!(
        (&created["id"], &created["status"]),
        (&json!("77"), &json!(201))
    );
    let category = receiver.delivered()[3].json()["data"].clone();
    assert!(category.get("id").is_none(), "{category}");
    let data = receiver.delivered()[0].json()["data"].clone();
    assert_eq!(data["params"], json!({"id": "42"}));
    assert_eq!(data["method"], "PATCH");
    assert_eq!(data["route"], "/v1/article/{id}");
    assert_eq!(data["key"], json!({"id": key_id, "name": "Sync job"}));
    assert_eq!(data["status"], 200);
    assert!(data["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    gateway.shutdown().await;
}
