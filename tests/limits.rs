//! Per-key rate limits and quotas on the embedded store, over sockets: exact counts under
//! concurrency, units given back, the headers and Retry-After, changed and removed limits, a
//! restart keeping the quota.

mod common;

use common::kb::BROKEN_ARTICLE;
use common::limits::{assert_rate, hammer, paced, parse_list, quota_state, ratelimit, retry_after};
use common::{RunningKb, TestGateway, eventually, status_and_code};
use kbgate::keys::StoreConfig;
use kbgate::limits::HeaderStyle;
use serde_json::{Value, json};
use std::time::Duration;

const ARTICLE: &str = "/v1/article/a1";

#[tokio::test]
async fn a_quota_admits_exactly_its_requests_under_concurrency() {
    let _heavy = common::limits::HEAVY.lock().await;
    let (kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway
        .create_key(json!({"quota": {"requests": 1000, "period": "month"}}))
        .await;
    let statuses = hammer(&[&gateway], &key, ARTICLE, 3000, 16).await;
    assert_eq!(statuses.get(&200), Some(&1000), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&2000), "{statuses:?}");
    assert_eq!(kb.count(), 1000);
    let state = quota_state(&gateway, &id).await;
    assert_eq!(
        (state["used"].as_u64(), state["remaining"].as_u64()),
        (Some(1000), Some(0))
    );
}

#[tokio::test]
async fn counts_successful_gives_back_what_the_kb_did_not_answer_well() {
    let kb = RunningKb::with_broken_article().await;
    let gateway = TestGateway::start(&kb).await;
    let (id, key) = gateway
        .create_key(json!({"quota": {"requests": 3, "period": "day"}}))
        .await;
    for _ in 0..5 {
        assert_eq!(gateway.get(BROKEN_ARTICLE, &key).await.0, 500);
    }
    assert_eq!(
        quota_state(&gateway, &id).await["used"],
        0,
        "every unit given back"
    );
    for _ in 0..3 {
        assert_eq!(gateway.get(ARTICLE, &key).await.0, 200);
    }
    assert_eq!(
        gateway.get(ARTICLE, &key).await,
        (429, "quota_exceeded".into())
    );
    assert_eq!(quota_state(&gateway, &id).await["used"], 3);

    // counts: all keeps every unit.
    let (all_id, all) = gateway
        .create_key(json!({"quota": {"requests": 2, "period": "day", "counts": "all"}}))
        .await;
    for _ in 0..2 {
        assert_eq!(gateway.get(BROKEN_ARTICLE, &all).await.0, 500);
    }
    assert_eq!(
        gateway.get(ARTICLE, &all).await,
        (429, "quota_exceeded".into())
    );
    assert_eq!(quota_state(&gateway, &all_id).await["used"], 2);
}

#[tokio::test]
async fn the_rate_admits_its_burst_plus_its_rate_over_the_time_taken() {
    let _heavy = common::limits::HEAVY.lock().await;
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway
        .create_key(json!({"rate_limit": {"requests": 50, "window_seconds": 1, "burst": 10}}))
        .await;
    let run = paced(&[&gateway], &key, ARTICLE, 200, Duration::from_secs(5)).await;
    assert_rate(&run, 50.0, 10, 0.02, "embedded, one gateway");
}

#[tokio::test]
async fn headers_parse_as_structured_fields_and_retry_after_is_enough() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway
        .create_key(json!({
            "rate_limit": {"requests": 2, "window_seconds": 1},
            "quota": {"requests": 1000, "period": "day"},
        }))
        .await;
    let send = || gateway.keyed_get(gateway.url(ARTICLE), &key);
    let first = send().await;
    assert_eq!(first.status(), 200);
    let policy = parse_list(&first.headers()["ratelimit-policy"]);
    assert_eq!(policy.len(), 2, "{policy:?}");
    assert_eq!(
        (
            policy[0].name.as_str(),
            policy[0].param("q"),
            policy[0].param("w")
        ),
        ("rate", 2, 1)
    );
    assert_eq!(
        (
            policy[1].name.as_str(),
            policy[1].param("q"),
            policy[1].param("w")
        ),
        ("quota", 1000, 86_400)
    );
    let state = ratelimit(&first);
    assert_eq!(
        (state.name.as_str(), state.param("r")),
        ("rate", 1),
        "the rate is nearest"
    );
    assert!(first.headers().get("retry-after").is_none());

    let second = send().await;
    assert_eq!(ratelimit(&second).param("r"), 0);
    let refused = send().await;
    let wait = retry_after(&refused);
    let state = ratelimit(&refused);
    assert_eq!((state.param("r"), state.param("t")), (0, wait as i64));
    let (status, code) = status_and_code(refused).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert!((1..=1).contains(&wait), "{wait}");
    // The client does as told: it waits Retry-After, and is served.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(send().await.status(), 200);
}

