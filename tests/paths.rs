//! Path canonicalization end to end: requests written byte for byte (a normal client would
//! normalise them first) go through the real gateway to the recording upstream. The path that
//! is authorized must be exactly the path that is forwarded, so every case checks both the
//! answer and what, if anything, the upstream received.

mod common;

use common::{TestGateway, UPSTREAM_CREDENTIAL, raw};
use serde_json::json;

/// What the gateway should do with one request target.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// 200, and the upstream received exactly this path (and query).
    Forwarded(&'static str),
    /// Refused with this status and code; the upstream received nothing.
    Refused(u16, &'static str),
}

use Expect::{Forwarded, Refused};

const INVALID: Expect = Refused(400, "invalid_path");
const NO_ROUTE: Expect = Refused(403, "route_not_allowed");
/// hyper's own bare 400 for a target it cannot parse (no JSON body).
const UNPARSEABLE: Expect = Refused(400, "");

const CASES: &[(&str, Expect)] = &[
    // Already canonical: forwarded as is.
    ("/v1/article/a1", Forwarded("/v1/article/a1")),
    (
        "/v1/article/a1/versions",
        Forwarded("/v1/article/a1/versions"),
    ),
    // Empty segments are merged.
    ("/v1//article/a1", Forwarded("/v1/article/a1")),
    ("//v1/article///a1", Forwarded("/v1/article/a1")),
    // Escaped unreserved characters are decoded, once.
    ("/v1/article/%61%31", Forwarded("/v1/article/a1")),
    (
        "/v1/article/a1/versions/%7E2",
        Forwarded("/v1/article/a1/versions/~2"),
    ),
    ("/v1/article/%2e%2e%2e", Forwarded("/v1/article/...")),
    // Other escapes are kept, in upper-case hex.
    ("/v1/article/%3a", Forwarded("/v1/article/%3A")),
    ("/v1/article/caf%c3%a9", Forwarded("/v1/article/caf%C3%A9")),
    // Not double-decoded: %252e is a literal id, never "."
    (
        "/v1/article/%252e%252e",
        Forwarded("/v1/article/%252e%252e"),
    ),
    // The query is not part of the path and passes untouched.
    (
        "/v1/search?query=a%20b&page=2",
        Forwarded("/v1/search?query=a%20b&page=2"),
    ),
    (
        "/v1/search?query=../..%2F",
        Forwarded("/v1/search?query=../..%2F"),
    ),
    // Dot segments, raw or escaped.
    ("/v1/%2e%2e/admin", INVALID),
    ("/v1/article/..", INVALID),
    ("/v1/article/./a1", INVALID),
    ("/v1/article/.%2e/x", INVALID),
    ("/v1/article/%2E", INVALID),
    ("/v1/article/%2e%2E/%2e%2e/v1/account", INVALID),
    // Encoded slashes and backslashes, and raw backslashes.
    ("/v1/article/a%2Fb", INVALID),
    ("/v1/article/a%2fb", INVALID),
    ("/v1/article/..%2f..%2fadmin", INVALID),
    ("/v1/article/a%5Cb", INVALID),
    ("/v1/article/a%5cb", INVALID),
    ("/v1/article\\a1", INVALID),
    // Path parameters.
    ("/v1/article/a1;jsessionid=1", INVALID),
    ("/v1/article;x=1/a1", INVALID),
    // Malformed escapes and NUL.
    ("/v1/article/%", INVALID),
    ("/v1/article/%4", INVALID),
    ("/v1/article/%zz", INVALID),
    ("/v1/article/%%61", INVALID),
    ("/v1/article/%00", INVALID),
    // Canonical but unrouted: routes are case-sensitive, match whole segments, and a
    // trailing slash is another path.
    ("/V1/ARTICLE/a1", NO_ROUTE),
    ("/v1/Article/a1", NO_ROUTE),
    ("/v1/articles", NO_ROUTE),
    ("/v1/article/a1/", NO_ROUTE),
    ("/v1/article/a1/versions/1/x", NO_ROUTE),
    // ---- Attacks: spellings that try to make the path authorized differ from the path the
    // KB acts on. (tests/hostile_paths.rs checks the same properties on generated paths.)
    // Traversal, every spelling.
    ("/v1/article/a1/../../account", INVALID),
    ("/v1/article/%2e%2e/%2e%2e/account", INVALID),
    ("/v1/article/%2E%2e", INVALID),
    ("/v1/article/.%2E/account", INVALID),
    ("/v1/article/a1/.", INVALID),
    ("/v1/article/a1/%2e/versions", INVALID),
    ("/v1/article/..;/account", INVALID),
    ("/v1/article/.%00./account", INVALID),
    ("/v1/article/%2e%2e%5caccount", INVALID),
    ("/v1/article/%u002e%u002e/account", INVALID),
    ("/v1/article/%%32%65%%32%65/account", INVALID),
    // Double encoding stays encoded: one decode, never two.
    (
        "/v1/article/%252e%252e%252faccount",
        Forwarded("/v1/article/%252e%252e%252faccount"),
    ),
    ("/v1/article/%25%32%65", Forwarded("/v1/article/%252e")),
    ("/v1/article/%2500", Forwarded("/v1/article/%2500")),
    // Separators, encoded or raw.
    ("/v1/article/a1%2Fversions", INVALID),
    ("/v1%2farticle/a1", INVALID),
    ("/v1/article/a1%5Cversions", INVALID),
    ("/v1/article/a1\\versions", INVALID),
    ("/v1\\article\\a1", INVALID),
    ("/v1/article/a1%3Fq=1", Forwarded("/v1/article/a1%3Fq=1")),
    ("/v1/article/a1%23frag", Forwarded("/v1/article/a1%23frag")),
    // Path parameters.
    ("/v1/article/a1;x=1/versions", INVALID),
    ("/v1/article;/a1", INVALID),
    ("/v1/article/a1%3Bx=1", Forwarded("/v1/article/a1%3Bx=1")),
    // Overlong and otherwise invalid UTF-8 after decoding.
    ("/v1/article/%c0%ae%c0%ae/account", INVALID),
    ("/v1/article/%c0%af", INVALID),
    ("/v1/article/%e0%80%ae", INVALID),
    ("/v1/article/%f0%80%80%ae", INVALID),
    ("/v1/article/%ed%a0%80", INVALID),
    ("/v1/article/%c3%28", INVALID),
    ("/v1/article/%ff", INVALID),
    ("/v1/article/caf%e9", INVALID),
    ("/v1/article/%e2%82", INVALID),
    ("/v1/article/%e2%82%ac", Forwarded("/v1/article/%E2%82%AC")),
    // Control characters and raw bytes a target may not carry.
    ("/v1/article/%0a", Forwarded("/v1/article/%0A")),
    (
        "/v1/article/%0d%0aX-Injected:%20yes",
        Forwarded("/v1/article/%0D%0AX-Injected:%20yes"),
    ),
    ("/v1/article/a1\x01", UNPARSEABLE),
    ("/v1/article/a<1>", UNPARSEABLE),
    ("/v1/article/a`1", UNPARSEABLE),
    ("/v1/article/caf\u{e9}", INVALID),
    // Merged slashes, trailing slashes, case.
    ("///v1///account", Forwarded("/v1/account")),
    ("/v1/account/", NO_ROUTE),
    ("/v1/account//", NO_ROUTE),
    ("/v1/Account", NO_ROUTE),
    ("/V1/account", NO_ROUTE),
    ("/v1/%41ccount", NO_ROUTE),
    ("/v1/%61ccount", Forwarded("/v1/account")),
    ("/v1/article/A1", Forwarded("/v1/article/A1")),
    ("/v1/article/%7e%2D%5f", Forwarded("/v1/article/~-_")),
    // Not a path at all.
    ("v1/article", UNPARSEABLE),
    ("*", INVALID),
];

#[tokio::test]
async fn the_path_authorized_is_the_path_forwarded() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway.create_key(json!({"scope": "read_write"})).await;
    assert!(CASES.len() >= 80, "the table lost cases");
    let mut failures = Vec::new();
    for &(target, expect) in CASES {
        let before = upstream.requests().len();
        let (status, headers, body) = raw::get(gateway.addr, target, &key).await;
        let seen = upstream.requests();
        // (status, the forwarded path) when forwarded, (status, the error code) when refused.
        let got = match (status, seen.len() - before) {
            (200, 1) => (200, seen[before].path_and_query.clone()),
            (status, 0) => (status, raw::error_code(&body)),
            (status, n) => {
                failures.push(format!(
                    "{target:?}: status {status} and the upstream saw {n} requests"
                ));
                continue;
            }
        };
        let want = match expect {
            Forwarded(path) => (200, path),
            Refused(status, code) => (status, code),
        };
        if (got.0, got.1.as_str()) != want {
            failures.push(format!(
                "{target:?}: expected {expect:?}, got {got:?}\n{headers}\n{body}"
            ));
        }
        if status != 200 && !matches!(expect, Refused(_, "")) {
            assert_eq!(
                raw::header(&headers, "content-type"),
                Some("application/json"),
                "{target:?}: refusals are the one JSON body"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    gateway.shutdown().await;
}

/// Refused paths are refused before anything else: with no key, a bad key or a good one the
/// answer is invalid_path, nothing reaches the upstream and the key's usage does not move.
#[tokio::test]
async fn invalid_paths_never_reach_the_upstream() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (id, key) = gateway.create_key(json!({"scope": "read_write"})).await;
    let invalid: Vec<&str> = CASES
        .iter()
        .filter(|(_, expect)| matches!(expect, Refused(400, "invalid_path")))
        .map(|(target, _)| *target)
        .collect();
    assert!(invalid.len() >= 15, "the table lost its invalid paths");
    for target in &invalid {
        let with_key = raw::get(gateway.addr, target, &key).await;
        let bad_key = raw::get(gateway.addr, target, "kb_not-a-real-key").await;
        let no_key = raw::get_without_header(gateway.addr, target).await;
        for (what, (status, _, body)) in
            [("key", with_key), ("bad key", bad_key), ("no key", no_key)]
        {
            assert_eq!(
                (status, raw::error_code(&body).as_str()),
                (400, "invalid_path"),
                "{target:?} with {what}"
            );
        }
    }
    assert_eq!(
        upstream.requests().len(),
        0,
        "a refused path reached the upstream: {:?}",
        upstream.requests()
    );
    let (status, view) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        view["request_count"], 0,
        "invalid paths were counted as key usage"
    );

    // A canonical path does get through, so the counts above could have moved.
    let (status, _, _) = raw::get(gateway.addr, "/v1/article/a1", &key).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(upstream.last().path_and_query, "/v1/article/a1");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_key_parameter_is_removed_from_the_forwarded_query() {
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway.create_key(json!({"scope": "read_write"})).await;
    let cases = [
        (
            format!("/v1/search?query=x&key={key}"),
            "/v1/search?query=x",
        ),
        (
            format!("/v1/search?key={key}&query=x&page=2"),
            "/v1/search?query=x&page=2",
        ),
        (format!("/v1/search?key={key}"), "/v1/search"),
        (
            format!("/v1/search?query=x&k%65y={key}"),
            "/v1/search?query=x",
        ),
        (
            format!("/v1/article/%61%31?key={key}&lang=en"),
            "/v1/article/a1?lang=en",
        ),
    ];
    for (target, forwarded) in &cases {
        let before = upstream.requests().len();
        let (status, _, body) = raw::get_without_header(gateway.addr, target).await;
        assert_eq!(status, 200, "{target}: {body}");
        let seen = upstream.requests();
        assert_eq!(seen.len(), before + 1, "{target}");
        let last = &seen[before];
        assert_eq!(last.path_and_query, *forwarded, "{target}");
        assert_eq!(
            last.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some(format!("Bearer {UPSTREAM_CREDENTIAL}").as_str()),
            "{target}: the upstream gets its own credential, not the client's key"
        );
        let leaked = last
            .headers
            .iter()
            .any(|(_, v)| v.to_str().is_ok_and(|v| v.contains(&key)));
        assert!(
            !leaked,
            "{target}: the client's key reached the upstream in a header"
        );
    }
    gateway.shutdown().await;
}

/// Other request-target forms (RFC 9112 §3.2): the authority of an absolute-form target never
/// changes where a request goes (and must agree with Host), and its path is canonicalized like
/// any other.
#[tokio::test]
async fn other_request_target_forms() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let send = |method: &str, target: &str| {
        format!(
            "{method} {target} HTTP/1.1\r\nHost: kb.example\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        )
    };

    let (status, _, body) = raw::request(
        gateway.addr,
        send("GET", "http://kb.example//v1/article/%61%31?x=1").as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = upstream.last();
    assert_eq!(seen.path_and_query, "/v1/article/a1?x=1");
    assert_eq!(
        seen.headers.get("host").and_then(|v| v.to_str().ok()),
        Some(upstream.addr.to_string().as_str()),
        "the upstream's own Host, not the target's authority"
    );

    let before = upstream.requests().len();
    for (method, target) in [
        ("GET", "http://kb.example/v1/%2e%2e/admin"),
        ("GET", "http://kb.example/v1/article/a%2Fb"),
        ("OPTIONS", "*"),
    ] {
        let (status, _, body) = raw::request(gateway.addr, send(method, target).as_bytes()).await;
        assert_eq!(
            (status, raw::error_code(&body).as_str()),
            (400, "invalid_path"),
            "{method} {target}: {body}"
        );
    }
    assert_eq!(
        upstream.requests().len(),
        before,
        "a refused target was forwarded"
    );
    gateway.shutdown().await;
}
