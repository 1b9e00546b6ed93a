//! `/v1/admin-tokens`: create (the secret shown once), list and delete admin tokens. Each
//! change is written with its audit entry. A token never creates a token above its own role.

use super::access::require;
use super::keys::{parse, timestamp};
use super::{Admin, ApiError, json};
use crate::body::Body;
use crate::keys::admin_token::{self, AdminTokenRecord, Role};
use crate::keys::audit::{self, Action, Changes, Context, NewEntry, Target};
use crate::keys::service::valid_name;
use chrono::{DateTime, Utc};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: Option<String>,
    role: Option<Role>,
    expires_at: Option<DateTime<Utc>>,
}

fn token_view(token: &AdminTokenRecord) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "start": token.start,
        "created_at": timestamp(Some(token.created_at)),
        "expires_at": timestamp(token.expires_at),
        "created_by": token.created_by,
    })
}

fn target(token: &AdminTokenRecord) -> Target {
    Target {
        kind: "admin_token".into(),
        id: token.id.clone(),
        name: token.name.clone(),
    }
}

impl Admin {
    pub(super) async fn create_token(
        &self,
        body: &[u8],
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let request: CreateToken = parse(body)?;
        let (token, secret) = self
            .issue_token(request.name, request.role, request.expires_at, ctx)
            .await?;
        let mut view = token_view(&token);
        view["secret"] = Value::String(secret);
        Ok(json(StatusCode::CREATED, &view))
    }

    /// Creates an admin token with its audit entry; returns it and its secret (shown once).
    /// The API and the console both create tokens here.
    pub(super) async fn issue_token(
        &self,
        name: Option<String>,
        role: Option<Role>,
        expires_at: Option<DateTime<Utc>>,
        ctx: &Context,
    ) -> Result<(AdminTokenRecord, String), ApiError> {
        let name = valid_name(name.ok_or_else(|| ApiError::invalid("name: missing"))?)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let role = role.ok_or_else(|| ApiError::invalid("role: missing"))?;
        require(&ctx.actor, role)?;
        let now = Utc::now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::invalid("expires_at: must be in the future"));
        }
        let secret = admin_token::generate();
        let token =
            AdminTokenRecord::new(name, role, expires_at, &secret, ctx.actor.id.clone(), now);
        let changes = audit::diff(
            &Value::Null,
            &json!({"name": token.name, "role": token.role, "expires_at": timestamp(token.expires_at)}),
        );
        let entry = NewEntry::new(ctx, Action::AdminTokenCreated, target(&token), changes);
        self.keys.store().create_admin_token(&token, &entry).await?;
        tracing::info!(token_id = %token.id, role = %token.role, "admin token created");
        Ok((token, secret.secret))
    }

    pub(super) async fn list_tokens(&self) -> Result<Response<Body>, ApiError> {
        let tokens = self.keys.store().admin_tokens().await?;
        let tokens: Vec<Value> = tokens.iter().map(token_view).collect();
        Ok(json(StatusCode::OK, &json!({ "tokens": tokens })))
    }

    pub(super) async fn delete_token(
        &self,
        id: &str,
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        self.revoke_token(id, ctx).await?;
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// The stored admin token `id`, or 404 `not_found`.
    pub(super) async fn admin_token(&self, id: &str) -> Result<AdminTokenRecord, ApiError> {
        let token = self.keys.store().admin_token(id).await?;
        token.ok_or_else(no_such_token)
    }

    /// Deletes an admin token with its audit entry: it is refused from its next request.
    /// The API and the console both revoke tokens here.
    pub(super) async fn revoke_token(&self, id: &str, ctx: &Context) -> Result<(), ApiError> {
        let token = self.admin_token(id).await?;
        let entry = NewEntry::new(
            ctx,
            Action::AdminTokenDeleted,
            target(&token),
            Changes::new(),
        );
        self.keys
            .store()
            .delete_admin_token(id, &entry)
            .await?
            .ok_or_else(no_such_token)?;
        tracing::info!(token_id = %id, "admin token deleted");
        Ok(())
    }
}

fn no_such_token() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such admin token.")
}
