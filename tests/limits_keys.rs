//! Per-key limits as the admin API takes and shows them, `key_defaults`, and the address
//! allowlist over real sockets (IPv4 and IPv6, behind trusted proxies and not).

mod common;

use common::{TestGateway, shipped_with, status_and_code};
use kbgate::keys::limits::{KeyDefaults, Quota, QuotaCounts, QuotaPeriod, RateLimit};
use serde_json::{Value, json};

const ARTICLE: &str = "/v1/article/a1";

#[tokio::test]
async fn limits_are_set_shown_changed_and_removed() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    let (status, key) = gateway
        .admin(
            "POST",
            "/v1/keys",
            Some(json!({
                "rate_limit": {"requests": 100, "window_seconds": 60, "burst": 10},
                "quota": {"requests": 1000, "period": "month"},
                "allowed_cidrs": ["127.0.0.0/8", " 2001:db8::/32 "],
            })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(
        key["rate_limit"],
        json!({"requests": 100, "window_seconds": 60, "burst": 10})
    );
    assert_eq!(
        key["quota"],
        json!({"requests": 1000, "period": "month", "counts": "successful"})
    );
    assert_eq!(
        key["allowed_cidrs"],
        json!(["127.0.0.0/8", "2001:db8::/32"])
    );
    let id = key["id"].as_str().unwrap();
    let path = format!("/v1/keys/{id}");

    let (status, edited) = gateway
        .admin(
            "PATCH",
            &path,
            Some(json!({"rate_limit": null, "allowed_cidrs": null})),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["rate_limit"], Value::Null);
    assert_eq!(edited["allowed_cidrs"], json!([]));
    assert_eq!(
        edited["quota"]["requests"], 1000,
        "an absent field is unchanged"
    );
    let (_, shown) = gateway.admin("GET", &path, None).await;
    assert_eq!(shown["rate_limit"], Value::Null);
    assert_eq!(shown["quota"]["period"], "month");
}

#[tokio::test]
async fn bad_limits_are_refused_naming_the_field() {
    let (_kb, gateway) = TestGateway::builder().start_on_echo().await;
    for (body, field) in [
        (
            json!({"rate_limit": {"requests": 0, "window_seconds": 60}}),
            "rate_limit",
        ),
        (
            json!({"rate_limit": {"requests": 5, "window_seconds": 0}}),
            "rate_limit",
        ),
        (
            json!({"rate_limit": {"requests": 5, "window_seconds": 1, "burst": 0}}),
            "rate_limit",
        ),
        (json!({"rate_limit": {"requests": 5}}), "rate_limit"),
        (json!({"quota": {"requests": 5, "period": "week"}}), "quota"),
        (
            json!({"quota": {"requests": 5, "period": "day", "counts": "some"}}),
            "quota",
        ),
        (json!({"quota": {"requests": 0, "period": "day"}}), "quota"),
        (
            json!({"allowed_cidrs": ["10.0.0.0/8", "10.0.0.0/33"]}),
            "allowed_cidrs",
        ),
        (json!({"allowed_cidrs": "10.0.0.0/8"}), "allowed_cidrs"),
    ] {
        let (status, error) = gateway.admin("POST", "/v1/keys", Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
}

#[tokio::test]
async fn key_defaults_apply_to_keys_without_their_own() {
    let quota = Quota {
        requests: 2,
        period: QuotaPeriod::Day,
        counts: QuotaCounts::All,
    };
    let (_kb, gateway) = TestGateway::builder()
        .config(move |c| {
            c.limit_settings.defaults = KeyDefaults {
                rate_limit: None,
                quota: Some(quota),
            }
        })
        .start_on_echo()
        .await;
    let (_, plain) = gateway.create_key(json!({})).await;
    let (_, own) = gateway
        .create_key(json!({"quota": {"requests": 3, "period": "day", "counts": "all"}}))
        .await;
    let statuses = |key: String| {
        let gateway = &gateway;
        async move {
            let mut seen = Vec::new();
            for _ in 0..4 {
                seen.push(gateway.get(ARTICLE, &key).await);
            }
            seen
        }
    };
    let ok = (200, String::new());
    let over = (429, "quota_exceeded".to_string());
    assert_eq!(
        statuses(plain).await,
        [ok.clone(), ok.clone(), over.clone(), over.clone()]
    );
    assert_eq!(statuses(own).await, [ok.clone(), ok.clone(), ok, over]);
}

#[test]
fn key_defaults_are_read_and_checked_from_the_config() {
    let text = shipped_with(&[(
        "usage:\n",
        "key_defaults:\n  rate_limit: { requests: 100, window_seconds: 60 }\nusage:\n",
    )]);
    let config = common::parse_config(&text);
    assert_eq!(
        config.limit_settings.defaults.rate_limit,
        Some(RateLimit {
            requests: 100,
            window_seconds: 60,
            burst: None
        })
    );
    let bad = shipped_with(&[(
        "usage:\n",
        "key_defaults:\n  quota: { requests: 0, period: day }\nusage:\n",
    )]);
    let error = kbgate::Config::parse_with_env(&bad, &common::test_env)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("key_defaults.quota: requests must be"),
        "{error}"
    );
}

/// A gateway on `listen` whose peers in `trusted` are proxies, and a key allowed from `cidrs`.
async fn gateway_with_allowlist(
    listen: &str,
    trusted: &str,
    cidrs: &[&str],
) -> (common::RunningKb, TestGateway, String) {
    let listen: std::net::SocketAddr = listen.parse().unwrap();
    let yaml = format!("trusted_proxies: [{trusted}]\n{}", common::shipped_yaml());
    let (kb, gateway) = TestGateway::builder()
        .yaml(&yaml)
        .config(move |c| c.listen = listen)
        .start_on_echo()
        .await;
    let (_, key) = gateway.create_key(json!({"allowed_cidrs": cidrs})).await;
    (kb, gateway, key)
}

async fn get_from(gateway: &TestGateway, key: &str, forwarded_for: Option<&str>) -> (u16, String) {
    let mut request = gateway.client.get(gateway.url(ARTICLE)).bearer_auth(key);
    if let Some(chain) = forwarded_for {
        request = request.header("x-forwarded-for", chain);
    }
    status_and_code(request.send().await.unwrap()).await
}

#[tokio::test]
async fn the_allowlist_holds_for_ipv4_and_ipv6_peers() {
    let (kb, gateway, key) =
        gateway_with_allowlist("127.0.0.1:0", "10.255.255.255", &["127.0.0.0/8"]).await;
    assert_eq!(get_from(&gateway, &key, None).await, (200, String::new()));
    let (_, elsewhere) = gateway
        .create_key(json!({"allowed_cidrs": ["10.0.0.0/8"]}))
        .await;
    assert_eq!(
        get_from(&gateway, &elsewhere, None).await,
        (403, "ip_not_allowed".to_string())
    );
    // A forged X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
    assert_eq!(
        get_from(&gateway, &elsewhere, Some("10.1.2.3")).await,
        (403, "ip_not_allowed".to_string())
    );
    assert_eq!(kb.count(), 1, "only the allowed request reached the KB");

    let (_kb, gateway6, key6) =
        gateway_with_allowlist("[::1]:0", "10.255.255.255", &["::1/128"]).await;
    assert_eq!(get_from(&gateway6, &key6, None).await, (200, String::new()));
    let (_, v4_only) = gateway6
        .create_key(json!({"allowed_cidrs": ["127.0.0.0/8"]}))
        .await;
    assert_eq!(
        get_from(&gateway6, &v4_only, None).await,
        (403, "ip_not_allowed".to_string())
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let (kb, gateway, key) = gateway_with_allowlist(
        "127.0.0.1:0",
        "127.0.0.1",
        &["203.0.113.0/24", "2001:db8::/32"],
    )
    .await;
    assert_eq!(
        get_from(&gateway, &key, Some("198.51.100.9, 203.0.113.7")).await,
        (200, String::new())
    );
    assert_eq!(
        get_from(&gateway, &key, Some("203.0.113.7, 198.51.100.9")).await,
        (403, "ip_not_allowed".to_string()),
        "the first untrusted address from the right is the client"
    );
    assert_eq!(
        get_from(&gateway, &key, Some("[2001:db8::5]:443")).await,
        (200, String::new())
    );
    assert_eq!(
        get_from(&gateway, &key, None).await,
        (403, "ip_not_allowed".to_string()),
        "without the header the client is the proxy itself"
    );
    assert_eq!(kb.count(), 2);
}

#[tokio::test]
async fn the_address_is_checked_before_the_route() {
    let (_kb, gateway, key) =
        gateway_with_allowlist("127.0.0.1:0", "10.255.255.255", &["10.0.0.0/8"]).await;
    let (status, code) = gateway.get("/v1/nowhere", &key).await;
    assert_eq!((status, code.as_str()), (403, "ip_not_allowed"));
}
