//! The access line: one per gateway request, target [`ACCESS_TARGET`], laid out by
//! `log_format` (its fast path knows these fields only as plain strings and numbers).
//!
//! When it is written: a response whose body is already complete when its headers are ready
//! (a refusal, a HEAD answer, a 204 or 304) is logged then; a forwarded body is counted as it
//! is sent and logged when it ends, or when it is dropped unfinished (the client went away, the
//! KB cut it short), so `bytes_out` is what was handed to the connection. `latency_ms` is
//! always the time to the response headers, as the request-duration histogram measures it.

use crate::body::{self, Body, BoxError};
use crate::log_direct;
use crate::log_format::{ACCESS_TARGET, Fields, LineWrite, Name, field_name};
use crate::metrics::requests::FORWARDED;
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body as _, Frame, SizeHint};
use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Level;

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
        let local = self.outcome != FORWARDED;
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
        match log_direct::installed() {
            Some(direct) if tracing::enabled!(target: ACCESS_TARGET, Level::INFO) => {
                direct.write(|fields| self.write_fields(bytes_out, fields));
            }
            Some(_) => {}
            None => self.write_through_tracing(bytes_out),
        }
    }

    /// The fields in the order and the form of [`AccessLine::write_through_tracing`]. Inlined
    /// into the line's writer: called, it costs ~150 instructions more per line.
    #[inline(always)]
    fn write_fields<W: LineWrite>(&self, bytes_out: u64, fields: &mut Fields<'_, W>) {
        fields.header(&REQUEST_ID, self.request_id.as_bytes());
        fields.header(&CLIENT_IP, self.client_ip.as_bytes());
        fields.str(&KEY_ID, self.key_id.as_deref().unwrap_or("-"));
        fields.display(&METHOD, self.method.as_str());
        fields.str(&PATH, self.path.as_deref().unwrap_or("-"));
        fields.str(&ROUTE, self.route.as_deref().unwrap_or("-"));
        fields.u64(&STATUS, self.status.into());
        fields.str(&OUTCOME, self.outcome);
        fields.u64(&BYTES_IN, self.bytes_in());
        fields.u64(&BYTES_OUT, bytes_out);
        fields.millis(&LATENCY_MS, micros(self.latency));
        if let Some(upstream) = self.upstream {
            fields.millis(&UPSTREAM_MS, micros(upstream));
        }
        let user_agent = self.user_agent.as_ref();
        fields.bytes(&USER_AGENT, user_agent.map_or(b"-", HeaderValue::as_bytes));
    }

    /// The line as a tracing event, for a process that has not installed [`log_direct`].
    fn write_through_tracing(&self, bytes_out: u64) {
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
            bytes_in = self.bytes_in(),
            bytes_out,
            latency_ms = millis(self.latency),
            upstream_ms = self.upstream.map(millis),
            user_agent = &*self.user_agent(),
        );
    }

    fn bytes_in(&self) -> u64 {
        self.bytes_in.as_ref().map_or(0, |n| n.bytes_in())
    }

    /// The user agent as text (it is client input: invalid UTF-8 is replaced), `-` for none.
    fn user_agent(&self) -> Cow<'_, str> {
        self.user_agent
            .as_ref()
            .map_or(Cow::Borrowed("-"), |value| {
                String::from_utf8_lossy(value.as_bytes())
            })
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

