//! View 2 and 3: the secret shown once, and the More menu's forms (Edit, Rotate, Disable /
//! Enable, Delete with its confirmation). Each change goes through the key service, as the
//! API's do, checked against the role the API asks for the same change.

use super::form::Form;
use super::key_bits::scope_label;
use super::layout::{Viewer, actions, csrf_field, page, redirect, respond};
use super::{Endpoint, Signed};
use crate::admin::{Admin, ApiError};
use crate::authz::Scope;
use crate::body::Body;
use crate::keys::KeyRecord;
use crate::keys::service::{KeyEdit, KeyServiceError};
use chrono::{DateTime, NaiveDateTime, Utc};
use http::{Method, Response, StatusCode};
use maud::{Markup, html};
use std::time::Duration;

/// The grace periods Rotate offers: (seconds, label); a day is the service's default.
const GRACE_CHOICES: [(u64, &str); 4] = [
    (0, "None: the old secret stops at once"),
    (3600, "1 hour"),
    (86_400, "24 hours"),
    (7 * 86_400, "7 days"),
];
const DEFAULT_GRACE: u64 = 86_400;
/// The `datetime-local` input's format (seconds are optional in what browsers send).
const LOCAL_TIME: &str = "%Y-%m-%dT%H:%M";

/// A key's secret, shown this once, with a copy button and the advice to keep it server-side.
pub(super) fn secret_page(
    signed: &Signed,
    record: &KeyRecord,
    secret: &str,
    title: &str,
) -> Response<Body> {
    let next = format!("/console/keys/{}", record.id);
    shown_once(
        signed,
        &record.name,
        secret,
        title,
        (&next, "go to the key"),
    )
}

/// A secret (a key's or an admin token's) shown this once; `next` is where to go after
/// storing it: (address, what it is).
pub(super) fn shown_once(
    signed: &Signed,
    name: &str,
    secret: &str,
    title: &str,
    next: (&str, &str),
) -> Response<Body> {
    let content = html! {
        p.warning role="alert" {
            strong { "This is the only time the secret is shown." }
            " kbgate keeps only its hash: leaving this page loses it, and a lost secret means rotating the key."
        }
        div.secret {
            label for="secret" { "Secret of " (name) }
            input #secret type="text" readonly value=(secret) autocomplete="off" spellcheck="false";
            button type="button" data-copy="secret" { "Copy" }
            span.copied aria-live="polite" {}
        }
        p { "Keep it server-side: in your server's environment or secret store. Never put it in frontend code, a mobile app or a repository, where anyone can read it." }
        p { a href=(next.0) { "I have stored it: " (next.1) } }
    };
    signed.page(title, content)
}

/// The Edit form, with `error` from a refused save above it.
fn edit_form(
    viewer: &Viewer,
    record: &KeyRecord,
    permissions: &[String],
    error: Option<&str>,
) -> Markup {
    let read_only = record.scope == Scope::Read;
    let chosen: Vec<String> = record.permissions.iter().map(ToString::to_string).collect();
    let expires = record.expires_at.map(local_time);
    html! {
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form.card method="post" action={ "/console/keys/" (record.id) "/edit" } {
            (csrf_field(&viewer.csrf))
            label for="name" { "Name" }
            input #name type="text" name="name" value=(record.name) required maxlength="200";
            fieldset.scope {
                legend { "Scope" }
                @for (value, scope) in [("read", Scope::Read), ("read_write", Scope::ReadWrite)] {
                    label {
                        input type="radio" name="scope" value=(value) checked[record.scope == scope];
                        " " (scope_label(scope))
                    }
                }
            }
            fieldset.permissions {
                legend { "Specific permissions" }
                p.help { "None checked: everything the scope allows. A Read-only key cannot take a write permission." }
                @for permission in permissions {
                    @let write = permission.ends_with(":write");
                    label {
                        input type="checkbox" name="permission" value=(permission)
                            checked[chosen.contains(permission)] disabled[write && read_only]
                            data-write[write];
                        " " (permission)
                    }
                }
            }
            label for="expires" { "Expires (UTC; empty: never)" }
            input #expires type="datetime-local" name="expires" value=[expires];
            (actions(html! { button.primary type="submit" { "Save" } }, &format!("/console/keys/{}", record.id)))
        }
    }
}

/// A time as the `datetime-local` input shows it (UTC).
fn local_time(at: DateTime<Utc>) -> String {
    at.format(LOCAL_TIME).to_string()
}

/// A `datetime-local` value, read as UTC; empty is no expiry.
pub(super) fn expiry(text: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    NaiveDateTime::parse_from_str(text, LOCAL_TIME)
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .map(|at| Some(at.and_utc()))
        .map_err(|_| {
            ApiError::invalid("expires: expected a date and time such as 2027-01-31T09:00")
        })
}

