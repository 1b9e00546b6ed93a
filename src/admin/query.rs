//! Query parameters of the admin API: parsed once, each error naming its parameter (422
//! `invalid_request`, "limit: …"). Durations take the config's syntax (`30d`, `12h`, `15m`,
//! `1s`), times RFC 3339.

use super::ApiError;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// 9000-01-01T00:00:00Z.
const MAX_TIME_SECS: i64 = 221_845_392_000;

/// The parameters of one request, by name.
pub(super) struct Params(HashMap<String, String>);

impl Params {
    /// Parses `query`; a parameter not in `known`, or given twice, is an error.
    pub(super) fn parse(query: Option<&str>, known: &[&str]) -> Result<Params, ApiError> {
        let mut params = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, value) = (decode(name)?, decode(value)?);
            if !known.contains(&name.as_str()) {
                return Err(ApiError::invalid(format!(
                    "{name}: unknown parameter (known: {})",
                    known.join(", ")
                )));
            }
            if params.insert(name.clone(), value).is_some() {
                return Err(ApiError::invalid(format!("{name}: given more than once")));
            }
        }
        Ok(Params(params))
    }

    pub(super) fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A parameter parsed by `parse`, whose error is named after the parameter.
    pub(super) fn get<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|text| {
                parse(text).map_err(|reason| ApiError::invalid(format!("{name}: {reason}")))
            })
            .transpose()
    }

    /// A whole number in `range`.
    pub(super) fn number(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<Option<usize>, ApiError> {
        self.get(name, |text| {
            text.parse::<usize>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    format!(
                        "must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    )
                })
        })
    }

    pub(super) fn duration(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        self.get(name, |text| {
            humantime::parse_duration(text)
                .map_err(|_| format!("{text:?} is not a duration (e.g. 30d, 12h, 15m, 1s)"))
        })
    }

    /// An RFC 3339 time from 1970 to 9000: bucket bounds computed from it stay printable as
    /// RFC 3339 (which has four-digit years).
    pub(super) fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name, |text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .filter(|t| (0..MAX_TIME_SECS).contains(&t.timestamp()))
                .ok_or_else(|| format!("{text:?} is not an RFC 3339 time from 1970 to 9000"))
        })
    }

    /// One of `choices` (their names), as its value.
    pub(super) fn choice<T: Copy>(
        &self,
        name: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ApiError> {
        self.get(name, |text| {
            choices
                .iter()
                .find(|(n, _)| *n == text)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                    format!("must be one of {}", names.join(", "))
                })
        })
    }
}

/// Percent-decodes a query component (`+` is a space, as forms send it).
fn decode(text: &str) -> Result<String, ApiError> {
    let text = text.replace('+', " ");
    percent_encoding::percent_decode_str(&text)
        .decode_utf8()
        .map(|t| t.into_owned())
        .map_err(|_| ApiError::invalid("the query string is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded_and_checked() {
        let params = Params::parse(Some("q=chat+bot%21&limit=5"), &["q", "limit"]).unwrap();
        assert_eq!(params.text("q"), Some("chat bot!"));
        assert_eq!(params.number("limit", 1..=10).unwrap(), Some(5));
        let err = params.number("limit", 6..=10).unwrap_err();
        assert!(err.message.starts_with("limit: "), "{}", err.message);
        let err = Params::parse(Some("limt=5"), &["limit"]).err().unwrap();
        assert!(err.message.starts_with("limt: unknown"), "{}", err.message);
        assert!(Params::parse(Some("q=a&q=b"), &["q"]).is_err());
        let params =
            Params::parse(Some("d=30d&t=2026-01-02T03:04:05Z&x=bad"), &["d", "t", "x"]).unwrap();
        assert_eq!(
            params.duration("d").unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert!(params.time("t").unwrap().is_some());
        assert!(params.duration("x").is_err());
        assert!(params.time("x").is_err());
        assert!(params.choice("x", &[("a", 1)]).is_err());
    }
}
