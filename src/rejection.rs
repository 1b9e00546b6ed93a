//! Every refusal the gateway can give, mapped in one place to a status, a stable code and one JSON
//! body: `{"error":{"code":"…","message":"…"}}`. Nothing internal (store errors, upstream
//! addresses) is ever part of the message.

use crate::body::{self, Body};
use http::{HeaderValue, Response, StatusCode, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    InvalidPath,
    MissingKey,
    AmbiguousKey,
    InvalidKey,
    KeyDisabled,
    KeyExpired,
    StoreUnavailable,
    RouteNotAllowed,
    InsufficientPermissions,
    UpstreamUnavailable,
    UpstreamTimeout,
}

impl Rejection {
    pub const ALL: [Rejection; 11] = [
        Rejection::InvalidPath,
        Rejection::MissingKey,
        Rejection::AmbiguousKey,
        Rejection::InvalidKey,
        Rejection::KeyDisabled,
        Rejection::KeyExpired,
        Rejection::StoreUnavailable,
        Rejection::RouteNotAllowed,
        Rejection::InsufficientPermissions,
        Rejection::UpstreamUnavailable,
        Rejection::UpstreamTimeout,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Rejection::InvalidPath | Rejection::AmbiguousKey => StatusCode::BAD_REQUEST,
            Rejection::MissingKey
            | Rejection::InvalidKey
            | Rejection::KeyDisabled
            | Rejection::KeyExpired => StatusCode::UNAUTHORIZED,
            Rejection::RouteNotAllowed | Rejection::InsufficientPermissions => {
                StatusCode::FORBIDDEN
            }
            Rejection::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable, machine-readable code clients and dashboards key on.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::InvalidPath => "invalid_path",
            Rejection::MissingKey => "missing_key",
            Rejection::AmbiguousKey => "ambiguous_key",
            Rejection::InvalidKey => "invalid_key",
            Rejection::KeyDisabled => "key_disabled",
            Rejection::KeyExpired => "key_expired",
            Rejection::StoreUnavailable => "store_unavailable",
            Rejection::RouteNotAllowed => "route_not_allowed",
            Rejection::InsufficientPermissions => "insufficient_permissions",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
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
            Rejection::UpstreamUnavailable => "The knowledge base could not be reached.",
            Rejection::UpstreamTimeout => "The knowledge base did not answer in time.",
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut response = error_response(self.status(), self.code(), self.message(), request_id);
        if self.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
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
                (400, "invalid_path"),
                (401, "missing_key"),
                (400, "ambiguous_key"),
                (401, "invalid_key"),
                (401, "key_disabled"),
                (401, "key_expired"),
                (503, "store_unavailable"),
                (403, "route_not_allowed"),
                (403, "insufficient_permissions"),
                (502, "upstream_unavailable"),
                (504, "upstream_timeout"),
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
}
