//! Authorization's vocabulary: permissions (`resource:action`), key scopes, and whether a key
//! grants a permission. The route table that maps a request to the permission it needs is in
//! [`routes`]; request paths are canonicalized first, in [`crate::path`].

pub mod routes;

use std::fmt;

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
    pub(crate) fn allows(self, p: &Permission) -> bool {
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
pub(crate) fn grants(scope: Scope, specific: &[Permission], needed: &Permission) -> bool {
    scope.allows(needed) && (specific.is_empty() || specific.contains(needed))
}

/// The HelpDocs v1 resources, the default for `known_resources`.
pub const DEFAULT_RESOURCES: &[&str] = &[
    "account", "article", "category", "group", "search", "user", "webhook",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The default resources, as the config hands them over.
    pub(crate) fn known() -> Vec<String> {
        DEFAULT_RESOURCES.iter().map(|r| r.to_string()).collect()
    }

    pub(crate) fn perm(s: &str) -> Permission {
        Permission::parse(s, &known()).expect("valid permission")
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
}
