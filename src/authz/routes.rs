//! The route table: compiled from route definitions, it maps a method and a canonical path to
//! the permission the request needs (first match wins), and prints itself for `check-config`.

use super::Permission;
use crate::path::canonicalize_path;
use http::Method;
use std::fmt;

mod print;

/// One route before it is checked: what a `routes:` entry of the config says, with its body
/// limit in bytes. Strings stay strings so that every error names what was written.
#[derive(Clone, Debug)]
pub struct RouteDefinition {
    pub methods: Vec<String>,
    pub path: String,
    pub permission: String,
    /// The largest request body this route accepts, in bytes, instead of `limits.max_body`.
    pub max_body: Option<u64>,
    /// With GET listed, HEAD is routed too unless this is `false`.
    pub head: Option<bool>,
    /// Which query parameters the route lets through (403 `query_not_allowed` for others).
    pub query: Option<QueryDefinition>,
    /// The event a 2xx answer to this route emits (`article.updated`), if any.
    pub event: Option<RouteEvent>,
}

/// `event:` one name for every method, or one per method.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum RouteEvent {
    All(String),
    ByMethod(std::collections::BTreeMap<String, String>),
}

/// A route's query parameter names: `allow` or `deny` (exactly one, checked when compiled).
#[derive(Clone, Debug)]
pub struct QueryDefinition {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// A compile error for `routes[index].field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routes[{index}].{field}: {reason}")]
pub struct RouteError {
    pub index: usize,
    pub field: &'static str,
    pub reason: String,
}

/// One compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    /// Position in the route table, so per-route handles (metrics) can be found without hashing.
    pub index: usize,
    pub methods: Vec<Method>,
    pub template: String,
    /// `template` again, shared with access lines written after the handler returned.
    pub log_name: std::sync::Arc<str>,
    pub permission: Permission,
    /// The route's own request body limit, if it sets one.
    pub max_body: Option<u64>,
    /// The query parameters the route lets through, if it restricts them.
    pub query: Option<QueryRule>,
    /// The event a 2xx answer to each method emits (`routes[].event`).
    pub events: Vec<(Method, String)>,
    /// HEAD is in `methods` because GET is, not because the route lists it.
    implied_head: bool,
    segments: Vec<Segment>,
}

/// One '/'-separated piece of a route template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Must equal the request segment exactly (case-sensitive).
    Literal(String),
    /// `{name}`: matches any one non-empty segment. The name is only checked at compile
    /// time, so two templates that differ only in parameter names compare equal.
    Param,
    /// `{name*}`, last only: matches one or more remaining segments, the first non-empty
    /// (`/static/{rest*}` matches `/static/a` and `/static/a/b/`, not `/static` or `/static/`).
    Rest,
}

impl Segment {
    fn matches(&self, part: &str) -> bool {
        match self {
            Segment::Literal(literal) => literal == part,
            Segment::Param | Segment::Rest => !part.is_empty(),
        }
    }
}

/// Each method's event: names are dotted lowercase words (`article.updated`), and a method
/// named must be one of the route's.
fn route_events(
    event: Option<&RouteEvent>,
    methods: &[Method],
) -> Result<Vec<(Method, String)>, String> {
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let named: Vec<(Method, String)> = match event {
        None => return Ok(Vec::new()),
        Some(RouteEvent::All(name)) => methods.iter().map(|m| (m.clone(), name.clone())).collect(),
        Some(RouteEvent::ByMethod(map)) => {
            let mut named = Vec::new();
            for (method, name) in map {
                let method = methods
                    .iter()
                    .find(|m| m.as_str().eq_ignore_ascii_case(method))
                    .ok_or_else(|| format!("{method} is not one of the route's methods"))?;
                named.push((method.clone(), name.clone()));
            }
            named
        }
    };
    match named.iter().find(|(_, name)| !name.split('.').all(word)) {
        Some((_, bad)) => Err(format!(
            "{bad:?} is not an event name (dotted lowercase words, e.g. article.updated)"
        )),
        None => Ok(named),
    }
}

