//! Usage over time: `GET /v1/keys/{id}/usage` (one key, by hour or day, every bucket present
//! so a chart needs no gap logic) and `GET /v1/usage` (totals and the top keys in one call).
//! `from` defaults to 7 days before `to`, `to` to now (exclusive); both are widened to whole
//! buckets (hours or UTC days).

use super::keys::timestamp;
use super::query::Params;
use super::{Admin, ApiError, json};
use crate::body::Body;
use crate::keys::history::{HOUR_SECS, HourCounts, UPSTREAM_CLASSES};
use crate::keys::service::KeyServiceError;
use chrono::{DateTime, Utc};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

const DEFAULT_DAYS: i64 = 7;
/// The longest range one call reads: a year of hours is 8,784 buckets.
const MAX_DAYS: i64 = 366;
const DEFAULT_TOP: usize = 20;
const MAX_TOP: usize = 1_000;

/// The buckets a request asks for: `first..end` in units of `hours` hours since the epoch.
struct Buckets {
    hours: i64,
    first: i64,
    end: i64,
}

impl Buckets {
    fn of(params: &Params, hours: i64) -> Result<Buckets, ApiError> {
        let to = params.time("to")?.unwrap_or_else(Utc::now);
        let from = params
            .time("from")?
            .unwrap_or(to - chrono::Duration::days(DEFAULT_DAYS));
        if from >= to {
            return Err(ApiError::invalid("from: must be before to"));
        }
        if to - from > chrono::Duration::days(MAX_DAYS) {
            return Err(ApiError::invalid(format!(
                "from: the range may span at most {MAX_DAYS} days"
            )));
        }
        let size = hours * HOUR_SECS;
        Ok(Buckets {
            hours,
            first: from.timestamp().div_euclid(size),
            end: (to.timestamp() + size - 1).div_euclid(size),
        })
    }

    /// The hours (since the epoch) the buckets cover.
    fn hour_range(&self) -> (i64, i64) {
        (self.first * self.hours, self.end * self.hours)
    }

    fn start(&self, bucket: i64) -> Value {
        timestamp(DateTime::from_timestamp(bucket * self.hours * HOUR_SECS, 0))
    }
}

fn counts_view(counts: &HourCounts) -> Value {
    let upstream: Map<String, Value> = UPSTREAM_CLASSES
        .iter()
        .zip(counts.upstream)
        .map(|(class, n)| (class.to_string(), json!(n)))
        .collect();
    json!({
        "requests": counts.requests,
        "forwarded": counts.forwarded,
        "refused": counts.refused,
        "upstream": upstream,
    })
}

fn sum<'a>(hours: impl IntoIterator<Item = &'a HourCounts>) -> HourCounts {
    let mut total = HourCounts::default();
    for hour in hours {
        total.add(hour);
    }
    total
}

impl Admin {
    pub(super) async fn key_usage(
        &self,
        id: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(query, &["from", "to", "granularity"])?;
        let (granularity, hours) = params
            .choice(
                "granularity",
                &[("hour", ("hour", 1)), ("day", ("day", 24))],
            )?
            .unwrap_or(("hour", 1));
        let buckets = Buckets::of(&params, hours)?;
        let (first_hour, end_hour) = buckets.hour_range();
        let history = self.keys.usage_history(id, first_hour, end_hour).await?;
        let views: Vec<Value> = (buckets.first..buckets.end)
            .map(|bucket| {
                let hours = bucket * buckets.hours..(bucket + 1) * buckets.hours;
                let counts = sum(history.iter().filter(|h| hours.contains(&h.hour)));
                let mut view = counts_view(&counts);
                view["start"] = buckets.start(bucket);
                view
            })
            .collect();
        Ok(json(
            StatusCode::OK,
            &json!({
                "key_id": id,
                "granularity": granularity,
                "from": buckets.start(buckets.first),
                "to": buckets.start(buckets.end),
                "buckets": views,
                "total": counts_view(&sum(&history)),
            }),
        ))
    }

    pub(super) async fn usage_overview(
        &self,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(query, &["from", "to", "top"])?;
        let top = params.number("top", 0..=MAX_TOP)?.unwrap_or(DEFAULT_TOP);
        let buckets = Buckets::of(&params, 1)?;
        let (first_hour, end_hour) = buckets.hour_range();
        let overview = self.keys.usage_overview(first_hour, end_hour).await?;
        let mut ranked = overview.keys;
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(top);
        let mut keys = Vec::with_capacity(ranked.len());
        for (id, requests) in ranked {
            // A key deleted since keeps its history (until retention), without a name.
            let name = match self.keys.get(&id).await {
                Ok(record) => Value::String(record.name),
                Err(KeyServiceError::NotFound) => Value::Null,
                Err(error) => return Err(error.into()),
            };
            keys.push(json!({"key_id": id, "name": name, "requests": requests}));
        }
        Ok(json(
            StatusCode::OK,
            &json!({
                "from": buckets.start(buckets.first),
                "to": buckets.start(buckets.end),
                "total": counts_view(&sum(&overview.hours)),
                "keys": keys,
            }),
        ))
    }
}
