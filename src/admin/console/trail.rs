//! View 5: the audit trail, filtered by key, actor and action and paged through the API's own
//! audit reader.

use super::form::{Form, encode};
use super::key_bits::when;
use super::{Endpoint, Signed};
use crate::admin::audit::Query;
use crate::admin::{Admin, ApiError};
use crate::body::Body;
use crate::keys::audit::{Action, Entry};
use http::{Method, Response};
use maud::{Markup, html};

const PAGE_SIZE: usize = 50;

/// The console's filter fields and the API parameters they become.
const FILTERS: [(&str, &str); 4] = [
    ("key", "key_id"),
    ("actor", "actor"),
    ("action", "action"),
    ("cursor", "cursor"),
];

/// A list of audit entries, newest first: when, who, what, to what, and what changed.
pub(super) fn entries_table(entries: &[Entry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.empty { "No audit entries." }
        } @else {
            table.audit {
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" }
                    th scope="col" { "Target" } th scope="col" { "Changes" }
                } }
                tbody {
                    @for entry in entries {
                        tr {
                            td data-label="Time" { (when(Some(entry.time))) }
                            td data-label="Actor" { (entry.actor.name) " (" (entry.actor.role) ")" }
                            td data-label="Action" { code { (entry.action.as_str()) } }
                            td data-label="Target" {
                                @if entry.target.kind == "key" && entry.action != Action::KeyDeleted {
                                    a href={ "/console/keys/" (entry.target.id) } { (entry.target.name) }
                                } @else {
                                    (entry.target.name)
                                }
                            }
                            td data-label="Changes" {
                                ul.changes role="list" {
                                    @for (field, change) in &entry.changes {
                                        li { (field) ": " (change.from.to_string()) " → " (change.to.to_string()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Admin {
    pub(super) async fn audit_view(
        &self,
        signed: &Signed,
        form: &Form,
    ) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Audit, Method::GET)?;
        let limit = PAGE_SIZE.to_string();
        let filters = FILTERS.iter().filter_map(|(field, param)| {
            let value = form.get(field).filter(|v| !v.is_empty())?;
            Some((*param, value))
        });
        let query = encode([("limit", limit.as_str())].into_iter().chain(filters));
        let (entries, next) = self.audit_page(Query::parse(Some(&query))?).await?;
        let value = |name| form.get(name).unwrap_or_default();
        let next = next.map(|cursor| {
            let kept = ["key", "actor", "action"].map(|name| (name, value(name)));
            let link = encode(kept.into_iter().chain([("cursor", cursor.as_str())]));
            format!("/console/audit?{link}")
        });
        let content = html! {
            form.filters method="get" action="/console/audit" role="search" {
                label for="key" { "Key id" }
                input #key type="text" name="key" value=(value("key"));
                label for="actor" { "Actor id" }
                input #actor type="text" name="actor" value=(value("actor"));
                label for="action" { "Action" }
                select #action name="action" {
                    option value="" { "Any" }
                    @for action in Action::ALL {
                        option value=(action.as_str()) selected[action.as_str() == value("action")] { (action.as_str()) }
                    }
                }
                button type="submit" { "Apply" }
            }
            (entries_table(&entries))
            @if let Some(next) = next {
                nav.paging aria-label="Pages" { a href=(next) rel="next" { "Older entries" } }
            }
        };
        Ok(signed.page("Audit", content))
    }
}
