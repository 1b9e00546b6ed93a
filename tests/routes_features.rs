//! Routes a real KB needs, end to end over sockets: GET implies HEAD (unless `head: false`),
//! a trailing `{rest*}` takes the remaining segments, a route's query allow- or deny-list
//! (403 `query_not_allowed`, the client key never counting), and `check-config` warning about
//! shadowed routes and printing each route's body limit.

mod common;

use common::{RunningKb, TestGateway, bin, shipped_yaml};
use reqwest::Method;

/// The shipped routes plus these.
fn yaml_with(routes: &str) -> String {
    format!("{}{routes}", shipped_yaml())
}

const EXTRA: &str = r#"  - { methods: [GET], path: "/v1/page/{id}", permission: "article:read" }
  - { methods: [GET], path: "/v1/export", permission: "article:read", head: false }
  - { methods: [GET], path: "/static/{path*}", permission: "article:read" }
  - { methods: [GET], path: "/v1/rows", permission: "search:read", query: { deny: [_where, _sql] } }
  - { methods: [GET], path: "/v1/find", permission: "search:read", query: { allow: [q, page] } }
  - { methods: [GET], path: "/v1/plain", permission: "search:read", query: { allow: [] } }
"#;

/// The gateway with the routes above in front of an echoing KB, with a read-write key.
async fn start() -> (RunningKb, TestGateway, String) {
    TestGateway::builder()
        .yaml(&yaml_with(EXTRA))
        .start_with_key()
        .await
}

async fn call(gateway: &TestGateway, method: Method, path: &str, key: &str) -> (u16, String) {
    let response = gateway
        .client
        .request(method, gateway.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    common::status_and_code(response).await
}

#[tokio::test]
async fn get_routes_answer_head_unless_they_say_otherwise() {
    let (upstream, gateway, key) = start().await;

    assert_eq!(
        call(&gateway, Method::HEAD, "/v1/page/7", &key).await,
        (200, String::new())
    );
    let seen = upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.path_and_query.as_str()),
        ("HEAD", "/v1/page/7")
    );
    assert_eq!(call(&gateway, Method::GET, "/v1/page/7", &key).await.0, 200);

    // head: false: GET only.
    assert_eq!(call(&gateway, Method::GET, "/v1/export", &key).await.0, 200);
    let before = upstream.requests().len();
    // 403 route_not_allowed, without its body: the answer to a HEAD has none.
    assert_eq!(
        call(&gateway, Method::HEAD, "/v1/export", &key).await,
        (403, String::new())
    );
    assert_eq!(upstream.requests().len(), before, "nothing forwarded");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_rest_parameter_matches_nested_paths() {
    let (upstream, gateway, key) = start().await;
    for path in [
        "/static/site.css",
        "/static/img/logo/v2.png",
        "/static/docs/",
    ] {
        assert_eq!(
            call(&gateway, Method::GET, path, &key).await.0,
            200,
            "{path}"
        );
        assert_eq!(
            upstream.last().path_and_query,
            path,
            "forwarded as it was authorized"
        );
        assert_eq!(
            call(&gateway, Method::HEAD, path, &key).await.0,
            200,
            "{path}"
        );
    }
    // One or more segments: the folder itself is not matched.
    for path in ["/static", "/static/", "/staticx/a"] {
        assert_eq!(
            call(&gateway, Method::GET, path, &key).await,
            (403, "route_not_allowed".into()),
            "{path}"
        );
    }
    // Paths are still canonical first: an encoded slash is refused, not taken as a segment.
    assert_eq!(
        call(&gateway, Method::GET, "/static/a%2F..%2Fv1", &key).await,
        (400, "invalid_path".into())
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn query_rules_refuse_with_query_not_allowed() {
    let (upstream, gateway, key) = start().await;
    let before = gateway.scrape().await.sum(
        "kbgate_auth_decisions_total",
        &[("outcome", "query_not_allowed")],
    );

    let refused = [
        "/v1/rows?_where=1",
        "/v1/rows?a=1&%5Fwhere=x",
        "/v1/rows?_SQL=drop",
        "/v1/find?q=x&sort=name",
        "/v1/find?Q=x",
        "/v1/plain?x",
    ];
    let forwarded_before = upstream.requests().len();
    for path in refused {
        let response = gateway.keyed_get(gateway.url(path), &key).await;
        assert_eq!(response.status(), 403, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "query_not_allowed", "{path}");
        assert_eq!(
            body["error"]["message"],
            "A query parameter of this request is not allowed on this route."
        );
    }
    assert_eq!(
        upstream.requests().len(),
        forwarded_before,
        "none forwarded"
    );

    for path in [
        "/v1/rows?where=1&q=_where",
        "/v1/find?q=x&page=2",
        "/v1/find",
        "/v1/plain",
    ] {
        assert_eq!(
            call(&gateway, Method::GET, path, &key).await.0,
            200,
            "{path}"
        );
        assert_eq!(upstream.last().path_and_query, path);
    }

    // The client key in ?key= is not a parameter of the KB's: it never counts, and is stripped.
    let response = gateway
        .plain_get(gateway.url(&format!("/v1/find?q=x&key={key}")))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().path_and_query, "/v1/find?q=x");
    let response = gateway
        .plain_get(gateway.url(&format!("/v1/plain?key={key}")))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().path_and_query, "/v1/plain");

    // A key without the route's permission hears about that first.
    let (_, reader) = gateway
        .create_key(serde_json::json!({"scope": "read", "permissions": ["article:read"]}))
        .await;
    assert_eq!(
        call(&gateway, Method::GET, "/v1/rows?_where=1", &reader).await,
        (403, "insufficient_permissions".into())
    );

    let after = gateway.scrape().await.sum(
        "kbgate_auth_decisions_total",
        &[("outcome", "query_not_allowed")],
    );
    assert_eq!(after - before, refused.len() as f64);
    gateway.shutdown().await;
}

