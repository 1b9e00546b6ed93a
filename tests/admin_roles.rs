//! Admin tokens and roles through the admin API, on both stores: every endpoint against every
//! role, no token, a revoked token and an expired one; tokens shown once, stored as hashes,
//! never above their creator's role; a token revoked on one gateway is refused at once by
//! another sharing its Redis.

mod common;

use common::{TestGateway, eventually, stores};
use serde_json::{Value, json};

/// Creates an admin token with `role` (as the config's bootstrap token); returns (id, secret).
async fn token(gateway: &TestGateway, role: &str, extra: Value) -> (String, String) {
    let mut body = json!({"name": format!("{role} token"), "role": role});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, created) = gateway.admin("POST", "/v1/admin-tokens", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

/// One call of the matrix: method, path, body, and the least role it needs.
struct Call {
    method: &'static str,
    path: String,
    body: Option<Value>,
    needs: &'static str,
}

/// Every /v1 endpoint, each on a fresh target so that an allowed call succeeds.
async fn calls(gateway: &TestGateway) -> Vec<Call> {
    let key = gateway.create_key(json!({})).await.0;
    let (victim, _) = token(gateway, "viewer", json!({})).await;
    let call = |method, path: String, body, needs| Call {
        method,
        path,
        body,
        needs,
    };
    vec![
        call("GET", "/v1/keys".into(), None, "viewer"),
        call("GET", format!("/v1/keys/{key}"), None, "viewer"),
        call("GET", "/v1/audit".into(), None, "viewer"),
        call("GET", "/v1/audit/verify".into(), None, "viewer"),
        call("POST", "/v1/keys".into(), Some(json!({})), "operator"),
        call(
            "PATCH",
            format!("/v1/keys/{key}"),
            Some(json!({"name": "x"})),
            "operator",
        ),
        call(
            "POST",
            format!("/v1/keys/{key}/rotate"),
            Some(json!({})),
            "operator",
        ),
        call(
            "POST",
            format!("/v1/keys/{key}/rotation/end"),
            None,
            "operator",
        ),
        call("GET", "/v1/admin-tokens".into(), None, "admin"),
        call(
            "POST",
            "/v1/admin-tokens".into(),
            Some(json!({"name": "n", "role": "viewer"})),
            "admin",
        ),
        call(
            "DELETE",
            format!("/v1/admin-tokens/{victim}"),
            None,
            "admin",
        ),
        call("DELETE", format!("/v1/keys/{key}"), None, "admin"),
    ]
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 1,
        "operator" => 2,
        _ => 3,
    }
}

async fn role_matrix(gateway: &TestGateway) {
    let (_, viewer) = token(gateway, "viewer", json!({})).await;
    let (_, operator) = token(gateway, "operator", json!({})).await;
    let (_, admin) = token(gateway, "admin", json!({})).await;
    let (revoked_id, revoked) = token(gateway, "admin", json!({})).await;
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let (_, expired) = token(gateway, "admin", json!({"expires_at": soon.to_rfc3339()})).await;
    let path = format!("/v1/admin-tokens/{revoked_id}");
    assert_eq!(gateway.admin("DELETE", &path, None).await.0, 204);
    eventually("the token expires", || async {
        gateway
            .admin_as(Some(&expired), "GET", "/v1/keys", None)
            .await
            .0
            == 401
    })
    .await;

    let refused: [(&str, Option<&str>, &str); 4] = [
        ("no token", None, "unauthorized"),
        ("revoked", Some(&revoked), "unauthorized"),
        ("expired", Some(&expired), "token_expired"),
        ("malformed", Some("kbadm_nothing"), "unauthorized"),
    ];
    for (what, token, code) in refused {
        for call in calls(gateway).await {
            let (status, body) = gateway
                .admin_as(token, call.method, &call.path, call.body.clone())
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some(code)),
                "{what}: {} {}",
                call.method,
                call.path
            );
        }
    }
    for (role, token) in [
        ("viewer", viewer.as_str()),
        ("operator", operator.as_str()),
        ("admin", admin.as_str()),
        ("admin", common::ADMIN_TOKEN),
    ] {
        for call in calls(gateway).await {
            let (status, body) = gateway
                .admin_as(Some(token), call.method, &call.path, call.body.clone())
                .await;
            let what = format!("{role}: {} {}", call.method, call.path);
            if rank(role) >= rank(call.needs) {
                assert!((200..300).contains(&status), "{what}: {status} {body}");
            } else {
                assert_eq!(status, 403, "{what}: {body}");
                assert_eq!(body["error"]["code"], "insufficient_role", "{what}");
            }
        }
    }
    // Health, readiness and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            gateway.admin_as(None, "GET", path, None).await.0,
            200,
            "{path}"
        );
    }
}

async fn tokens_are_shown_once_and_kept_as_hashes(gateway: &TestGateway) {
    let (status, created) = gateway
        .admin(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "CI", "role": "operator"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("kbadm_") && secret.starts_with(created["start"].as_str().unwrap()));
    assert_eq!(created["created_by"], "config");
    let (status, list) = gateway.admin("GET", "/v1/admin-tokens", None).await;
    assert_eq!(status, 200);
    let listed = list["tokens"].as_array().unwrap();
    let mine = listed.iter().find(|t| t["id"] == created["id"]).unwrap();
    assert_eq!(mine["role"], "operator");
    let text = list.to_string();
    assert!(!text.contains(secret), "no secret in the list");
    assert!(!text.contains(&blake3::hash(secret.as_bytes()).to_hex().to_string()));

    // The operator works with what its role allows and cannot mint tokens.
    assert_eq!(
        gateway
            .admin_as(Some(secret), "POST", "/v1/keys", None)
            .await
            .0,
        201
    );
    let (status, body) = gateway
        .admin_as(
            Some(secret),
            "POST",
            "/v1/admin-tokens",
            Some(json!({"name": "up", "role": "admin"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("insufficient_role"))
    );

    for (body, field) in [
        (json!({"role": "viewer"}), "name"),
        (json!({"name": "x"}), "role"),
        (json!({"name": "x", "role": "root"}), "role"),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (json!({"name": "", "role": "viewer"}), "name"),
    ] {
        let (status, error) = gateway
            .admin("POST", "/v1/admin-tokens", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let (status, _) = gateway
        .admin("DELETE", "/v1/admin-tokens/adm_nope", None)
        .await;
    assert_eq!(status, 404);
}

for_each_store!(embedded => |kb| stores::embedded(kb, |_| {});
    role_matrix, tokens_are_shown_once_and_kept_as_hashes);
for_each_store!(redis => |kb| stores::redis(kb, "roles:", |_| {});
    role_matrix, tokens_are_shown_once_and_kept_as_hashes);

/// A token deleted through one gateway is refused by another on the same Redis at once: the
/// token is looked up in the store on every admin request, never cached.
#[tokio::test]
async fn a_revoked_token_is_refused_at_once_by_every_gateway() {
    let Some(stores::RedisPair {
        a,
        b,
        server: _server,
        upstream: _upstream,
    }) = stores::redis_pair("revoke:").await
    else {
        return;
    };
    let (id, secret) = token(&a, "viewer", json!({})).await;
    assert_eq!(
        b.admin_as(Some(&secret), "GET", "/v1/keys", None).await.0,
        200
    );
    assert_eq!(
        a.admin("DELETE", &format!("/v1/admin-tokens/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        b.admin_as(Some(&secret), "GET", "/v1/keys", None).await.0,
        401
    );
    a.shutdown().await;
    b.shutdown().await;
}
