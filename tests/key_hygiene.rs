//! Keys that look after themselves, end to end: the expiry headers on proxied responses (parsed
//! with library parsers: sfv for `Deprecation`, httpdate for `Sunset`), the expiry sweep's
//! `key.expiring` and `key.expired` (once each, across a restart, with two gateways on one
//! Redis), and the unused-key policy (dry run, disable with an audit entry by `policy`,
//! report), each event taken by a real receiver over HTTP.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::receiver::Receiver;
use common::{RunningKb, TestGateway, eventually};
use kbgate::Config;
use kbgate::events::hygiene::{UnusedAction, UnusedPolicy};
use kbgate::keys::audit::{Action, Context, NewEntry, Target};
use kbgate::keys::embedded::EmbeddedStore;
use kbgate::keys::outbox::WebhookRecord;
use kbgate::keys::{KeyStore, OutboxStore};
use serde_json::{Value, json};
use std::time::Duration;

const DAY: u64 = 86_400;

/// Deliveries to the loopback receiver and sweeps within a test's patience.
fn fast(config: &mut Config) {
    config.webhooks.allow_private_networks = true;
    config.webhooks.retry_initial = Duration::from_millis(100);
    config.webhooks.poll_interval = Duration::from_millis(50);
    config.hygiene.sweep_interval = Duration::from_millis(50);
}

async fn hook(gateway: &TestGateway, receiver: &Receiver, events: Value) {
    let body = json!({"url": receiver.url(), "events": events});
    let (status, hook) = gateway.admin("POST", "/v1/webhooks", Some(body)).await;
    assert_eq!(status, 201, "{hook}");
}

/// The events of type `kind` about key `id` the receiver got, one per event id.
fn events_about(receiver: &Receiver, kind: &str, id: &str) -> Vec<Value> {
    receiver
        .delivered()
        .iter()
        .map(|g| g.json())
        .filter(|e| e["type"] == kind && e["data"]["key"]["id"] == id)
        .collect()
}

/// `days` from now, in whole seconds (as the header shows it).
fn in_days(days: i64) -> DateTime<Utc> {
    let at = Utc::now() + TimeDelta::days(days);
    DateTime::from_timestamp(at.timestamp(), 0).unwrap()
}

/// Creates a key that expires in a second and waits for its `key.expired`: proof that the
/// sweeps ran after everything before it.
async fn sweeps_ran(gateway: &TestGateway, receiver: &Receiver) -> String {
    let expires = Utc::now() + TimeDelta::seconds(1);
    let (id, _) = gateway
        .create_key(json!({"expires_at": expires.to_rfc3339()}))
        .await;
    eventually("a key.expired: later sweeps ran", || async {
        !events_about(receiver, "key.expired", &id).is_empty()
    })
    .await;
    id
}

/// A key that expires within the first lead time (14d) says so on every proxied response; a
/// key further out, or with no expiry, does not.
#[tokio::test]
async fn a_key_expiring_soon_says_so_on_its_responses() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let soon = in_days(3);
    let (_, secret) = gateway
        .create_key(json!({"expires_at": soon.to_rfc3339()}))
        .await;
    let response = gateway.keyed_get(gateway.url("/v1/article"), &secret).await;
    assert_eq!(response.status(), 200);
    let header = response.headers()["kbgate-key-expires"].to_str().unwrap();
    assert_eq!(DateTime::parse_from_rfc3339(header).unwrap(), soon);

    for body in [json!({"expires_at": in_days(30).to_rfc3339()}), json!({})] {
        let (_, secret) = gateway.create_key(body).await;
        let response = gateway.keyed_get(gateway.url("/v1/article"), &secret).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("kbgate-key-expires").is_none());
        assert!(response.headers().get("deprecation").is_none());
    }
    gateway.shutdown().await;
}

/// A rotated-out secret in its grace gets `Deprecation` and `Sunset` at the grace's end; the
/// new secret gets neither.
#[tokio::test]
async fn a_rotated_out_secret_gets_deprecation_and_sunset() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, old) = gateway.create_key(json!({})).await;
    let (status, rotated) = gateway.rotate(&id, 3600).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    let grace_end = Utc::now() + TimeDelta::seconds(3600);

    let response = gateway.keyed_get(gateway.url("/v1/article"), &old).await;
    assert_eq!(response.status(), 200);
    let deprecation = response.headers()["deprecation"].as_bytes();
    let item: sfv::Item = sfv::Parser::new(deprecation).parse().unwrap();
    let date = item.bare_item.as_date().expect("a structured-field date");
    let deprecated_at = i64::from(date.unix_seconds());
    let sunset = response.headers()["sunset"].to_str().unwrap();
    let sunset_at = httpdate::parse_http_date(sunset).unwrap();
    let sunset_at = DateTime::<Utc>::from(sunset_at).timestamp();
    assert_eq!(deprecated_at, sunset_at);
    assert!(
        (sunset_at - grace_end.timestamp()).abs() <= 5,
        "the grace's end: {sunset} vs {grace_end}"
    );

    let response = gateway.keyed_get(gateway.url("/v1/article"), new).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("deprecation").is_none());
    assert!(response.headers().get("sunset").is_none());
    gateway.shutdown().await;
}

