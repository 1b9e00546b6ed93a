//! The request body guard: a size limit and an idle timeout on what the client uploads.

use crate::access_log::BytesIn;
use crate::body::{self, Body, BoxError};
use crate::rejection::Rejection;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// Why the gateway cut a request body off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFault {
    /// More than the route's `max_body`.
    TooLarge,
    /// No data for `limits.body_timeout`.
    Stalled,
    /// Malformed chunking, or the client went away mid-upload.
    Broken,
}

impl BodyFault {
    pub(super) fn rejection(self) -> Rejection {
        match self {
            BodyFault::TooLarge => Rejection::BodyTooLarge,
            BodyFault::Stalled => Rejection::BodyTimeout,
            BodyFault::Broken => Rejection::BadRequest,
        }
    }
}

impl std::fmt::Display for BodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.rejection().message())
    }
}

impl std::error::Error for BodyFault {}

/// What the guard of a request body tells the gateway: why it failed, if it did, and how many
/// bytes of it were read (for the access log).
#[derive(Default)]
pub(super) struct BodyState {
    pub(super) fault: OnceLock<BodyFault>,
    received: AtomicU64,
}

impl BytesIn for BodyState {
    fn bytes_in(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Refuses a body declared larger than `max_body` at once; wraps any other non-empty body so
/// that it fails, and the upstream request with it, when it grows past `max_body` or stalls
/// for `idle`. The returned state says why, once it has failed, and counts what was read; an
/// empty body (most requests) needs none.
pub(super) fn guard_body(
    body: Body,
    max_body: u64,
    idle: Duration,
) -> Result<(Body, Option<Arc<BodyState>>), Rejection> {
    if body.is_end_stream() {
        return Ok((body, None));
    }
    if body.size_hint().lower() > max_body {
        return Err(Rejection::BodyTooLarge);
    }
    let fault = Arc::new(BodyState::default());
    let guarded = body::stream(GuardedBody {
        inner: body,
        left: max_body,
        idle,
        stall: None,
        fault: fault.clone(),
    });
    Ok((guarded, Some(fault)))
}

/// A request body with a size limit and an idle timeout (see [`guard_body`]).
struct GuardedBody {
    inner: Body,
    left: u64,
    idle: Duration,
    /// Armed while the gateway waits on the client; disarmed by every frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: Arc<BodyState>,
}

impl GuardedBody {
    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let _ = self.fault.fault.set(fault);
        Poll::Ready(Some(Err(Box::new(fault))))
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(&fault) = this.fault.fault.get() {
            // Never end cleanly after a failure: that would frame a cut body as complete.
            return this.fail(fault);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall = None;
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                match this.left.checked_sub(len) {
                    Some(left) => this.left = left,
                    None => return this.fail(BodyFault::TooLarge),
                }
                this.fault.received.fetch_add(len, Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let _ = this.fault.fault.set(BodyFault::Broken);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(stall.as_mut().poll(cx));
                this.fail(BodyFault::Stalled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
