//! The admin API's OpenAPI document is true: what the API answers matches the document's
//! schemas, every path answers an undeclared method with 405 and `Allow`, body errors name
//! their field, and schemathesis (`--checks all`) finds nothing. The schemathesis run is
//! skipped, saying so, when it is not installed, unless KBGATE_REQUIRE_SCHEMATHESIS=1 (as
//! .ci/run sets), which makes its absence a failure.

mod common;

use common::{ADMIN_TOKEN, TestGateway};
use serde_json::{Value, json};

/// Test cases per operation: under a minute for the whole run on two busy cores.
const MAX_EXAMPLES: &str = "150";

async fn document(gateway: &TestGateway) -> Value {
    let response = reqwest::get(gateway.admin_url("/openapi.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Checks `value` against `schema` for the parts of JSON Schema the document uses (`$ref`,
/// `type`, `nullable`, `required`, `properties`, `additionalProperties: false`, `items`,
/// `enum`, `minimum`); returns each mismatch with its path.
fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let pointer = reference.trim_start_matches('#');
        let target = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference}"));
        return mismatches(doc, target, value, at);
    }
    let mut found = Vec::new();
    if value.is_null() && schema["nullable"] == true {
        return found;
    }
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("type {other} not handled here"),
        None => true,
    };
    if !type_ok {
        return vec![format!("{at}: {value} is not {}", schema["type"])];
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        found.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(minimum), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < minimum
    {
        found.push(format!("{at}: {n} < {minimum}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                found.push(format!("{at}: required {name} is missing"));
            }
        }
        for (name, field) in object {
            match schema["properties"].get(name) {
                Some(field_schema) => found.extend(mismatches(
                    doc,
                    field_schema,
                    field,
                    &format!("{at}.{name}"),
                )),
                None if schema["additionalProperties"] == false => {
                    found.push(format!("{at}: {name} is not in the schema"))
                }
                None => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            found.extend(mismatches(
                doc,
                &schema["items"],
                item,
                &format!("{at}[{i}]"),
            ));
        }
    }
    found
}

/// The response schema the document gives `method path` for `status`.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let mut response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(!response.is_null(), "{method} {path} documents no {status}");
    if let Some(reference) = response["$ref"].as_str() {
        response = doc.pointer(reference.trim_start_matches('#')).unwrap();
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} {status} has no JSON schema"
    );
    schema
}

fn assert_matches(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(doc, path, method, status);
    let found = mismatches(doc, schema, body, "body");
    assert!(
        found.is_empty(),
        "{method} {path} {status}: {found:#?}\n{body}"
    );
}

