//! Paged, filtered key lists. A page is read from the store's creation-order index from an
//! opaque cursor on, so a walk is stable while keys are created and deleted: a key's place
//! (created_at, id) never changes, no key is seen twice, and none that existed throughout is
//! skipped. Sorting by usage reads every key instead (see [`MAX_SCAN`] and [`page`]).

use crate::authz::{self, Permission};
use crate::keys::{KeyRecord, KeyStore, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The most keys a filtered page reads before it answers, full or not (with a cursor to go
/// on): a filter that matches nothing among a million keys must not hold the store for
/// seconds. Measured with 1M keys (benches/key_pages.rs, a busy 2-core VM): 10,000 records
/// took 95 ms from redb and 86 ms from Redis; 4,000 keep a page under 50 ms.
pub const MAX_SCAN: usize = 4_000;
/// Keys read per store call while filtering or sorting by usage.
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

    /// The usage value a key is sorted by (never-used keys first in ascending order).
    fn value(self, record: &KeyRecord) -> i64 {
        match self {
            Sort::Created => 0,
            Sort::LastUsed => record
                .usage
                .last_used_at
                .map_or(i64::MIN, |t| t.timestamp_millis()),
            Sort::Requests => i64::try_from(record.usage.request_count).unwrap_or(i64::MAX),
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
    fn after(record: &KeyRecord, sort: Sort, descending: bool) -> Cursor {
        Cursor {
            sort,
            descending,
            value: sort.value(record),
            mark: AgeMark::of(record),
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

/// Reads one page. `exact` adds usage not yet flushed to each record before it is filtered.
///
/// Sorted by creation (the default): reads the index from the cursor on and stops when the
/// page is full or [`MAX_SCAN`] keys (rounded up to a batch) were read (then the page may be short, even empty, and
/// its cursor goes on from the last key read). Sorted by last use or requests: reads every
/// key (O(keys), memory O(limit); with 1M keys 15 s from redb, 9 s from Redis) and keeps the
/// next `limit` after the cursor's (value,
/// created, id). That walk is stable for keys whose usage does not change during it; a key
/// used meanwhile moves, and may be seen twice or not at all, as in any list ordered by a
/// value that changes.
pub async fn page(
    store: &dyn KeyStore,
    query: &ListQuery,
    now: DateTime<Utc>,
    exact: &(dyn Fn(&mut KeyRecord) + Sync),
) -> Result<Page, StoreError> {
    match query.sort {
        Sort::Created => by_age(store, query, now, exact).await,
        _ => by_usage(store, query, now, exact).await,
    }
}

async fn by_age(
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
    let mut mark = query.cursor.as_ref().map(|c| c.mark.clone());
    let mut keys = Vec::new();
    let mut scanned = 0;
    loop {
        let records = store
            .page_by_age(mark.as_ref(), query.descending, batch)
            .await?;
        let last_batch = records.len() < batch;
        for mut record in records {
            if keys.len() == query.limit {
                // Another key follows the full page.
                let next = keys
                    .last()
                    .map(|r| Cursor::after(r, Sort::Created, query.descending));
                return Ok(Page {
                    keys,
                    next_cursor: next,
                });
            }
            scanned += 1;
            mark = Some(AgeMark::of(&record));
            exact(&mut record);
            if query.filter.matches(&record, now) {
                keys.push(record);
            }
        }
        if last_batch {
            return Ok(Page {
                keys,
                next_cursor: None,
            });
        }
        if scanned >= MAX_SCAN {
            let next = mark.map(|mark| Cursor {
                sort: Sort::Created,
                descending: query.descending,
                value: 0,
                mark,
            });
            return Ok(Page {
                keys,
                next_cursor: next,
            });
        }
    }
}

async fn by_usage(
    store: &dyn KeyStore,
    query: &ListQuery,
    now: DateTime<Utc>,
    exact: &(dyn Fn(&mut KeyRecord) + Sync),
) -> Result<Page, StoreError> {
    let sort = query.sort;
    let place = |r: &KeyRecord| (sort.value(r), AgeMark::of(r));
    let order = |a: &KeyRecord, b: &KeyRecord| {
        let ordering = place(a).cmp(&place(b));
        if query.descending {
            ordering.reverse()
        } else {
            ordering
        }
    };
    let after_cursor = |r: &KeyRecord| {
        query.cursor.as_ref().is_none_or(|c| {
            let mark = (c.value, c.mark.clone());
            if query.descending {
                place(r) < mark
            } else {
                place(r) > mark
            }
        })
    };
    // The best `limit + 1` so far; sorted and cut whenever it doubles.
    let keep = query.limit + 1;
    let mut best: Vec<KeyRecord> = Vec::new();
    let mut mark = None;
    loop {
        let records = store.page_by_age(mark.as_ref(), false, SCAN_BATCH).await?;
        let last_batch = records.len() < SCAN_BATCH;
        mark = records.last().map(AgeMark::of);
        for mut record in records {
            exact(&mut record);
            if after_cursor(&record) && query.filter.matches(&record, now) {
                best.push(record);
            }
        }
        if best.len() >= 2 * keep {
            best.sort_by(order);
            best.truncate(keep);
        }
        if last_batch {
            break;
        }
    }
    best.sort_by(order);
    let more = best.len() > query.limit;
    best.truncate(query.limit);
    let next_cursor = more
        .then(|| {
            best.last()
                .map(|r| Cursor::after(r, sort, query.descending))
        })
        .flatten();
    Ok(Page {
        keys: best,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Scope;
    use crate::keys::secret;

    fn key(name: &str) -> KeyRecord {
        KeyRecord::new(
            name.into(),
            Scope::Read,
            vec![],
            None,
            &secret::generate(),
            Utc::now(),
        )
    }

    #[test]
    fn cursors_round_trip_and_belong_to_their_sort() {
        let record = key("a");
        let cursor = Cursor::after(&record, Sort::Requests, true);
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
        let mut record = key("Chat Bot");
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