impl Route {
    /// The event a 2xx answer to `method` emits, if any.
    pub fn event(&self, method: &Method) -> Option<&str> {
        self.events
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, name)| name.as_str())
    }

    /// Segment-by-segment match; the segment counts must be equal, unless the template ends
    /// in `{rest*}`, which takes every remaining segment.
    fn matches(&self, canonical_path: &str) -> bool {
        // Walked in place, segment by segment: every request tries the routes in order, and a
        // `split('/')` per route cost more than the comparisons.
        let mut rest = canonical_path;
        for segment in &self.segments {
            let Some(after) = rest.strip_prefix('/') else {
                return false;
            };
            let (part, tail) =
                after.split_at(after.bytes().position(|b| b == b'/').unwrap_or(after.len()));
            if !segment.matches(part) {
                return false;
            }
            if *segment == Segment::Rest {
                return true;
            }
            rest = tail;
        }
        rest.is_empty()
    }

    /// Does this route match every path `later` matches?
    fn covers(&self, later: &Route) -> bool {
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(other) = later.segments.get(i) else {
                return false;
            };
            let covered = match (segment, other) {
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                (Segment::Param | Segment::Rest, Segment::Literal(b)) => !b.is_empty(),
                (Segment::Param, Segment::Param) => true,
                (Segment::Rest, Segment::Param | Segment::Rest) => true,
                (Segment::Literal(_) | Segment::Param, _) => false,
            };
            if !covered {
                return false;
            }
            if *segment == Segment::Rest {
                return true;
            }
        }
        self.segments.len() == later.segments.len()
    }

    /// `GET /v1/article/{id}`-style label: the methods and the template.
    fn label(&self) -> String {
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        format!("{} {}", methods.join(","), self.template)
    }
}

/// A route's query parameter rule. Names are compared after percent-decoding (`+` is a space),
/// so `%5Fwhere` is `_where`. An allow-list matches names exactly; a deny-list ignores ASCII
/// case, since some servers read parameter names case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryRule {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

impl QueryRule {
    /// Does the rule let every parameter of `query` (as forwarded: without the client key)
    /// through?
    pub(crate) fn permits(&self, query: Option<&str>) -> bool {
        let names = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| decode_name(pair.split_once('=').map_or(pair, |(name, _)| name)));
        for name in names {
            let allowed = match self {
                QueryRule::Allow(list) => list.iter().any(|n| *n == name),
                QueryRule::Deny(list) => !list.iter().any(|n| n.eq_ignore_ascii_case(&name)),
            };
            if !allowed {
                return false;
            }
        }
        true
    }

    fn compile(spec: &QueryDefinition) -> Result<QueryRule, String> {
        let (rule, list) = match (&spec.allow, &spec.deny) {
            (Some(list), None) => (QueryRule::Allow(list.clone()), list),
            (None, Some(list)) if !list.is_empty() => (QueryRule::Deny(list.clone()), list),
            (None, Some(_)) => return Err("deny: [] refuses nothing; remove it".to_owned()),
            (Some(_), Some(_)) => return Err("give allow or deny, not both".to_owned()),
            (None, None) => {
                return Err("give allow: [names] or deny: [names]".to_owned());
            }
        };
        if list.iter().any(String::is_empty) {
            return Err("a parameter name is empty".to_owned());
        }
        Ok(rule)
    }
}

impl fmt::Display for QueryRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, list) = match self {
            QueryRule::Allow(list) => ("allow", list),
            QueryRule::Deny(list) => ("deny", list),
        };
        match list.is_empty() {
            true => write!(f, "{word} none"),
            false => write!(f, "{word} {}", list.join(",")),
        }
    }
}

