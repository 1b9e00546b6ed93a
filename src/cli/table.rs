//! The `kbgate keys list` table.

use chrono::{DateTime, Utc};

use super::key::{Key, time_text};

const HEADERS: [&str; 8] = [
    "ID",
    "NAME",
    "START",
    "SCOPE",
    "PERMISSIONS",
    "STATUS",
    "LAST USED",
    "REQUESTS",
];

/// Space between columns.
const GAP: &str = "  ";

/// One line per key under a header, columns padded to their widest cell.
pub fn key_table(keys: &[Key], now: DateTime<Utc>) -> String {
    if keys.is_empty() {
        return "no keys\n".to_string();
    }
    let header = HEADERS.map(String::from);
    let rows: Vec<[String; 8]> = keys.iter().map(|key| row(key, now)).collect();
    let widths = column_widths(std::iter::once(&header).chain(&rows));
    std::iter::once(&header)
        .chain(&rows)
        .map(|cells| line(cells, &widths))
        .collect()
}

fn row(key: &Key, now: DateTime<Utc>) -> [String; 8] {
    [
        key.id.clone(),
        key.name_text(),
        key.start.clone().unwrap_or_else(|| "-".to_string()),
        key.scope.clone(),
        key.permissions_text(),
        key.status(now).to_string(),
        time_text(key.last_used_at, "never"),
        key.request_count.to_string(),
    ]
}

pub(super) fn column_widths<'a, const N: usize>(
    rows: impl Iterator<Item = &'a [String; N]>,
) -> [usize; N] {
    rows.fold([0; N], |mut widths, cells| {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
        widths
    })
}

/// Pads every cell to its column; the last one is not padded, so lines carry no trailing spaces.
pub(super) fn line<const N: usize>(cells: &[String; N], widths: &[usize; N]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell:<width$}"))
        .collect();
    format!("{}\n", padded.join(GAP).trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::key::tests::{now, sample};
    use serde_json::json;

    #[test]
    fn keys_are_listed_in_aligned_columns() {
        let first = Key::from_json(&sample()).unwrap();
        let mut second = sample();
        second["id"] = json!("key_0002");
        second["name"] = json!("nightly export");
        second["scope"] = json!("read_write");
        second["permissions"] = json!(["article:read", "category:read"]);
        second["enabled"] = json!(false);
        second["last_used_at"] = json!("2025-05-30T10:00:00.5Z");
        second["request_count"] = json!(1234);
        let keys = [first, Key::from_json(&second).unwrap()];

        let want = "\
ID        NAME            START    SCOPE       PERMISSIONS                  STATUS    LAST USED                REQUESTS
key_01    chatbot         kb_7Hq2  read        all (read)                   enabled   never                    0
key_0002  nightly export  kb_7Hq2  read_write  article:read, category:read  disabled  2025-05-30 10:00:00 UTC  1234
";
        assert_eq!(key_table(&keys, now()), want);
    }

    #[test]
    fn an_empty_list_says_so() {
        assert_eq!(key_table(&[], now()), "no keys\n");
    }
}
