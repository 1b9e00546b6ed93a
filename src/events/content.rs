//! Content events: a write the KB accepted (2xx) on a route that names an event
//! (`routes[].event`) is written to the outbox before the client's response is sent, so an
//! accepted write is never without its event. Data: route, method, path, path parameters, key
//! id and name, the KB's status and the request id.

use crate::events::Deliverer;
use crate::keys::outbox::Event;
use crate::keys::{KeyStore, StoreError};
use serde_json::{Map, Value, json};
use std::sync::Arc;

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
}

impl ContentEvents {
    pub fn new(store: Arc<dyn KeyStore>, deliverer: Arc<Deliverer>) -> ContentEvents {
        ContentEvents { store, deliverer }
    }

    /// Writes the write's event to the outbox and wakes the deliverer.
    pub async fn emit(&self, write: &Write<'_>) -> Result<(), StoreError> {
        let data = json!({
            "route": write.template,
            "method": write.method,
            "path": write.path,
            "params": params(write.template, write.path),
            "key": {"id": write.key_id, "name": write.key_name},
            "status": write.status,
            "request_id": write.request_id,
        });
        self.store
            .append_event(&Event::new(write.event, data))
            .await?;
        self.deliverer.wake();
        Ok(())
    }
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
    use super::params;
    use serde_json::json;

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
