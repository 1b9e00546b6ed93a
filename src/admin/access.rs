//! Who is calling the admin API and what their role lets them do. The bootstrap token from the
//! config (role admin, actor `config`) or a stored admin token (`kbadm_…`), looked up in the
//! store on every request: a deleted or expired token is refused at once, on every gateway
//! sharing the store, with no cache to outlive it. Admin requests are few; the lookup is one
//! store read.

use super::{Admin, ApiError};
use crate::keys::admin_token::{self, Role};
use crate::keys::audit::{Actor, Context};
use crate::keys::{KeyHash, StoreError};
use crate::server::ConnInfo;
use chrono::Utc;
use http::{HeaderMap, StatusCode, header};

/// The longest `User-Agent` kept in an audit entry.
const MAX_USER_AGENT: usize = 256;

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// No token, or one that is not (or no longer) valid.
fn missing() -> ApiError {
    unauthorized(
        "unauthorized",
        "The admin API needs 'Authorization: Bearer <admin token>'.",
    )
}

/// 403 `insufficient_role` unless `actor` has at least `needed`.
pub(super) fn require(actor: &Actor, needed: Role) -> Result<(), ApiError> {
    if actor.role >= needed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "insufficient_role",
        format!(
            "This needs the role {needed}; the token's role is {}.",
            actor.role
        ),
    ))
}

impl Admin {
    /// The actor behind the request's bearer token: 401 when there is none or it is not (or
    /// no longer) valid, 503 when the store cannot say.
    pub(super) async fn caller(&self, headers: &HeaderMap) -> Result<Actor, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let token = presented.ok_or_else(missing)?;
        let hash = self.credential(token).ok_or_else(missing)?;
        self.actor_of(&hash).await
    }

    /// The hash a presented admin token is known by: the config's token, or a well-formed
    /// stored token (`kbadm_…`); None for anything else, refused before any store read.
    pub(super) fn credential(&self, token: &str) -> Option<KeyHash> {
        let hash = KeyHash::of(token);
        (hash.0 == *self.token_hash.as_bytes() || admin_token::is_well_formed(token))
            .then_some(hash)
    }

    /// The actor behind a credential's hash (see [`Admin::credential`]): the console keeps the hash,
    /// never the token, and asks here on each request, as the API does with the token.
    pub(super) async fn actor_of(&self, hash: &KeyHash) -> Result<Actor, ApiError> {
        if hash.0 == *self.token_hash.as_bytes() {
            return Ok(Actor::config());
        }
        let stored = self
            .keys
            .store()
            .admin_token_by_hash(hash)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(missing)?;
        if stored.is_expired(Utc::now()) {
            return Err(unauthorized(
                "token_expired",
                "This admin token has expired.",
            ));
        }
        Ok(Actor {
            id: stored.id,
            name: stored.name,
            role: stored.role,
        })
    }
}

/// Who made a change and from where, for its audit entry.
pub(super) fn context(actor: Actor, headers: &HeaderMap, conn: &ConnInfo) -> Context {
    let user_agent = headers.get(header::USER_AGENT).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(MAX_USER_AGENT)
            .collect()
    });
    Context {
        actor,
        ip: Some(conn.remote.ip().to_string()),
        user_agent,
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::store(error)
    }
}