/// `check-config` prints each route's body limit and query rule, and warns (without failing)
/// about a route an earlier one shadows; `serve` logs the same warning.
#[tokio::test]
async fn check_config_warns_about_shadowed_routes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kbgate.yaml");
    let extra = format!(
        "{EXTRA}{}",
        r#"  - { methods: [GET], path: "/static/css/{file}", permission: "article:read" }
  - { methods: [POST], path: "/v1/upload", permission: "article:write", max_body: 2MiB }
"#
    );
    std::fs::write(&path, yaml_with(&extra)).unwrap();
    let run = bin::run(&mut bin::kbgate(&[
        "check-config",
        "--config",
        path.to_str().unwrap(),
    ]))
    .await;
    let stderr = run.stderr.clone();
    let stdout = run.success();
    assert_eq!(
        stderr.trim_end(),
        "warning: routes[23] (GET,HEAD /static/css/{file}) can never match: \
         routes[19] (GET,HEAD /static/{path*}) matches every request it would"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for row in [
        vec!["METHODS", "PATH", "PERMISSION", "MAX_BODY", "QUERY"],
        vec!["GET,HEAD", "/v1/page/{id}", "article:read", "100MiB", "-"],
        vec!["GET", "/v1/export", "article:read", "100MiB", "-"],
        vec![
            "GET,HEAD",
            "/v1/rows",
            "search:read",
            "100MiB",
            "deny",
            "_where,_sql",
        ],
        vec![
            "GET,HEAD",
            "/v1/find",
            "search:read",
            "100MiB",
            "allow",
            "q,page",
        ],
        vec![
            "GET,HEAD",
            "/v1/plain",
            "search:read",
            "100MiB",
            "allow",
            "none",
        ],
        vec!["POST", "/v1/upload", "article:write", "2MiB", "-"],
    ] {
        assert!(rows.contains(&row), "no row {row:?} in\n{stdout}");
    }

    // The shipped config shadows nothing.
    let shipped = dir.path().join("shipped.yaml");
    std::fs::write(&shipped, shipped_yaml()).unwrap();
    let run = bin::run(&mut bin::kbgate(&[
        "check-config",
        "--config",
        shipped.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(run.code, Some(0));
    assert!(run.stderr.is_empty(), "{:?}", run.stderr);
}