/// A query parameter name, percent-decoded (`+` is a space); bytes that are not UTF-8 are
/// replaced. Borrowed when there is nothing to decode.
fn decode_name(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(name);
    }
    let spaced = name.replace('+', " ");
    std::borrow::Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The compiled routes, in config order.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Validates every spec and compiles it; the first problem found is returned.
    pub fn compile(
        specs: &[RouteDefinition],
        known_resources: &[String],
    ) -> Result<RouteTable, RouteError> {
        let mut routes: Vec<Route> = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            let error = |field: &'static str| {
                move |reason: String| RouteError {
                    index,
                    field,
                    reason,
                }
            };
            let mut methods = compile_methods(&spec.methods).map_err(error("methods"))?;
            let implied_head = implied_head(&methods, spec.head).map_err(error("head"))?;
            if implied_head {
                methods.push(Method::HEAD);
            }
            let segments = compile_path(&spec.path).map_err(error("path"))?;
            let permission = Permission::parse(&spec.permission, known_resources)
                .map_err(error("permission"))?;
            let query = spec
                .query
                .as_ref()
                .map(QueryRule::compile)
                .transpose()
                .map_err(error("query"))?;
            let events = route_events(spec.event.as_ref(), &methods).map_err(error("event"))?;
            let route = Route {
                index,
                methods,
                template: spec.path.clone(),
                log_name: spec.path.as_str().into(),
                permission,
                max_body: spec.max_body,
                query,
                events,
                implied_head,
                segments,
            };
            find_duplicate(&routes, &route).map_err(error("path"))?;
            routes.push(route);
        }
        Ok(RouteTable { routes })
    }

    /// First route whose method list contains `method` and whose template matches
    /// `canonical_path`.
    pub fn lookup(&self, method: &Method, canonical_path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.methods.contains(method) && route.matches(canonical_path))
    }

    /// All routes in config order, e.g. for listing them in the admin API.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// Is HEAD routed because GET is? Unless `head: false`; `head` only applies beside GET.
fn implied_head(methods: &[Method], head: Option<bool>) -> Result<bool, String> {
    let get = methods.contains(&Method::GET);
    let listed = methods.contains(&Method::HEAD);
    match head {
        Some(_) if !get => Err("head only applies to a route that lists GET".to_owned()),
        Some(false) if listed => {
            Err("HEAD is listed in methods and head is false; remove one".to_owned())
        }
        Some(false) => Ok(false),
        None | Some(true) => Ok(get && !listed),
    }
}

/// The methods a route may list. CONNECT and TRACE are refused: neither belongs in a
/// knowledge-base API and both have proxy-specific meanings.
const ALLOWED_METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

fn compile_methods(names: &[String]) -> Result<Vec<Method>, String> {
    if names.is_empty() {
        return Err("at least one method is required".to_owned());
    }
    let mut methods: Vec<Method> = Vec::with_capacity(names.len());
    for name in names {
        let method = compile_method(name)?;
        if methods.contains(&method) {
            return Err(format!("method {name} is listed twice"));
        }
        methods.push(method);
    }
    Ok(methods)
}

fn compile_method(name: &str) -> Result<Method, String> {
    if let Some(method) = find_method(name) {
        return Ok(method);
    }
    let upper = name.to_ascii_uppercase();
    if upper == "CONNECT" || upper == "TRACE" {
        return Err(format!("method {upper} is not allowed"));
    }
    if find_method(&upper).is_some() {
        return Err(format!("method {name:?} must be upper case ({upper})"));
    }
    Err(format!(
        "unknown method {name:?} (expected GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)"
    ))
}

fn find_method(name: &str) -> Option<Method> {
    ALLOWED_METHODS.iter().find(|m| m.as_str() == name).cloned()
}

/// Checks that a template is canonical and splits it into segments.
fn compile_path(path: &str) -> Result<Vec<Segment>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path {path:?} must start with \"/\""))?;
    let mut segments = Vec::new();
    let mut param_names: Vec<&str> = Vec::new();
    let mut parts = rest.split('/').peekable();
    while let Some(part) = parts.next() {
        let is_last = parts.peek().is_none();
        segments.push(compile_segment(part, is_last)?);
        if let Some(name) = param_name(part).map(|n| n.trim_end_matches('*')) {
            if param_names.contains(&name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            param_names.push(name);
        }
    }
    Ok(segments)
}

/// One template segment: a whole-segment `{name}`, a last `{name*}`, or a canonical literal.
fn compile_segment(part: &str, is_last: bool) -> Result<Segment, String> {
    if let Some(name) = param_name(part) {
        if let Some(name) = name.strip_suffix('*')
            && is_param_name(name)
        {
            return match is_last {
                true => Ok(Segment::Rest),
                false => Err(format!("{{{name}*}} must be the last segment")),
            };
        }
        return if is_param_name(name) {
            Ok(Segment::Param)
        } else {
            Err(format!(
                "invalid parameter name {name:?} (expected [a-z_][a-z0-9_]*)"
            ))
        };
    }
    if part.contains(['{', '}']) {
        return Err(format!(
            "segment {part:?}: '{{' is only allowed as a whole-segment parameter like {{id}}"
        ));
    }
    if part.is_empty() {
        // Only a single trailing slash may leave an empty segment ("/" is one too).
        return if is_last {
            Ok(Segment::Literal(String::new()))
        } else {
            Err("empty segment (\"//\") is not canonical".to_owned())
        };
    }
    check_canonical_segment(part)?;
    Ok(Segment::Literal(part.to_owned()))
}

