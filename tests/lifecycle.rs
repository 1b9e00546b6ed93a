//! The key lifecycle through the admin API, and that every change holds from the very next
//! request. Written once as `suite` functions over a running gateway, so the same tests run
//! against every store (see the `for_each_store!` list at the bottom).

mod common;

use common::{ADMIN_TOKEN, TestGateway, eventually, stores};
use serde_json::{Value, json};

async fn create_with_defaults(gateway: &TestGateway) {
    let before = chrono::Utc::now();
    let (status, key) = gateway.admin("POST", "/v1/keys", None).await;
    assert_eq!(status, 201, "{key}");
    let name = key["name"].as_str().unwrap();
    let named_at = chrono::NaiveDateTime::parse_from_str(name, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|_| panic!("default name {name:?} is a date and time"))
        .and_utc();
    assert!((named_at - before).num_seconds().abs() <= 2);
    assert_eq!(key["scope"], "read");
    assert_eq!(key["permissions"], json!([]));
    assert_eq!(key["enabled"], true);
    assert_eq!(key["expires_at"], Value::Null);
    assert_eq!(key["last_used_at"], Value::Null);
    assert_eq!(key["request_count"], 0);
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with("kb_") && secret.starts_with(key["start"].as_str().unwrap()));
    for field in ["id", "name", "start", "created_at", "updated_at"] {
        assert!(key[field].is_string(), "{field}");
    }

    let (status, shown) = gateway
        .admin(
            "GET",
            &format!("/v1/keys/{}", key["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown only once"
    );
    assert_eq!(shown["name"], key["name"]);
}

async fn list_oldest_first(gateway: &TestGateway) {
    let mut ids = Vec::new();
    for name in ["Chatbot Integration", "Data Export Tool", "Sync Job"] {
        ids.push(gateway.create_key(json!({"name": name})).await.0);
    }
    let (status, list) = gateway.admin("GET", "/v1/keys", None).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    let positions: Vec<usize> = ids
        .iter()
        .map(|id| listed.iter().position(|l| l == id).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "new keys at the bottom: {listed:?}"
    );
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("secret").is_none())
    );
}

async fn admin_input_is_checked(gateway: &TestGateway) {
    let (status, body) = gateway
        .post_key(json!({"scope": "read", "permissions": ["article:write"]}))
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a read key cannot be given article:write"),
        "{body}"
    );
    let (status, body) = gateway.post_key(json!({"nmae": "typo"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
    let (status, _) = gateway
        .post_key(json!({"permissions": ["articel:read"]}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = gateway
        .post_key(json!({"expires_at": "2001-01-01T00:00:00Z"}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = gateway
        .admin("GET", "/v1/keys/key_doesnotexist0000", None)
        .await;
    assert_eq!(status, 404);
    let raw = gateway
        .client
        .post(gateway.admin_url("/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let anonymous = gateway.plain_get(gateway.admin_url("/v1/keys")).await;
    assert_eq!(anonymous.status(), 401);
    let wrong = gateway
        .keyed_get(gateway.admin_url("/v1/keys"), "not-the-token")
        .await;
    assert_eq!(wrong.status(), 401);
    let openapi: Value = gateway
        .plain_get(gateway.admin_url("/openapi.json"))
        .await
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/v1/keys/{id}/rotate"].is_object());
}

async fn changes_hold_from_the_next_request(gateway: &TestGateway) {
    let (id, key) = gateway
        .create_key(json!({"name": "Sync", "scope": "read_write"}))
        .await;
    let path = format!("/v1/keys/{id}");
    let edit =
        |body: Value| async { assert_eq!(gateway.admin("PATCH", &path, Some(body)).await.0, 200) };

    assert_eq!(
        gateway.send("POST", "/v1/article", &key).await.0,
        200,
        "cached in the hot tier now"
    );
    edit(json!({"scope": "read"})).await;
    assert_eq!(
        gateway.send("POST", "/v1/article", &key).await,
        (403, "insufficient_permissions".into())
    );
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);

    edit(json!({"permissions": ["search:read"]})).await;
    assert_eq!(
        gateway.get("/v1/article", &key).await,
        (403, "insufficient_permissions".into())
    );
    assert_eq!(gateway.get("/v1/search?query=a", &key).await.0, 200);

    edit(json!({"permissions": []})).await;
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);

    edit(json!({"enabled": false})).await;
    assert_eq!(
        gateway.get("/v1/article", &key).await,
        (401, "key_disabled".into())
    );
    edit(json!({"enabled": true})).await;
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);

    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(800);
    edit(json!({"expires_at": soon.to_rfc3339()})).await;
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);
    eventually("expiry takes effect", || async {
        gateway.get("/v1/article", &key).await == (401, "key_expired".into())
    })
    .await;
    // An expiry can be lifted again.
    edit(json!({"expires_at": null})).await;
    assert_eq!(gateway.get("/v1/article", &key).await.0, 200);

    edit(json!({"name": "Renamed"})).await;
    assert_eq!(gateway.admin("GET", &path, None).await.1["name"], "Renamed");

    assert_eq!(gateway.admin("DELETE", &path, None).await.0, 204);
    assert_eq!(
        gateway.get("/v1/article", &key).await,
        (401, "invalid_key".into())
    );
    assert_eq!(gateway.admin("GET", &path, None).await.0, 404);
    assert_eq!(gateway.admin("DELETE", &path, None).await.0, 404);
}

async fn rotation_with_grace(gateway: &TestGateway) {
    let (id, old) = gateway.create_key(json!({})).await;
    assert_eq!(gateway.get("/v1/article", &old).await.0, 200);
    let (status, rotated) = gateway.rotate(&id, 2).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(rotated["id"], id.as_str(), "same key, new secret");
    assert!(new.starts_with(rotated["start"].as_str().unwrap()));
    let rotated_at = chrono::Utc::now();
    assert_eq!(gateway.get("/v1/article", &new).await.0, 200);
    assert_eq!(
        gateway.get("/v1/article", &old).await.0,
        200,
        "the old secret works during the grace"
    );
    eventually("the grace ends", || async {
        gateway.get("/v1/article", &old).await == (401, "key_expired".into())
    })
    .await;
    assert!(chrono::Utc::now() - rotated_at >= chrono::Duration::milliseconds(1900));
    assert_eq!(gateway.get("/v1/article", &new).await.0, 200);

    // Grace 0: the old secret is refused at once.
    let (status, again) = gateway.rotate(&id, 0).await;
    assert_eq!(status, 200);
    assert_eq!(
        gateway.get("/v1/article", &new).await,
        (401, "key_expired".into())
    );
    assert_eq!(
        gateway
            .get("/v1/article", again["secret"].as_str().unwrap())
            .await
            .0,
        200
    );
}

for_each_store!(embedded => |kb| stores::embedded(kb, |_| {});
    create_with_defaults,
    list_oldest_first,
    admin_input_is_checked,
    changes_hold_from_the_next_request,
    rotation_with_grace,
);

for_each_store!(redis => |kb| stores::redis(kb, "lifecycle:", |_| {});
    create_with_defaults,
    list_oldest_first,
    admin_input_is_checked,
    changes_hold_from_the_next_request,
    rotation_with_grace,
);
