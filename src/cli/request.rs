//! Turns a parsed command into the one admin API call it makes, without touching the network.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::args::{ExpiryArgs, KeysCommand, ListArgs, ScopeArg, SortArg, StateArg};
use super::error::CliError;

/// One call to the admin API and how to show what it answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: Method,
    /// Path segments after `/v1/keys`; the client percent-encodes them, so ids cannot escape.
    pub path: Vec<String>,
    /// Query parameters (the client encodes them).
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    pub view: View,
}

/// What the answer is, for the human-readable output.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    Key,
    KeyWithSecret,
    /// Every page of keys (the client follows `next_cursor`), at most this many.
    KeyList(Option<u64>),
    /// A key's usage buckets.
    Usage,
    Deleted(String),
}

/// `now` is passed in so `--expires-in` is testable.
pub fn request_for(command: &KeysCommand, now: DateTime<Utc>) -> Result<Request, CliError> {
    let request = match command {
        KeysCommand::Create {
            name,
            scope,
            permissions,
            expiry,
            limits,
        } => {
            let mut body = key_fields(name.as_deref(), *scope, permissions, expiry, now)?;
            limits.insert_into(&mut body);
            call(Method::POST, &[], Some(body.into()), View::KeyWithSecret)
        }
        KeysCommand::List(list) => {
            let mut request = call(Method::GET, &[], None, View::KeyList(list.limit));
            request.query = list_query(list);
            request
        }
        KeysCommand::Usage { id, days } => {
            let mut request = call(Method::GET, &[id, "usage"], None, View::Usage);
            let from = now - TimeDelta::days(i64::from(*days));
            let granularity = if *days <= 2 { "hour" } else { "day" };
            request.query = vec![
                ("from", from.to_rfc3339_opts(SecondsFormat::Secs, true)),
                ("granularity", granularity.to_string()),
            ];
            request
        }
        KeysCommand::Show { id } => call(Method::GET, &[id], None, View::Key),
        KeysCommand::Edit {
            id,
            name,
            scope,
            permissions,
            clear_permissions,
            expiry,
            no_expiry,
            limits,
            clear_limits,
        } => {
            let mut changes = key_fields(name.as_deref(), *scope, permissions, expiry, now)?;
            limits.insert_into(&mut changes);
            clear_limits.insert_into(&mut changes);
            let body = edit_body(changes, *clear_permissions, *no_expiry)?;
            call(Method::PATCH, &[id], Some(body), View::Key)
        }
        KeysCommand::Disable { id } => set_enabled(id, false),
        KeysCommand::Enable { id } => set_enabled(id, true),
        KeysCommand::Rotate {
            id,
            end_grace: true,
            ..
        } => call(Method::POST, &[id, "rotation", "end"], None, View::Key),
        KeysCommand::Rotate { id, grace, .. } => {
            let body = json!({ "grace_period_seconds": whole_seconds(*grace) });
            call(
                Method::POST,
                &[id, "rotate"],
                Some(body),
                View::KeyWithSecret,
            )
        }
        KeysCommand::Delete { id, .. } => {
            call(Method::DELETE, &[id], None, View::Deleted(id.clone()))
        }
    };
    Ok(request)
}

fn call(method: Method, path: &[&str], body: Option<Value>, view: View) -> Request {
    Request {
        method,
        path: path.iter().map(|s| s.to_string()).collect(),
        query: Vec::new(),
        body,
        view,
    }
}

/// Keys per page when listing: the API's largest page, so long lists take few calls.
const LIST_PAGE: u64 = 1000;

/// `GET /v1/keys`'s parameters for `kbgate keys list`.
fn list_query(list: &ListArgs) -> Vec<(&'static str, String)> {
    let duration = |d: Duration| format!("{}s", d.as_secs());
    let mut query = vec![(
        "limit",
        list.limit.unwrap_or(LIST_PAGE).min(LIST_PAGE).to_string(),
    )];
    let state = list.state.map(|s| match s {
        StateArg::Active => "active",
        StateArg::Disabled => "disabled",
        StateArg::Expired => "expired",
        StateArg::Expiring => "expiring",
    });
    let sort = list.sort.map(|s| match s {
        SortArg::Created => "created",
        SortArg::LastUsed => "last_used",
        SortArg::Requests => "requests",
    });
    let optional = [
        ("state", state.map(str::to_string)),
        ("expiring_within", list.expiring_within.map(duration)),
        ("unused_for", list.unused_for.map(duration)),
        ("q", list.search.clone()),
        ("permission", list.permission.clone()),
        ("sort", sort.map(str::to_string)),
        ("order", list.desc.then(|| "desc".to_string())),
    ];
    query.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?))),
    );
    query
}

