//! The route table as people read it: the `check-config` table, the shadowed-route warnings
//! and the aligned `Display` the admin API and `kbgate routes` print.

use super::RouteTable;
use http::Method;
use std::fmt;

impl RouteTable {
    /// One warning for each route that can never match: for each of its methods, an earlier
    /// route with that method matches every path it does (first match wins).
    pub fn shadowed(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            let earlier = &self.routes[..index];
            let mut by: Vec<usize> = Vec::new();
            let all_covered = route.methods.iter().all(|method| {
                let found = earlier
                    .iter()
                    .position(|e| e.methods.contains(method) && e.covers(route));
                if let Some(i) = found
                    && !by.contains(&i)
                {
                    by.push(i);
                }
                found.is_some()
            });
            if all_covered {
                let by: Vec<String> = by
                    .iter()
                    .map(|&i| format!("routes[{i}] ({})", self.routes[i].label()))
                    .collect();
                let verb = if by.len() == 1 { "matches" } else { "match" };
                warnings.push(format!(
                    "routes[{index}] ({}) can never match: {} {verb} every request it would",
                    route.label(),
                    by.join(" and ")
                ));
            }
        }
        warnings
    }

    /// The table `check-config` prints: methods, path, permission, the body limit of each
    /// route (`default_max_body`, `limits.max_body`, unless it sets its own) and its query rule.
    pub fn describe(&self, default_max_body: u64) -> String {
        let rows = self.routes.iter().map(|route| {
            vec![
                methods(&route.methods),
                route.template.clone(),
                route.permission.to_string(),
                format_size(route.max_body.unwrap_or(default_max_body)),
                route.query.as_ref().map_or("-".into(), ToString::to_string),
            ]
        });
        aligned(
            &["METHODS", "PATH", "PERMISSION", "MAX_BODY", "QUERY"],
            rows,
        )
    }
}

impl fmt::Display for RouteTable {
    /// An aligned table: a `METHODS  PATH  PERMISSION` header, then one line per route.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.routes.iter().map(|route| {
            vec![
                methods(&route.methods),
                route.template.clone(),
                route.permission.to_string(),
            ]
        });
        f.write_str(&aligned(&["METHODS", "PATH", "PERMISSION"], rows))
    }
}

/// `GET,HEAD`: a route's methods as the config writes them.
fn methods(methods: &[Method]) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(",")
}

/// Rows under a header, every column but the last padded to its widest cell, two spaces apart.
fn aligned(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let header: Vec<String> = header.iter().map(|cell| cell.to_string()).collect();
    let rows: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    let last = rows[0].len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        if !out.is_empty() {
            out.push('\n');
        }
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(&row[last]);
    }
    out
}

/// A size in the largest binary unit that divides it: `100MiB`, `1536KiB`, `1000B`.
pub(super) fn format_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}