#[tokio::test]
async fn answers_match_the_documented_schemas() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let doc = document(&gateway).await;

    let (status, created) = gateway
        .post_key(json!({"name": "Docs", "permissions": ["article:read"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_matches(&doc, "/v1/keys", "post", 201, &created);
    let id = created["id"].as_str().unwrap();

    let (status, rotated) = gateway.rotate(id, 3600).await;
    assert_eq!(status, 200, "{rotated}");
    assert_matches(&doc, "/v1/keys/{id}/rotate", "post", 200, &rotated);
    assert_eq!(rotated["secrets"].as_array().unwrap().len(), 2);

    let (status, ended) = gateway
        .admin("POST", &format!("/v1/keys/{id}/rotation/end"), None)
        .await;
    assert_eq!(status, 200, "{ended}");
    assert_matches(&doc, "/v1/keys/{id}/rotation/end", "post", 200, &ended);

    let (status, shown) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(status, 200);
    assert_matches(&doc, "/v1/keys/{id}", "get", 200, &shown);
    let (status, edited) = gateway
        .admin(
            "PATCH",
            &format!("/v1/keys/{id}"),
            Some(json!({"expires_at": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_matches(&doc, "/v1/keys/{id}", "patch", 200, &edited);
    let (status, list) = gateway.admin("GET", "/v1/keys", None).await;
    assert_eq!(status, 200);
    assert_matches(&doc, "/v1/keys", "get", 200, &list);
    let (status, page) = gateway
        .admin("GET", "/v1/keys?limit=1&state=active&sort=requests", None)
        .await;
    assert_eq!(status, 200);
    assert_matches(&doc, "/v1/keys", "get", 200, &page);

    // Usage with something in it: a forwarded request and a refused one.
    let secret = rotated["secret"].as_str().unwrap();
    assert_eq!(gateway.get("/v1/article", secret).await.0, 200);
    assert_eq!(gateway.get("/v1/unmapped", secret).await.0, 403);
    for query in ["", "?granularity=day"] {
        let (status, usage) = gateway
            .admin("GET", &format!("/v1/keys/{id}/usage{query}"), None)
            .await;
        assert_eq!(status, 200, "{usage}");
        assert_eq!(usage["total"]["requests"], 2);
        assert_matches(&doc, "/v1/keys/{id}/usage", "get", 200, &usage);
    }
    common::eventually("the overview sees the flushed usage", || async {
        let (_, overview) = gateway.admin("GET", "/v1/usage", None).await;
        overview["total"]["requests"] == 2
    })
    .await;
    let (status, overview) = gateway.admin("GET", "/v1/usage", None).await;
    assert_eq!(status, 200);
    assert_matches(&doc, "/v1/usage", "get", 200, &overview);
    let (status, missing) = gateway.admin("GET", "/v1/keys/key_nope", None).await;
    assert_eq!(status, 404);
    assert_matches(&doc, "/v1/keys/{id}", "get", 404, &missing);

    // The old KeyWithSecret (allOf over a Key that allows no other field) matched nothing.
    let key_with_secret = &doc["components"]["schemas"]["KeyWithSecret"];
    assert!(key_with_secret.get("allOf").is_none(), "{key_with_secret}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn every_path_answers_an_undeclared_method_with_405_and_allow() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let doc = document(&gateway).await;
    let client = reqwest::Client::new();
    let all = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
    ];
    let paths = doc["paths"].as_object().unwrap();
    for must in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/keys",
    ] {
        assert!(paths.contains_key(must), "{must} is documented");
    }
    for (template, item) in paths {
        let declared: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
            .map(|k| k.to_uppercase())
            .collect();
        let path = template.replace("{id}", "key_0123456789abcdef");
        for method in all.iter().filter(|m| !declared.iter().any(|d| d == *m)) {
            // Without a token too: the method is wrong whoever asks.
            let response = client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    gateway.admin_url(&path),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            let allow = response.headers()["allow"].to_str().unwrap().to_string();
            let mut listed: Vec<&str> = allow.split(", ").collect();
            let mut want: Vec<&str> = declared.iter().map(String::as_str).collect();
            listed.sort_unstable();
            want.sort_unstable();
            assert_eq!(listed, want, "Allow of {method} {path}");
            if *method != "HEAD" {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "method_not_allowed");
            }
        }
    }
    // A declared method still needs the token on /v1.
    let response = client
        .get(gateway.admin_url("/v1/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    gateway.shutdown().await;
}

#[tokio::test]
async fn body_errors_name_the_field_and_names_follow_the_document() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let doc = document(&gateway).await;
    let name_schema = &doc["components"]["schemas"]["CreateKey"]["properties"]["name"];
    assert_eq!(name_schema["minLength"], 1);
    assert_eq!(name_schema["maxLength"], 200);
    assert!(name_schema["pattern"].is_string());

    for (body, field) in [
        (json!({"name": 5}), "name: "),
        (json!({"scope": "admin"}), "scope: "),
        (
            json!({"permissions": ["article:read", 7]}),
            "permissions[1]: ",
        ),
        (json!({"expires_at": "tomorrow"}), "expires_at: "),
        (json!({"name": null}), "name: "),
        (json!({"nmae": "x"}), "nmae: unknown field `nmae`"),
    ] {
        let (status, error) = gateway.post_key(body.clone()).await;
        assert_eq!(status, 422, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let (status, error) = gateway
        .admin(
            "POST",
            "/v1/keys/key_x/rotate",
            Some(json!({"grace_period_seconds": -1})),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("grace_period_seconds: "),
        "{error}"
    );

    // What the document refuses, the API refuses; what it allows, the API takes.
    let too_long_as_sent = format!(" {} ", "x".repeat(199));
    for name in [
        "",
        "   ",
        "a\u{7}b",
        "tab\there",
        "line\nbreak",
        "\u{85}",
        &too_long_as_sent,
    ] {
        let (status, _) = gateway.post_key(json!({ "name": name })).await;
        assert_eq!(status, 422, "name {name:?}");
    }
    for name in ["x", " padded ", "Ünïcødé ✓", &"y".repeat(200)] {
        let (status, key) = gateway.post_key(json!({ "name": name })).await;
        assert_eq!(status, 201, "name {name:?}: {key}");
        assert_eq!(key["name"], name.trim());
    }
    let (status, _) = gateway.post_key(json!(["read"])).await;
    assert_eq!(status, 422, "an array is not a body object");
    gateway.shutdown().await;
}

/// The `schemathesis` command, or None when the test should skip.
fn schemathesis() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("schemathesis"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("KBGATE_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
            "schemathesis is not installed and KBGATE_REQUIRE_SCHEMATHESIS=1 \
             (python3 -m pip install schemathesis)"
        );
        println!("SKIPPED: schemathesis is not installed");
    }
    found
}

#[tokio::test]
async fn schemathesis_finds_nothing() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    // Hypothesis keeps its example database in the working directory: a temporary one.
    let work = tempfile::tempdir().unwrap();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/openapi/schemathesis.toml"
    );
    let output = tokio::process::Command::new(schemathesis)
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(gateway.admin_url("/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES])
        .args(["--request-timeout", "10"])
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis found:\n{report}");
    assert!(report.contains("No issues found"), "{report}");
    gateway.shutdown().await;
}
