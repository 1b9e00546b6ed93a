//! `--rate-limit`, `--quota`, `--allow-cidr` and their clearing flags, shared by `keys create`
//! and `keys edit`, and the fields of the admin API they become.

use clap::Args;
use serde_json::{Map, Value, json};

/// Per-key limits to set; each is sent only when given.
#[derive(Args, Debug, Default)]
pub struct LimitArgs {
    /// At most REQUESTS per SECONDS, with bursts up to BURST (default REQUESTS), e.g. 100/60 or
    /// 50/1:10
    #[arg(long, value_name = "REQUESTS/SECONDS[:BURST]", value_parser = parse_rate_limit)]
    pub rate_limit: Option<Value>,
    /// At most REQUESTS per calendar day or month (UTC), counting successful requests or all,
    /// e.g. 100000/month or 1000/day:all
    #[arg(long, value_name = "REQUESTS/day|month[:successful|all]", value_parser = parse_quota)]
    pub quota: Option<Value>,
    /// Only clients from this network may use the key, e.g. 203.0.113.0/24 (repeatable)
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub allowed_cidrs: Vec<String>,
}

/// Removing limits, for `keys edit`.
#[derive(Args, Debug, Default)]
pub struct ClearLimitArgs {
    /// Remove the key's rate limit (a `key_defaults` one then applies)
    #[arg(long, conflicts_with = "rate_limit")]
    pub no_rate_limit: bool,
    /// Remove the key's quota (a `key_defaults` one then applies); what was counted stays
    #[arg(long, conflicts_with = "quota")]
    pub no_quota: bool,
    /// Let the key be used from any address
    #[arg(long, conflicts_with = "allowed_cidrs")]
    pub any_address: bool,
}

impl LimitArgs {
    pub fn insert_into(&self, body: &mut Map<String, Value>) {
        if let Some(rate) = &self.rate_limit {
            body.insert("rate_limit".into(), rate.clone());
        }
        if let Some(quota) = &self.quota {
            body.insert("quota".into(), quota.clone());
        }
        if !self.allowed_cidrs.is_empty() {
            body.insert("allowed_cidrs".into(), json!(self.allowed_cidrs));
        }
    }
}

impl ClearLimitArgs {
    pub fn insert_into(&self, body: &mut Map<String, Value>) {
        for (flag, field) in [
            (self.no_rate_limit, "rate_limit"),
            (self.no_quota, "quota"),
            (self.any_address, "allowed_cidrs"),
        ] {
            if flag {
                body.insert(field.into(), Value::Null);
            }
        }
    }
}

fn positive(text: &str, what: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{what} must be a whole number above 0, not {text:?}"))
}

/// `100/60` or `50/1:10`.
fn parse_rate_limit(text: &str) -> Result<Value, String> {
    let (rate, burst) = match text.split_once(':') {
        Some((rate, burst)) => (rate, Some(positive(burst, "BURST")?)),
        None => (text, None),
    };
    let (requests, seconds) = rate
        .split_once('/')
        .ok_or("expected REQUESTS/SECONDS[:BURST], e.g. 100/60")?;
    let mut limit = json!({
        "requests": positive(requests, "REQUESTS")?,
        "window_seconds": positive(seconds, "SECONDS")?,
    });
    if let Some(burst) = burst {
        limit["burst"] = json!(burst);
    }
    Ok(limit)
}

/// `100000/month` or `1000/day:all`.
fn parse_quota(text: &str) -> Result<Value, String> {
    let (quota, counts) = text.split_once(':').unwrap_or((text, "successful"));
    let (requests, period) = quota
        .split_once('/')
        .ok_or("expected REQUESTS/day|month[:successful|all], e.g. 100000/month")?;
    if !["day", "month"].contains(&period) {
        return Err(format!("the period is day or month, not {period:?}"));
    }
    if !["successful", "all"].contains(&counts) {
        return Err(format!("counts is successful or all, not {counts:?}"));
    }
    Ok(json!({
        "requests": positive(requests, "REQUESTS")?,
        "period": period,
        "counts": counts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse() {
        assert_eq!(
            parse_rate_limit("50/1:10").unwrap(),
            json!({"requests": 50, "window_seconds": 1, "burst": 10})
        );
        assert_eq!(
            parse_rate_limit("100/60").unwrap(),
            json!({"requests": 100, "window_seconds": 60})
        );
        assert_eq!(
            parse_quota("1000/day:all").unwrap(),
            json!({"requests": 1000, "period": "day", "counts": "all"})
        );
        assert_eq!(parse_quota("5/month").unwrap()["counts"], "successful");
        for bad in ["100", "0/60", "100/0", "1/1:0", "a/b"] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
        for bad in ["100", "100/week", "100/day:some", "0/day"] {
            assert!(parse_quota(bad).is_err(), "{bad}");
        }
    }
}
