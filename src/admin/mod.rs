//! The admin API: its own listener (loopback by default), bearer-token auth, key lifecycle at
//! `/v1/keys`, health at `/healthz` and `/readyz`, Prometheus text at `/metrics`, and its OpenAPI
//! document at `/openapi.json`. Health and metrics need no token: the listener is private.
//! Every other endpoint needs a token whose role allows it ([`access`]); admin tokens at
//! `/v1/admin-tokens`, the audit trail at `/v1/audit`. The web console ([`console`]) is served
//! at `/console/` (`/` leads there) over the same key service and role table.

mod access;
mod audit;
mod console;
mod hygiene;
mod keys;
mod openapi;
mod query;
mod tokens;
mod usage;
mod webhooks;

use crate::body::{self, Body, BoxError};
use crate::events::{Deliverer, WebhookSettings};
use crate::keys::admin_token::Role;
use crate::keys::service::{KeyService, KeyServiceError};
use crate::limits::Limiter;
use crate::metrics::keys::KeyMetrics;
use crate::metrics::{self, StoreOp};
use crate::rejection::error_response;
use crate::server::{ConnInfo, Handler};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

pub struct Admin {
    keys: Arc<KeyService>,
    /// blake3 of the admin token: the presented token is hashed and the hashes compared.
    token_hash: blake3::Hash,
    /// The OpenAPI document, with the permissions this config knows.
    openapi: String,
    prometheus: Option<PrometheusHandle>,
    /// Per-key counters and `kbgate_key_info` for `/metrics`, when per-key metrics are on.
    key_metrics: Option<Arc<KeyMetrics>>,
    /// Where each key's quota stands (`quota_state`); `None`: not shown.
    limiter: Option<Arc<Limiter>>,
    /// The webhook deliverer: its settings check URLs, and it makes retries asked for by hand.
    webhooks: Arc<Deliverer>,
    /// The web console at `/console/`: its sessions and the permissions Edit offers.
    console: console::Console,
    /// `keys.unused_policy` for the sweep on demand.
    hygiene: crate::events::hygiene::HygieneSettings,
}

/// An admin API error: status, stable code and a message meant for the operator.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The `Allow` header of a 405 answer.
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such key.")
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    fn store(error: crate::keys::StoreError) -> ApiError {
        metrics::fixed().store_error(StoreOp::Admin, error.metric_kind());
        tracing::error!(%error, "admin store operation failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The key store is unavailable.",
        )
    }
}

impl From<KeyServiceError> for ApiError {
    fn from(error: KeyServiceError) -> ApiError {
        match error {
            KeyServiceError::NotFound => ApiError::not_found(),
            KeyServiceError::Invalid { field, reason } => {
                ApiError::invalid(format!("{field}: {reason}"))
            }
            KeyServiceError::Store(error) => ApiError::store(error),
        }
    }
}

impl Handler for Admin {
    async fn handle<B>(&self, request: Request<B>, conn: &ConnInfo) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let request = request.map(body::stream);
        let request_id = crate::gateway::request_id(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let result = self.route(request, conn).await;
        let request_id = crate::gateway::request_id_str(&request_id);
        let response = result.unwrap_or_else(|e| {
            let mut response = error_response(e.status, e.code, &e.message, request_id);
            if let Some(allow) = e.allow {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            response
        });
        let status = response.status().as_u16();
        // Scrapes and probes come every few seconds: an INFO line each would drown the log.
        if matches!(path.as_str(), "/metrics" | "/healthz" | "/readyz") {
            tracing::debug!(target: "kbgate::admin", %request_id, %method, %path, status);
        } else {
            tracing::info!(target: "kbgate::admin", %request_id, %method, %path, status);
        }
        response
    }
}

impl Admin {
    /// The admin API over `keys`; its OpenAPI document lists the permissions `keys` accepts.
    pub fn new(keys: Arc<KeyService>, token: &str) -> Admin {
        let every_permission = keys
            .resources()
            .iter()
            .flat_map(|r| [format!("{r}:read"), format!("{r}:write")]);
        Admin {
            console: console::Console::new(every_permission),
            openapi: openapi::document(keys.resources()),
            webhooks: Deliverer::new(keys.store().clone(), WebhookSettings::default()),
            keys,
            token_hash: blake3::hash(token.as_bytes()),
            prometheus: None,
            key_metrics: None,
            limiter: None,
            hygiene: Default::default(),
        }
    }

    /// Sweeps for unused keys on demand under `settings`' policy.
    pub fn with_hygiene(mut self, settings: crate::events::hygiene::HygieneSettings) -> Admin {
        self.hygiene = settings;
        self
    }

    /// Shows each key's `quota_state` as `limiter` counts it.
    pub fn with_limiter(mut self, limiter: Arc<Limiter>) -> Admin {
        self.limiter = Some(limiter);
        self
    }

