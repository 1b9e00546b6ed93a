//! Authorization: permissions, key scopes, the route table that maps a request to the
//! permission it needs, and path canonicalization.
//!
//! The path that is authorized must be exactly the path that is forwarded upstream, so
//! [`canonicalize_path`] rejects anything an upstream server might read differently
//! (dot segments, encoded slashes, path parameters, ...) instead of trying to repair it.

use std::fmt;

use http::Method;

/// What a key may do: `resource:action`, e.g. `article:read`, `category:write`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    pub resource: String,
    pub action: Action,
}

/// The two things a key can do to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Read,
    Write,
}

impl Action {
    /// The spelling used in `resource:action` strings.
    fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
        }
    }
}

impl Permission {
    /// Parses "resource:action"; resource must be in `known_resources`; action read|write.
    ///
    /// Errors are human sentences, used verbatim in config errors and API 422 bodies.
    pub fn parse(s: &str, known_resources: &[String]) -> Result<Permission, String> {
        let permission = parse_syntax(s)?;
        if known_resources.contains(&permission.resource) {
            Ok(permission)
        } else {
            Err(format!("unknown resource {:?}", permission.resource))
        }
    }
}

/// Parses the shape of "resource:action" without the known-resource check, so that stored
/// records stay readable after a resource is dropped from the config.
fn parse_syntax(s: &str) -> Result<Permission, String> {
    let shape_error = || format!("expected resource:action, got {s:?}");
    let (resource, action) = s.split_once(':').ok_or_else(shape_error)?;
    if resource.is_empty() || action.contains(':') {
        return Err(shape_error());
    }
    if !is_resource_name(resource) {
        return Err(format!(
            "invalid resource {resource:?} (expected lowercase letters, digits, '_' or '-')"
        ));
    }
    let action = match action {
        "read" => Action::Read,
        "write" => Action::Write,
        other => return Err(format!("unknown action {other:?} (expected read or write)")),
    };
    Ok(Permission {
        resource: resource.to_owned(),
        action,
    })
}

/// Resource names are lowercase ASCII letters, digits, '_' or '-'.
fn is_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action.as_str())
    }
}

/// Serialized as the string "resource:action", the same form the config and API use.
impl serde::Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Accepts any syntactically valid "resource:action" (no known-resource check).
impl<'de> serde::Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        parse_syntax(&s).map_err(serde::de::Error::custom)
    }
}

/// The broad grant of a key, optionally narrowed by an allowlist (see [`grants`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    ReadWrite,
}

impl Scope {
    /// read grants every *:read; read_write grants everything.
    pub fn allows(self, p: &Permission) -> bool {
        match self {
            Scope::Read => p.action == Action::Read,
            Scope::ReadWrite => true,
        }
    }
}

/// Does a key with this scope and this allowlist (empty = the whole scope) grant `needed`?
///
/// The allowlist only narrows: an entry beyond the scope grants nothing. Entries match
/// exactly, so `article:write` does not imply `article:read`.
pub fn grants(scope: Scope, specific: &[Permission], needed: &Permission) -> bool {
    scope.allows(needed) && (specific.is_empty() || specific.contains(needed))
}

/// The HelpDocs v1 resources, the default for `known_resources`.
pub const DEFAULT_RESOURCES: &[&str] = &[
    "account", "article", "category", "group", "search", "user", "webhook",
];

/// One route as written in the YAML config.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub methods: Vec<String>,
    pub path: String,
    pub permission: String,
    /// The largest request body this route accepts, instead of `limits.max_body`.
    #[serde(default)]
    pub max_body: Option<crate::config::ByteSize>,
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
    pub permission: Permission,
    /// The route's own request body limit, if it sets one.
    pub max_body: Option<u64>,
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
}

impl Segment {
    fn matches(&self, part: &str) -> bool {
        match self {
            Segment::Literal(literal) => literal == part,
            Segment::Param => !part.is_empty(),
        }
    }
}

impl Route {
    /// Segment-by-segment match; the segment counts must be equal.
    fn matches(&self, canonical_path: &str) -> bool {
        let Some(rest) = canonical_path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        self.segments
            .iter()
            .all(|segment| parts.next().is_some_and(|part| segment.matches(part)))
            && parts.next().is_none()
    }
}

