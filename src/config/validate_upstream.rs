//! The `upstream` section: the KB's URL, the headers and query parameters injected into every
//! forwarded request, the connection settings; each error naming its field.

use super::schema::RawUpstream;
use super::{ConfigError, field_error};
use crate::upstream::UpstreamConfig;
use http::{HeaderName, HeaderValue, Uri};

impl RawUpstream {
    pub(super) fn validate(self) -> Result<UpstreamConfig, ConfigError> {
        let uri: Uri = self.url.parse().map_err(|e| {
            field_error("upstream.url", format!("{:?} is not a URL: {e}", self.url))
        })?;
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "http" && scheme != "https" {
            return Err(field_error(
                "upstream.url",
                "must start with http:// or https://",
            ));
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(field_error("upstream.url", "must name a host"));
        };
        if uri.query().is_some() {
            return Err(field_error(
                "upstream.url",
                "must not have a query; use upstream.inject.query",
            ));
        }
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| field_error("upstream.url", e.to_string()))?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        let mut inject_headers = Vec::new();
        for (name, value) in &self.inject.headers {
            let field = format!("upstream.inject.headers.{name}");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| field_error(&field, "is not a valid header name"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| field_error(&field, "is not a valid header value"))?;
            value.set_sensitive(true);
            inject_headers.push((name, value));
        }
        let inject_query = self
            .inject
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect::<Vec<_>>()
            .join("&");
        if let Some(ca) = &self.ca
            && !ca.is_file()
        {
            return Err(field_error(
                "upstream.ca",
                format!("{} is not a readable file", ca.display()),
            ));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(field_error(
                "upstream.timeout",
                "timeouts must be above zero",
            ));
        }
        Ok(UpstreamConfig {
            origin,
            base_path,
            inject_headers,
            inject_query,
            inject_query_names: self.inject.query.into_keys().collect(),
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            ca: self.ca,
            http2: self.http2,
            forward_underscore_headers: self.forward_underscore_headers,
            preserve_host: self.preserve_host,
            public_origin: None,
        })
    }
}

fn encode_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
