//! `/v1/keys`: create, list, show, edit, rotate and delete keys. Every change is written to the
//! store first and then forgotten by the hot tier, so it holds from the very next request.

use super::{Admin, ApiError, json};
use crate::authz::{Permission, Scope};
use crate::body::Body;
use crate::keys::{KeyRecord, secret};
use chrono::{DateTime, SecondsFormat, Utc};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// Default rotation grace: the old secret keeps working for a day.
const DEFAULT_GRACE_SECONDS: u64 = 86_400;
/// The longest rotation grace accepted: a forgotten old secret should not live for months.
const MAX_GRACE_SECONDS: u64 = 90 * 86_400;
const MAX_NAME_LEN: usize = 200;

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default, deserialize_with = "not_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    scope: Option<Scope>,
    #[serde(default, deserialize_with = "not_null")]
    permissions: Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct EditKey {
    #[serde(default, deserialize_with = "not_null")]
    name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    scope: Option<Scope>,
    #[serde(default, deserialize_with = "not_null")]
    permissions: Option<Vec<String>>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    /// Absent: unchanged; null: no expiry; a time: expires then.
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<DateTime<Utc>>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    #[serde(default, deserialize_with = "not_null")]
    grace_period_seconds: Option<u64>,
}

/// `POST /v1/keys/{id}/rotation/end` takes no fields (an empty body or `{}`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EndRotation {}

/// A field that may be left out but not sent as `null` (the document does not make it nullable).
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Tells an explicit `null` (Some(None)) from an absent field (None).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Parses a JSON body (an empty body is `{}`): bad JSON is 400, well-formed but wrong is 422.
fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("The body is not valid JSON: {e}"),
        )
    })?;
    // serde would take an array for a struct too (its fields in order): only an object is one.
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        // The field the error is about leads the message ("name: invalid type: …").
        let field = e.path().to_string();
        match field.as_str() {
            "." => ApiError::invalid(e.into_inner().to_string()),
            _ => ApiError::invalid(format!("{field}: {}", e.into_inner())),
        }
    })
}

fn timestamp(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| {
        Value::String(at.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

/// The key object of the API.
fn key_view(record: &KeyRecord) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "start": record.start(),
        "scope": record.scope,
        "permissions": record.permissions,
        "enabled": record.enabled,
        "created_at": timestamp(Some(record.created_at)),
        "updated_at": timestamp(Some(record.updated_at)),
        "expires_at": timestamp(record.expires_at),
        "last_used_at": timestamp(record.usage.last_used_at),
        "request_count": record.usage.request_count,
        "secrets": record.secrets.iter().map(|s| json!({
            "start": s.start,
            "retires_at": timestamp(s.retires_at),
        })).collect::<Vec<_>>(),
    })
}

fn with_secret(mut view: Value, secret: String) -> Value {
    view["secret"] = Value::String(secret);
    view
}

impl Admin {
    /// Every key, with exact usage (see [`Admin::load`]).
    pub(super) async fn list(&self) -> Result<Response<Body>, ApiError> {
        let _exact = self.usage.exact().await;
        let mut records = self.keyring.store().list().await.map_err(ApiError::store)?;
        for record in &mut records {
            self.usage.add_pending(record);
        }
        let keys: Vec<Value> = records.iter().map(key_view).collect();
        Ok(json(StatusCode::OK, &json!({ "keys": keys })))
    }

    pub(super) async fn show(&self, id: &str) -> Result<Response<Body>, ApiError> {
        let record = self.load(id).await?;
        Ok(json(StatusCode::OK, &key_view(&record)))
    }