/// POSTs an article with `key`, which a read key may not do.
async fn post_article(gateway: &TestGateway, key: &str) -> reqwest::Response {
    let request = gateway.client.post(gateway.url("/v1/article"));
    request.bearer_auth(key).body("{}").send().await.unwrap()
}

#[tokio::test]
async fn a_response_refused_before_the_limits_shows_them_without_counting() {
    let (kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway
        .create_key(json!({
            "scope": "read",
            "rate_limit": {"requests": 5, "window_seconds": 60},
            "quota": {"requests": 1000, "period": "day"},
        }))
        .await;
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 200);
    let not_allowed = gateway.keyed_get(gateway.url("/v1/nowhere"), &key).await;
    for refused in [
        post_article(&gateway, &key).await,
        post_article(&gateway, &key).await,
        not_allowed,
    ] {
        let policy = parse_list(&refused.headers()["ratelimit-policy"]);
        let names: Vec<_> = policy.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["rate", "quota"]);
        let state = ratelimit(&refused);
        assert_eq!((state.name.as_str(), state.param("r")), ("rate", 4));
        assert!((1..=12).contains(&state.param("t")), "{state:?}");
        assert!(
            refused.headers().get("retry-after").is_none(),
            "waiting would not help"
        );
        assert_eq!(status_and_code(refused).await.0, 403);
    }
    // Nothing was counted by the refusals.
    let next = gateway.keyed_get(gateway.url(ARTICLE), &key).await;
    assert_eq!(ratelimit(&next).param("r"), 3);
    assert_eq!(quota_state(&gateway, &id).await["used"], 2);
    assert_eq!(kb.count(), 2);
}

#[tokio::test]
async fn an_exhausted_quota_says_when_its_period_ends() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway
        .create_key(json!({"quota": {"requests": 1, "period": "day"}}))
        .await;
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 200);
    let refused = gateway.keyed_get(gateway.url(ARTICLE), &key).await;
    let wait = retry_after(&refused);
    let state = ratelimit(&refused);
    assert_eq!((state.name.as_str(), state.param("r")), ("quota", 0));
    assert_eq!(
        (status_and_code(refused).await.1).as_str(),
        "quota_exceeded"
    );
    let resets_at: chrono::DateTime<chrono::Utc> = quota_state(&gateway, &id).await["resets_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let until = (resets_at - chrono::Utc::now()).num_seconds();
    assert!(
        until.abs_diff(wait as i64) <= 2,
        "Retry-After {wait}, period ends in {until}"
    );
    assert_eq!(resets_at.time(), chrono::NaiveTime::MIN, "midnight UTC");
}