// The access line's field names, as [`AccessLine::write_through_tracing`] names them.
const REQUEST_ID: Name = field_name!("request_id");
const CLIENT_IP: Name = field_name!("client_ip");
const KEY_ID: Name = field_name!("key_id");
const METHOD: Name = field_name!("method");
const PATH: Name = field_name!("path");
const ROUTE: Name = field_name!("route");
const STATUS: Name = field_name!("status");
const OUTCOME: Name = field_name!("outcome");
const BYTES_IN: Name = field_name!("bytes_in");
const BYTES_OUT: Name = field_name!("bytes_out");
const LATENCY_MS: Name = field_name!("latency_ms");
const UPSTREAM_MS: Name = field_name!("upstream_ms");
const USER_AGENT: Name = field_name!("user_agent");

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
        // Written where it lies and then dropped: taking the line out first would copy it.
        if let Some(line) = &self.line {
            line.write(self.sent);
            self.line = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_format::{LineBuf, LineFormat, tests::Captured, write_access_line};
    use crate::log_sink::LogSink;

    struct Counted(u64);

    impl BytesIn for Counted {
        fn bytes_in(&self) -> u64 {
            self.0
        }
    }

    fn line(user_agent: &[u8], key: bool, upstream: Option<u64>, latency: u64) -> AccessLine {
        AccessLine {
            request_id: HeaderValue::from_static("abc-1"),
            client_ip: HeaderValue::from_static("2001:db8::1"),
            key_id: key.then(|| Arc::from("key_1")),
            method: Method::PATCH,
            path: key.then(|| "/v1/article/a%20b".to_string()),
            route: Some(Arc::from("/v1/article/{id}")),
            status: 201,
            outcome: "forwarded",
            bytes_in: key.then(|| Arc::new(Counted(12)) as Arc<dyn BytesIn>),
            latency: Duration::from_micros(latency),
            upstream: upstream.map(Duration::from_micros),
            user_agent: HeaderValue::from_bytes(user_agent).ok(),
        }
    }

    /// The line as the tracing route writes it through [`LineFormat`].
    fn through_tracing(line: &AccessLine, json: bool) -> String {
        let captured = Captured::default();
        let (sink, guard) = LogSink::new(Box::new(captured.clone()));
        let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(sink);
        let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = match json {
            false => Box::new(builder.event_format(LineFormat::text()).finish()),
            true => Box::new(builder.json().event_format(LineFormat::json()).finish()),
        };
        tracing::subscriber::with_default(subscriber, || line.write_through_tracing(77));
        drop(guard);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    fn direct(line: &AccessLine, json: bool) -> String {
        let mut text = LineBuf::new();
        write_access_line(&mut text, json, Level::INFO, |fields| {
            line.write_fields(77, fields)
        })
        .unwrap();
        String::from_utf8(text.as_bytes().to_vec()).unwrap()
    }

    /// What follows the timestamp, the one part two lines may differ in.
    fn after_timestamp(line: &str, json: bool) -> &str {
        let at = match json {
            false => line.find(' ').unwrap(),
            true => line.find("\",\"level\"").unwrap(),
        };
        &line[at..]
    }

    #[test]
    fn the_direct_line_is_byte_for_byte_the_tracing_line() {
        let agents: [&[u8]; 4] = [
            b"curl/8.5.0",
            b"Mozilla/5.0 (\"x\") \\ \t tab",
            b"caf\xc3\xa9 \xff\xfe bytes",
            b"",
        ];
        for json in [false, true] {
            for (i, agent) in agents.iter().enumerate() {
                // Request ids and addresses the gateway would not make or pass: quotes, a
                // backslash and a tab; text that is not ASCII; bytes that are not text.
                let odd: [&[u8]; 4] = [b"abc-1", b"a\"b\\c\td", b"caf\xc3\xa9", b"\xff\xfe"];
                for (key, upstream, latency) in [
                    (true, Some(2_000_000), 1_500),
                    (false, None, 42),
                    (true, Some(0), 1_234_567),
                ] {
                    let mut line = line(agent, key, upstream, latency + i as u64);
                    line.request_id = HeaderValue::from_bytes(odd[i]).unwrap();
                    line.client_ip = HeaderValue::from_bytes(odd[(i + 1) % 4]).unwrap();
                    let (ours, theirs) = (direct(&line, json), through_tracing(&line, json));
                    assert_eq!(
                        after_timestamp(&ours, json),
                        after_timestamp(&theirs, json),
                        "json: {json}"
                    );
                    assert_eq!(ours.len(), theirs.len(), "{ours}");
                }
            }
        }
    }
}