    pub(super) async fn create(&self, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let request: CreateKey = parse(body)?;
        let now = Utc::now();
        let name = match request.name {
            Some(name) => valid_name(name)?,
            None => now.format("%Y-%m-%d %H:%M:%S").to_string(),
        };
        let scope = request.scope.unwrap_or(Scope::Read);
        let permissions = self.permissions(request.permissions.unwrap_or_default(), scope)?;
        let expires_at = future(request.expires_at, now)?;
        let new = secret::generate();
        let record = KeyRecord::new(name, scope, permissions, expires_at, &new, now);
        self.keyring
            .store()
            .create(&record)
            .await
            .map_err(ApiError::store)?;
        self.key_changed(&record);
        tracing::info!(key_id = %record.id, "key created");
        Ok(json(
            StatusCode::CREATED,
            &with_secret(key_view(&record), new.secret),
        ))
    }

    pub(super) async fn edit(&self, id: &str, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let request: EditKey = parse(body)?;
        let _write = self.writes.lock().await;
        let mut record = self.load(id).await?;
        let now = Utc::now();
        if let Some(name) = request.name {
            record.name = valid_name(name)?;
        }
        let scope = request.scope.unwrap_or(record.scope);
        let permissions = match request.permissions {
            Some(list) => self.permissions(list, scope)?,
            None => self.permissions(
                record.permissions.iter().map(|p| p.to_string()).collect(),
                scope,
            )?,
        };
        record.scope = scope;
        record.permissions = permissions;
        if let Some(enabled) = request.enabled {
            record.enabled = enabled;
        }
        if let Some(expires_at) = request.expires_at {
            record.expires_at = future(expires_at, now)?;
        }
        record.updated_at = now;
        self.save(&record).await?;
        tracing::info!(key_id = %record.id, enabled = record.enabled, "key edited");
        Ok(json(StatusCode::OK, &key_view(&record)))
    }

    pub(super) async fn rotate(&self, id: &str, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let request: RotateKey = parse(body)?;
        let grace = request
            .grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        if grace > MAX_GRACE_SECONDS {
            return Err(ApiError::invalid(format!(
                "grace_period_seconds: at most {MAX_GRACE_SECONDS} (90 days)"
            )));
        }
        let _write = self.writes.lock().await;
        let mut record = self.load(id).await?;
        let new = secret::generate();
        record.rotate(&new, chrono::Duration::seconds(grace as i64), Utc::now());
        self.save(&record).await?;
        tracing::info!(key_id = %record.id, grace_seconds = grace, "key rotated");
        Ok(json(
            StatusCode::OK,
            &with_secret(key_view(&record), new.secret),
        ))
    }

    /// Ends a rotation's grace now: every secret rotated away stops working at once. A key
    /// with no grace running is answered unchanged.
    pub(super) async fn end_rotation(
        &self,
        id: &str,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        let EndRotation {} = parse(body)?;
        let _write = self.writes.lock().await;
        let mut record = self.load(id).await?;
        let now = Utc::now();
        let mut ended = 0;
        for secret in &mut record.secrets {
            if secret.retires_at.is_some_and(|at| at > now) {
                secret.retires_at = Some(now);
                ended += 1;
            }
        }
        if ended > 0 {
            record.updated_at = now;
            self.save(&record).await?;
            tracing::info!(key_id = %record.id, secrets = ended, "rotation grace ended");
        }
        Ok(json(StatusCode::OK, &key_view(&record)))
    }