fn scope(text: Option<&str>) -> Result<Option<Scope>, ApiError> {
    match text {
        None => Ok(None),
        Some("read") => Ok(Some(Scope::Read)),
        Some("read_write") => Ok(Some(Scope::ReadWrite)),
        Some(_) => Err(ApiError::invalid("scope: expected read or read_write")),
    }
}

impl Admin {
    pub(super) async fn edit_page(
        &self,
        signed: &Signed,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Key, Method::PATCH)?;
        let record = self.keys.get(id).await?;
        let form = edit_form(&signed.viewer, &record, &self.console.permissions, None);
        Ok(signed.page("Edit key", form))
    }

    pub(super) async fn edit_key(
        &self,
        signed: &Signed,
        id: &str,
        form: &Form,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Key, Method::PATCH)?;
        // An expiry left as shown stays as it is (to the second, and even when already past).
        let shown = self.keys.get(id).await?.expires_at.map(local_time);
        let expires = form.get("expires").unwrap_or_default();
        let changed = expires != shown.as_deref().unwrap_or_default();
        let edit = KeyEdit {
            name: form.get("name").map(str::to_string),
            scope: scope(form.get("scope"))?,
            permissions: Some(form.all("permission")),
            expires_at: changed.then(|| expiry(expires)).transpose()?,
            ..KeyEdit::default()
        };
        match self.keys.edit(id, edit, &signed.ctx).await {
            Ok(record) => Ok(redirect(&format!("/console/keys/{}", record.id))),
            Err(KeyServiceError::Invalid { field, reason }) => {
                // Shown again with what the key still is, and why the save was refused.
                let record = self.keys.get(id).await?;
                let message = format!("Not saved: {field}: {reason}");
                let form = edit_form(
                    &signed.viewer,
                    &record,
                    &self.console.permissions,
                    Some(&message),
                );
                Ok(respond(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    page("Edit key", Some(&signed.viewer), form),
                ))
            }
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn rotate_page(
        &self,
        signed: &Signed,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Rotate, Method::POST)?;
        let record = self.keys.get(id).await?;
        let content = html! {
            p { "Rotating gives " strong { (record.name) } " a new secret. The secret in use now keeps working for the grace period, so you can deploy the new one without downtime." }
            form.card method="post" action={ "/console/keys/" (record.id) "/rotate" } {
                (csrf_field(&signed.viewer.csrf))
                label for="grace" { "Grace period for the old secret" }
                select #grace name="grace" {
                    @for (seconds, label) in GRACE_CHOICES {
                        option value=(seconds) selected[seconds == DEFAULT_GRACE] { (label) }
                    }
                }
                (actions(html! { button.primary type="submit" { "Rotate" } }, &format!("/console/keys/{}", record.id)))
            }
        };
        Ok(signed.page("Rotate key", content))
    }

    pub(super) async fn rotate_key(
        &self,
        signed: &Signed,
        id: &str,
        form: &Form,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Rotate, Method::POST)?;
        let grace = form
            .get("grace")
            .map(|g| {
                g.parse::<u64>()
                    .map_err(|_| ApiError::invalid("grace: expected seconds"))
            })
            .transpose()?
            .map(Duration::from_secs);
        let issued = self.keys.rotate(id, grace, &signed.ctx).await?;
        Ok(secret_page(
            signed,
            &issued.record,
            &issued.secret,
            "The key's new secret",
        ))
    }

    pub(super) async fn delete_page(
        &self,
        signed: &Signed,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Key, Method::DELETE)?;
        let record = self.keys.get(id).await?;
        let content = html! {
            p { "Delete " strong { (record.name) } "? Anything using it is refused from the next request. This cannot be undone." }
            form.card method="post" action={ "/console/keys/" (record.id) "/delete" } {
                (csrf_field(&signed.viewer.csrf))
                (actions(html! { button.danger type="submit" { "Delete key" } }, &format!("/console/keys/{}", record.id)))
            }
        };
        Ok(signed.page("Delete key", content))
    }

    pub(super) async fn delete_key(
        &self,
        signed: &Signed,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Key, Method::DELETE)?;
        self.keys.delete(id, &signed.ctx).await?;
        Ok(redirect("/console/"))
    }

    pub(super) async fn enable_key(
        &self,
        signed: &Signed,
        id: &str,
        enabled: bool,
        form: &Form,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Key, Method::PATCH)?;
        let record = self.keys.set_enabled(id, enabled, &signed.ctx).await?;
        Ok(match form.get("back") {
            Some("detail") => redirect(&format!("/console/keys/{}", record.id)),
            _ => redirect("/console/"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_as_utc() {
        assert_eq!(expiry("").unwrap(), None);
        let at = expiry("2027-01-31T09:00").unwrap().unwrap();
        assert_eq!(at.to_rfc3339(), "2027-01-31T09:00:00+00:00");
        assert!(expiry("2027-01-31T09:00:30").unwrap().is_some());
        let error = expiry("tomorrow").unwrap_err();
        assert!(error.message.starts_with("expires: "), "{}", error.message);
    }
}
