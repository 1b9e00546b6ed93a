//! `POST /v1/keys/unused-sweep[?dry_run=true]` (role operator): the `keys.unused_policy`
//! sweep on demand. A dry run lists the keys the policy would handle and changes nothing;
//! a real run handles them as the daily sweep does, audited with actor `policy` (and the
//! caller's address), naming the caller in the actor's name. Operator, not admin: the sweep
//! does no more than an operator may do by hand (disable keys), and the dry run only reads.

use super::keys::timestamp;
use super::query::Params;
use super::{Admin, ApiError, json};
use crate::body::Body;
use crate::events::unused;
use crate::keys::audit::{Actor, Context};
use chrono::Utc;
use http::{Response, StatusCode};
use serde_json::json;

impl Admin {
    pub(super) async fn unused_sweep(
        &self,
        query: Option<&str>,
        ctx: &Context,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(query, &["dry_run"])?;
        let dry_run = params
            .get("dry_run", |text| match text {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("{text:?} is not true or false")),
            })?
            .unwrap_or(false);
        let policy = self.hygiene.unused.ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "policy_off",
                "No unused-key policy is set (keys.unused_policy in the config).",
            )
        })?;
        let policy_ctx = Context {
            actor: Actor {
                name: format!("keys.unused_policy, run by {}", ctx.actor.id),
                ..Actor::policy()
            },
            ..ctx.clone()
        };
        let found = unused::sweep(&self.keys, &policy, dry_run, &policy_ctx, Utc::now()).await?;
        let keys: Vec<_> = found
            .iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "name": k.name,
                    "created_at": timestamp(Some(k.created_at)),
                    "last_used_at": timestamp(k.last_used_at),
                    "handled": k.handled,
                })
            })
            .collect();
        Ok(json(
            StatusCode::OK,
            &json!({
                "dry_run": dry_run,
                "action": policy.action,
                "after_seconds": policy.after.as_secs(),
                "keys": keys,
            }),
        ))
    }
}
