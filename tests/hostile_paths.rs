//! Path attacks, as properties over generated hostile paths: canonicalizing is idempotent,
//! every spelling of a path gets the same decision, and through the real gateway the path
//! authorized is the path forwarded. The table of named attacks (traversal, encoded
//! separators, double encoding, overlong UTF-8, parameters, case, ...) is in tests/paths.rs,
//! run end to end with the cases that were there first.

mod common;

use common::{TestGateway, raw};
use http::Method;
use kbgate::authz::DEFAULT_RESOURCES;
use kbgate::authz::routes::RouteTable;
use kbgate::config::RouteSpec;
use kbgate::path;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// The shipped route table.
fn routes() -> RouteTable {
    #[derive(serde::Deserialize)]
    struct Shipped {
        routes: Vec<RouteSpec>,
    }
    let text = include_str!("../config/kbgate.yaml");
    let shipped: Shipped = serde_yaml::from_str(text).unwrap();
    let resources: Vec<String> = DEFAULT_RESOURCES.iter().map(|s| s.to_string()).collect();
    RouteTable::compile(
        &shipped
            .routes
            .into_iter()
            .map(Into::into)
            .collect::<Vec<_>>(),
        &resources,
    )
    .unwrap()
}

/// Pieces hostile paths are made of: route words, separators, dots, escapes of every kind.
const PIECES: &[&str] = &[
    "/",
    "//",
    "v1",
    "article",
    "account",
    "versions",
    "search",
    "a1",
    "A",
    "~",
    "-",
    "_",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%25",
    "%252e",
    "%41",
    "%61",
    "%7e",
    "%3a",
    "%00",
    "%c0%ae",
    "%c3%a9",
    "%e2%82%ac",
    "%ff",
    "%",
    "%4",
    ";",
    "\\",
    "@",
    ":",
    "!",
    "+",
    ",",
    "=",
    "'",
];

/// Paths built from [`PIECES`], mostly starting with "/".
fn hostile_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(prop::sample::select(PIECES), 0..14),
    )
        .prop_map(|(absolute, pieces)| {
            let path = pieces.concat();
            if absolute { format!("/{path}") } else { path }
        })
}

/// Paths that start like a route and end in hostile pieces, so many are routed.
fn routed_path() -> impl Strategy<Value = String> {
    const PREFIXES: &[&str] = &[
        "/v1/article/",
        "/v1//article/",
        "/v1/%61rticle/",
        "/v1/article/a1/versions/",
        "/v1/category/",
        "/v1/account",
        "/v1/search",
        "//v1/group/",
    ];
    (
        prop::sample::select(PREFIXES),
        prop::collection::vec(prop::sample::select(PIECES), 0..5),
    )
        .prop_map(|(prefix, pieces)| format!("{prefix}{}", pieces.concat()))
}

/// Either kind of path.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![hostile_path(), routed_path()]
}

/// A canonical path spelled another way: some unreserved characters escaped (either hex case)
/// and some slashes doubled. It must canonicalize back to the same path.
fn respelled(canonical: &str, choices: &[u8]) -> String {
    let bytes = canonical.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let (c, choice) = (bytes[i] as char, choices[i % choices.len()]);
        match c {
            // An escape is copied whole: its hex digits are not characters of the path.
            '%' => {
                out.push_str(&canonical[i..i + 3]);
                i += 3;
                continue;
            }
            '/' if choice % 3 == 0 && i != bytes.len() - 1 => out.push_str("//"),
            c if c.is_ascii_alphanumeric() || "-._~".contains(c) => match choice % 4 {
                0 => out.push_str(&format!("%{:02X}", c as u32)),
                1 => out.push_str(&format!("%{:02x}", c as u32)),
                _ => out.push(c),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// What the gateway decides before forwarding, as a value: refused as a path, or the route's
/// permission for each method (None: no route).
fn decide(table: &RouteTable, raw: &str) -> Result<Vec<Option<String>>, path::PathError> {
    let canonical = path::canonicalize_path(raw)?;
    Ok([Method::GET, Method::POST, Method::PUT, Method::DELETE]
        .iter()
        .map(|m| {
            table
                .lookup(m, &canonical)
                .map(|r| r.permission.to_string())
        })
        .collect())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn canonicalizing_is_idempotent(raw in any_path()) {
        if let Ok(once) = path::canonicalize_path(&raw) {
            prop_assert_eq!(path::canonicalize_path(&once), Ok(once.clone()));
            prop_assert!(once.len() <= raw.len());
        }
    }

    #[test]
    fn a_path_and_its_canonical_form_get_the_same_decision(raw in any_path()) {
        let table = routes();
        if let Ok(canonical) = path::canonicalize_path(&raw) {
            prop_assert_eq!(decide(&table, &raw), decide(&table, &canonical));
        }
    }

    #[test]
    fn every_spelling_of_a_path_gets_the_same_decision(
        raw in any_path(),
        choices in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let table = routes();
        if let Ok(canonical) = path::canonicalize_path(&raw) {
            let other = respelled(&canonical, &choices);
            prop_assert_eq!(path::canonicalize_path(&other), Ok(canonical.clone()), "{}", other);
            prop_assert_eq!(decide(&table, &other), decide(&table, &canonical));
        }
    }
}

/// Generated paths through the real gateway: each is refused as the canonicalizer and the
/// route table say, or forwarded as exactly its canonical form.
#[tokio::test]
async fn generated_paths_through_the_gateway_forward_what_was_authorized() {
    let (upstream, gateway, key) = TestGateway::builder().start_with_key().await;
    let table = routes();
    let mut runner = TestRunner::deterministic();
    let strategy = any_path().prop_filter("a request target", |p| p.starts_with('/'));
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..150 {
        let target = strategy.new_tree(&mut runner).unwrap().current();
        let before = upstream.requests().len();
        let (status, _, body) = raw::get(gateway.addr, &target, &key).await;
        let seen = upstream.requests().split_off(before);
        let got = (
            status,
            raw::error_code(&body),
            seen.first().map(|s| s.path_and_query.clone()),
        );
        let want = match path::canonicalize_path(&target) {
            Err(_) => (400, "invalid_path".to_string(), None),
            Ok(canonical) => match table.lookup(&Method::GET, &canonical) {
                None => (403, "route_not_allowed".to_string(), None),
                Some(_) => (200, String::new(), Some(canonical)),
            },
        };
        assert_eq!(got, want, "{target:?}");
        assert!(seen.len() <= 1, "{target:?}: {seen:?}");
        *statuses.entry(status).or_default() += 1;
    }
    // The generator reaches every outcome, so the checks above were exercised.
    for status in [200, 400, 403] {
        assert!(statuses.get(&status) >= Some(&10), "{statuses:?}");
    }
    gateway.shutdown().await;
}