    /// Serves `/metrics` from `prometheus`, with `key_metrics`' per-key series.
    pub fn with_metrics(
        mut self,
        prometheus: PrometheusHandle,
        key_metrics: Option<Arc<KeyMetrics>>,
    ) -> Admin {
        self.prometheus = Some(prometheus);
        self.key_metrics = key_metrics;
        self
    }

    /// The console's Edit offers `permissions` (those the route table uses) rather than every
    /// permission of every resource.
    pub fn with_route_permissions(
        mut self,
        permissions: impl IntoIterator<Item = String>,
    ) -> Admin {
        self.console = console::Console::new(permissions);
        self
    }

    /// Uses `deliverer` (and its settings) for webhooks.
    pub fn with_webhooks(mut self, deliverer: Arc<Deliverer>) -> Admin {
        self.webhooks = deliverer;
        self
    }

    async fn route(
        &self,
        request: Request<Body>,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, ApiError> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        if console::owns(&path) {
            return Ok(self.console(request, conn).await);
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let endpoint = Endpoint::of(&segments).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such endpoint.")
        })?;
        if !endpoint.methods().contains(&method) {
            return Err(method_not_allowed(endpoint.allow()));
        }
        let needed = match endpoint {
            Endpoint::Healthz => {
                return Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
            }
            Endpoint::Readyz => return Ok(self.readyz().await),
            Endpoint::Metrics => return self.metrics(),
            Endpoint::OpenApi => return Ok(json_text(StatusCode::OK, &self.openapi)),
            endpoint => endpoint.role(&method),
        };
        let actor = self.caller(request.headers()).await?;
        access::require(&actor, needed)?;
        let ctx = access::context(actor, request.headers(), conn);
        let id = segments.get(2).copied().unwrap_or_default();
        let query = request.uri().query().map(str::to_string);
        match endpoint {
            Endpoint::KeyUsage => return self.key_usage(id, query.as_deref()).await,
            Endpoint::Usage => return self.usage_overview(query.as_deref()).await,
            Endpoint::UnusedSweep => return self.unused_sweep(query.as_deref(), &ctx).await,
            _ => {}
        }
        if let Endpoint::Audit = endpoint {
            let query = audit::Query::parse(request.uri().query())?;
            let ndjson = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/x-ndjson"));
            return match ndjson {
                true => Ok(self.audit_export(query)),
                false => self.audit_list(query).await,
            };
        }
        let body = read_body(request).await?;
        match (endpoint, method) {
            (Endpoint::Keys, Method::GET) => self.list(query.as_deref()).await,
            (Endpoint::Keys, _) => self.create(&body, &ctx).await,
            (Endpoint::Key, Method::GET) => self.show(id).await,
            (Endpoint::Key, Method::PATCH) => self.edit(id, &body, &ctx).await,
            (Endpoint::Key, _) => self.delete(id, &ctx).await,
            (Endpoint::Rotate, _) => self.rotate(id, &body, &ctx).await,
            (Endpoint::EndRotation, _) => self.end_rotation(id, &body, &ctx).await,
            (Endpoint::AdminTokens, Method::GET) => self.list_tokens().await,
            (Endpoint::AdminTokens, _) => self.create_token(&body, &ctx).await,
            (Endpoint::AdminToken, _) => self.delete_token(id, &ctx).await,
            (Endpoint::Webhooks, Method::GET) => self.list_webhooks().await,
            (Endpoint::Webhooks, _) => self.create_webhook(&body, &ctx).await,
            (Endpoint::Webhook, Method::GET) => self.show_webhook(id).await,
            (Endpoint::Webhook, Method::PATCH) => self.edit_webhook(id, &body, &ctx).await,
            (Endpoint::Webhook, _) => self.delete_webhook(id, &ctx).await,
            (Endpoint::Deliveries, _) => self.list_deliveries(id).await,
            (Endpoint::RetryDelivery, _) => {
                let delivery = segments.get(4).copied().unwrap_or_default();
                self.retry_delivery(id, delivery).await
            }
            (_, _) => self.audit_verify().await,
        }
    }

    async fn readyz(&self) -> Response<Body> {
        match self.keys.ping().await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            Err(error) => {
                metrics::fixed().store_error(StoreOp::Ping, error.metric_kind());
                tracing::warn!(%error, "readiness: store unreachable");
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "unavailable", "reason": "store unreachable"}),
                )
            }
        }
    }
}

impl Admin {
    fn metrics(&self) -> Result<Response<Body>, ApiError> {
        let handle = self.prometheus.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Metrics are not enabled.",
            )
        })?;
        let text = metrics::render(handle, self.key_metrics.as_ref());
        let mut response = Response::new(body::full(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(response)
    }
}

