//! Paged, filtered key lists. A page is read from one of the store's ordered indexes from an
//! opaque cursor on: creation order (created_at, id), or a usage order (requests or last use,
//! then creation order), kept by the batched usage flush. A walk in creation order is stable
//! while keys are created and deleted: a key's place never changes, no key is seen twice, and
//! none that existed throughout is skipped. In a usage order a key's place moves when its usage
//! does (see [`page`]).

use crate::authz::{self, Permission};
use crate::keys::{KeyRecord, KeyStore, StoreError, Usage};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The most keys a filtered page reads before it answers, full or not (with a cursor to go
/// on): a filter that matches nothing among a million keys must not hold the store for
/// seconds. Measured with 1M keys (benches/key_pages.rs, a busy 2-core VM): 10,000 records
/// took 95 ms from redb and 86 ms from Redis; 4,000 keep a page under 50 ms.
pub const MAX_SCAN: usize = 4_000;
/// Keys read per store call while filtering.
const SCAN_BATCH: usize = 1_000;
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;
/// `expiring` without `expiring_within`: keys that expire within two weeks.
pub const DEFAULT_EXPIRING_WITHIN: Duration = Duration::from_secs(14 * 86_400);

/// A key's place in creation order: what the stores index and the cursors carry. Creation
/// times count in microseconds (a cursor carries no more).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgeMark {
    pub created_micros: i64,
    pub id: String,
}

impl AgeMark {
    pub fn of(record: &KeyRecord) -> AgeMark {
        AgeMark {
            created_micros: record.created_at.timestamp_micros(),
            id: record.id.clone(),
        }
    }

    /// Does `record` come after this mark in a walk (oldest first, or newest first when
    /// `descending`)?
    pub fn is_before(&self, record: &KeyRecord, descending: bool) -> bool {
        let place = AgeMark::of(record);
        if descending {
            place < *self
        } else {
            place > *self
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Enabled and not expired.
    Active,
    Disabled,
    /// Past its expiry (enabled or not).
    Expired,
    /// Enabled, not expired, and expiring within `expiring_within`.
    Expiring,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Created,
    LastUsed,
    Requests,
}

impl Sort {
    fn tag(self) -> char {
        match self {
            Sort::Created => 'c',
            Sort::LastUsed => 'l',
            Sort::Requests => 'r',
        }
    }

    /// The usage order this sort reads, if it is one.
    pub fn usage(self) -> Option<UsageSort> {
        match self {
            Sort::Created => None,
            Sort::LastUsed => Some(UsageSort::LastUsed),
            Sort::Requests => Some(UsageSort::Requests),
        }
    }
}

/// The orders the stores keep by usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageSort {
    LastUsed,
    Requests,
}

impl UsageSort {
    /// The value a key is ordered by: Unix ms of its last use (a never-used key `i64::MIN`,
    /// first in ascending order), or its request count.
    pub fn value(self, usage: &Usage) -> i64 {
        match self {
            UsageSort::LastUsed => usage
                .last_used_at
                .map_or(i64::MIN, |t| t.timestamp_millis()),
            UsageSort::Requests => i64::try_from(usage.request_count).unwrap_or(i64::MAX),
        }
    }
}

/// A key's place in a usage order: the value, then its place in creation order (keys with
/// the same value keep creation order). What the usage indexes hold and the cursors carry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsageMark {
    pub value: i64,
    pub age: AgeMark,
}

impl UsageMark {
    pub fn of(by: UsageSort, record: &KeyRecord) -> UsageMark {
        UsageMark {
            value: by.value(&record.usage),
            age: AgeMark::of(record),
        }
    }
}

