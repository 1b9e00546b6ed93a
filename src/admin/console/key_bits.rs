//! Pieces every key view shares: status and scope words, times, and the More menu.

use super::layout::{Viewer, csrf_field};
use super::{Endpoint, may};
use crate::authz::Scope;
use crate::keys::KeyRecord;
use crate::keys::listing::DEFAULT_EXPIRING_WITHIN;
use chrono::{DateTime, Utc};
use http::Method;
use maud::{Markup, html};

/// active, disabled, expired or expiring soon (within the list's default window).
pub(super) fn status(record: &KeyRecord, now: DateTime<Utc>) -> &'static str {
    let soon = now + chrono::Duration::from_std(DEFAULT_EXPIRING_WITHIN).unwrap_or_default();
    match record.expires_at {
        _ if !record.enabled => "disabled",
        Some(at) if at <= now => "expired",
        Some(at) if at <= soon => "expiring soon",
        _ => "active",
    }
}

/// The scope as the KB's settings page names it.
pub(super) fn scope_label(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "Read-only",
        Scope::ReadWrite => "Read and Write",
    }
}

pub(super) fn permissions_text(record: &KeyRecord) -> String {
    match record.permissions.is_empty() {
        true => "all in scope".to_string(),
        false => record
            .permissions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A time as people read it, in UTC; "never" for none.
pub(super) fn when(at: Option<DateTime<Utc>>) -> String {
    at.map_or("never".to_string(), |at| {
        at.format("%Y-%m-%d %H:%M UTC").to_string()
    })
}

/// The key's More menu: only the actions the viewer's role allows (none: no menu). `back`
/// says where enable/disable return to ("list" or "detail").
pub(super) fn more_menu(record: &KeyRecord, viewer: &Viewer, back: &str) -> Markup {
    let actor = &viewer.actor;
    let edit = may(actor, Endpoint::Key, Method::PATCH);
    let rotate = may(actor, Endpoint::Rotate, Method::POST);
    let delete = may(actor, Endpoint::Key, Method::DELETE);
    let base = format!("/console/keys/{}", record.id);
    let (toggle, toggle_label) = match record.enabled {
        true => ("disable", "Disable"),
        false => ("enable", "Enable"),
    };
    html! {
        @if edit || rotate || delete {
            details.more {
                summary aria-label={ "More actions for " (record.name) } { "More" }
                ul role="list" {
                    @if edit { li { a href={ (base) "/edit" } { "Edit" } } }
                    @if rotate { li { a href={ (base) "/rotate" } { "Rotate" } } }
                    @if edit {
                        li {
                            form method="post" action={ (base) "/" (toggle) } {
                                (csrf_field(&viewer.csrf))
                                input type="hidden" name="back" value=(back);
                                button type="submit" { (toggle_label) }
                            }
                        }
                    }
                    @if delete { li { a.danger href={ (base) "/delete" } { "Delete" } } }
                }
            }
        }
    }
}
