//! Every refusal the gateway can give, mapped in one place to a status, a stable code and one JSON
//! body: `{"error":{"code":"…","message":"…"}}`. Nothing internal (store errors, upstream
//! addresses) is ever part of the message.

use crate::body::{self, Body};
use crate::keys::VerifyError;
use crate::limits::LimitError;
use crate::path::PathError;
use crate::upstream::ForwardError;
use http::{HeaderValue, Response, StatusCode, header};

/// Every method a route may name (see `authz`), for the `Allow` header of a 405.
const ROUTABLE_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Framing or Host the gateway will not guess at (RFC 9112 §3.2, §6.1).
    BadRequest,
    ConnectNotAllowed,
    UpgradeNotAllowed,
    UriTooLong,
    HeadersTooLarge,
    BodyTooLarge,
    BodyTimeout,
    InvalidPath,
    MissingKey,
    AmbiguousKey,
    InvalidKey,
    KeyDisabled,
    KeyExpired,
    StoreUnavailable,
    RouteNotAllowed,
    InsufficientPermissions,
    QueryNotAllowed,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// A CORS preflight from an origin not in `cors.allowed_origins`.
    OriginNotAllowed,
    /// The client's address is not in the key's `allowed_cidrs`.
    IpNotAllowed,
    /// The key's rate limit is used up for now (429 with `Retry-After`).
    RateLimited,
    /// The key's quota is used up until its period ends (429 with `Retry-After`).
    QuotaExceeded,
}

/// Where in the request path a refusal falls, which says what it tells of the key check
/// (`kbgate_auth_decisions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    /// Before any key was looked at: the request itself, its path, a CORS preflight. No
    /// auth decision.
    Request,
    /// The key check said no: no key, a bad one, one without the permission. Counted under
    /// its code.
    Auth,
    /// After the key was allowed: a rate or quota limit said no, the body or the KB failed.
    /// Counted as allowed.
    Forwarding,
}