/// A literal must already be in canonical form, or it could never match a request path.
fn check_canonical_segment(part: &str) -> Result<(), String> {
    let alone = format!("/{part}");
    match canonicalize_path(&alone) {
        Ok(canonical) if canonical == alone => Ok(()),
        Ok(canonical) => Err(format!(
            "segment {part:?} is not canonical (write {:?})",
            canonical.trim_start_matches('/')
        )),
        Err(e) => Err(format!("segment {part:?}: {e}")),
    }
}

/// The `name` of a `{name}` segment (not yet validated).
fn param_name(part: &str) -> Option<&str> {
    part.strip_prefix('{')?.strip_suffix('}')
}

/// Parameter names: `[a-z_][a-z0-9_]*`.
fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// A later route with a method and segment shape already routed could never match.
fn find_duplicate(earlier: &[Route], route: &Route) -> Result<(), String> {
    for (index, other) in earlier.iter().enumerate() {
        if other.segments != route.segments {
            continue;
        }
        if let Some(method) = route.methods.iter().find(|m| other.methods.contains(m)) {
            let implied = if *method == Method::HEAD && other.implied_head {
                format!(
                    ", implied by its GET; set head: false on routes[{index}] to route HEAD apart"
                )
            } else if *method == Method::HEAD && route.implied_head {
                ", implied by GET; set head: false to leave it out".to_owned()
            } else {
                String::new()
            };
            return Err(format!(
                "duplicate of routes[{index}] ({method} {}{implied})",
                other.template
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::print::format_size;
    use super::*;
    use crate::authz::tests::{known, perm};

    fn spec(methods: &[&str], path: &str, permission: &str) -> RouteDefinition {
        RouteDefinition {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: path.to_owned(),
            permission: permission.to_owned(),
            max_body: None,
            head: None,
            query: None,
            event: None,
        }
    }

    fn compile(specs: &[RouteDefinition]) -> Result<RouteTable, RouteError> {
        RouteTable::compile(specs, &known())
    }

    /// The field and reason of the error for a single bad route placed after a good one.
    fn compile_error(bad: RouteDefinition) -> (usize, &'static str, String) {
        let specs = [spec(&["GET"], "/v1/ok", "article:read"), bad];
        let error = compile(&specs).expect_err("should not compile");
        (error.index, error.field, error.reason)
    }

    // ---- route compilation ----

    #[test]
    fn compiles_a_table() {
        let table = compile(&[
            spec(&["GET", "HEAD"], "/v1/article/{article_id}", "article:read"),
            spec(&["POST"], "/v1/article", "article:write"),
            spec(&["GET"], "/", "account:read"),
        ])
        .expect("compiles");
        assert_eq!(table.routes().len(), 3);
        let first = &table.routes()[0];
        assert_eq!(first.methods, vec![Method::GET, Method::HEAD]);
        assert_eq!(first.template, "/v1/article/{article_id}");
        assert_eq!(first.permission, perm("article:read"));
    }

    #[test]
    fn method_errors() {
        let cases: [(&[&str], &str); 6] = [
            (&[], "at least one method is required"),
            (&["get"], "method \"get\" must be upper case (GET)"),
            (&["CONNECT"], "method CONNECT is not allowed"),
            (&["trace"], "method TRACE is not allowed"),
            (
                &["FETCH"],
                "unknown method \"FETCH\" (expected GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)",
            ),
            (&["GET", "GET"], "method GET is listed twice"),
        ];
        for (methods, reason) in cases {
            let got = compile_error(spec(methods, "/v1/article", "article:read"));
            assert_eq!(got, (1, "methods", reason.to_owned()), "{methods:?}");
        }
    }

    #[test]
    fn path_errors() {
        let cases = [
            ("v1/article", "path \"v1/article\" must start with \"/\""),
            ("", "path \"\" must start with \"/\""),
            ("/v1//article", "empty segment (\"//\") is not canonical"),
            ("/v1/%41", "segment \"%41\" is not canonical (write \"A\")"),
            (
                "/v1/a%3a",
                "segment \"a%3a\" is not canonical (write \"a%3A\")",
            ),
            (
                "/v1/..",
                "segment \"..\": \".\" and \"..\" segments are not allowed in a path",
            ),
            (
                "/v1/a;b",
                "segment \"a;b\": \";\" (path parameters) is not allowed in a path",
            ),
            (
                "/v1/a b",
                "segment \"a b\": path contains a character that must be percent-encoded",
            ),
            (
                "/v1/article-{id}",
                "segment \"article-{id}\": '{' is only allowed as a whole-segment parameter like {id}",
            ),
            (
                "/v1/{id",
                "segment \"{id\": '{' is only allowed as a whole-segment parameter like {id}",
            ),
            (
                "/v1/{Id}",
                "invalid parameter name \"Id\" (expected [a-z_][a-z0-9_]*)",
            ),
            (
                "/v1/{}",
                "invalid parameter name \"\" (expected [a-z_][a-z0-9_]*)",
            ),
            (
                "/v1/{{id}}",
                "invalid parameter name \"{id}\" (expected [a-z_][a-z0-9_]*)",
            ),
            ("/v1/{id}/x/{id}", "parameter {id} appears twice"),
        ];
        for (path, reason) in cases {
            let got = compile_error(spec(&["GET"], path, "article:read"));
            assert_eq!(got, (1, "path", reason.to_owned()), "{path:?}");
        }
    }

    #[test]
    fn permission_errors_in_routes() {
        let got = compile_error(spec(&["GET"], "/v1/article", "articel:read"));
        assert_eq!(
            got,
            (1, "permission", "unknown resource \"articel\"".to_owned())
        );
    }

    #[test]
    fn duplicate_routes() {
        let first = spec(&["GET", "HEAD"], "/v1/article/{id}", "article:read");
        // Overlapping in one method (HEAD) is enough.
        let error = compile(&[
            first.clone(),
            spec(&["POST", "HEAD"], "/v1/article/{id}", "article:write"),
        ])
        .expect_err("duplicate");
        assert_eq!(
            error,
            RouteError {
                index: 1,
                field: "path",
                reason: "duplicate of routes[0] (HEAD /v1/article/{id})".to_owned(),
            }
        );
        assert_eq!(
            error.to_string(),
            "routes[1].path: duplicate of routes[0] (HEAD /v1/article/{id})"
        );
        // Different parameter names are still the same route shape.
        let renamed = compile(&[
            first.clone(),
            spec(&["GET"], "/v1/article/{aid}", "article:read"),
        ]);
        assert_eq!(
            renamed.expect_err("duplicate").reason,
            "duplicate of routes[0] (GET /v1/article/{id})"
        );
        // Another method or another path is fine.
        compile(&[
            first.clone(),
            spec(&["DELETE"], "/v1/article/{id}", "article:write"),
        ])
        .expect("other method");
        compile(&[first, spec(&["GET"], "/v1/article/{id}/", "article:read")]).expect("other path");
    }

    #[test]
    fn first_route_error_wins() {
        let error = compile(&[
            spec(&["GET"], "/v1/article", "article:read"),
            spec(&["get"], "bad", "nope"),
            spec(&[], "", ""),
        ])
        .expect_err("bad");
        assert_eq!((error.index, error.field), (1, "methods"));
    }

    // ---- lookup ----

    fn table() -> RouteTable {
        compile(&[
            spec(&["GET", "HEAD"], "/v1/article", "article:read"),
            spec(&["POST"], "/v1/article", "article:write"),
            spec(&["GET"], "/v1/article/{id}", "article:read"),
            spec(&["PATCH", "DELETE"], "/v1/article/{id}", "article:write"),
            spec(&["GET"], "/v1/category/", "category:read"),
            spec(&["GET"], "/v1/search/{id}", "search:read"),
            spec(&["GET"], "/v1/search/articles", "article:read"),
            spec(&["GET"], "/", "account:read"),
        ])
        .expect("compiles")
    }

    fn permission_for(method: Method, path: &str) -> Option<String> {
        table()
            .lookup(&method, path)
            .map(|route| route.permission.to_string())
    }

    #[test]
    fn lookup_matches_literals_and_params() {
        assert_eq!(
            permission_for(Method::GET, "/v1/article").as_deref(),
            Some("article:read")
        );
        assert_eq!(
            permission_for(Method::HEAD, "/v1/article").as_deref(),
            Some("article:read")
        );
        assert_eq!(
            permission_for(Method::POST, "/v1/article").as_deref(),
            Some("article:write")
        );
        assert_eq!(
            permission_for(Method::GET, "/v1/article/42").as_deref(),
            Some("article:read")
        );
        assert_eq!(
            permission_for(Method::DELETE, "/v1/article/a%3Ab").as_deref(),
            Some("article:write")
        );
        assert_eq!(
            permission_for(Method::GET, "/").as_deref(),
            Some("account:read")
        );
    }

    #[test]
    fn lookup_respects_segment_boundaries() {
        assert_eq!(permission_for(Method::GET, "/v1/articles"), None);
        assert_eq!(permission_for(Method::GET, "/v1/articl"), None);
        assert_eq!(permission_for(Method::GET, "/v1/article/1/2"), None);
        assert_eq!(permission_for(Method::GET, "/v1"), None);
        assert_eq!(permission_for(Method::GET, "/v1/article/"), None);
    }

    #[test]
    fn lookup_is_case_sensitive() {
        assert_eq!(permission_for(Method::GET, "/v1/Article"), None);
        assert_eq!(permission_for(Method::GET, "/V1/article"), None);
    }

    #[test]
    fn lookup_requires_the_method() {
        assert_eq!(permission_for(Method::PUT, "/v1/article"), None);
        assert_eq!(permission_for(Method::DELETE, "/v1/article"), None);
        assert_eq!(permission_for(Method::OPTIONS, "/v1/article/1"), None);
    }

    #[test]
    fn lookup_treats_trailing_slash_as_a_different_path() {
        assert_eq!(
            permission_for(Method::GET, "/v1/category/").as_deref(),
            Some("category:read")
        );
        assert_eq!(permission_for(Method::GET, "/v1/category"), None);
    }

    #[test]
    fn lookup_first_match_wins() {
        // "/v1/search/{id}" is listed before "/v1/search/articles".
        assert_eq!(
            permission_for(Method::GET, "/v1/search/articles").as_deref(),
            Some("search:read")
        );
    }

    /// The matching as it was written before it walked in place: `split('/')`.
    fn matches_by_split(route: &Route, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &route.segments {
            if !parts.next().is_some_and(|part| segment.matches(part)) {
                return false;
            }
            if *segment == Segment::Rest {
                return true;
            }
        }
        parts.next().is_none()
    }

    #[test]
    fn matching_in_place_agrees_with_splitting() {
        let table = compile(&[
            spec(&["GET"], "/", "account:read"),
            spec(&["GET"], "/v1/article/{id}", "article:read"),
            spec(&["GET"], "/v1/files/{rest*}", "article:read"),
            spec(&["GET"], "/v1/category/", "category:read"),
        ])
        .expect("valid");
        let parts = ["", "v1", "article", "files", "category", "x", "a b"];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| parts.iter().map(move |part| format!("{p}/{part}")))
                .collect();
            paths.extend(longer);
        }
        paths.extend(["v1/article/1".to_owned(), "//".to_owned()]);
        for route in table.routes() {
            for path in &paths {
                assert_eq!(
                    route.matches(path),
                    matches_by_split(route, path),
                    "{path:?}"
                );
            }
        }
    }

    #[test]
    fn lookup_rejects_relative_paths() {
        assert_eq!(permission_for(Method::GET, ""), None);
        assert_eq!(permission_for(Method::GET, "v1/article"), None);
    }

    #[test]
    fn display_is_an_aligned_table() {
        let table = compile(&[
            spec(&["GET", "HEAD"], "/v1/article/{id}", "article:read"),
            spec(&["POST"], "/v1/article", "article:write"),
        ])
        .expect("compiles");
        let expected = "\
METHODS   PATH              PERMISSION
GET,HEAD  /v1/article/{id}  article:read
POST      /v1/article       article:write";
        assert_eq!(table.to_string(), expected);
    }

    // ---- HEAD with GET, {rest*}, query rules, shadowed routes ----

    fn with(
        spec: RouteDefinition,
        head: Option<bool>,
        query: Option<QueryDefinition>,
    ) -> RouteDefinition {
        RouteDefinition {
            head,
            query,
            ..spec
        }
    }

    #[test]
    fn get_implies_head_unless_the_route_says_otherwise() {
        let table = compile(&[
            spec(&["GET"], "/a", "article:read"),
            with(spec(&["GET"], "/b", "article:read"), Some(false), None),
            spec(&["HEAD"], "/b", "account:read"),
        ])
        .expect("compiles");
        assert_eq!(table.routes()[0].methods, vec![Method::GET, Method::HEAD]);
        assert!(table.lookup(&Method::HEAD, "/a").is_some());
        assert_eq!(
            table.lookup(&Method::HEAD, "/b").unwrap().permission,
            perm("account:read")
        );
        let error = compile(&[
            spec(&["GET"], "/a", "article:read"),
            spec(&["HEAD"], "/a", "account:read"),
        ])
        .expect_err("HEAD twice");
        assert_eq!(
            error.reason,
            "duplicate of routes[0] (HEAD /a, implied by its GET; set head: false on routes[0] to route HEAD apart)"
        );
        let bad = |head, methods: &[&str]| {
            compile(&[with(spec(methods, "/a", "article:read"), Some(head), None)])
                .expect_err("bad head")
                .to_string()
        };
        assert_eq!(
            bad(true, &["POST"]),
            "routes[0].head: head only applies to a route that lists GET"
        );
        assert_eq!(
            bad(false, &["GET", "HEAD"]),
            "routes[0].head: HEAD is listed in methods and head is false; remove one"
        );
    }

    #[test]
    fn a_rest_parameter_takes_the_remaining_segments() {
        let table = compile(&[spec(&["GET"], "/static/{path*}", "article:read")]).unwrap();
        for path in [
            "/static/a",
            "/static/a/b/c.css",
            "/static/a/",
            "/static/%41x",
        ] {
            assert!(table.lookup(&Method::GET, path).is_some(), "{path}");
        }
        for path in ["/static", "/static/", "/staticx/a", "/"] {
            assert!(table.lookup(&Method::GET, path).is_none(), "{path}");
        }
        let error = compile(&[spec(&["GET"], "/a/{rest*}/b", "article:read")]).unwrap_err();
        assert_eq!(error.reason, "{rest*} must be the last segment");
        let error = compile(&[spec(&["GET"], "/{p}/{p*}", "article:read")]).unwrap_err();
        assert_eq!(error.reason, "parameter {p} appears twice");
        let error = compile(&[spec(&["GET"], "/{Bad*}", "article:read")]).unwrap_err();
        assert!(
            error.reason.starts_with("invalid parameter name"),
            "{error}"
        );
    }

    #[test]
    fn query_rules() {
        let allow = QueryRule::Allow(vec!["page".into(), "q".into()]);
        assert!(allow.permits(None));
        assert!(allow.permits(Some("page=2&q=x&&")));
        assert!(!allow.permits(Some("page=2&_where=1")));
        assert!(!allow.permits(Some("PAGE=2")), "allow-lists match exactly");
        assert!(!allow.permits(Some("=x")));
        let none = QueryRule::Allow(vec![]);
        assert!(none.permits(Some("")));
        assert!(!none.permits(Some("a")));
        let deny = QueryRule::Deny(vec!["_where".into()]);
        assert!(deny.permits(Some("q=_where")));
        for refused in [
            "_where=1",
            "a=1&%5Fwhere=1",
            "_WHERE",
            "_wh%65re=x",
            "_where",
        ] {
            assert!(!deny.permits(Some(refused)), "{refused}");
        }
        let query_spec = |allow: Option<&[&str]>, deny: Option<&[&str]>| QueryDefinition {
            allow: allow.map(|l| l.iter().map(|s| s.to_string()).collect()),
            deny: deny.map(|l| l.iter().map(|s| s.to_string()).collect()),
        };
        let error = |query| {
            compile(&[with(
                spec(&["GET"], "/a", "article:read"),
                None,
                Some(query),
            )])
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            error(query_spec(Some(&["a"]), Some(&["b"]))),
            "routes[0].query: give allow or deny, not both"
        );
        assert_eq!(
            error(query_spec(None, None)),
            "routes[0].query: give allow: [names] or deny: [names]"
        );
        assert_eq!(
            error(query_spec(None, Some(&[]))),
            "routes[0].query: deny: [] refuses nothing; remove it"
        );
        assert_eq!(
            error(query_spec(Some(&[""]), None)),
            "routes[0].query: a parameter name is empty"
        );
    }

    #[test]
    fn shadowed_routes_are_found() {
        let table = compile(&[
            spec(&["GET"], "/v1/search/{id}", "search:read"),
            spec(&["GET"], "/v1/search/articles", "article:read"),
            spec(&["GET", "POST"], "/v1/static/{rest*}", "article:read"),
            spec(&["GET"], "/v1/static/a/{x}", "article:read"),
            spec(&["DELETE"], "/v1/static/a/{x}", "article:write"),
            spec(&["POST"], "/v1/x/{a}", "article:write"),
            spec(&["PUT"], "/v1/x/{a}", "article:write"),
            spec(&["POST", "PUT"], "/v1/x/b", "article:write"),
            spec(&["GET"], "/v1/search/", "search:read"),
            spec(&["GET"], "/v1/static/{rest*}/", "search:read"),
        ]);
        // The last one is refused at compile time: a rest parameter must come last.
        assert!(table.is_err());
        let table = compile(&[
            spec(&["GET"], "/v1/search/{id}", "search:read"),
            spec(&["GET"], "/v1/search/articles", "article:read"),
            spec(&["GET", "POST"], "/v1/static/{rest*}", "article:read"),
            spec(&["GET"], "/v1/static/a/{x}", "article:read"),
            spec(&["DELETE"], "/v1/static/a/{x}", "article:write"),
            spec(&["POST"], "/v1/x/{a}", "article:write"),
            spec(&["PUT"], "/v1/x/{a}", "article:write"),
            spec(&["POST", "PUT"], "/v1/x/b", "article:write"),
            spec(&["GET"], "/v1/search/", "search:read"),
            spec(&["GET"], "/v1/{any*}", "search:read"),
        ])
        .unwrap();
        assert_eq!(
            table.shadowed(),
            vec![
                "routes[1] (GET,HEAD /v1/search/articles) can never match: routes[0] (GET,HEAD /v1/search/{id}) matches every request it would",
                "routes[3] (GET,HEAD /v1/static/a/{x}) can never match: routes[2] (GET,POST,HEAD /v1/static/{rest*}) matches every request it would",
                "routes[7] (POST,PUT /v1/x/b) can never match: routes[5] (POST /v1/x/{a}) and routes[6] (PUT /v1/x/{a}) match every request it would",
            ]
        );
        // A trailing slash is an empty segment: {id} does not match it, nor covers it.
        assert!(table.lookup(&Method::GET, "/v1/search/").is_some());
    }

    #[test]
    fn describe_shows_the_body_limit_and_the_query_rule() {
        let mut limited = spec(&["POST"], "/v1/article", "article:write");
        limited.max_body = Some(1 << 20);
        let table = compile(&[
            with(
                spec(&["GET"], "/v1/article/{id}", "article:read"),
                None,
                Some(QueryDefinition {
                    allow: None,
                    deny: Some(vec!["_where".into(), "_sort".into()]),
                }),
            ),
            limited,
        ])
        .unwrap();
        let expected = "\
METHODS   PATH              PERMISSION     MAX_BODY  QUERY
GET,HEAD  /v1/article/{id}  article:read   100MiB    deny _where,_sort
POST      /v1/article       article:write  1MiB      -";
        assert_eq!(table.describe(100 << 20), expected);
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 30), "3GiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(1536 * 1024), "1536KiB");
    }

    #[test]
    fn display_of_an_empty_table_is_the_header() {
        assert_eq!(
            RouteTable::default().to_string(),
            "METHODS  PATH  PERMISSION"
        );
    }
}
