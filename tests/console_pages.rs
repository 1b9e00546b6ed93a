//! The console over plain HTTP (no browser needed), on both stores: the headers every page
//! carries, the session cookie's attributes, paging, search and filters, a revoked admin token
//! ending its sessions, and refusals of forms without the CSRF token or from another site.
//! tests/console.rs walks the same pages in a real browser.

mod common;

use common::{ADMIN_TOKEN, TestGateway, stores};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; returns the cookie to send back.
async fn sign_in(gateway: &TestGateway, token: &str) -> String {
    let response = client()
        .post(gateway.admin_url("/console/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/console/");
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attribute in ["Path=/console", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains(token) && !cookie.contains("Secure"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

/// GETs a console page with `cookie`; returns status, headers and body.
async fn page(gateway: &TestGateway, path: &str, cookie: &str) -> (u16, HeaderMap, String) {
    let response = client()
        .get(gateway.admin_url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

async fn post(gateway: &TestGateway, path: &str, cookie: &str, extra: &[(&str, &str)]) -> u16 {
    post_page(gateway, path, cookie, extra).await.0
}

/// POSTs a console form: `extra` holds its fields, and headers named `h:<name>`; returns the
/// status and the page.
async fn post_page(
    gateway: &TestGateway,
    path: &str,
    cookie: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut request = client()
        .post(gateway.admin_url(path))
        .header("cookie", cookie);
    for (name, value) in extra.iter().filter(|(n, _)| n.starts_with("h:")) {
        request = request.header(&name[2..], *value);
    }
    let fields: Vec<_> = extra.iter().filter(|(n, _)| !n.starts_with("h:")).collect();
    let response = request.form(&fields).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn pages_and_sessions(gateway: &TestGateway) {
    // `/` leads to the console, the console to sign-in; a wrong token is refused.
    let (status, headers, _) = page(gateway, "/", "").await;
    assert_eq!(
        (status, &headers[LOCATION]),
        (303, &"/console/".parse().unwrap())
    );
    let (status, headers, _) = page(gateway, "/console/", "").await;
    assert_eq!(
        (status, &headers[LOCATION]),
        (303, &"/console/login".parse().unwrap())
    );
    let wrong = client()
        .post(gateway.admin_url("/console/login"))
        .form(&[("token", "kbadm_not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let cookie = sign_in(gateway, ADMIN_TOKEN).await;
    let first = gateway.create_key(json!({"name": "Chatbot <b>"})).await.0;
    for i in 0..52 {
        gateway
            .create_key(json!({"name": format!("sync {i}")}))
            .await;
    }
    gateway
        .admin(
            "PATCH",
            &format!("/v1/keys/{first}"),
            Some(json!({"enabled": false})),
        )
        .await;
    for path in [
        "/console/",
        "/console/audit",
        "/console/tokens",
        &format!("/console/keys/{first}"),
    ] {
        let (status, headers, html) = page(gateway, path, &cookie).await;
        assert_eq!(status, 200, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(
            !html.contains("<script>") && !html.contains(ADMIN_TOKEN),
            "{path}"
        );
    }

    // Paging: 50 keys a page, oldest first, and a link to the rest.
    let (_, _, html) = page(gateway, "/console/", &cookie).await;
    assert_eq!(html.matches("<tr data-key-id=").count(), 50);
    assert!(html.contains("Chatbot &lt;b&gt;"));
    let next = html
        .split("href=\"")
        .find(|s| s.starts_with("/console/?"))
        .unwrap();
    let next = next.split('"').next().unwrap().replace("&amp;", "&");
    let (_, _, html) = page(gateway, &next, &cookie).await;
    assert_eq!(html.matches("<tr data-key-id=").count(), 3);
    // Search and filters go through the API's list.
    let (_, _, html) = page(gateway, "/console/?q=chatbot", &cookie).await;
    assert_eq!(html.matches("<tr data-key-id=").count(), 1);
    let (_, _, html) = page(gateway, "/console/?filter=disabled", &cookie).await;
    assert_eq!(html.matches("<tr data-key-id=").count(), 1);
    assert!(html.contains(&first));
    let (status, _, html) = page(gateway, "/console/keys/key_nope", &cookie).await;
    assert_eq!(status, 404, "{html}");

    // Forms: no token, a wrong one, or from another site: 403, and nothing changes.
    let csrf = csrf_of(&page(gateway, "/console/", &cookie).await.2);
    let delete = format!("/console/keys/{first}/delete");
    assert_eq!(post(gateway, &delete, &cookie, &[]).await, 403);
    assert_eq!(
        post(gateway, &delete, &cookie, &[("csrf", "nope")]).await,
        403
    );
    let cross = [("csrf", csrf.as_str()), ("h:sec-fetch-site", "cross-site")];
    assert_eq!(post(gateway, &delete, &cookie, &cross).await, 403);
    let evil = [("csrf", csrf.as_str()), ("h:origin", "http://evil.example")];
    assert_eq!(post(gateway, &delete, &cookie, &evil).await, 403);
    assert_eq!(
        gateway
            .admin("GET", &format!("/v1/keys/{first}"), None)
            .await
            .0,
        200
    );
    // With the token: enabled again, as the audit trail says with the console's actor.
    let enable = format!("/console/keys/{first}/enable");
    assert_eq!(
        post(gateway, &enable, &cookie, &[("csrf", &csrf)]).await,
        303
    );
    let (_, key) = gateway
        .admin("GET", &format!("/v1/keys/{first}"), None)
        .await;
    assert_eq!(key["enabled"], true);
    let (_, trail) = gateway
        .admin("GET", "/v1/audit?action=key.enabled", None)
        .await;
    assert_eq!(trail["entries"][0]["actor"]["id"], "config");
    edit_keeps_an_expiry_left_as_shown(gateway, &cookie, &csrf).await;

    // A stored token's session ends when the token is revoked, at the next request.
    let (token_id, token) = gateway.create_admin_token("ops", "operator").await;
    let ops = sign_in(gateway, &token).await;
    let (status, _, html) = page(gateway, "/console/", &ops).await;
    assert_eq!(status, 200);
    assert!(!html.contains("/console/tokens") && html.contains("Create key"));
    let (status, _, _) = page(gateway, "/console/tokens", &ops).await;
    assert_eq!(status, 403);
    let revoked = gateway
        .admin("DELETE", &format!("/v1/admin-tokens/{token_id}"), None)
        .await;
    assert_eq!(revoked.0, 204);
    let (status, headers, _) = page(gateway, "/console/", &ops).await;
    assert_eq!(
        (status, &headers[LOCATION]),
        (303, &"/console/login".parse().unwrap())
    );
}

/// Edit sends the expiry only when it was changed: left as shown (to the minute) it stays as
/// it is, to the second; emptied, the key no longer expires.
async fn edit_keeps_an_expiry_left_as_shown(gateway: &TestGateway, cookie: &str, csrf: &str) {
    let expires_at = "2031-05-06T07:08:09.123Z";
    let (id, _) = gateway
        .create_key(json!({"name": "expiring", "expires_at": expires_at}))
        .await;
    let (_, _, html) = page(gateway, &format!("/console/keys/{id}/edit"), cookie).await;
    assert!(html.contains("value=\"2031-05-06T07:08\""), "{html}");
    let edit = format!("/console/keys/{id}/edit");
    let fields = [
        ("csrf", csrf),
        ("name", "renamed"),
        ("scope", "read"),
        ("expires", "2031-05-06T07:08"),
    ];
    assert_eq!(post(gateway, &edit, cookie, &fields).await, 303);
    let (_, key) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(
        (key["name"].as_str(), key["expires_at"].as_str()),
        (Some("renamed"), Some(expires_at))
    );
    let fields = [("csrf", csrf), ("name", "renamed"), ("expires", "")];
    assert_eq!(post(gateway, &edit, cookie, &fields).await, 303);
    let (_, key) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(key["expires_at"], serde_json::Value::Null);
    // A write permission on a Read-only key is refused, and the form says why.
    let fields = [
        ("csrf", csrf),
        ("scope", "read"),
        ("permission", "article:write"),
    ];
    assert_eq!(post(gateway, &edit, cookie, &fields).await, 422);
}

/// An admin creates an admin token in the console (its secret shown once, working against the
/// API), sees it listed, and revokes it; an operator gets neither the page nor the form.
async fn admin_tokens(gateway: &TestGateway) {
    let cookie = sign_in(gateway, ADMIN_TOKEN).await;
    let (_, _, html) = page(gateway, "/console/tokens", &cookie).await;
    let csrf = csrf_of(&html);
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", "Support <lead>"),
        ("role", "operator"),
        ("expires", ""),
    ];
    let (status, html) = post_page(gateway, "/console/tokens", &cookie, &fields).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("This is the only time the secret is shown"));
    let at = html.find("value=\"kbadm_").expect("the secret on the page") + 7;
    let secret = html[at..].split('"').next().unwrap().to_string();
    let as_token = |secret: String| async move {
        client()
            .get(gateway.admin_url("/v1/keys"))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(as_token(secret.clone()).await, 200);
    let (_, tokens) = gateway.admin("GET", "/v1/admin-tokens", None).await;
    let token = &tokens["tokens"][0];
    assert_eq!(
        (token["name"].as_str(), token["role"].as_str()),
        (Some("Support <lead>"), Some("operator"))
    );
    let id = token["id"].as_str().unwrap();
    let (_, _, html) = page(gateway, "/console/tokens", &cookie).await;
    assert!(html.contains("Support &lt;lead&gt;") && !html.contains(&secret));

    // An operator may neither see the page nor post its form.
    let ops = sign_in(gateway, &secret).await;
    assert_eq!(page(gateway, "/console/tokens", &ops).await.0, 403);
    let ops_csrf = csrf_of(&page(gateway, "/console/", &ops).await.2);
    let fields = [
        ("csrf", ops_csrf.as_str()),
        ("name", "x"),
        ("role", "viewer"),
    ];
    assert_eq!(post(gateway, "/console/tokens", &ops, &fields).await, 403);

    // Revoke, after a confirmation page: the token is refused, and audited with the actor.
    let revoke = format!("/console/tokens/{id}/delete");
    let (status, _, html) = page(gateway, &revoke, &cookie).await;
    assert!(status == 200 && html.contains("Revoke token"), "{html}");
    assert_eq!(
        post(gateway, &revoke, &cookie, &[("csrf", &csrf)]).await,
        303
    );
    assert_eq!(as_token(secret).await, 401);
    let (_, trail) = gateway.admin("GET", "/v1/audit", None).await;
    let entries: Vec<(&str, &str)> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("admin_token.deleted", "config"),
            ("admin_token.created", "config")
        ]
    );
}

for_each_store!(embedded => |kb| stores::embedded(kb, |_| {}); pages_and_sessions, admin_tokens);
for_each_store!(redis => |kb| stores::redis(kb, "console-pages:", |_| {}); pages_and_sessions, admin_tokens);