impl Rejection {
    pub const ALL: [Rejection; 23] = [
        Rejection::BadRequest,
        Rejection::ConnectNotAllowed,
        Rejection::UpgradeNotAllowed,
        Rejection::UriTooLong,
        Rejection::HeadersTooLarge,
        Rejection::BodyTooLarge,
        Rejection::BodyTimeout,
        Rejection::InvalidPath,
        Rejection::MissingKey,
        Rejection::AmbiguousKey,
        Rejection::InvalidKey,
        Rejection::KeyDisabled,
        Rejection::KeyExpired,
        Rejection::StoreUnavailable,
        Rejection::RouteNotAllowed,
        Rejection::InsufficientPermissions,
        Rejection::QueryNotAllowed,
        Rejection::UpstreamUnavailable,
        Rejection::UpstreamTimeout,
        Rejection::OriginNotAllowed,
        Rejection::IpNotAllowed,
        Rejection::RateLimited,
        Rejection::QuotaExceeded,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Rejection::BadRequest
            | Rejection::UpgradeNotAllowed
            | Rejection::InvalidPath
            | Rejection::AmbiguousKey => StatusCode::BAD_REQUEST,
            Rejection::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::UriTooLong => StatusCode::URI_TOO_LONG,
            Rejection::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::MissingKey
            | Rejection::InvalidKey
            | Rejection::KeyDisabled
            | Rejection::KeyExpired => StatusCode::UNAUTHORIZED,
            Rejection::RouteNotAllowed
            | Rejection::InsufficientPermissions
            | Rejection::QueryNotAllowed
            | Rejection::OriginNotAllowed
            | Rejection::IpNotAllowed => StatusCode::FORBIDDEN,
            Rejection::RateLimited | Rejection::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Rejection::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable, machine-readable code clients and dashboards key on.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::BadRequest => "bad_request",
            Rejection::ConnectNotAllowed => "connect_not_allowed",
            Rejection::UpgradeNotAllowed => "upgrade_not_allowed",
            Rejection::UriTooLong => "uri_too_long",
            Rejection::HeadersTooLarge => "headers_too_large",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::InvalidPath => "invalid_path",
            Rejection::MissingKey => "missing_key",
            Rejection::AmbiguousKey => "ambiguous_key",
            Rejection::InvalidKey => "invalid_key",
            Rejection::KeyDisabled => "key_disabled",
            Rejection::KeyExpired => "key_expired",
            Rejection::StoreUnavailable => "store_unavailable",
            Rejection::RouteNotAllowed => "route_not_allowed",
            Rejection::InsufficientPermissions => "insufficient_permissions",
            Rejection::QueryNotAllowed => "query_not_allowed",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::IpNotAllowed => "ip_not_allowed",
            Rejection::RateLimited => "rate_limited",
            Rejection::QuotaExceeded => "quota_exceeded",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Rejection::BadRequest => {
                "The request is malformed: check its Host header, Transfer-Encoding and body framing."
            }
            Rejection::ConnectNotAllowed => {
                "CONNECT tunnels are not available through the gateway."
            }
            Rejection::UpgradeNotAllowed => {
                "Protocol upgrades (Upgrade, h2c, WebSocket) are not available through the gateway."
            }
            Rejection::UriTooLong => "The request URI is too long.",
            Rejection::HeadersTooLarge => "The request header fields are too large.",
            Rejection::BodyTooLarge => "The request body is larger than this route accepts.",
            Rejection::BodyTimeout => "The request body did not arrive in time.",
            Rejection::InvalidPath => "The request path is not in canonical form.",
            Rejection::MissingKey => {
                "An API key is required: send it as 'Authorization: Bearer <key>', 'X-Api-Key' or '?key='."
            }
            Rejection::AmbiguousKey => "The request carries more than one different API key.",
            Rejection::InvalidKey => "The API key is not valid.",
            Rejection::KeyDisabled => "The API key has been disabled.",
            Rejection::KeyExpired => "The API key has expired.",
            Rejection::StoreUnavailable => {
                "The key store is unavailable; the key could not be verified. Try again shortly."
            }
            Rejection::RouteNotAllowed => {
                "This method and path are not available through the gateway."
            }
            Rejection::InsufficientPermissions => {
                "The API key does not have the permission this request needs."
            }
            Rejection::QueryNotAllowed => {
                "A query parameter of this request is not allowed on this route."
            }
            Rejection::UpstreamUnavailable => "The knowledge base could not be reached.",
            Rejection::UpstreamTimeout => "The knowledge base did not answer in time.",
            Rejection::OriginNotAllowed => {
                "This origin may not call the gateway from a browser (it is not in cors.allowed_origins)."
            }
            Rejection::IpNotAllowed => "The API key may not be used from this address.",
            Rejection::RateLimited => {
                "The API key's rate limit is reached; retry after the time in Retry-After."
            }
            Rejection::QuotaExceeded => {
                "The API key's quota for this period is used up; retry after the time in Retry-After."
            }
        }
    }

    /// Where this refusal falls (see [`RefusalClass`]): a new refusal is classed here, in
    /// the one match that must name it.
    pub fn class(self) -> RefusalClass {
        match self {
            Rejection::BadRequest
            | Rejection::ConnectNotAllowed
            | Rejection::UpgradeNotAllowed
            | Rejection::UriTooLong
            | Rejection::HeadersTooLarge
            | Rejection::InvalidPath
            | Rejection::OriginNotAllowed => RefusalClass::Request,
            Rejection::MissingKey
            | Rejection::AmbiguousKey
            | Rejection::InvalidKey
            | Rejection::KeyDisabled
            | Rejection::KeyExpired
            | Rejection::StoreUnavailable
            | Rejection::RouteNotAllowed
            | Rejection::InsufficientPermissions
            | Rejection::QueryNotAllowed
            | Rejection::IpNotAllowed => RefusalClass::Auth,
            Rejection::RateLimited
            | Rejection::QuotaExceeded
            | Rejection::BodyTooLarge
            | Rejection::BodyTimeout
            | Rejection::UpstreamUnavailable
            | Rejection::UpstreamTimeout => RefusalClass::Forwarding,
        }
    }

    /// The codes of the refusals that are auth decisions, for the metrics to register at 0.
    pub fn auth_codes() -> impl Iterator<Item = &'static str> {
        Rejection::ALL
            .into_iter()
            .filter(|r| r.class() == RefusalClass::Auth)
            .map(Rejection::code)
    }

    /// Refusals after which the rest of the connection cannot be trusted or is not worth
    /// reading: the framing was doubtful, or an unread body may still be on its way.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Rejection::BadRequest | Rejection::BodyTooLarge | Rejection::BodyTimeout
        )
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut response = error_response(self.status(), self.code(), self.message(), request_id);
        let headers = response.headers_mut();
        match self.status() {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static(ROUTABLE_METHODS));
            }
            _ => {}
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<VerifyError> for Rejection {
    fn from(error: VerifyError) -> Rejection {
        match error {
            VerifyError::Unknown => Rejection::InvalidKey,
            VerifyError::Disabled => Rejection::KeyDisabled,
            VerifyError::Expired => Rejection::KeyExpired,
            VerifyError::StoreUnavailable => Rejection::StoreUnavailable,
        }
    }
}