/// The compiled routes, in config order.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Validates every spec and compiles it; the first problem found is returned.
    pub fn compile(
        specs: &[RouteSpec],
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
            let methods = compile_methods(&spec.methods).map_err(error("methods"))?;
            let segments = compile_path(&spec.path).map_err(error("path"))?;
            let permission = Permission::parse(&spec.permission, known_resources)
                .map_err(error("permission"))?;
            let route = Route {
                index,
                methods,
                template: spec.path.clone(),
                permission,
                max_body: spec.max_body.map(|size| size.0),
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
        if let Some(name) = param_name(part) {
            if param_names.contains(&name) {
                return Err(format!("parameter {{{name}}} appears twice"));
            }
            param_names.push(name);
        }
    }
    Ok(segments)
}

/// One template segment: a whole-segment `{name}` or a canonical literal.
fn compile_segment(part: &str, is_last: bool) -> Result<Segment, String> {
    if let Some(name) = param_name(part) {
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
            return Err(format!(
                "duplicate of routes[{index}] ({method} {})",
                other.template
            ));
        }
    }
    Ok(())
}

impl fmt::Display for RouteTable {
    /// An aligned table: a `METHODS  PATH  PERMISSION` header, then one line per route.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 3]> = self
            .routes
            .iter()
            .map(|route| {
                let methods: Vec<&str> = route.methods.iter().map(Method::as_str).collect();
                [
                    methods.join(","),
                    route.template.clone(),
                    route.permission.to_string(),
                ]
            })
            .collect();
        let header = ["METHODS", "PATH", "PERMISSION"].map(str::to_owned);
        let width = |column: usize| {
            rows.iter()
                .chain([&header])
                .map(|row| row[column].len())
                .max()
                .unwrap_or(0)
        };
        let (methods_width, path_width) = (width(0), width(1));
        for (i, [methods, path, permission]) in [&header].into_iter().chain(&rows).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{methods:<methods_width$}  {path:<path_width$}  {permission}"
            )?;
        }
        Ok(())
    }
}

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must start with \"/\"")]
    NotAbsolute,
    #[error("malformed percent-escape (\"%\" must be followed by two hex digits)")]
    MalformedEscape,
    #[error("encoded slash (%2F) is not allowed in a path")]
    EncodedSlash,
    #[error("encoded backslash (%5C) is not allowed in a path")]
    EncodedBackslash,
    #[error("encoded NUL (%00) is not allowed in a path")]
    EncodedNul,
    #[error("backslash is not allowed in a path")]
    Backslash,
    #[error("\";\" (path parameters) is not allowed in a path")]
    Semicolon,
    #[error("path contains a character that must be percent-encoded")]
    InvalidChar,
    #[error("\".\" and \"..\" segments are not allowed in a path")]
    DotSegment,
    #[error("percent-escapes must decode to UTF-8 (no overlong or partial sequences)")]
    InvalidUtf8,
}

/// Canonicalize the raw path of a request URI (as `http::Uri::path()` gives it, no query).
///
/// The result is what gets both authorized and forwarded: unreserved escapes decoded once,
/// other escapes in upper-case hex, `//` merged (a single trailing slash kept), and anything
/// ambiguous refused. The output is never longer than the input, so it is allocated once.
pub fn canonicalize_path(raw: &str) -> Result<String, PathError> {
    let rest = match raw.strip_prefix('/') {
        Some(rest) => rest,
        None if raw.is_empty() => return Err(PathError::Empty),
        None => return Err(PathError::NotAbsolute),
    };
    let mut out = String::with_capacity(raw.len());
    let mut parts = rest.split('/').peekable();
    while let Some(part) = parts.next() {
        if part.is_empty() {
            // Merge "//"; keep a single trailing slash (and the root "/").
            if parts.peek().is_none() {
                out.push('/');
            }
            continue;
        }
        out.push('/');
        let start = out.len();
        push_segment(&mut out, part)?;
        if matches!(out.get(start..), Some("." | "..")) {
            return Err(PathError::DotSegment);
        }
    }
    Ok(out)
}

