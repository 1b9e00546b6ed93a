//! The access line: one per gateway request, target [`ACCESS_TARGET`], laid out by
//! `log_format` (its fast path knows these fields only as plain strings and numbers).
//!
//! When it is written: a response whose body is already complete when its headers are ready
//! (a refusal, a HEAD answer, a 204 or 304) is logged then; a forwarded body is counted as it
//! is sent and logged when it ends, or when it is dropped unfinished (the client went away, the
//! KB cut it short), so `bytes_out` is what was handed to the connection. `latency_ms` is
//! always the time to the response headers, as the request-duration histogram measures it.

use crate::body::{self, Body, BoxError};
use crate::log_format::ACCESS_TARGET;
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body as _, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What counts the request body bytes read so far (the gateway's body guard).
pub trait BytesIn: Send + Sync {
    fn bytes_in(&self) -> u64;
}

/// Everything the line says, owned, so it can be written after the handler has returned.
pub struct AccessLine {
    pub request_id: HeaderValue,
    /// The socket peer's address (as sent in `X-Forwarded-For`).
    pub client_ip: HeaderValue,
    pub key_id: Option<Arc<str>>,
    pub method: Method,
    /// The canonical path, never the query (it may hold a key); `None` before it was known.
    pub path: Option<String>,
    /// The route template.
    pub route: Option<Arc<str>>,
    pub status: u16,
    /// `forwarded` or the refusal code.
    pub outcome: &'static str,
    /// Request body bytes read from the client, counted as the body is read.
    pub bytes_in: Option<Arc<dyn BytesIn>>,
    pub latency: Duration,
    pub upstream: Option<Duration>,
    pub user_agent: Option<HeaderValue>,
}

impl AccessLine {
    /// Writes the line now when `response`'s body is already known whole; else wraps the body
    /// so that the line is written when the body ends or is dropped.
    pub fn finish(self, response: http::Response<Body>) -> http::Response<Body> {
        let body = response.body();
        if body.is_end_stream() {
            self.write(0);
            return response;
        }
        let local = self.outcome != "forwarded";
        match body.size_hint().exact() {
            // A refusal's JSON: made here, sent whole.
            Some(size) if local => {
                self.write(size);
                response
            }
            _ => response.map(|inner| {
                body::stream(LoggedBody {
                    inner,
                    sent: 0,
                    line: Some(self),
                })
            }),
        }
    }

    fn write(&self, bytes_out: u64) {
        let user_agent = self
            .user_agent
            .as_ref()
            .map(|value| String::from_utf8_lossy(value.as_bytes()));
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %self.request_id.to_str().unwrap_or("-"),
            client_ip = %self.client_ip.to_str().unwrap_or("-"),
            key_id = self.key_id.as_deref().unwrap_or("-"),
            method = %self.method,
            path = self.path.as_deref().unwrap_or("-"),
            route = self.route.as_deref().unwrap_or("-"),
            status = self.status,
            outcome = self.outcome,
            bytes_in = self.bytes_in.as_ref().map_or(0, |n| n.bytes_in()),
            bytes_out,
            latency_ms = millis(self.latency),
            upstream_ms = self.upstream.map(millis),
            user_agent = user_agent.as_deref().unwrap_or("-"),
        );
    }
}

/// Milliseconds with three decimals (whole microseconds), so log lines stay short and exact.
pub fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// A response body that counts what passes and writes the access line once, at its end.
struct LoggedBody {
    inner: Body,
    sent: u64,
    line: Option<AccessLine>,
}

impl LoggedBody {
    fn done(&mut self) {
        if let Some(line) = self.line.take() {
            line.write(self.sent);
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, |data| data.len() as u64);
                if this.inner.is_end_stream() {
                    this.done();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
