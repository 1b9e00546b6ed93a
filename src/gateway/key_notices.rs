//! What a proxied response tells the client about its own key: `Kbgate-Key-Expires` (RFC
//! 3339) once the key is within the first of `keys.expiry_warnings` of its expiry, as GitHub
//! does with `GitHub-Authentication-Token-Expiration`; and, for a rotated-out secret still in
//! its grace, `Deprecation` (RFC 9745: `@<unix seconds>`) and `Sunset` (RFC 8594: an
//! HTTP-date), both at the grace's end. A key with no expiry and a current secret costs one
//! branch; nothing is allocated unless a header is due.

use crate::keys::KeyGrant;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

pub const KBGATE_KEY_EXPIRES: HeaderName = HeaderName::from_static("kbgate-key-expires");
const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// When responses start announcing a key's expiry; None: never.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyNotices {
    lead: Option<TimeDelta>,
}

impl KeyNotices {
    pub fn new(lead: Option<Duration>) -> KeyNotices {
        KeyNotices {
            lead: lead.and_then(|d| TimeDelta::from_std(d).ok()),
        }
    }

    /// Adds the headers due for `key` to a response's `headers`.
    pub fn write(&self, key: &KeyGrant, headers: &mut HeaderMap) {
        let (expires, retires) = (key.expires_at(), key.secret_retires_at());
        if expires.is_none() && retires.is_none() {
            return;
        }
        let now = Utc::now();
        if let (Some(at), Some(lead)) = (expires, self.lead)
            && at - now <= lead
        {
            headers.insert(
                KBGATE_KEY_EXPIRES,
                value(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            );
        }
        if let Some(end) = retires.filter(|end| *end > now) {
            headers.insert(DEPRECATION, value(format!("@{}", end.timestamp())));
            headers.insert(SUNSET, value(http_date(end)));
        }
    }
}

/// RFC 9110's IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("dates are visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        let at = DateTime::from_timestamp(784111777, 0).unwrap();
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
