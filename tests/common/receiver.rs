//! A webhook receiver: a real HTTP server that records every delivery (headers and body) and
//! answers as the test says: a status (`answer`), or hangs without answering (`hang`).
#![allow(dead_code)]

use super::kb::{self, Server, full};
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
pub struct Got {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
    pub answered: u16,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

#[derive(Default)]
struct State {
    got: Mutex<Vec<Got>>,
    answer: AtomicU16,
    hang: AtomicBool,
}

pub struct Receiver {
    server: Server,
    state: Arc<State>,
}

impl Receiver {
    /// Answers 204 until told otherwise.
    pub async fn start() -> Receiver {
        let state = Arc::new(State::default());
        state.answer.store(204, Ordering::SeqCst);
        let shared = state.clone();
        let server = kb::serve(move |request, _| {
            let state = shared.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if state.hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let answered = state.answer.load(Ordering::SeqCst);
                state.got.lock().unwrap().push(Got {
                    path: parts.uri.path().to_string(),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                    answered,
                });
                let mut response = Response::new(full("ok"));
                *response.status_mut() = http::StatusCode::from_u16(answered).unwrap();
                if (300..400).contains(&answered) {
                    response
                        .headers_mut()
                        .insert("location", "/redirected".parse().unwrap());
                }
                response
            }
        })
        .await;
        Receiver { server, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.server.addr)
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.state.answer.store(status, Ordering::SeqCst);
    }

    /// Hangs without answering (`true`) or answers again.
    pub fn hang(&self, hang: bool) {
        self.state.hang.store(hang, Ordering::SeqCst);
    }

    /// Every request answered, in arrival order.
    pub fn got(&self) -> Vec<Got> {
        self.state.got.lock().unwrap().clone()
    }

    /// The requests answered 2xx, the first of each `webhook-id` only (as a receiver
    /// de-duplicates), in arrival order.
    pub fn delivered(&self) -> Vec<Got> {
        let mut seen = std::collections::HashSet::new();
        self.got()
            .into_iter()
            .filter(|g| (200..300).contains(&g.answered))
            .filter(|g| seen.insert(g.header("webhook-id").to_string()))
            .collect()
    }

    /// The `data.key.id` of each delivered event, in arrival order.
    pub fn delivered_key_ids(&self) -> Vec<Value> {
        self.delivered()
            .iter()
            .map(|g| g.json()["data"]["key"]["id"].clone())
            .collect()
    }

    pub fn delivered_types(&self) -> Vec<String> {
        self.delivered().iter().map(Got::kind).collect()
    }
}
