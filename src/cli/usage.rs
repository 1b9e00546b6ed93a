//! `kbgate keys usage ID`: the key's usage buckets as a table, with a one-line sparkline of
//! its requests under it.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::error::CliError;
use super::table::{column_widths, line};

const HEADERS: [&str; 8] = [
    "START",
    "REQUESTS",
    "FORWARDED",
    "REFUSED",
    "2XX",
    "3XX",
    "4XX",
    "5XX",
];
/// Eight heights, lowest for no requests.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

#[derive(Deserialize)]
struct KeyUsage {
    key_id: String,
    granularity: String,
    buckets: Vec<Counts>,
    total: Counts,
}

#[derive(Deserialize)]
struct Counts {
    #[serde(default)]
    start: Option<chrono::DateTime<chrono::Utc>>,
    requests: u64,
    forwarded: u64,
    refused: BTreeMap<String, u64>,
    upstream: BTreeMap<String, u64>,
}

impl Counts {
    fn row(&self, start: String) -> [String; 8] {
        let class = |c: &str| self.upstream.get(c).copied().unwrap_or(0).to_string();
        [
            start,
            self.requests.to_string(),
            self.forwarded.to_string(),
            self.refused.values().sum::<u64>().to_string(),
            class("2xx"),
            class("3xx"),
            class("4xx"),
            class("5xx"),
        ]
    }
}

/// The table, a total row, the refusals by code, and the sparkline.
pub fn usage_text(answer: &Value) -> Result<String, CliError> {
    let usage = KeyUsage::deserialize(answer)
        .map_err(|e| CliError::UnexpectedResponse(format!("usage not understood: {e}")))?;
    let format = if usage.granularity == "day" {
        "%Y-%m-%d"
    } else {
        "%Y-%m-%d %H:00"
    };
    let header = HEADERS.map(String::from);
    let mut rows: Vec<[String; 8]> = usage
        .buckets
        .iter()
        .map(|b| b.row(b.start.map_or("-".into(), |s| s.format(format).to_string())))
        .collect();
    rows.push(usage.total.row("total".into()));
    let widths = column_widths(std::iter::once(&header).chain(&rows));
    let mut text: String = std::iter::once(&header)
        .chain(&rows)
        .map(|cells| line(cells, &widths))
        .collect();
    for (code, n) in &usage.total.refused {
        text.push_str(&format!("refused {code}: {n}\n"));
    }
    let requests: Vec<u64> = usage.buckets.iter().map(|b| b.requests).collect();
    let most = requests.iter().copied().max().unwrap_or(0);
    text.push_str(&format!(
        "{} {} (requests per {}, most {most})\n",
        usage.key_id,
        sparkline(&requests),
        usage.granularity
    ));
    Ok(text)
}

/// One character per value, scaled to the largest; any value above zero shows above the floor.
fn sparkline(values: &[u64]) -> String {
    let most = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| match v {
            0 => BARS[0],
            v => {
                let step = (v * 7).div_ceil(most);
                BARS[usize::try_from(step).unwrap_or(7).clamp(1, 7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sparklines_scale_to_the_busiest_bucket() {
        assert_eq!(sparkline(&[0, 1, 7, 14]), "▁▂▅█");
        assert_eq!(sparkline(&[0, 0]), "▁▁");
        assert_eq!(sparkline(&[1000, 1]), "█▂");
    }

    #[test]
    fn usage_prints_a_table_and_a_sparkline() {
        let counts = |start: &str, n: u64| {
            json!({"start": start, "requests": n, "forwarded": n, "refused": {},
                   "upstream": {"2xx": n, "3xx": 0, "4xx": 0, "5xx": 0}})
        };
        let answer = json!({
            "key_id": "key_1", "granularity": "day",
            "from": "2025-01-01T00:00:00Z", "to": "2025-01-03T00:00:00Z",
            "buckets": [counts("2025-01-01T00:00:00Z", 0), counts("2025-01-02T00:00:00Z", 4)],
            "total": {"requests": 5, "forwarded": 4, "refused": {"route_not_allowed": 1},
                      "upstream": {"2xx": 4, "3xx": 0, "4xx": 0, "5xx": 0}},
        });
        let text = usage_text(&answer).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("START"), "{text}");
        assert!(lines[2].starts_with("2025-01-02  4 "), "{text}");
        assert!(lines[3].starts_with("total"), "{text}");
        assert_eq!(lines[4], "refused route_not_allowed: 1");
        assert_eq!(lines[5], "key_1 ▁█ (requests per day, most 4)");
        assert!(usage_text(&json!({"buckets": 1})).is_err());
    }
}
