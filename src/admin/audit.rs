//! `/v1/audit`: the audit trail, newest first, filtered and paged (or every match as NDJSON
//! for a SIEM), and `/v1/audit/verify`, which walks the hash chain.

use super::query::Params;
use super::{Admin, ApiError, json};
use crate::body::{self, Body};
use crate::keys::audit::{self, Action, Entry};
use crate::keys::{KeyStore, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use std::sync::Arc;

/// Entries read from the store per round while filtering.
const SCAN_BATCH: usize = 500;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// What `GET /v1/audit` asks for.
#[derive(Debug, Default, Clone)]
pub(super) struct Query {
    limit: Option<usize>,
    /// Entries placed before this one in the chain (the `cursor`, an entry id).
    before: Option<u64>,
    key_id: Option<String>,
    actor: Option<String>,
    action: Option<Action>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

/// A time as RFC 3339, or a duration in the config's syntax (`30d`, `12h`) meaning that long ago.
fn time_or_ago(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(value)
        .map_err(|_| "must be an RFC 3339 time or a duration such as 30d, 12h, 15m".to_string())?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| now.checked_sub_signed(ago))
        .ok_or_else(|| "is too far back".to_string())
}

impl Query {
    /// Through the admin API's one parameter parser ([`Params`]): an unknown, repeated or bad
    /// parameter is 422 `invalid_request` naming it, as on the key list.
    pub(super) fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let params = Params::parse(
            query,
            &[
                "limit", "cursor", "key_id", "actor", "action", "since", "until",
            ],
        )?;
        let now = Utc::now();
        Ok(Query {
            limit: params.number("limit", 1..=MAX_LIMIT)?,
            before: params.get("cursor", |value| {
                audit::seq_of(value).ok_or_else(|| "is not a cursor this API gave".to_string())
            })?,
            key_id: params.text("key_id").map(str::to_string),
            actor: params.text("actor").map(str::to_string),
            action: params.get("action", |value| {
                Action::parse(value).ok_or_else(|| "is not an audit action".to_string())
            })?,
            since: params.get("since", |value| time_or_ago(value, now))?,
            until: params.get("until", |value| time_or_ago(value, now))?,
        })
    }

    fn matches(&self, entry: &Entry) -> bool {
        self.key_id
            .as_ref()
            .is_none_or(|id| entry.target.kind == "key" && entry.target.id == *id)
            && self.actor.as_ref().is_none_or(|a| entry.actor.id == *a)
            && self.action.is_none_or(|a| entry.action == a)
            && self.until.is_none_or(|until| entry.time < until)
    }
}

/// One batch of the trail, newest first, from `before`: its matches, and where the next batch
/// starts (None: the trail, or `since`, has ended).
async fn scan_batch(
    store: &dyn KeyStore,
    query: &Query,
    before: Option<u64>,
) -> Result<(Vec<Entry>, Option<u64>), StoreError> {
    let page = store.audit_page(before, SCAN_BATCH).await?;
    let mut next = (page.len() == SCAN_BATCH)
        .then(|| page.last().map(Entry::seq))
        .flatten();
    let mut matches = Vec::new();
    for entry in page {
        if query.since.is_some_and(|since| entry.time < since) {
            next = None;
            break;
        }
        if query.matches(&entry) {
            matches.push(entry);
        }
    }
    Ok((matches, next))
}

impl Admin {
    /// One page: `limit` entries and the cursor of the next page (null: no more).
    pub(super) async fn audit_list(&self, query: Query) -> Result<Response<Body>, ApiError> {
        let (entries, next_cursor) = self.audit_page(query).await?;
        Ok(json(
            StatusCode::OK,
            &json!({ "entries": entries, "next_cursor": next_cursor }),
        ))
    }

    /// The entries of one page and the cursor of the next (None: no more); the API and the
    /// console both read the trail here.
    pub(super) async fn audit_page(
        &self,
        query: Query,
    ) -> Result<(Vec<Entry>, Option<String>), ApiError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        let store = self.keys.store().as_ref();
        let mut entries: Vec<Entry> = Vec::new();
        let mut before = query.before;
        let more = loop {
            let (matches, next) = scan_batch(store, &query, before).await?;
            let room = limit - entries.len();
            let overflow = matches.len() > room;
            entries.extend(matches.into_iter().take(room));
            if overflow || entries.len() == limit {
                break overflow || next.is_some();
            }
            match next {
                Some(next) => before = Some(next),
                None => break false,
            }
        };
        let next_cursor = more.then(|| entries.last().map(|e| e.id.clone())).flatten();
        Ok((entries, next_cursor))
    }

    /// Every matching entry, one JSON line each, sent as it is read.
    pub(super) fn audit_export(&self, query: Query) -> Response<Body> {
        let store: Arc<dyn KeyStore> = self.keys.store().clone();
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(16);
        tokio::spawn(async move {
            let mut before = query.before;
            loop {
                let (matches, next) = match scan_batch(store.as_ref(), &query, before).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::error!(%error, "audit export failed");
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                for entry in matches {
                    let line = Bytes::from(format!("{}\n", entry.to_json()));
                    if sender.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(next) => before = Some(next),
                    None => return,
                }
            }
        });
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let item = receiver.recv().await?;
            Some((item.map(http_body::Frame::data), receiver))
        });
        let mut response = Response::new(body::stream(http_body_util::StreamBody::new(stream)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }

    pub(super) async fn audit_verify(&self) -> Result<Response<Body>, ApiError> {
        let chain = self.keys.store().audit_chain().await?;
        let outcome = audit::verify(&chain);
        if !outcome.ok {
            tracing::warn!(first_bad = ?outcome.first_bad, "the audit chain does not verify");
        }
        Ok(json(StatusCode::OK, &json!(outcome)))
    }
}
