//! `/v1/keys`: create, list, show, edit, rotate and delete keys. Only HTTP here: each handler
//! parses its body, calls the [`KeyService`](crate::keys::service::KeyService) and renders the
//! key object.

use super::query::Params;
use super::{Admin, ApiError, json};
use crate::authz::{Permission, Scope};
use crate::body::Body;
use crate::keys::KeyRecord;
use crate::keys::audit::Context;
use crate::keys::limits::{Quota, RateLimit};
use crate::keys::listing::{self, Cursor, Filter, ListQuery, Sort, State};
use crate::keys::service::{Issued, KeyEdit, NewKey};
use crate::limits::QuotaState;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

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
    rate_limit: Option<RateLimit>,
    quota: Option<Quota>,
    allowed_cidrs: Option<Vec<String>>,
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
    /// Absent: unchanged; null: removed; an object: the new limit.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "present")]
    quota: Option<Option<Quota>>,
    /// Absent: unchanged; null or []: any address.
    #[serde(default, deserialize_with = "present")]
    allowed_cidrs: Option<Option<Vec<String>>>,
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

/// Parses a JSON body (an empty body is `{}`; whitespace alone is not JSON): bad JSON is 400,
/// well-formed but wrong is 422.
pub(super) fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
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

/// `GET /v1/keys`'s parameters.
pub(super) fn list_query(query: Option<&str>, resources: &[String]) -> Result<ListQuery, ApiError> {
    let params = Params::parse(
        query,
        &[
            "limit",
            "cursor",
            "state",
            "expiring_within",
            "unused_for",
            "q",
            "permission",
            "sort",
            "order",
        ],
    )?;
    let sort = params
        .choice(
            "sort",
            &[
                ("created", Sort::Created),
                ("last_used", Sort::LastUsed),
                ("requests", Sort::Requests),
            ],
        )?
        .unwrap_or_default();
    let descending = params
        .choice("order", &[("asc", false), ("desc", true)])?
        .unwrap_or(false);
    let filter = Filter {
        state: params.choice(
            "state",
            &[
                ("active", State::Active),
                ("disabled", State::Disabled),
                ("expired", State::Expired),
                ("expiring", State::Expiring),
            ],
        )?,
        expiring_within: params.duration("expiring_within")?,
        unused_for: params.duration("unused_for")?,
        name_contains: params.text("q").map(str::to_string),
        permission: params.get("permission", |p| Permission::parse(p, resources))?,
    };
    Ok(ListQuery {
        limit: params
            .number("limit", 1..=listing::MAX_LIMIT)?
            .unwrap_or(listing::DEFAULT_LIMIT),
        cursor: params.get("cursor", |c| Cursor::decode(c, sort, descending))?,
        filter,
        sort,
        descending,
    })
}

pub(super) fn timestamp(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| {
        Value::String(at.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}

/// The key object of the API; `quota` is where its quota stands, if it has one.
fn key_view(record: &KeyRecord, quota: Option<QuotaState>) -> Value {
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
        "rate_limit": record.rate_limit,
        "quota": record.quota,
        "allowed_cidrs": record.allowed_cidrs,
        "quota_state": quota.map(|q| json!({
            "used": q.used,
            "remaining": q.remaining,
            "resets_at": timestamp(Some(q.resets_at)),
        })),
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
    /// The key object, with where its quota stands.
    async fn view(&self, record: &KeyRecord) -> Result<Value, ApiError> {
        let quota = match &self.limiter {
            Some(limiter) => limiter
                .quota_state(&record.id, record.quota.as_ref())
                .await
                .map_err(ApiError::store)?,
            None => None,
        };
        Ok(key_view(record, quota))
    }

    async fn issued_view(&self, issued: Issued) -> Result<Value, ApiError> {
        Ok(with_secret(self.view(&issued.record).await?, issued.secret))
    }

    /// One page of keys, filtered and sorted as the query asks, with exact usage.
    pub(super) async fn list(&self, query: Option<&str>) -> Result<Response<Body>, ApiError> {
        let query = list_query(query, self.keys.resources())?;
        let page = self.keys.list_page(&query).await?;
        let quotas = match &self.limiter {
            Some(limiter) => {
                let keys: Vec<_> = page
                    .keys
                    .iter()
                    .map(|r| (r.id.as_str(), r.quota.as_ref()))
                    .collect();
                limiter.quota_states(&keys).await.map_err(ApiError::store)?
            }
            None => vec![None; page.keys.len()],
        };
        let keys: Vec<Value> = page
            .keys
            .iter()
            .zip(quotas)
            .map(|(record, quota)| key_view(record, quota))
            .collect();
        let next_cursor = page.next_cursor.map(|c| c.encode());
        Ok(json(
            StatusCode::OK,
            &json!({ "keys": keys, "next_cursor": next_cursor }),
        ))
    }

    pub(super) async fn show(&self, id: &str) -> Result<Response<Body>, ApiError> {
        let record = self.keys.get(id).await?;
        Ok(json(StatusCode::OK, &self.view(&record).await?))
    }

    pub(super) async fn create(
        &self,
        body: &[u8],
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let request: CreateKey = parse(body)?;
        let new = NewKey {
            name: request.name,
            scope: request.scope,
            permissions: request.permissions,
            expires_at: request.expires_at,
            rate_limit: request.rate_limit,
            quota: request.quota,
            allowed_cidrs: request.allowed_cidrs,
        };
        let issued = self.keys.create(new, ctx).await?;
        Ok(json(StatusCode::CREATED, &self.issued_view(issued).await?))
    }

    pub(super) async fn edit(
        &self,
        id: &str,
        body: &[u8],
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let request: EditKey = parse(body)?;
        let edit = KeyEdit {
            name: request.name,
            scope: request.scope,
            permissions: request.permissions,
            enabled: request.enabled,
            expires_at: request.expires_at,
            rate_limit: request.rate_limit,
            quota: request.quota,
            allowed_cidrs: request.allowed_cidrs.map(Option::unwrap_or_default),
        };
        let record = self.keys.edit(id, edit, ctx).await?;
        Ok(json(StatusCode::OK, &self.view(&record).await?))
    }

    pub(super) async fn rotate(
        &self,
        id: &str,
        body: &[u8],
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let request: RotateKey = parse(body)?;
        let grace = request.grace_period_seconds.map(Duration::from_secs);
        let issued = self.keys.rotate(id, grace, ctx).await?;
        Ok(json(StatusCode::OK, &self.issued_view(issued).await?))
    }

    /// Ends a rotation's grace now: every secret rotated away stops working at once. A key
    /// with no grace running is answered unchanged.
    pub(super) async fn end_rotation(
        &self,
        id: &str,
        body: &[u8],
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let EndRotation {} = parse(body)?;
        let record = self.keys.end_rotation(id, ctx).await?;
        Ok(json(StatusCode::OK, &self.view(&record).await?))
    }

    pub(super) async fn delete(&self, id: &str, ctx: &Context) -> Result<Response<Body>, ApiError> {
        self.keys.delete(id, ctx).await?;
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_bad_bodies() {
        let empty: CreateKey = parse(b"").unwrap();
        assert!(empty.name.is_none());
        // Whitespace alone is not a JSON text (schemathesis sent "\r" and saw a key created).
        let err = parse::<CreateKey>(b"\r").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
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
}
