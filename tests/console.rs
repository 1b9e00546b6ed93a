//! The console (Settings > API) in a real browser: chromium driven over WebDriver against the
//! real gateway, a fake KB and each store. One browser session per store walks the issue's
//! list: sign in; create a key and read its secret from the page; use it (200); narrow it to
//! search:read (403 on an article); the XSS name; rotate and use the new secret; disable,
//! enable, delete; a cross-site post and a post without the CSRF token refused; sign out and
//! the old cookie refused; a viewer sees no write controls and a forged post of theirs is
//! refused. Screenshots go to target/console-screenshots/ (the README's key list to docs/ with
//! KBGATE_UPDATE_DOCS_SCREENSHOT=1).

mod common;

use common::browser::Browser;
use common::{ADMIN_TOKEN, TestGateway, stores};
use fantoccini::Locator;
use serde_json::json;

const XSS: &str = "<script>alert(1)</script>";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token` and waits for the key list.
async fn sign_in(browser: &Browser, gateway: &TestGateway, token: &str) {
    browser.goto(&gateway.admin_url("/")).await;
    // `/` leads to the console, which leads to the sign-in page.
    browser
        .wait("input#token")
        .await
        .send_keys(token)
        .await
        .unwrap();
    browser.click("form[action='/console/login'] button").await;
    browser.wait_title("API keys").await;
}

/// The session cookie and the page's CSRF token, as a forger who stole them would have them.
async fn session_of(browser: &Browser) -> (String, String) {
    let cookie = browser
        .client
        .get_named_cookie("kbgate_console")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let csrf = browser
        .wait("input[name=csrf]")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    (format!("kbgate_console={}", cookie.value()), csrf)
}

/// POSTs a console form outside the browser; returns the status.
async fn post(gateway: &TestGateway, path: &str, cookie: &str, fields: &[(&str, &str)]) -> u16 {
    let origin = gateway.admin_url("");
    no_redirects()
        .post(gateway.admin_url(path))
        .header("cookie", cookie)
        .header("origin", origin.trim_end_matches('/'))
        .form(fields)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Opens the key's More menu in the list and clicks `item`.
async fn more(browser: &Browser, gateway: &TestGateway, id: &str, item: &str) {
    browser.goto(&gateway.admin_url("/console/")).await;
    let row = format!("tr[data-key-id='{id}']");
    browser.click(&format!("{row} details.more summary")).await;
    let item = browser
        .wait(&format!("{row} details.more"))
        .await
        .find(Locator::XPath(&format!(
            ".//*[self::a or self::button][normalize-space()='{item}']"
        )))
        .await
        .unwrap();
    item.click().await.unwrap();
}

async fn secret_on_page(browser: &Browser) -> String {
    browser
        .wait("input#secret")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap()
}

/// A few keys as a KB owner would have them, and the key list's screenshot; with
/// KBGATE_UPDATE_DOCS_SCREENSHOT=1 also the README's (docs/console-keys.png).
async fn key_list_picture(browser: &Browser, gateway: &TestGateway, screenshots: bool) {
    let keys = [
        json!({"name": "Chatbot Integration", "permissions": ["search:read", "article:read"]}),
        json!({"name": "Content Sync", "scope": "read_write"}),
        json!({"name": "Support Tool"}),
    ];
    for (i, key) in keys.into_iter().enumerate() {
        let (_, secret) = gateway.create_key(key).await;
        for _ in 0..(3 - i) * 2 {
            assert_eq!(gateway.get("/v1/search?query=x", &secret).await.0, 200);
        }
    }
    browser.goto(&gateway.admin_url("/console/")).await;
    browser.wait("table.keys").await;
    if screenshots {
        let png = browser.screenshot("keys").await;
        if std::env::var("KBGATE_UPDATE_DOCS_SCREENSHOT").as_deref() == Ok("1") {
            let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console-keys.png");
            std::fs::write(docs, png).unwrap();
        }
    }
}

async fn walk(gateway: &TestGateway, screenshots: bool) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let shot = |name: &'static str| {
        let browser = &browser;
        async move {
            if screenshots {
                browser.screenshot(name).await;
            }
        }
    };
    let (_, viewer_token) = gateway.create_admin_token("auditor", "viewer").await;

    browser.goto(&gateway.admin_url("/console/login")).await;
    browser.wait("input#token").await;
    shot("sign-in").await;
    sign_in(&browser, gateway, ADMIN_TOKEN).await;

    // Create key: the secret, once, and it works at the gateway.
    browser.click("form[action='/console/keys'] button").await;
    browser.wait_title("Your new key").await;
    let secret = secret_on_page(&browser).await;
    assert!(secret.starts_with("kb_"), "{secret}");
    // The copy button's script runs (under the CSP: no inline script) and says what it did.
    browser.click("button[data-copy=secret]").await;
    browser
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(90))
        .for_element(Locator::XPath(
            "//span[@class='copied' and normalize-space()!='']",
        ))
        .await
        .unwrap();
    shot("secret").await;
    assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
    browser.click("a[href^='/console/keys/']").await;
    browser.wait("dl.settings").await;
    let url = browser.client.current_url().await.unwrap();
    let id = url.path().rsplit('/').next().unwrap().to_string();
    // Named with the date and time, at the bottom of the list.
    browser.goto(&gateway.admin_url("/console/")).await;
    let last = browser.wait("table.keys tbody tr:last-child").await;
    assert_eq!(
        last.attr("data-key-id").await.unwrap().as_deref(),
        Some(id.as_str())
    );
    let name = last
        .find(Locator::Css("a.key-name"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(name.starts_with("20") && name.contains(':'), "{name}");

    // Edit: the XSS name, narrowed to search:read; a read key cannot pick a write permission.
    more(&browser, gateway, &id, "Edit").await;
    browser.wait_title("Edit key").await;
    let write_box = browser
        .wait("input[name=permission][value='article:write']")
        .await;
    assert!(!write_box.is_enabled().await.unwrap());
    // Read and Write offers the write permissions; back to Read-only takes them away.
    browser.click("input[name=scope][value=read_write]").await;
    assert!(write_box.is_enabled().await.unwrap());
    browser.click("input[name=scope][value=read]").await;
    assert!(!write_box.is_enabled().await.unwrap());
    let name_field = browser.wait("input#name").await;
    name_field.clear().await.unwrap();
    name_field.send_keys(XSS).await.unwrap();
    browser
        .click("input[name=permission][value='search:read']")
        .await;
    shot("edit").await;
    browser.click("form.card button[type=submit]").await;
    browser.wait_title(XSS).await;
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no script ran"
    );
    assert!(
        browser
            .client
            .source()
            .await
            .unwrap()
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    assert_eq!(
        gateway.get("/v1/article", &secret).await,
        (403, "insufficient_permissions".into())
    );
    assert_eq!(gateway.get("/v1/search?query=x", &secret).await.0, 200);

    // Rotate with no grace: the new secret works, the old one no longer.
    more(&browser, gateway, &id, "Rotate").await;
    browser
        .wait("select#grace")
        .await
        .select_by_value("0")
        .await
        .unwrap();
    browser.click("form.card button[type=submit]").await;
    browser.wait_title("The key's new secret").await;
    let rotated = secret_on_page(&browser).await;
    assert_ne!(rotated, secret);
    assert_eq!(gateway.get("/v1/search?query=x", &rotated).await.0, 200);
    assert_eq!(gateway.get("/v1/search?query=x", &secret).await.0, 401);

    // Disable, then enable, from the More menu.
    let status = format!("tr[data-key-id='{id}'] .status");
    more(&browser, gateway, &id, "Disable").await;
    browser.wait_text(&status, "disabled").await;
    assert_eq!(
        gateway.get("/v1/search?query=x", &rotated).await,
        (401, "key_disabled".into())
    );
    more(&browser, gateway, &id, "Enable").await;
    browser.wait_text(&status, "active").await;
    assert_eq!(gateway.get("/v1/search?query=x", &rotated).await.0, 200);

    // Key detail, audit and admin tokens.
    browser
        .goto(&gateway.admin_url(&format!("/console/keys/{id}")))
        .await;
    browser.wait(".chart svg").await;
    let trail = browser.wait("table.audit").await.text().await.unwrap();
    for action in [
        "key.created",
        "key.updated",
        "key.rotated",
        "key.disabled",
        "key.enabled",
    ] {
        assert!(trail.contains(action), "{action} in {trail}");
    }
    shot("key-detail").await;
    browser
        .goto(&gateway.admin_url("/console/audit?action=key.rotated"))
        .await;
    let audit = browser.wait("table.audit").await.text().await.unwrap();
    assert!(
        audit.contains("key.rotated") && !audit.contains("key.created"),
        "{audit}"
    );
    shot("audit").await;
    browser.goto(&gateway.admin_url("/console/tokens")).await;
    assert!(
        browser
            .wait("table.tokens")
            .await
            .text()
            .await
            .unwrap()
            .contains("auditor")
    );
    shot("tokens").await;

    // A form on another site posting to the console: refused, the key survives.
    let forged = format!(
        "data:text/html,<form method=post action='{}'><button id=go>go</button></form>",
        gateway.admin_url(&format!("/console/keys/{id}/delete"))
    );
    browser.goto(&forged).await;
    browser.click("#go").await;
    browser.wait_title("Forbidden").await;
    assert!(browser.body_text().await.contains("cross-site"));
    // With the session cookie but no CSRF token: refused too.
    browser.goto(&gateway.admin_url("/console/")).await;
    let (cookie, csrf) = session_of(&browser).await;
    assert_eq!(
        post(gateway, &format!("/console/keys/{id}/delete"), &cookie, &[]).await,
        403
    );
    assert_eq!(
        post(
            gateway,
            &format!("/console/keys/{id}/delete"),
            &cookie,
            &[("csrf", "x")]
        )
        .await,
        403
    );
    assert_eq!(
        gateway
            .admin("GET", &format!("/v1/keys/{id}"), None)
            .await
            .0,
        200
    );
    assert!(!csrf.is_empty());

    // Delete, after the confirmation page.
    more(&browser, gateway, &id, "Delete").await;
    browser.wait_title("Delete key").await;
    browser.click("button.danger").await;
    browser.wait_title("API keys").await;
    assert!(
        browser
            .client
            .find(Locator::Css(&format!("tr[data-key-id='{id}']")))
            .await
            .is_err()
    );
    assert_eq!(gateway.get("/v1/search?query=x", &rotated).await.0, 401);
    key_list_picture(&browser, gateway, screenshots).await;

    // Sign out: the old cookie opens nothing.
    browser.click("form.signout button").await;
    browser.wait("input#token").await;
    let old = no_redirects()
        .get(gateway.admin_url("/console/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status().as_u16(), 303);
    assert_eq!(old.headers()["location"], "/console/login");

    // A viewer: no write controls, and their forged posts are refused.
    sign_in(&browser, gateway, &viewer_token).await;
    browser.client.set_window_size(375, 800).await.unwrap();
    browser.wait("table.keys").await;
    for control in [
        "form[action='/console/keys']",
        "details.more",
        "a[href='/console/tokens']",
    ] {
        assert!(
            browser.client.find(Locator::Css(control)).await.is_err(),
            "{control}"
        );
    }
    shot("viewer-375px").await;
    let (cookie, csrf) = session_of(&browser).await;
    let before = gateway.admin("GET", "/v1/keys", None).await.1["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        post(gateway, "/console/keys", &cookie, &[("csrf", &csrf)]).await,
        403
    );
    let after = gateway.admin("GET", "/v1/keys", None).await.1["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    browser.close().await;
}

async fn embedded_store(gateway: &TestGateway) {
    walk(gateway, true).await;
}

async fn redis_store(gateway: &TestGateway) {
    walk(gateway, false).await;
}

for_each_store!(embedded => |kb| stores::embedded(kb, |_| {}); embedded_store);
for_each_store!(redis => |kb| stores::redis(kb, "console", |_| {}); redis_store);