/// The admin API's paths; each answers only the methods its `methods` lists.
#[derive(Clone, Copy)]
enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    /// `/v1/keys`
    Keys,
    /// `/v1/keys/{id}`
    Key,
    /// `/v1/keys/{id}/rotate`
    Rotate,
    /// `/v1/keys/{id}/rotation/end`
    EndRotation,
    /// `/v1/admin-tokens`
    AdminTokens,
    /// `/v1/admin-tokens/{id}`
    AdminToken,
    /// `/v1/audit`
    Audit,
    /// `/v1/audit/verify`
    AuditVerify,
    /// `/v1/keys/{id}/usage`
    KeyUsage,
    /// `/v1/usage`
    Usage,
    /// `/v1/webhooks`
    Webhooks,
    /// `/v1/webhooks/{id}`
    Webhook,
    /// `/v1/webhooks/{id}/deliveries`
    Deliveries,
    /// `/v1/webhooks/{id}/deliveries/{delivery_id}/retry`
    RetryDelivery,
    /// `/v1/keys/unused-sweep`
    UnusedSweep,
}

impl Endpoint {
    fn of(segments: &[&str]) -> Option<Endpoint> {
        Some(match segments {
            ["healthz"] => Endpoint::Healthz,
            ["readyz"] => Endpoint::Readyz,
            ["metrics"] => Endpoint::Metrics,
            ["openapi.json"] => Endpoint::OpenApi,
            ["v1", "keys"] => Endpoint::Keys,
            ["v1", "keys", "unused-sweep"] => Endpoint::UnusedSweep,
            ["v1", "keys", _] => Endpoint::Key,
            ["v1", "keys", _, "rotate"] => Endpoint::Rotate,
            ["v1", "keys", _, "rotation", "end"] => Endpoint::EndRotation,
            ["v1", "admin-tokens"] => Endpoint::AdminTokens,
            ["v1", "admin-tokens", _] => Endpoint::AdminToken,
            ["v1", "audit"] => Endpoint::Audit,
            ["v1", "audit", "verify"] => Endpoint::AuditVerify,
            ["v1", "keys", _, "usage"] => Endpoint::KeyUsage,
            ["v1", "usage"] => Endpoint::Usage,
            ["v1", "webhooks"] => Endpoint::Webhooks,
            ["v1", "webhooks", _] => Endpoint::Webhook,
            ["v1", "webhooks", _, "deliveries"] => Endpoint::Deliveries,
            ["v1", "webhooks", _, "deliveries", _, "retry"] => Endpoint::RetryDelivery,
            _ => return None,
        })
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Endpoint::Healthz
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::KeyUsage
            | Endpoint::Usage => &[Method::GET],
            Endpoint::Keys | Endpoint::AdminTokens | Endpoint::Webhooks => {
                &[Method::GET, Method::POST]
            }
            Endpoint::Key | Endpoint::Webhook => &[Method::GET, Method::PATCH, Method::DELETE],
            Endpoint::Rotate
            | Endpoint::EndRotation
            | Endpoint::RetryDelivery
            | Endpoint::UnusedSweep => &[Method::POST],
            Endpoint::AdminToken => &[Method::DELETE],
            Endpoint::Audit | Endpoint::AuditVerify | Endpoint::Deliveries => &[Method::GET],
        }
    }

    /// The least role that may call `method` here: viewers read, operators change keys,
    /// admins delete keys and manage admin tokens.
    fn role(self, method: &Method) -> Role {
        match (self, method) {
            (Endpoint::AdminTokens | Endpoint::AdminToken, _) => Role::Admin,
            (
                Endpoint::Webhooks
                | Endpoint::Webhook
                | Endpoint::Deliveries
                | Endpoint::RetryDelivery,
                _,
            ) => Role::Admin,
            (Endpoint::Key, &Method::DELETE) => Role::Admin,
            (_, &Method::GET) => Role::Viewer,
            _ => Role::Operator,
        }
    }

    /// The `Allow` header of a 405: `methods`, as one list.
    fn allow(self) -> &'static str {
        match self.methods() {
            [_, _, _] => "GET, PATCH, DELETE",
            [_, _] => "GET, POST",
            [Method::POST] => "POST",
            [Method::DELETE] => "DELETE",
            _ => "GET",
        }
    }
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("This endpoint answers {allow} only."),
    );
    error.allow = Some(allow);
    error
}

/// The largest admin request body: key changes are small.
const MAX_ADMIN_BODY: usize = 64 * 1024;

async fn read_body(request: Request<Body>) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    // Read frame by frame rather than through `Limited`: its boxed error would need a
    // conversion for every lifetime, which the Send proof of this future cannot see.
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "The request body is too large or was cut off.",
        )
    };
    let mut body = request.into_body();
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| too_large())?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > MAX_ADMIN_BODY {
                return Err(too_large());
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(bytes.freeze())
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_text(status, &value.to_string())
}

fn json_text(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(body::full(text.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