impl From<ForwardError> for Rejection {
    fn from(error: ForwardError) -> Rejection {
        match error {
            ForwardError::Unavailable => Rejection::UpstreamUnavailable,
            ForwardError::Timeout => Rejection::UpstreamTimeout,
            // Only a path and query the gateway itself let through can fail this way.
            ForwardError::InvalidTarget => Rejection::InvalidPath,
        }
    }
}

impl From<LimitError> for Rejection {
    fn from(error: LimitError) -> Rejection {
        match error {
            LimitError::RateLimited => Rejection::RateLimited,
            LimitError::QuotaExceeded => Rejection::QuotaExceeded,
            LimitError::StoreUnavailable => Rejection::StoreUnavailable,
        }
    }
}

impl From<PathError> for Rejection {
    fn from(_: PathError) -> Rejection {
        Rejection::InvalidPath
    }
}

/// The one JSON error body, shared with the admin API.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Body> {
    let json = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = Response::new(body::full(json.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Pins the contract of DESIGN.md: a change here is a breaking change for clients.
    #[test]
    fn statuses_and_codes_are_pinned() {
        let table: Vec<(u16, &str)> = Rejection::ALL
            .iter()
            .map(|r| (r.status().as_u16(), r.code()))
            .collect();
        assert_eq!(
            table,
            vec![
                (400, "bad_request"),
                (405, "connect_not_allowed"),
                (400, "upgrade_not_allowed"),
                (414, "uri_too_long"),
                (431, "headers_too_large"),
                (413, "body_too_large"),
                (408, "body_timeout"),
                (400, "invalid_path"),
                (401, "missing_key"),
                (400, "ambiguous_key"),
                (401, "invalid_key"),
                (401, "key_disabled"),
                (401, "key_expired"),
                (503, "store_unavailable"),
                (403, "route_not_allowed"),
                (403, "insufficient_permissions"),
                (403, "query_not_allowed"),
                (502, "upstream_unavailable"),
                (504, "upstream_timeout"),
                (403, "origin_not_allowed"),
                (403, "ip_not_allowed"),
                (429, "rate_limited"),
                (429, "quota_exceeded"),
            ]
        );
    }

    /// `kbgate_auth_decisions_total`'s outcomes, as the README lists them.
    #[test]
    fn auth_decisions_are_the_key_refusals() {
        let mut codes: Vec<&str> = Rejection::auth_codes().collect();
        codes.sort_unstable();
        assert_eq!(
            codes,
            [
                "ambiguous_key",
                "insufficient_permissions",
                "invalid_key",
                "ip_not_allowed",
                "key_disabled",
                "key_expired",
                "missing_key",
                "query_not_allowed",
                "route_not_allowed",
                "store_unavailable",
            ]
        );
    }

    #[tokio::test]
    async fn body_is_the_one_json_shape_with_request_id() {
        let response = Rejection::KeyDisabled.into_response("req-1");
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["x-request-id"], "req-1");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(response.headers()["content-type"], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"]["code"], "key_disabled");
        assert_eq!(json["error"]["message"], Rejection::KeyDisabled.message());
        assert_eq!(json.as_object().unwrap().len(), 1);
    }

    #[test]
    fn doubtful_framing_closes_the_connection() {
        for rejection in Rejection::ALL {
            let response = rejection.into_response("req-1");
            assert_eq!(
                response.headers().get("connection").is_some(),
                rejection.closes_connection(),
                "{rejection:?}"
            );
        }
        assert!(Rejection::BadRequest.closes_connection());
        assert!(!Rejection::InvalidKey.closes_connection());
        let response = Rejection::ConnectNotAllowed.into_response("req-1");
        assert_eq!(response.headers()["allow"], ROUTABLE_METHODS);
    }
}