#[tokio::test]
async fn legacy_and_no_headers_as_configured() {
    let (_kb, legacy) = TestGateway::builder()
        .config(|c| c.limit_settings.headers = HeaderStyle::Legacy)
        .start_on_echo()
        .await;
    let (_, key) = legacy
        .create_key(json!({"rate_limit": {"requests": 5, "window_seconds": 60}}))
        .await;
    let response = legacy.keyed_get(legacy.url(ARTICLE), &key).await;
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    assert_eq!(
        (header("x-ratelimit-limit"), header("x-ratelimit-remaining")),
        ("5".into(), "4".into())
    );
    assert!(response.headers().get("ratelimit").is_none());
    let refused = legacy
        .client
        .post(legacy.url(ARTICLE))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "a read key");
    assert_eq!(
        refused.headers()["x-ratelimit-remaining"],
        "4",
        "nothing counted"
    );

    let (_kb, off) = TestGateway::builder()
        .config(|c| c.limit_settings.headers = HeaderStyle::Off)
        .start_on_echo()
        .await;
    let (_, key) = off
        .create_key(json!({"rate_limit": {"requests": 5, "window_seconds": 60}}))
        .await;
    let response = off.keyed_get(off.url(ARTICLE), &key).await;
    assert!(response.headers().get("ratelimit").is_none());
    assert!(response.headers().get("x-ratelimit-limit").is_none());
    // An unlimited key's responses carry none either.
    let plain = legacy.read_write_key().await;
    let response = legacy.keyed_get(legacy.url(ARTICLE), &plain).await;
    assert!(response.headers().get("x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn a_changed_quota_keeps_its_count_and_null_removes_it() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway
        .create_key(json!({"quota": {"requests": 5, "period": "month"}}))
        .await;
    let path = format!("/v1/keys/{id}");
    for _ in 0..4 {
        assert_eq!(gateway.get(ARTICLE, &key).await.0, 200);
    }
    let lowered = json!({"quota": {"requests": 2, "period": "month"}});
    assert_eq!(gateway.admin("PATCH", &path, Some(lowered)).await.0, 200);
    assert_eq!(
        gateway.get(ARTICLE, &key).await,
        (429, "quota_exceeded".into())
    );
    let state = quota_state(&gateway, &id).await;
    assert_eq!(
        (state["used"].as_u64(), state["remaining"].as_u64()),
        (Some(4), Some(0))
    );
    let raised = json!({"quota": {"requests": 5, "period": "month"}});
    assert_eq!(gateway.admin("PATCH", &path, Some(raised)).await.0, 200);
    assert_eq!(gateway.get(ARTICLE, &key).await.0, 200, "the fifth");
    assert_eq!(
        gateway.get(ARTICLE, &key).await.0,
        429,
        "counted before the changes"
    );

    let (_, removed) = gateway
        .admin("PATCH", &path, Some(json!({"quota": null})))
        .await;
    assert_eq!(removed["quota_state"], Value::Null);
    let response = gateway.keyed_get(gateway.url(ARTICLE), &key).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("ratelimit").is_none(),
        "no limit left to show"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_quota_count() {
    let (_kb, mut gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway
        .create_key(json!({"quota": {"requests": 3, "period": "month"}}))
        .await;
    for _ in 0..2 {
        assert_eq!(gateway.get(ARTICLE, &key).await.0, 200);
    }
    gateway.running.take().unwrap().shutdown().await;
    let db = gateway.dir.path().join("kbgate.db");
    let (_kb, again) = TestGateway::builder()
        .config(move |c| c.store = StoreConfig::embedded(db))
        .start_on_echo()
        .await;
    assert_eq!(quota_state(&again, &id).await["used"], 2);
    assert_eq!(again.get(ARTICLE, &key).await.0, 200);
    assert_eq!(again.get(ARTICLE, &key).await.0, 429);
}

/// Each limit's refusals are counted in the key's usage history under their own code.
#[tokio::test]
async fn the_usage_history_counts_each_limits_refusals() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (rate_id, rate) = gateway
        .create_key(json!({"rate_limit": {"requests": 1, "window_seconds": 3600}}))
        .await;
    let (quota_id, quota) = gateway
        .create_key(json!({"quota": {"requests": 1, "period": "day"}}))
        .await;
    let (cidr_id, cidr) = gateway
        .create_key(json!({"allowed_cidrs": ["10.0.0.0/8"]}))
        .await;
    for key in [&rate, &quota, &cidr] {
        for _ in 0..3 {
            gateway.get(ARTICLE, key).await;
        }
    }
    for (id, code, refused) in [
        (rate_id, "rate_limited", 2),
        (quota_id, "quota_exceeded", 2),
        (cidr_id, "ip_not_allowed", 3),
    ] {
        eventually(code, || async {
            let (_, usage) = gateway
                .admin("GET", &format!("/v1/keys/{id}/usage"), None)
                .await;
            usage["total"]["refused"][code] == refused && usage["total"]["requests"] == 3
        })
        .await;
    }
}
