//! How long a connection may wait for a request head (`limits.header_read_timeout`): from
//! accept to its first request, and on HTTP/1 from the end of each response to the next
//! request. Past that the connection is closed, so that silent, slow (slowloris) and idle
//! kept-alive clients cannot hold connection slots.
//!
//! hyper's own header read timeout does the same per head, at a cost on every request: it
//! takes a new sleep from the timer for each head, and polls the connection once more each
//! time it goes idle to start that sleep (about a thousand instructions a request; callgrind,
//! benches/load). Here a request only counts itself in, and out with the time its response
//! ended; each connection has one sleep, set again only when it finds the connection busy or
//! active since it was set.

use crate::body::Body;
use crate::coarse_timer::{CoarseSleep, CoarseTimer};
use crate::lock;
use bytes::Bytes;
use http::Version;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// `last_end` before any response has ended.
const NO_RESPONSE_YET: u64 = u64::MAX;

/// What a connection's requests tell its deadline: shared by the service, which counts each
/// request in ([`ConnActivity::request`]) and out (when its response body is dropped), and
/// [`ConnActivity::expired`].
pub(crate) struct ConnActivity {
    accepted: Instant,
    in_flight: AtomicU32,
    /// When the last response ended, in nanoseconds after `accepted`.
    last_end: AtomicU64,
    /// HTTP/2: once a stream has come, the connection is left open when idle, as hyper leaves
    /// it (its header read timeout is HTTP/1's).
    multiplexed: AtomicBool,
}

/// What a connection is doing, as its deadline sees it.
enum Waiting {
    /// A request is in flight: no head is awaited.
    Busy,
    /// HTTP/2 and past its first request: not this deadline's to close.
    Never,
    /// Awaiting a head since `since`, for at most `allowed`.
    Since { since: Instant, allowed: Duration },
}

impl ConnActivity {
    pub(crate) fn new(accepted: Instant) -> Arc<ConnActivity> {
        Arc::new(ConnActivity {
            accepted,
            in_flight: AtomicU32::new(0),
            last_end: AtomicU64::new(NO_RESPONSE_YET),
            multiplexed: AtomicBool::new(false),
        })
    }

    /// Counts a request in; it is counted out when the returned value is dropped, which
    /// [`until_sent`] makes the end of its response body.
    pub(crate) fn request(self: &Arc<Self>, version: Version) -> RequestOnConn {
        if version == Version::HTTP_2 {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestOnConn(self.clone())
    }

    /// Resolves once the connection has waited for a request head longer than it may:
    /// `first` after accept, then `limit` after each response. See [`Expired`].
    pub(crate) fn expired<'a>(
        &'a self,
        timer: &'a CoarseTimer,
        first: Duration,
        limit: Duration,
    ) -> Expired<'a> {
        Expired {
            activity: self,
            timer,
            first,
            limit,
            sleep: Some(timer.sleep_until(tokio::time::Instant::from_std(self.accepted + first))),
            woken: Arc::new(Woken::default()),
            task: None,
        }
    }

    fn waiting(&self, first: Duration, limit: Duration) -> Waiting {
        // Acquire: pairs with the Release that counts a request out, after its end's stamp.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Waiting::Busy;
        }
        if self.multiplexed.load(Ordering::Relaxed) {
            return Waiting::Never;
        }
        match self.last_end.load(Ordering::Relaxed) {
            NO_RESPONSE_YET => Waiting::Since {
                since: self.accepted,
                allowed: first,
            },
            nanos => Waiting::Since {
                since: self.accepted + Duration::from_nanos(nanos),
                allowed: limit,
            },
        }
    }
}

/// See [`ConnActivity::expired`]. It is polled with every poll of its connection's task,
/// two a request, but looks at its sleep only when the timer has woken it: the timer wakes
/// [`Woken`], which notes it and wakes the task. (As an async fn that polled its sleep each
/// time, it cost ~190 instructions a request; callgrind, benches/load.)
pub(crate) struct Expired<'a> {
    activity: &'a ConnActivity,
    timer: &'a CoarseTimer,
    first: Duration,
    limit: Duration,
    /// None once the connection is HTTP/2 past its first stream: it never expires.
    sleep: Option<CoarseSleep>,
    woken: Arc<Woken>,
    /// The task's waker that `woken` wakes, to tell cheaply when it changes.
    task: Option<Waker>,
}

/// The waker the sleep is given: notes that the timer fired, then wakes the task.
#[derive(Default)]
struct Woken {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = &*lock(&self.task) {
            task.wake_by_ref();
        }
    }
}

impl Future for Expired<'_> {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let same_task = this
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()));
        if same_task && !this.woken.fired.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        this.poll_timer(cx, same_task)
    }
}

impl Expired<'_> {
    /// The sleep polled, and set again for as long as the connection may still wait.
    /// `same_task`: the task's waker is the one `woken` already wakes.
    #[inline(never)]
    fn poll_timer(&mut self, cx: &mut Context<'_>, same_task: bool) -> Poll<()> {
        self.woken.fired.store(false, Ordering::Relaxed);
        if !same_task {
            self.task = Some(cx.waker().clone());
            *lock(&self.woken.task) = Some(cx.waker().clone());
        }
        let waker = Waker::from(self.woken.clone());
        let mut timer_cx = Context::from_waker(&waker);
        while let Some(sleep) = &mut self.sleep {
            if Pin::new(sleep).poll(&mut timer_cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let deadline = match self.activity.waiting(self.first, self.limit) {
                Waiting::Busy => now + self.limit,
                Waiting::Never => {
                    self.sleep = None;
                    return Poll::Pending;
                }
                Waiting::Since { since, allowed } if since + allowed <= now => {
                    return Poll::Ready(());
                }
                Waiting::Since { since, allowed } => since + allowed,
            };
            let deadline = tokio::time::Instant::from_std(deadline);
            self.sleep = Some(self.timer.sleep_until(deadline));
        }
        Poll::Pending
    }
}

/// A request counted on its connection, until dropped.
pub(crate) struct RequestOnConn(Arc<ConnActivity>);

impl Drop for RequestOnConn {
    fn drop(&mut self) {
        let activity = &self.0;
        let ended = activity.accepted.elapsed().as_nanos();
        let ended = u64::try_from(ended).unwrap_or(NO_RESPONSE_YET - 1);
        activity.last_end.store(ended, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// `body`, carrying `request` until hyper drops it: when the body has been sent, or the
/// connection has ended. A response that streams for longer than the limit is not cut.
pub(crate) fn until_sent(body: Body, request: RequestOnConn) -> UntilSent {
    UntilSent {
        body,
        _request: request,
    }
}

/// See [`until_sent`].
pub(crate) struct UntilSent {
    body: Body,
    _request: RequestOnConn,
}

impl http_body::Body for UntilSent {
    type Data = Bytes;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
