//! Content events: a write the KB accepted (2xx) on a route that names an event
//! (`routes[].event`) is written to the outbox before the client's response is sent, so an
//! accepted write is never without its event. Data: route, method, path, path parameters, key
//! id and name, the KB's status, the request id and, for a create (POST), the new resource's
//! `id` when the KB answers a small JSON body that holds one.

use crate::body::{self, Body};
use crate::events::Deliverer;
use crate::keys::outbox::Event;
use crate::keys::{KeyStore, StoreError};
use http::{Response, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read for a created resource's id; a larger one (or one without a
/// Content-Length) streams through as always and its event goes without the id.
pub const CREATED_BODY_MAX: u64 = 64 * 1024;

pub struct ContentEvents {
    store: Arc<dyn KeyStore>,
    deliverer: Arc<Deliverer>,
}

/// What the gateway knows of a forwarded write when the KB has answered.
pub struct Write<'a> {
    pub event: &'a str,
    pub template: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub key_id: &'a str,
    pub key_name: &'a str,
    pub status: u16,
    pub request_id: &'a str,
    /// A create's new resource id, from the KB's answer ([`take_created_id`]).
    pub created_id: Option<String>,
}

impl ContentEvents {
    pub fn new(store: Arc<dyn KeyStore>, deliverer: Arc<Deliverer>) -> ContentEvents {
        ContentEvents { store, deliverer }
    }

    /// Writes the write's event to the outbox and wakes the deliverer.
    pub async fn emit(&self, write: &Write<'_>) -> Result<(), StoreError> {
        let mut data = json!({
            "route": write.template,
            "method": write.method,
            "path": write.path,
            "params": params(write.template, write.path),
            "key": {"id": write.key_id, "name": write.key_name},
            "status": write.status,
            "request_id": write.request_id,
        });
        if let Some(id) = &write.created_id {
            data["id"] = Value::String(id.clone());
        }
        self.store
            .append_event(&Event::new(write.event, data))
            .await?;
        self.deliverer.wake();
        Ok(())
    }
}

/// Why the KB's answer could not be read whole.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The body did not arrive within the time allowed.
    Timeout,
    /// The KB's connection failed in the middle of it.
    Failed,
}

/// Reads a created resource's `id` from the KB's answer when it is JSON with a Content-Length
/// up to [`CREATED_BODY_MAX`]: the body is read whole (within `timeout`) and put back as it
/// was, so the client gets the same bytes. Any other answer is left streaming: `Ok(None)`.
pub async fn take_created_id(
    answer: &mut Response<Body>,
    timeout: Duration,
) -> Result<Option<String>, ReadError> {
    let headers = answer.headers();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|length| length <= CREATED_BODY_MAX);
    if !json || !small {
        return Ok(None);
    }
    let streaming = std::mem::replace(answer.body_mut(), body::empty());
    let bytes = tokio::time::timeout(timeout, streaming.collect())
        .await
        .map_err(|_| ReadError::Timeout)?
        .map_err(|_| ReadError::Failed)?
        .to_bytes();
    let id = created_id(&bytes);
    *answer.body_mut() = body::full(bytes);
    Ok(id)
}

/// `id` at the top of a JSON object, or in an object it holds (`{"article": {"id": 7}}`, as
/// KB APIs wrap a resource in its kind); a string or a number.
fn created_id(bytes: &[u8]) -> Option<String> {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(bytes) else {
        return None;
    };
    let id_of = |object: &Map<String, Value>| match object.get("id")? {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    };
    id_of(&top).or_else(|| {
        top.values()
            .find_map(|value| value.as_object().and_then(&id_of))
    })
}

/// The path's values of the template's `{name}` segments (`{name*}`: the rest of the path).
pub fn params(template: &str, path: &str) -> Value {
    let mut found = Map::new();
    let mut parts = path.trim_start_matches('/').split('/');
    for segment in template.trim_start_matches('/').split('/') {
        let Some(part) = parts.next() else { break };
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            continue;
        };
        match name.strip_suffix('*') {
            Some(rest) => {
                let tail: Vec<&str> = std::iter::once(part).chain(parts.by_ref()).collect();
                found.insert(rest.to_string(), Value::String(tail.join("/")));
            }
            None => {
                found.insert(name.to_string(), Value::String(part.to_string()));
            }
        }
    }
    Value::Object(found)
}

#[cfg(test)]
mod tests {
    use super::{created_id, params};
    use serde_json::json;

    #[test]
    fn a_created_id_is_found_at_the_top_or_one_level_in() {
        assert_eq!(created_id(br#"{"id": "a1"}"#), Some("a1".into()));
        assert_eq!(
            created_id(br#"{"article": {"id": 42, "title": "x"}}"#),
            Some("42".into())
        );
        assert_eq!(created_id(br#"{"ok": true, "data": [1]}"#), None);
        assert_eq!(created_id(br#"{"id": null}"#), None);
        assert_eq!(created_id(b"[1, 2]"), None);
        assert_eq!(created_id(b"not json"), None);
    }

    #[test]
    fn params_come_from_the_template() {
        assert_eq!(
            params("/v1/article/{id}", "/v1/article/42"),
            json!({"id": "42"})
        );
        assert_eq!(
            params(
                "/v1/article/{id}/versions/{version}",
                "/v1/article/7/versions/3"
            ),
            json!({"id": "7", "version": "3"})
        );
        assert_eq!(
            params("/static/{path*}", "/static/a/b.css"),
            json!({"path": "a/b.css"})
        );
        assert_eq!(params("/v1/article", "/v1/article"), json!({}));
    }
}