/// The sweep warns a key expiring in 3 days once, for the 7d lead (not 14d: that one has
/// passed unsaid), however many sweeps run and after a restart; a key that expires gets
/// `key.expired` once.
#[tokio::test]
async fn the_expiry_sweep_warns_once_per_lead_across_a_restart() {
    let kb = RunningKb::start().await;
    let receiver = Receiver::start().await;
    let gateway = TestGateway::builder()
        .upstream(&kb)
        .config(fast)
        .start()
        .await;
    hook(&gateway, &receiver, json!(["key.expiring", "key.expired"])).await;
    let (soon, _) = gateway
        .create_key(json!({"expires_at": in_days(3).to_rfc3339()}))
        .await;
    eventually("key.expiring delivered", || async {
        !events_about(&receiver, "key.expiring", &soon).is_empty()
    })
    .await;
    let warned = &events_about(&receiver, "key.expiring", &soon)[0];
    assert_eq!(warned["data"]["lead_seconds"], 7 * DAY, "{warned}");

    let brief = sweeps_ran(&gateway, &receiver).await;

    let TestGateway { running, dir, .. } = gateway;
    running.unwrap().shutdown().await;
    let again = TestGateway::builder()
        .upstream(&kb)
        .dir(dir)
        .config(fast)
        .start()
        .await;
    sweeps_ran(&again, &receiver).await;
    assert_eq!(events_about(&receiver, "key.expiring", &soon).len(), 1);
    assert_eq!(events_about(&receiver, "key.expired", &brief).len(), 1);
    again.shutdown().await;
}