fn set_enabled(id: &str, enabled: bool) -> Request {
    call(
        Method::PATCH,
        &[id],
        Some(json!({ "enabled": enabled })),
        View::Key,
    )
}

/// The fields create and edit share; each is sent only when given.
fn key_fields(
    name: Option<&str>,
    scope: Option<ScopeArg>,
    permissions: &[String],
    expiry: &ExpiryArgs,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, CliError> {
    let mut body = Map::new();
    insert_some(&mut body, "name", name.map(Value::from));
    insert_some(&mut body, "scope", scope.map(|s| s.as_api().into()));
    if !permissions.is_empty() {
        body.insert("permissions".into(), json!(permissions));
    }
    insert_some(
        &mut body,
        "expires_at",
        expiry_time(expiry, now)?.map(Value::from),
    );
    Ok(body)
}

/// Adds the clearing flags (`[]` permissions, `null` expiry); an edit that changes nothing is refused.
fn edit_body(
    mut changes: Map<String, Value>,
    clear_permissions: bool,
    no_expiry: bool,
) -> Result<Value, CliError> {
    if clear_permissions {
        changes.insert("permissions".into(), json!([]));
    }
    if no_expiry {
        changes.insert("expires_at".into(), Value::Null);
    }
    if changes.is_empty() {
        return Err(CliError::NothingToEdit);
    }
    Ok(changes.into())
}

fn insert_some(body: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    if let Some(value) = value {
        body.insert(field.to_string(), value);
    }
}

/// The expiry as the API wants it (RFC 3339 in UTC), or `None` when not asked for.
pub(super) fn expiry_time(
    expiry: &ExpiryArgs,
    now: DateTime<Utc>,
) -> Result<Option<String>, CliError> {
    let at = match (expiry.expires_at, expiry.expires_in) {
        (Some(at), _) => at,
        (None, Some(after)) => TimeDelta::from_std(after)
            .ok()
            .and_then(|after| now.checked_add_signed(after))
            .ok_or(CliError::ExpiryOutOfRange)?,
        (None, None) => return Ok(None),
    };
    Ok(Some(at.to_rfc3339_opts(SecondsFormat::Secs, true)))
}

/// The API counts whole seconds; a fraction rounds up so a short grace is not cut to none.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::key::tests::now;

    fn expiry(at: Option<&str>, after: Option<u64>) -> ExpiryArgs {
        ExpiryArgs {
            expires_at: at.map(|t| t.parse().unwrap()),
            expires_in: after.map(Duration::from_secs),
        }
    }

    fn edit(id: &str) -> KeysCommand {
        KeysCommand::Edit {
            id: id.to_string(),
            name: None,
            scope: None,
            permissions: vec![],
            clear_permissions: false,
            expiry: expiry(None, None),
            no_expiry: false,
            limits: Default::default(),
            clear_limits: Default::default(),
        }
    }

    #[test]
    fn create_sends_only_what_was_given() {
        let bare = KeysCommand::Create {
            name: None,
            scope: None,
            permissions: vec![],
            expiry: expiry(None, None),
            limits: Default::default(),
        };
        let request = request_for(&bare, now()).unwrap();
        assert_eq!(request.method, Method::POST);
        assert!(request.path.is_empty());
        assert_eq!(request.body, Some(json!({})));
        assert_eq!(request.view, View::KeyWithSecret);

        let full = KeysCommand::Create {
            name: Some("bot".into()),
            scope: Some(ScopeArg::ReadWrite),
            permissions: vec!["article:read".into()],
            expiry: expiry(None, Some(30 * 86_400)),
            limits: Default::default(),
        };
        let body = request_for(&full, now()).unwrap().body;
        let want = json!({
            "name": "bot",
            "scope": "read_write",
            "permissions": ["article:read"],
            "expires_at": "2025-07-01T00:00:00Z"
        });
        assert_eq!(body, Some(want));
    }

    #[test]
    fn edit_sends_changes_and_clears() {
        let command = KeysCommand::Edit {
            id: "k1".into(),
            name: Some("renamed".into()),
            scope: Some(ScopeArg::Read),
            permissions: vec![],
            clear_permissions: true,
            expiry: expiry(None, None),
            no_expiry: true,
            limits: Default::default(),
            clear_limits: Default::default(),
        };
        let request = request_for(&command, now()).unwrap();
        assert_eq!(
            (request.method, request.path),
            (Method::PATCH, vec!["k1".to_string()])
        );
        let want =
            json!({"name": "renamed", "scope": "read", "permissions": [], "expires_at": null});
        assert_eq!(request.body, Some(want));
    }

    #[test]
    fn edit_expires_at_is_sent_in_utc() {
        let command = KeysCommand::Edit {
            id: "k1".into(),
            name: None,
            scope: None,
            permissions: vec![],
            clear_permissions: false,
            expiry: expiry(Some("2030-01-31T02:00:00+02:00"), None),
            no_expiry: false,
            limits: Default::default(),
            clear_limits: Default::default(),
        };
        let body = request_for(&command, now()).unwrap().body;
        assert_eq!(body, Some(json!({"expires_at": "2030-01-31T00:00:00Z"})));
    }

    #[test]
    fn edit_without_changes_is_refused() {
        let err = request_for(&edit("k1"), now()).unwrap_err();
        assert!(matches!(err, CliError::NothingToEdit), "{err}");
    }

    #[test]
    fn expiry_too_far_ahead_is_an_error() {
        let err = expiry_time(&expiry(None, Some(u64::MAX)), now()).unwrap_err();
        assert!(matches!(err, CliError::ExpiryOutOfRange), "{err}");
    }

    #[test]
    fn enable_disable_patch_the_flag() {
        let enable = request_for(&KeysCommand::Enable { id: "k1".into() }, now()).unwrap();
        assert_eq!(enable.body, Some(json!({"enabled": true})));
        let disable = request_for(&KeysCommand::Disable { id: "k1".into() }, now()).unwrap();
        assert_eq!(
            (disable.method, disable.body),
            (Method::PATCH, Some(json!({"enabled": false})))
        );
    }

    #[test]
    fn rotate_sends_the_grace_in_whole_seconds() {
        let rotate = |grace| KeysCommand::Rotate {
            id: "k1".into(),
            grace,
            end_grace: false,
        };
        let request = request_for(&rotate(Duration::from_secs(86_400)), now()).unwrap();
        assert_eq!(request.path, ["k1", "rotate"]);
        assert_eq!(request.body, Some(json!({"grace_period_seconds": 86_400})));
        let now_body = request_for(&rotate(Duration::ZERO), now()).unwrap().body;
        assert_eq!(now_body, Some(json!({"grace_period_seconds": 0})));
        assert_eq!(whole_seconds(Duration::from_millis(1_500)), 2);
        let end = KeysCommand::Rotate {
            id: "k1".into(),
            grace: Duration::from_secs(86_400),
            end_grace: true,
        };
        let request = request_for(&end, now()).unwrap();
        assert_eq!(
            (request.method, request.path, request.body, request.view),
            (
                Method::POST,
                vec!["k1".into(), "rotation".into(), "end".into()],
                None,
                View::Key
            )
        );
    }

    #[test]
    fn list_show_delete() {
        let list = request_for(&KeysCommand::List(ListArgs::default()), now()).unwrap();
        assert_eq!((list.method, list.view), (Method::GET, View::KeyList(None)));
        assert_eq!(list.query, [("limit", "1000".to_string())]);
        let filtered = ListArgs {
            unused_for: Some(Duration::from_secs(30 * 86_400)),
            search: Some("chat".into()),
            desc: true,
            limit: Some(5),
            ..ListArgs::default()
        };
        let list = request_for(&KeysCommand::List(filtered), now()).unwrap();
        assert_eq!(
            list.query,
            [
                ("limit", "5".to_string()),
                ("unused_for", "2592000s".to_string()),
                ("q", "chat".to_string()),
                ("order", "desc".to_string())
            ]
        );
        let usage = KeysCommand::Usage {
            id: "k1".into(),
            days: 7,
        };
        let usage = request_for(&usage, now()).unwrap();
        assert_eq!(usage.path, ["k1", "usage"]);
        assert_eq!(
            usage.query,
            [
                ("from", "2025-05-25T00:00:00Z".to_string()),
                ("granularity", "day".to_string())
            ]
        );
        let show = request_for(&KeysCommand::Show { id: "k1".into() }, now()).unwrap();
        assert_eq!(
            (show.method, show.path, show.view),
            (Method::GET, vec!["k1".into()], View::Key)
        );
        let delete = KeysCommand::Delete {
            id: "k1".into(),
            yes: false,
        };
        let delete = request_for(&delete, now()).unwrap();
        assert_eq!(
            (delete.method, delete.view),
            (Method::DELETE, View::Deleted("k1".into()))
        );
    }
}
