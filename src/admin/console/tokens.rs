//! View 5's second half, for admins: the admin tokens, a form to create one (its secret shown
//! once) and Revoke with a confirmation. Changes go through the same functions as
//! `/v1/admin-tokens`, so they are audited and a token never creates one above its own role.

use super::form::Form;
use super::key_bits::when;
use super::key_forms::{expiry, shown_once};
use super::layout::{actions, csrf_field, redirect};
use super::{Endpoint, Signed};
use crate::admin::{Admin, ApiError};
use crate::body::Body;
use crate::keys::admin_token::Role;
use http::{Method, Response};
use maud::html;

const ROLES: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

fn role(text: Option<&str>) -> Result<Option<Role>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    ROLES
        .into_iter()
        .find(|role| role.as_str() == text)
        .map(Some)
        .ok_or_else(|| ApiError::invalid("role: expected viewer, operator or admin"))
}

impl Admin {
    pub(super) async fn tokens_view(&self, signed: &Signed) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::AdminTokens, Method::GET)?;
        let tokens = self.keys.store().admin_tokens().await?;
        let own = signed.viewer.actor.role;
        let content = html! {
            p.lead { "Admin tokens sign in here and call the admin API. Each person or tool gets its own, with the least role it needs: viewer reads, operator also changes keys, admin also deletes keys and manages tokens and webhooks." }
            form.card method="post" action="/console/tokens" {
                (csrf_field(&signed.viewer.csrf))
                label for="token-name" { "Name" }
                input #token-name type="text" name="name" required maxlength="200" placeholder="Support team lead";
                label for="token-role" { "Role" }
                select #token-role name="role" {
                    @for role in ROLES.into_iter().filter(|role| *role <= own) {
                        option value=(role.as_str()) selected[role == Role::Viewer] { (role.as_str()) }
                    }
                }
                label for="token-expires" { "Expires (UTC, optional)" }
                input #token-expires type="datetime-local" name="expires";
                div.actions { button.primary type="submit" { "Create admin token" } }
            }
            @if tokens.is_empty() {
                p.empty { "No admin tokens besides the config's." }
            } @else {
                table.tokens {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Start" }
                        th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Created by" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for token in &tokens {
                            tr {
                                td data-label="Name" { (token.name) }
                                td data-label="Role" { (token.role) }
                                td data-label="Start" { code { (token.start) "…" } }
                                td data-label="Created" { (when(Some(token.created_at))) }
                                td data-label="Expires" { (when(token.expires_at)) }
                                td data-label="Created by" { (token.created_by) }
                                td { a href={ "/console/tokens/" (token.id) "/delete" } aria-label={ "Revoke " (token.name) } { "Revoke" } }
                            }
                        }
                    }
                }
            }
        };
        Ok(signed.page("Admin tokens", content))
    }

    /// Create admin token: its secret shown once, as a key's is.
    pub(super) async fn create_token_form(
        &self,
        signed: &Signed,
        form: &Form,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::AdminTokens, Method::POST)?;
        let name = form.get("name").map(str::to_string);
        let expires_at = expiry(form.get("expires").unwrap_or_default())?;
        let (token, secret) = self
            .issue_token(name, role(form.get("role"))?, expires_at, &signed.ctx)
            .await?;
        Ok(shown_once(
            signed,
            &token.name,
            &secret,
            "Your new admin token",
            ("/console/tokens", "back to the admin tokens"),
        ))
    }

    pub(super) async fn revoke_page(
        &self,
        signed: &Signed,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::AdminToken, Method::DELETE)?;
        let token = self.admin_token(id).await?;
        let content = html! {
            p { "Revoke " strong { (token.name) } "? It is refused from its next request, and its console sessions end. This cannot be undone." }
            form.card method="post" action={ "/console/tokens/" (token.id) "/delete" } {
                (csrf_field(&signed.viewer.csrf))
                (actions(html! { button.danger type="submit" { "Revoke token" } }, "/console/tokens"))
            }
        };
        Ok(signed.page("Revoke admin token", content))
    }

    pub(super) async fn revoke_token_form(
        &self,
        signed: &Signed,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::AdminToken, Method::DELETE)?;
        self.revoke_token(id, &signed.ctx).await?;
        Ok(redirect("/console/tokens"))
    }
}