/// Two gateways sweeping one Redis: each event once.
#[tokio::test]
async fn two_gateways_on_redis_warn_once() {
    // The server and the KB are bound: dropped, they would stop.
    let Some(common::stores::RedisPair {
        a,
        b,
        server: _server,
        upstream: _kb,
    }) = common::stores::redis_pair_with("sweep:", fast).await
    else {
        return;
    };
    let receiver = Receiver::start().await;
    hook(&a, &receiver, json!(["key.*"])).await;
    let mut soon = Vec::new();
    for days in [3, 10] {
        let body = json!({"expires_at": in_days(days).to_rfc3339()});
        soon.push(a.create_key(body).await.0);
    }
    let brief = sweeps_ran(&b, &receiver).await;
    sweeps_ran(&a, &receiver).await;
    for id in &soon {
        assert_eq!(events_about(&receiver, "key.expiring", id).len(), 1, "{id}");
    }
    assert_eq!(events_about(&receiver, "key.expired", &brief).len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// A store holding a never-used key created 100 days ago, a key created then but used
/// yesterday, and a webhook to `receiver` for every key event (there before any sweep); the
/// gateway's unused policy is `after: 30d`.
async fn seeded(
    receiver: &Receiver,
    action: UnusedAction,
    edit: fn(&mut Config),
) -> (RunningKb, TestGateway, [String; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let long_ago = Utc::now() - TimeDelta::days(100);
    let idle = common::seed::record("idle", long_ago);
    let mut used = common::seed::record("used", long_ago);
    used.usage.request_count = 3;
    used.usage.last_used_at = Some(Utc::now() - TimeDelta::days(1));
    let store = EmbeddedStore::open(&dir.path().join("kbgate.db")).unwrap();
    store
        .create_many(&[idle.clone(), used.clone()])
        .await
        .unwrap();
    store.import(&used).await.unwrap();
    let now = Utc::now();
    let hook = WebhookRecord {
        id: "whk_seeded".into(),
        url: receiver.url(),
        events: vec!["key.*".into()],
        description: None,
        secret: kbgate::events::sign::new_secret(),
        created_at: now,
        updated_at: now,
        start_seq: 0,
    };
    let target = Target {
        kind: "webhook".into(),
        id: hook.id.clone(),
        name: hook.url.clone(),
    };
    let entry = NewEntry::new(
        &Context::config(),
        Action::WebhookCreated,
        target,
        Default::default(),
    );
    store.put_webhook(&hook, &entry).await.unwrap();
    drop(store);
    let kb = RunningKb::start().await;
    let gateway = TestGateway::builder()
        .upstream(&kb)
        .dir(dir)
        .config(move |c| {
            c.webhooks.allow_private_networks = true;
            c.webhooks.poll_interval = Duration::from_millis(50);
            c.hygiene.unused = Some(UnusedPolicy {
                after: Duration::from_secs(30 * DAY),
                action,
            });
            edit(c);
        })
        .start()
        .await;
    (kb, gateway, [idle.id, used.id])
}

async fn enabled(gateway: &TestGateway, id: &str) -> bool {
    let (status, key) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(status, 200, "{key}");
    key["enabled"].as_bool().unwrap()
}

/// On demand: a dry run lists the never-used old key and changes nothing; the real sweep
/// disables it (audited, actor `policy`), emits `key.unused` and `key.disabled`, and leaves the
/// used key alone.
#[tokio::test]
async fn the_unused_policy_disables_a_never_used_old_key() {
    let receiver = Receiver::start().await;
    let (_kb, gateway, [idle, used]) = seeded(&receiver, UnusedAction::Disable, |_| {}).await;
    let (fresh, _) = gateway.create_key(json!({"name": "fresh"})).await;

    let (status, dry) = gateway
        .admin("POST", "/v1/keys/unused-sweep?dry_run=true", None)
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    let listed: Vec<&str> = dry["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [idle.as_str()]);
    assert!(enabled(&gateway, &idle).await, "a dry run changes nothing");
    let (_, audit) = gateway
        .admin("GET", "/v1/audit?action=key.disabled", None)
        .await;
    assert_eq!(audit["entries"], json!([]), "{audit}");

    let (status, swept) = gateway.admin("POST", "/v1/keys/unused-sweep", None).await;
    assert_eq!(status, 200, "{swept}");
    assert_eq!(swept["keys"][0]["id"], idle.as_str());
    assert_eq!(swept["keys"][0]["handled"], true);
    assert!(!enabled(&gateway, &idle).await);
    assert!(enabled(&gateway, &used).await);
    assert!(enabled(&gateway, &fresh).await);
    let (_, audit) = gateway
        .admin("GET", "/v1/audit?action=key.disabled", None)
        .await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["target"]["id"], idle.as_str(), "{audit}");
    assert_eq!(entry["actor"]["id"], "policy");

    eventually("key.unused and key.disabled delivered", || async {
        !events_about(&receiver, "key.unused", &idle).is_empty()
            && !events_about(&receiver, "key.disabled", &idle).is_empty()
    })
    .await;
    assert!(events_about(&receiver, "key.unused", &used).is_empty());
    let disabled = &events_about(&receiver, "key.disabled", &idle)[0];
    assert_eq!(disabled["data"]["actor"]["id"], "policy");
    gateway.shutdown().await;
}

/// A gateway that stopped after `key.unused` was claimed but before the disable: the next
/// sweep (once the lease has run out) still disables the key.
#[tokio::test]
async fn a_disable_cut_short_is_finished_by_the_next_sweep() {
    let receiver = Receiver::start().await;
    let (_kb, gateway, [idle, _]) = seeded(&receiver, UnusedAction::Disable, |_| {}).await;
    let (_, key) = gateway
        .admin("GET", &format!("/v1/keys/{idle}"), None)
        .await;
    let created: chrono::DateTime<Utc> = key["created_at"].as_str().unwrap().parse().unwrap();
    let store = gateway.running.as_ref().unwrap().keyring.store().clone();
    let name = format!("key.unused:{idle}:{}", created.timestamp_millis());
    let until = Utc::now() + TimeDelta::days(1);
    assert!(store.claim(&name, until, None).await.unwrap());
    assert!(enabled(&gateway, &idle).await);

    let (status, swept) = gateway.admin("POST", "/v1/keys/unused-sweep", None).await;
    assert_eq!(status, 200, "{swept}");
    assert_eq!(swept["keys"][0]["handled"], true, "{swept}");
    assert!(!enabled(&gateway, &idle).await);
    let (_, audit) = gateway
        .admin("GET", "/v1/audit?action=key.disabled", None)
        .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
    gateway.shutdown().await;
}

/// The daily sweep with `action: report` emits `key.unused` once and disables nothing.
#[tokio::test]
async fn the_report_policy_only_reports() {
    let receiver = Receiver::start().await;
    let (_kb, gateway, [idle, used]) = seeded(&receiver, UnusedAction::Report, |c| {
        c.hygiene.sweep_interval = Duration::from_millis(50);
        c.hygiene.unused_interval = Duration::from_millis(50);
    })
    .await;
    eventually("key.unused delivered", || async {
        !events_about(&receiver, "key.unused", &idle).is_empty()
    })
    .await;
    sweeps_ran(&gateway, &receiver).await;
    assert!(enabled(&gateway, &idle).await);
    assert_eq!(events_about(&receiver, "key.unused", &idle).len(), 1);
    assert!(events_about(&receiver, "key.unused", &used).is_empty());
    gateway.shutdown().await;
}

/// Without a policy the sweep on demand is refused, and a bad parameter is named.
#[tokio::test]
async fn the_sweep_needs_a_policy_and_a_good_parameter() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (status, body) = gateway
        .admin("POST", "/v1/keys/unused-sweep?dry_run=true", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "policy_off");
    let (status, body) = gateway
        .admin("POST", "/v1/keys/unused-sweep?dry_run=maybe", None)
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("dry_run")
    );
    gateway.shutdown().await;
}