/// Appends one raw segment to `out`, normalising its percent-escapes.
fn push_segment(out: &mut String, part: &str) -> Result<(), PathError> {
    let mut rest = part.as_bytes();
    let mut non_ascii = false;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let (value, after) = take_escape(tail)?;
            non_ascii |= !value.is_ascii();
            push_escaped(out, value)?;
            rest = after;
        } else {
            check_raw_byte(byte)?;
            out.push(char::from(byte));
            rest = tail;
        }
    }
    // Escaped bytes must spell UTF-8: an overlong `%C0%AE` is a "." to a lax decoder upstream.
    if non_ascii {
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(part).collect();
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::InvalidUtf8);
        }
    }
    Ok(())
}

/// Reads the two hex digits after a '%'.
fn take_escape(tail: &[u8]) -> Result<(u8, &[u8]), PathError> {
    match tail {
        [high, low, after @ ..] => match (hex_value(*high), hex_value(*low)) {
            (Some(high), Some(low)) => Ok(((high << 4) | low, after)),
            _ => Err(PathError::MalformedEscape),
        },
        _ => Err(PathError::MalformedEscape),
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes an escaped unreserved character; keeps any other escape, in upper-case hex.
/// Decoding only unreserved characters, and only once, means the result never decodes
/// to anything new (so `%252e` stays `%252e`, never `.`).
fn push_escaped(out: &mut String, value: u8) -> Result<(), PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    match value {
        0 => Err(PathError::EncodedNul),
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::EncodedBackslash),
        v if is_unreserved(v) => {
            out.push(char::from(v));
            Ok(())
        }
        v => {
            out.push('%');
            out.push(char::from(HEX[usize::from(v >> 4)]));
            out.push(char::from(HEX[usize::from(v & 0x0f)]));
            Ok(())
        }
    }
}

/// A byte that may appear unescaped in a segment: RFC 3986 pchar, minus ';' and '%'.
fn check_raw_byte(byte: u8) -> Result<(), PathError> {
    match byte {
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::Semicolon),
        b if is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@' => Ok(()),
        _ => Err(PathError::InvalidChar),
    }
}

/// RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 sub-delims, without ';' (refused as a path parameter marker).
fn is_sub_delim(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        DEFAULT_RESOURCES.iter().map(|r| r.to_string()).collect()
    }

    fn perm(s: &str) -> Permission {
        Permission::parse(s, &known()).expect("valid permission")
    }

    fn spec(methods: &[&str], path: &str, permission: &str) -> RouteSpec {
        RouteSpec {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: path.to_owned(),
            permission: permission.to_owned(),
            max_body: None,
        }
    }

    fn compile(specs: &[RouteSpec]) -> Result<RouteTable, RouteError> {
        RouteTable::compile(specs, &known())
    }

    /// The field and reason of the error for a single bad route placed after a good one.
    fn compile_error(bad: RouteSpec) -> (usize, &'static str, String) {
        let specs = [spec(&["GET"], "/v1/ok", "article:read"), bad];
        let error = compile(&specs).expect_err("should not compile");
        (error.index, error.field, error.reason)
    }

    // ---- canonicalization ----

    const GOOD: &[(&str, &str)] = &[
        ("/", "/"),
        ("/v1/article", "/v1/article"),
        ("/v1/article/", "/v1/article/"),
        ("/v1/article//", "/v1/article/"),
        ("/v1//article", "/v1/article"),
        ("//v1///article", "/v1/article"),
        ("//", "/"),
        ("/v1/article/%41", "/v1/article/A"),
        ("/v1/%7e", "/v1/~"),
        ("/v1/%7E%2d%5f%2E%30", "/v1/~-_.0"),
        ("/v1/a%3ab", "/v1/a%3Ab"),
        ("/v1/%252e", "/v1/%252e"),
        ("/v1/%252e%252e", "/v1/%252e%252e"),
        ("/v1/%25", "/v1/%25"),
        ("/v1/caf%c3%a9", "/v1/caf%C3%A9"),
        ("/v1/...", "/v1/..."),
        ("/v1/.well-known", "/v1/.well-known"),
        ("/v1/a.b", "/v1/a.b"),
        ("/v1/%2e%2e%2e", "/v1/..."),
        ("/v1/user@example.com", "/v1/user@example.com"),
        ("/v1/a:b!$&'()*+,=", "/v1/a:b!$&'()*+,="),
        ("/v1/Article", "/v1/Article"),
    ];

    const BAD: &[(&str, PathError)] = &[
        ("", PathError::Empty),
        ("v1/article", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("/v1/%2e%2e/admin", PathError::DotSegment),
        ("/v1/%2E", PathError::DotSegment),
        ("/v1/.%2e/admin", PathError::DotSegment),
        ("/v1/%2e./admin", PathError::DotSegment),
        ("/v1/../admin", PathError::DotSegment),
        ("/v1/./article", PathError::DotSegment),
        ("/..", PathError::DotSegment),
        ("/v1/article/.", PathError::DotSegment),
        ("/v1/a%2Fb", PathError::EncodedSlash),
        ("/v1/a%2fb", PathError::EncodedSlash),
        ("/v1/a%5Cb", PathError::EncodedBackslash),
        ("/v1/a%5cb", PathError::EncodedBackslash),
        ("/v1/a\\b", PathError::Backslash),
        ("/v1/article;jsessionid=1", PathError::Semicolon),
        ("/v1/;/article", PathError::Semicolon),
        ("/v1/%", PathError::MalformedEscape),
        ("/v1/%4", PathError::MalformedEscape),
        ("/v1/%zz", PathError::MalformedEscape),
        ("/v1/%4g", PathError::MalformedEscape),
        ("/v1/%%41", PathError::MalformedEscape),
        ("/v1/a%00", PathError::EncodedNul),
        ("/v1/a b", PathError::InvalidChar),
        ("/v1/caf\u{e9}", PathError::InvalidChar),
        ("/v1/\"x\"", PathError::InvalidChar),
        ("/v1/<x>", PathError::InvalidChar),
        ("/v1/{id}", PathError::InvalidChar),
        ("/v1/a|b", PathError::InvalidChar),
        ("/v1/a^b", PathError::InvalidChar),
        ("/v1/a`b", PathError::InvalidChar),
        ("/v1/a\tb", PathError::InvalidChar),
        ("/v1/a\nb", PathError::InvalidChar),
        ("/v1/a\u{7f}", PathError::InvalidChar),
        ("/v1/a?b", PathError::InvalidChar),
        ("/v1/a#b", PathError::InvalidChar),
        ("/v1/a\0b", PathError::InvalidChar),
        ("/v1/%c0%ae%c0%ae/admin", PathError::InvalidUtf8),
        ("/v1/%e0%80%ae", PathError::InvalidUtf8),
        ("/v1/caf%e9", PathError::InvalidUtf8),
        ("/v1/%c3", PathError::InvalidUtf8),
        ("/v1/%ff%fe", PathError::InvalidUtf8),
        ("/v1/%ed%a0%80", PathError::InvalidUtf8),
    ];

    #[test]
    fn canonicalize_accepts_and_normalises() {
        for (raw, expected) in GOOD {
            assert_eq!(canonicalize_path(raw).as_deref(), Ok(*expected), "{raw:?}");
        }
    }

    #[test]
    fn canonicalize_rejects() {
        for (raw, expected) in BAD {
            assert_eq!(canonicalize_path(raw), Err(*expected), "{raw:?}");
        }
    }

    #[test]
    fn canonicalize_is_idempotent() {
        for (raw, _) in GOOD {
            let once = canonicalize_path(raw).expect("good path");
            assert_eq!(
                canonicalize_path(&once).as_deref(),
                Ok(once.as_str()),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn canonicalize_keeps_common_paths_in_one_allocation() {
        let raw = "/v1/article/12345/translations";
        let out = canonicalize_path(raw).expect("good path");
        assert_eq!(out, raw);
        assert_eq!(out.capacity(), raw.len());
    }

    #[test]
    fn canonicalize_survives_every_short_input() {
        // No panic for any one- or two-byte segment, and every Ok result is a fixed point.
        for a in 0u8..=255 {
            for b in 0u8..=255 {
                let raw = String::from_utf8_lossy(&[b'/', a, b, b'%', a, b]).into_owned();
                if let Ok(once) = canonicalize_path(&raw) {
                    assert_eq!(canonicalize_path(&once).as_deref(), Ok(once.as_str()));
                }
            }
        }
    }

    #[test]
    fn path_errors_are_sentences() {
        assert_eq!(
            PathError::EncodedSlash.to_string(),
            "encoded slash (%2F) is not allowed in a path"
        );
        assert_eq!(
            PathError::DotSegment.to_string(),
            "\".\" and \"..\" segments are not allowed in a path"
        );
    }

    // ---- permissions ----

    #[test]
    fn permission_parses_and_displays() {
        let p = perm("article:read");
        assert_eq!(p.resource, "article");
        assert_eq!(p.action, Action::Read);
        assert_eq!(p.to_string(), "article:read");
        assert_eq!(perm("category:write").to_string(), "category:write");
    }

    #[test]
    fn permission_parse_errors() {
        let cases = [
            ("articel:read", "unknown resource \"articel\""),
            (
                "article:delete",
                "unknown action \"delete\" (expected read or write)",
            ),
            ("article:", "unknown action \"\" (expected read or write)"),
            ("article", "expected resource:action, got \"article\""),
            (":read", "expected resource:action, got \":read\""),
            ("", "expected resource:action, got \"\""),
            (
                "article:read:x",
                "expected resource:action, got \"article:read:x\"",
            ),
            (
                "Article:read",
                "invalid resource \"Article\" (expected lowercase letters, digits, '_' or '-')",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Permission::parse(input, &known()),
                Err(expected.to_owned()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn permission_serde_round_trip() {
        let p = perm("article:write");
        let json = serde_json::to_string(&p).expect("serialize");
        assert_eq!(json, "\"article:write\"");
        let back: Permission = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, p);
    }

    #[test]
    fn permission_deserialize_skips_known_resource_check() {
        let p: Permission = serde_json::from_str("\"legacy_thing-2:read\"").expect("deserialize");
        assert_eq!(p.resource, "legacy_thing-2");
        for bad in ["\"Article:read\"", "\"article\"", "\"article:delete\"", "7"] {
            assert!(serde_json::from_str::<Permission>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_serde_names() {
        assert_eq!(
            serde_json::to_string(&Scope::ReadWrite).expect("serialize"),
            "\"read_write\""
        );
        let scope: Scope = serde_json::from_str("\"read\"").expect("deserialize");
        assert_eq!(scope, Scope::Read);
    }

    #[test]
    fn scope_allows() {
        assert!(Scope::Read.allows(&perm("article:read")));
        assert!(!Scope::Read.allows(&perm("article:write")));
        assert!(Scope::ReadWrite.allows(&perm("article:read")));
        assert!(Scope::ReadWrite.allows(&perm("article:write")));
    }

    #[test]
    fn grants_whole_scope_when_allowlist_is_empty() {
        assert!(grants(Scope::Read, &[], &perm("article:read")));
        assert!(!grants(Scope::Read, &[], &perm("article:write")));
        assert!(grants(Scope::ReadWrite, &[], &perm("article:read")));
        assert!(grants(Scope::ReadWrite, &[], &perm("article:write")));
    }

    #[test]
    fn allowlist_narrows() {
        let only_articles = [perm("article:read"), perm("article:write")];
        assert!(grants(
            Scope::ReadWrite,
            &only_articles,
            &perm("article:write")
        ));
        assert!(!grants(
            Scope::ReadWrite,
            &only_articles,
            &perm("category:read")
        ));
        // Exact entries: write does not imply read.
        assert!(!grants(
            Scope::ReadWrite,
            &[perm("article:write")],
            &perm("article:read")
        ));
    }

    #[test]
    fn allowlist_cannot_exceed_scope() {
        let list = [perm("article:write")];
        assert!(!grants(Scope::Read, &list, &perm("article:write")));
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
    fn route_spec_deserializes_and_denies_unknown_fields() {
        let json = r#"{"methods":["GET"],"path":"/v1/article","permission":"article:read"}"#;
        let spec: RouteSpec = serde_json::from_str(json).expect("deserialize");
        assert_eq!(spec.methods, vec!["GET"]);
        assert_eq!(spec.max_body, None);
        let limited = r#"{"methods":["POST"],"path":"/v1/article","permission":"article:write","max_body":"1MiB"}"#;
        let spec: RouteSpec = serde_json::from_str(limited).expect("deserialize");
        let table = compile(&[spec]).expect("compile");
        assert_eq!(table.routes()[0].max_body, Some(1 << 20));
        let extra = r#"{"methods":["GET"],"path":"/","permission":"article:read","x":1}"#;
        assert!(serde_json::from_str::<RouteSpec>(extra).is_err());
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

    #[test]
    fn display_of_an_empty_table_is_the_header() {
        assert_eq!(
            RouteTable::default().to_string(),
            "METHODS  PATH  PERMISSION"
        );
    }
}