/// Which keys a list shows; `None` fields do not filter.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub state: Option<State>,
    pub expiring_within: Option<Duration>,
    /// No request for this long; a never-used key counts from its creation.
    pub unused_for: Option<Duration>,
    /// A name substring, matched case-insensitively.
    pub name_contains: Option<String>,
    /// Keys that grant this permission (by scope or by their specific permissions).
    pub permission: Option<Permission>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.unused_for.is_none()
            && self.name_contains.is_none()
            && self.permission.is_none()
    }

    pub fn matches(&self, record: &KeyRecord, now: DateTime<Utc>) -> bool {
        let expired = record.expires_at.is_some_and(|at| at <= now);
        let state_ok = match self.state {
            None => true,
            Some(State::Active) => record.enabled && !expired,
            Some(State::Disabled) => !record.enabled,
            Some(State::Expired) => expired,
            Some(State::Expiring) => {
                let within = self.expiring_within.unwrap_or(DEFAULT_EXPIRING_WITHIN);
                // A horizon past the calendar's end takes in every expiry.
                let horizon = chrono::Duration::from_std(within)
                    .ok()
                    .and_then(|within| now.checked_add_signed(within));
                record.enabled
                    && !expired
                    && record
                        .expires_at
                        .is_some_and(|at| horizon.is_none_or(|horizon| at <= horizon))
            }
        };
        let unused_ok = self.unused_for.is_none_or(|idle| {
            let since = record.usage.last_used_at.unwrap_or(record.created_at);
            // Idle since before the calendar's start: no key is.
            chrono::Duration::from_std(idle)
                .ok()
                .and_then(|idle| now.checked_sub_signed(idle))
                .is_some_and(|cutoff| since <= cutoff)
        });
        let name_ok = self
            .name_contains
            .as_ref()
            .is_none_or(|part| record.name.to_lowercase().contains(&part.to_lowercase()));
        let permission_ok = self
            .permission
            .as_ref()
            .is_none_or(|p| authz::grants(record.scope, &record.permissions, p));
        state_ok && unused_ok && name_ok && permission_ok
    }
}

/// Where a walk goes on: the sort it belongs to, the sort value and place of the last key seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    sort: Sort,
    descending: bool,
    value: i64,
    mark: AgeMark,
}

impl Cursor {
    /// The cursor at `place` in this sort's order.
    fn at(place: Place, sort: Sort, descending: bool) -> Cursor {
        let (value, mark) = match place {
            Place::Age(mark) => (0, mark),
            Place::Usage(mark) => (mark.value, mark.age),
        };
        Cursor {
            sort,
            descending,
            value,
            mark,
        }
    }

    /// The cursor as clients see it: opaque (hex of `sort order value ms id`).
    pub fn encode(&self) -> String {
        let text = format!(
            "{}{} {} {} {}",
            self.sort.tag(),
            if self.descending { 'd' } else { 'a' },
            self.value,
            self.mark.created_micros,
            self.mark.id
        );
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads a cursor made by [`Cursor::encode`] for this sort and order.
    pub fn decode(text: &str, sort: Sort, descending: bool) -> Result<Cursor, String> {
        let bad = || "not a cursor this API gave out".to_string();
        if !text.len().is_multiple_of(2) || text.len() > 400 {
            return Err(bad());
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, String>>()?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(4, ' ');
        let (tag, value, micros, id) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        let expected = format!("{}{}", sort.tag(), if descending { 'd' } else { 'a' });
        if tag != expected {
            return Err("was given out for another sort or order".into());
        }
        Ok(Cursor {
            sort,
            descending,
            value: value.parse().map_err(|_| bad())?,
            mark: AgeMark {
                created_micros: micros.parse().map_err(|_| bad())?,
                id: id.to_string(),
            },
        })
    }
}

/// What a list asks for.
#[derive(Clone, Debug)]
pub struct ListQuery {
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub filter: Filter,
    pub sort: Sort,
    pub descending: bool,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: DEFAULT_LIMIT,
            cursor: None,
            filter: Filter::default(),
            sort: Sort::Created,
            descending: false,
        }
    }
}

/// One page: its keys, and the cursor of the next page (None: this was the last).
#[derive(Debug)]
pub struct Page {
    pub keys: Vec<KeyRecord>,
    pub next_cursor: Option<Cursor>,
}

/// A key's place in the order a page is read in.
enum Place {
    Age(AgeMark),
    Usage(UsageMark),
}

