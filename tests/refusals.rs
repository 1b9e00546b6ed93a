//! Every refusal of DESIGN.md's request path, over real sockets: status, code and JSON body.

mod common;

use common::{Gateway, Upstream, eventually, status_and_code};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_read_key_gets_but_cannot_post() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    let (_, key) = gateway.create_key(json!({"name": "Chatbot"})).await;
    assert_eq!(gateway.get("/v1/article/a1", &key).await, (200, String::new()));
    assert_eq!(gateway.get("/v1/search?query=x", &key).await.0, 200);
    assert_eq!(
        gateway.send("POST", "/v1/article", &key).await,
        (403, "insufficient_permissions".into())
    );
    assert_eq!(upstream.requests().len(), 2, "the refused POST never reached the upstream");
    gateway.shutdown().await;
}
