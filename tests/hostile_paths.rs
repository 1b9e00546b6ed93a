//! Path attacks: a table of encodings that try to make the path authorized differ from the
//! path the KB acts on (traversal, encoded separators, double encoding, overlong UTF-8,
//! parameters, case), end to end; and properties over generated paths: canonicalizing is
//! idempotent, every spelling of a path gets the same decision, and through the real gateway
//! the path authorized is the path forwarded. (tests/paths.rs has the first 36 cases.)

mod common;

use common::{Gateway, Upstream, raw};
use http::Method;
use kbgate::authz::{self, DEFAULT_RESOURCES, RouteSpec, RouteTable};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// 200, and the upstream received exactly this path.
    Forwarded(&'static str),
    /// This status and error code; "" is hyper's bare refusal of an unparseable target.
    Refused(u16, &'static str),
}

use Expect::{Forwarded, Refused};

const INVALID: Expect = Refused(400, "invalid_path");
const NO_ROUTE: Expect = Refused(403, "route_not_allowed");
const UNPARSEABLE: Expect = Refused(400, "");

const CASES: &[(&str, Expect)] = &[
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
async fn path_attacks_are_refused_or_forwarded_exactly_as_authorized() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let key = gateway.read_write_key().await;
    assert!(CASES.len() >= 40, "the table lost cases");
    let mut failures = Vec::new();
    for &(target, expect) in CASES {
        let before = upstream.requests().len();
        let (status, _, body) = raw::get(gateway.addr, target, &key).await;
        let seen = upstream.requests().split_off(before);
        let ok = match expect {
            Forwarded(path) => status == 200 && seen.len() == 1 && seen[0].path_and_query == path,
            Refused(want, code) => {
                status == want && raw::error_code(&body) == code && seen.is_empty()
            }
        };
        if !ok {
            let forwarded: Vec<_> = seen.iter().map(|s| &s.path_and_query).collect();
            failures.push(format!(
                "{target:?}: expected {expect:?}, got {status} {body:?}, upstream saw {forwarded:?}"
            ));
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

/// The shipped route table.
fn routes() -> RouteTable {
    #[derive(serde::Deserialize)]
    struct Shipped {
        routes: Vec<RouteSpec>,
    }
    let text = include_str!("../config/kbgate.yaml");
    let shipped: Shipped = serde_yaml::from_str(text).unwrap();
    let resources: Vec<String> = DEFAULT_RESOURCES.iter().map(|s| s.to_string()).collect();
    RouteTable::compile(&shipped.routes, &resources).unwrap()
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
fn decide(table: &RouteTable, raw: &str) -> Result<Vec<Option<String>>, authz::PathError> {
    let canonical = authz::canonicalize_path(raw)?;
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
        if let Ok(once) = authz::canonicalize_path(&raw) {
            prop_assert_eq!(authz::canonicalize_path(&once), Ok(once.clone()));
            prop_assert!(once.len() <= raw.len());
        }
    }

    #[test]
    fn a_path_and_its_canonical_form_get_the_same_decision(raw in any_path()) {
        let table = routes();
        if let Ok(canonical) = authz::canonicalize_path(&raw) {
            prop_assert_eq!(decide(&table, &raw), decide(&table, &canonical));
        }
    }

    #[test]
    fn every_spelling_of_a_path_gets_the_same_decision(
        raw in any_path(),
        choices in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let table = routes();
        if let Ok(canonical) = authz::canonicalize_path(&raw) {
            let other = respelled(&canonical, &choices);
            prop_assert_eq!(authz::canonicalize_path(&other), Ok(canonical.clone()), "{}", other);
            prop_assert_eq!(decide(&table, &other), decide(&table, &canonical));
        }
    }
}

/// Generated paths through the real gateway: each is refused as the canonicalizer and the
/// route table say, or forwarded as exactly its canonical form.
#[tokio::test]
async fn generated_paths_through_the_gateway_forward_what_was_authorized() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let key = gateway.read_write_key().await;
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
        let want = match authz::canonicalize_path(&target) {
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