/// Reads one page. `exact` adds usage not yet flushed to each record before it is filtered.
///
/// Reads the sort's index from the cursor on and stops when the page is full or [`MAX_SCAN`]
/// keys (rounded up to a batch) were read (then the page may be short, even empty, and its
/// cursor goes on from the last key read): a page costs its own keys, however many the store
/// holds. A usage order is the store's as last flushed (up to `usage.flush_interval` behind
/// the counts shown, which are exact). It is stable for keys whose usage does not change
/// during the walk; a key used meanwhile moves, and may be seen twice or not at all, as in any
/// list ordered by a value that changes.
pub async fn page(
    store: &dyn KeyStore,
    query: &ListQuery,
    now: DateTime<Utc>,
    exact: &(dyn Fn(&mut KeyRecord) + Sync),
) -> Result<Page, StoreError> {
    // Unfiltered, one more than the page tells whether another page follows.
    let batch = if query.filter.is_empty() {
        query.limit + 1
    } else {
        SCAN_BATCH.max(query.limit + 1)
    };
    let cursor = |place| Cursor::at(place, query.sort, query.descending);
    let mut after = query.cursor.clone();
    let mut keys = Vec::new();
    let mut last_kept = None;
    let mut scanned = 0;
    loop {
        let rows = read(store, query, after.as_ref(), batch).await?;
        let last_batch = rows.len() < batch;
        for (place, mut record) in rows {
            if keys.len() == query.limit {
                // Another key follows the full page.
                return Ok(Page {
                    keys,
                    next_cursor: last_kept,
                });
            }
            scanned += 1;
            let place = cursor(place);
            after = Some(place.clone());
            exact(&mut record);
            if query.filter.matches(&record, now) {
                keys.push(record);
                last_kept = Some(place);
            }
        }
        if last_batch {
            return Ok(Page {
                keys,
                next_cursor: None,
            });
        }
        if scanned >= MAX_SCAN {
            return Ok(Page {
                keys,
                next_cursor: after,
            });
        }
    }
}

/// Up to `max` keys after `after` in the query's order, each with its place.
async fn read(
    store: &dyn KeyStore,
    query: &ListQuery,
    after: Option<&Cursor>,
    max: usize,
) -> Result<Vec<(Place, KeyRecord)>, StoreError> {
    match query.sort.usage() {
        None => {
            let records = store
                .page_by_age(after.map(|c| &c.mark), query.descending, max)
                .await?;
            Ok(records
                .into_iter()
                .map(|r| (Place::Age(AgeMark::of(&r)), r))
                .collect())
        }
        Some(by) => {
            let mark = after.map(|c| UsageMark {
                value: c.value,
                age: c.mark.clone(),
            });
            let rows = store
                .page_by_usage(by, mark.as_ref(), query.descending, max)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(mark, r)| (Place::Usage(mark), r))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_their_sort() {
        let record = KeyRecord::sample("a", Utc::now());
        let place = Place::Usage(UsageMark::of(UsageSort::Requests, &record));
        let cursor = Cursor::at(place, Sort::Requests, true);
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text, Sort::Requests, true).unwrap(), cursor);
        assert!(Cursor::decode(&text, Sort::Requests, false).is_err());
        assert!(Cursor::decode(&text, Sort::Created, true).is_err());
        for bad in ["", "zz", "abc", "00", &"61".repeat(300)] {
            assert!(Cursor::decode(bad, Sort::Created, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let now = Utc::now();
        let mut record = KeyRecord::sample("Chat Bot", Utc::now());
        let filter = |f: Filter| f.matches(&record, now);
        assert!(filter(Filter {
            name_contains: Some("chat".into()),
            ..Filter::default()
        }));
        assert!(!filter(Filter {
            name_contains: Some("sync".into()),
            ..Filter::default()
        }));
        assert!(filter(Filter {
            state: Some(State::Active),
            ..Filter::default()
        }));
        // Never used, created just now: not unused for a day.
        assert!(!filter(Filter {
            unused_for: Some(Duration::from_secs(86_400)),
            ..Filter::default()
        }));
        record.created_at = now - chrono::Duration::days(2);
        record.expires_at = Some(now + chrono::Duration::days(3));
        let filter = |f: Filter| f.matches(&record, now);
        assert!(filter(Filter {
            unused_for: Some(Duration::from_secs(86_400)),
            ..Filter::default()
        }));
        assert!(filter(Filter {
            state: Some(State::Expiring),
            ..Filter::default()
        }));
        assert!(!filter(Filter {
            state: Some(State::Expiring),
            expiring_within: Some(Duration::from_secs(86_400)),
            ..Filter::default()
        }));
        assert!(!filter(Filter {
            state: Some(State::Expired),
            ..Filter::default()
        }));
    }
}
