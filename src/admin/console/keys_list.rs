//! View 1, the key list: the Create key button, search, filters, cursor paging, and per key its
//! name, start, scope, specific permissions, status, last use and last 7 days of requests.
//! The page is read with the API's own list parser and the key service's paged list.

use super::chart::sparkline;
use super::form::{Form, encode};
use super::key_bits::{more_menu, permissions_text, scope_label, status, when};
use super::key_forms::secret_page;
use super::layout::csrf_field;
use super::{Endpoint, Signed, may};
use crate::admin::keys::list_query;
use crate::admin::{Admin, ApiError};
use crate::body::Body;
use crate::keys::KeyRecord;
use crate::keys::history::hour_of;
use crate::keys::service::NewKey;
use chrono::Utc;
use http::{Method, Response};
use maud::{Markup, html};

/// Keys per page: enough to scan, few enough to read each one's week of usage.
const PAGE_SIZE: usize = 50;
const SPARK_DAYS: i64 = 7;

/// The filter choices: (value, label, the API's list parameter).
const FILTERS: [(&str, &str, &str); 5] = [
    ("", "All keys", ""),
    ("active", "Active", "state=active"),
    ("disabled", "Disabled", "state=disabled"),
    ("expiring", "Expiring soon", "state=expiring"),
    ("unused", "Unused for 30 days", "unused_for=30d"),
];

/// The API list query for the console's `q`, `filter` and `cursor`.
fn api_query(form: &Form) -> String {
    let limit = PAGE_SIZE.to_string();
    let given = ["q", "cursor"]
        .into_iter()
        .filter_map(|name| Some((name, form.get(name).filter(|v| !v.is_empty())?)));
    let mut query = encode([("limit", limit.as_str())].into_iter().chain(given));
    let filter = form.get("filter").unwrap_or_default();
    if let Some((_, _, param)) = FILTERS
        .iter()
        .find(|(v, _, _)| *v == filter && !v.is_empty())
    {
        query.push('&');
        query.push_str(param);
    }
    query
}

impl Admin {
    pub(super) async fn keys_list(
        &self,
        signed: &Signed,
        form: &Form,
    ) -> Result<Response<Body>, ApiError> {
        let query = list_query(Some(&api_query(form)), self.keys.resources())?;
        let page_of_keys = self.keys.list_page(&query).await?;
        let mut rows = Vec::with_capacity(page_of_keys.keys.len());
        for record in &page_of_keys.keys {
            rows.push(self.key_row(signed, record).await?);
        }
        let next = page_of_keys.next_cursor.map(|cursor| {
            let cursor = cursor.encode();
            let kept = ["q", "filter"].map(|name| (name, form.get(name).unwrap_or_default()));
            let link = encode(kept.into_iter().chain([("cursor", cursor.as_str())]));
            format!("/console/?{link}")
        });
        let q = form.get("q").unwrap_or_default();
        let filter = form.get("filter").unwrap_or_default();
        let content = html! {
            p.lead { "Each integration gets its own key: give it the least it needs, rotate it now and then, and delete the ones no longer used." }
            @if may(&signed.viewer.actor, Endpoint::Keys, Method::POST) {
                form method="post" action="/console/keys" {
                    (csrf_field(&signed.viewer.csrf))
                    button.primary type="submit" { "Create key" }
                }
            }
            form.filters method="get" action="/console/" role="search" {
                label for="q" { "Search by name" }
                input #q type="search" name="q" value=(q);
                label for="filter" { "Show" }
                select #filter name="filter" {
                    @for (value, label, _) in FILTERS {
                        option value=(value) selected[value == filter] { (label) }
                    }
                }
                button type="submit" { "Apply" }
            }
            @if rows.is_empty() {
                p.empty { "No keys match." }
            } @else {
                table.keys {
                    caption.visually-hidden { "API keys, oldest first" }
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Start" } th scope="col" { "Scope" }
                        th scope="col" { "Specific permissions" } th scope="col" { "Status" }
                        th scope="col" { "Last used" } th scope="col" { "Requests, 7 days" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody { @for row in &rows { (row) } }
                }
            }
            @if let Some(next) = next {
                nav.paging aria-label="Pages" { a href=(next) rel="next" { "Next page" } }
            }
        };
        Ok(signed.page("API keys", content))
    }

    /// One row of the list, with the key's requests per day over the last week.
    async fn key_row(&self, signed: &Signed, record: &KeyRecord) -> Result<Markup, ApiError> {
        let now = Utc::now();
        let end = hour_of(now.timestamp()) + 1;
        let first = end - SPARK_DAYS * 24;
        let hours = self.keys.usage_history(&record.id, first, end).await?;
        let mut days = vec![0u64; SPARK_DAYS as usize];
        for hour in hours {
            if let Some(day) = days.get_mut(((hour.hour - first) / 24) as usize) {
                *day += hour.requests;
            }
        }
        let week: u64 = days.iter().sum();
        let state = status(record, now);
        Ok(html! {
            tr data-key-id=(record.id) {
                td data-label="Name" { a.key-name href={ "/console/keys/" (record.id) } { (record.name) } }
                td data-label="Start" { code { (record.start()) "…" } }
                td data-label="Scope" { (scope_label(record.scope)) }
                td data-label="Specific permissions" { (permissions_text(record)) }
                td data-label="Status" { span class={ "status " (state.replace(' ', "-")) } { (state) } }
                td data-label="Last used" { (when(record.usage.last_used_at)) }
                td data-label="Requests, 7 days" {
                    (sparkline(&days, &format!("{week} requests in 7 days, per day"))) " " (week)
                }
                td { (more_menu(record, &signed.viewer, "list")) }
            }
        })
    }

    /// Create key: a new key with the defaults (named with the date and time, Read-only),
    /// its secret shown once.
    pub(super) async fn create_key(&self, signed: &Signed) -> Result<Response<Body>, ApiError> {
        signed.require(Endpoint::Keys, Method::POST)?;
        let issued = self.keys.create(NewKey::default(), &signed.ctx).await?;
        Ok(secret_page(
            signed,
            &issued.record,
            &issued.secret,
            "Your new key",
        ))
    }
}