    pub(super) async fn delete(&self, id: &str) -> Result<Response<Body>, ApiError> {
        let _write = self.writes.lock().await;
        let record = self
            .keyring
            .store()
            .delete(id)
            .await
            .map_err(ApiError::store)?;
        let record = record.ok_or_else(ApiError::not_found)?;
        self.keyring.forget(&record);
        self.key_deleted(&record.id);
        tracing::info!(key_id = %record.id, "key deleted");
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// A key with exact usage: the store's figures plus what is counted but not yet flushed,
    /// read under [`UsageRecorder::exact`](crate::usage::UsageRecorder::exact) so that no
    /// flush falls in between.
    async fn load(&self, id: &str) -> Result<KeyRecord, ApiError> {
        let _exact = self.usage.exact().await;
        let mut record = self
            .keyring
            .store()
            .get(id)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(ApiError::not_found)?;
        self.usage.add_pending(&mut record);
        Ok(record)
    }

    /// Writes a changed key, then drops it from the hot tier: the next request sees the change.
    async fn save(&self, record: &KeyRecord) -> Result<(), ApiError> {
        let found = self
            .keyring
            .store()
            .update(record)
            .await
            .map_err(ApiError::store)?;
        self.keyring.forget(record);
        if found {
            self.key_changed(record);
            Ok(())
        } else {
            Err(ApiError::not_found())
        }
    }

    /// Parses specific permissions and checks that the scope allows each one.
    fn permissions(&self, list: Vec<String>, scope: Scope) -> Result<Vec<Permission>, ApiError> {
        let mut permissions: Vec<Permission> = Vec::with_capacity(list.len());
        for text in list {
            let permission = Permission::parse(&text, &self.resources)
                .map_err(|reason| ApiError::invalid(format!("permissions: {reason}")))?;
            if !scope.allows(&permission) {
                return Err(ApiError::invalid(format!(
                    "permissions: a read key cannot be given {permission}; use scope read_write"
                )));
            }
            if !permissions.contains(&permission) {
                permissions.push(permission);
            }
        }
        Ok(permissions)
    }
}

/// 1 to `MAX_NAME_LEN` characters as sent (the OpenAPI document's `maxLength`), none of them
/// a control character, not only spaces; the spaces around it are removed.
fn valid_name(name: String) -> Result<String, ApiError> {
    let too_long = name.chars().count() > MAX_NAME_LEN;
    let name = name.trim().to_string();
    if name.is_empty() || too_long || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "name: must be 1 to {MAX_NAME_LEN} printable characters"
        )));
    }
    Ok(name)
}

fn future(
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match at {
        Some(at) if at <= now => Err(ApiError::invalid("expires_at: must be in the future")),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_bad_bodies() {
        let empty: CreateKey = parse(b"  ").unwrap();
        assert!(empty.name.is_none());
        let err = parse::<CreateKey>(b"{\"nmae\": 1}").unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.contains("unknown field `nmae`"));
        let err = parse::<CreateKey>(b"{oops").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let err = parse::<CreateKey>(b"{\"scope\": \"admin\"}").unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse::<CreateKey>(b"{\"name\": 5}").unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            err.message.starts_with("name: invalid type"),
            "{}",
            err.message
        );
        let err = parse::<CreateKey>(b"{\"permissions\": [\"a\", 1]}").unwrap_err();
        assert!(
            err.message.starts_with("permissions[1]: "),
            "{}",
            err.message
        );
        let err = parse::<RotateKey>(b"{\"grace_period_seconds\": null}").unwrap_err();
        assert!(
            err.message
                .starts_with("grace_period_seconds: invalid type: null"),
            "{}",
            err.message
        );
        let err = parse::<EditKey>(b"{} x").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        for not_an_object in [&b"[]"[..], b"null", b"5", b"\"x\""] {
            let err = parse::<RotateKey>(not_an_object).unwrap_err();
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
    }

    #[test]
    fn null_expiry_is_not_absent_expiry() {
        let edit: EditKey = parse(b"{\"expires_at\": null}").unwrap();
        assert_eq!(edit.expires_at, Some(None));
        let edit: EditKey = parse(b"{\"name\": \"x\"}").unwrap();
        assert_eq!(edit.expires_at, None);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(valid_name("  Chatbot  ".into()).unwrap(), "Chatbot");
        assert!(valid_name("".into()).is_err());
        assert!(valid_name("a\nb".into()).is_err());
        assert!(valid_name("x".repeat(201)).is_err());
        assert!(
            valid_name(format!(" {} ", "x".repeat(199))).is_err(),
            "201 as sent"
        );
        assert!(valid_name(" \u{3000} ".into()).is_err(), "only spaces");
    }
}
