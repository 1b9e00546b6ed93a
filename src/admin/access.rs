//! Who is calling the admin API and what their role lets them do. The bootstrap token from the
//! config (role admin, actor `config`) or a stored admin token (`kbadm_…`), looked up in the
//! store on every request: a deleted or expired token is refused at once, on every gateway
//! sharing the store, with no cache to outlive it. Admin requests are few; the lookup is one
//! store read.

use super::{Admin, ApiError};
use crate::body::Body;
use crate::keys::admin_token::{self, Role};
use crate::keys::audit::{Actor, Context};
use crate::keys::{KeyHash, StoreError};
use crate::server::ConnInfo;
use chrono::Utc;
use http::{HeaderMap, Request, StatusCode, header};

/// The longest `User-Agent` kept in an audit entry.
const MAX_USER_AGENT: usize = 256;

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
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
        let missing = || {
            unauthorized(
                "unauthorized",
                "The admin API needs 'Authorization: Bearer <admin token>'.",
            )
        };
        let token = presented.ok_or_else(missing)?;
        if blake3::hash(token.as_bytes()) == self.token_hash {
            return Ok(Actor::config());
        }
        if !admin_token::is_well_formed(token) {
            return Err(missing());
        }
        let stored = self
            .keys
            .store()
            .admin_token_by_hash(&KeyHash::of(token))
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
pub(super) fn context(actor: Actor, request: &Request<Body>, conn: &ConnInfo) -> Context {
    let user_agent = request.headers().get(header::USER_AGENT).map(|v| {
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
