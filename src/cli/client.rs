//! A thin HTTP client of the admin API: sends one request, returns its JSON or the API's error.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, Url, redirect};
use serde_json::Value;

use super::error::CliError;
use super::request::Request;
use super::target::Target;

/// Long enough for a busy gateway, short enough that a wrong address does not hang a script.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The admin API is on loopback or a private network: a connection that takes longer is to a
/// wrong or unreachable address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct AdminClient {
    http: Client,
    base: Url,
    auth: HeaderValue,
}

impl AdminClient {
    pub fn new(target: &Target) -> Result<AdminClient, CliError> {
        let base = Url::parse(&target.url).map_err(|e| CliError::InvalidUrl(e.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(CliError::InvalidUrl(
                "expected http:// or https://".to_string(),
            ));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", target.token))
            .map_err(|_| CliError::InvalidToken)?;
        auth.set_sensitive(true);
        // No redirects: the admin API never sends one, and following it could hand the token elsewhere.
        let http = Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(redirect::Policy::none())
            .build()?;
        Ok(AdminClient { http, base, auth })
    }

    /// Sends the request; `None` means the API answered without a body (204 after delete).
    pub async fn send(&self, request: &Request) -> Result<Option<Value>, CliError> {
        let url = self.url_with_query(&request.path, &request.query);
        self.call(request.method.clone(), url, request.body.as_ref())
            .await
    }

    /// `<base>/v1/<segments…>?<query>`, each segment percent-encoded: for the endpoints
    /// beside `/v1/keys` (admin tokens, audit).
    pub fn v1_url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one call to `url`; `None` means the API answered without a body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Option<Value>, CliError> {
        let mut call = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            call = call.json(body);
        }
        let shown = self.shown_url();
        let response = call
            .send()
            .await
            .map_err(|e| CliError::from_request(e, &shown))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CliError::from_request(e, &shown))?;
        if !status.is_success() {
            return Err(CliError::from_response(status.as_u16(), &text).explained(&shown));
        }
        parse_body(&text)
    }

    /// The base URL as the operator gave it, for messages.
    fn shown_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// `<base>/v1/keys/<segments…>`, each segment percent-encoded.
    fn url(&self, segments: &[String]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["v1", "keys"]).extend(segments);
        }
        url
    }

    /// [`AdminClient::url`] with query parameters.
    fn url_with_query(&self, segments: &[String], query: &[(&str, String)]) -> Url {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

fn parse_body(text: &str) -> Result<Option<Value>, CliError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| CliError::UnexpectedResponse(format!("body is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> Result<AdminClient, CliError> {
        AdminClient::new(&Target {
            url: url.to_string(),
            token: "t0ken".to_string(),
        })
    }

    fn url_of(base: &str, segments: &[&str]) -> String {
        let segments: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
        client(base).ok().unwrap().url(&segments).to_string()
    }

    #[test]
    fn paths_are_built_under_the_base() {
        assert_eq!(
            url_of("http://127.0.0.1:9090", &[]),
            "http://127.0.0.1:9090/v1/keys"
        );
        assert_eq!(
            url_of("http://h:1/", &["k1", "rotate"]),
            "http://h:1/v1/keys/k1/rotate"
        );
        assert_eq!(
            url_of("http://h:1/admin/", &["k1"]),
            "http://h:1/admin/v1/keys/k1"
        );
    }

    #[test]
    fn ids_cannot_leave_their_segment() {
        assert_eq!(
            url_of("http://h:1", &["../x?y#z"]),
            "http://h:1/v1/keys/..%2Fx%3Fy%23z"
        );
    }

    #[test]
    fn bad_urls_and_tokens_are_refused_without_echoing_them() {
        assert!(matches!(
            client("127.0.0.1:9090"),
            Err(CliError::InvalidUrl(_))
        ));
        assert!(matches!(client("ftp://h"), Err(CliError::InvalidUrl(_))));
        let bad_token = AdminClient::new(&Target {
            url: "http://h".to_string(),
            token: "line\nbreak".to_string(),
        });
        let err = bad_token.err().unwrap();
        assert!(!err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn empty_bodies_are_none_and_junk_is_an_error() {
        assert_eq!(parse_body("").unwrap(), None);
        assert_eq!(
            parse_body("{\"a\":1}").unwrap(),
            Some(serde_json::json!({"a": 1}))
        );
        assert!(parse_body("<html>").is_err());
    }
}
