//! A timer for deadlines that nearly always pass unused: each connection's wait for a request
//! head (head_deadline.rs) and the upstream timeout (one per forwarded request). tokio's timer
//! puts every sleep in its wheel and takes it out again, about 1.2k instructions per sleep on
//! the request path (callgrind, benches/load arm C, when it served hyper's header read timeout
//! and the upstream's, two sleeps per request); here a sleep is an entry in a
//! slab, and one sweeper task per timer looks at the entries every [`RESOLUTION`] while any
//! exist, waking those past their deadline. A deadline fires up to one resolution late, which
//! is nothing beside timeouts counted in seconds.

use crate::lock;
use slab::Slab;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How late a deadline may fire, and how often the sweeper looks while sleeps are waiting.
pub const RESOLUTION: Duration = Duration::from_millis(10);

/// A handle to one timer: cheap to clone, its sweeper started on the first sleep polled.
#[derive(Clone, Default)]
pub struct CoarseTimer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    waiting: Mutex<Slab<Waiting>>,
    sweeper_started: AtomicBool,
    /// Told when the first sleep of an empty slab arrives, so an idle sweeper sleeps for good.
    arrivals: Arc<Notify>,
}

struct Waiting {
    deadline: Instant,
    waker: Waker,
    fired: bool,
}

/// Resolves at its deadline (up to [`RESOLUTION`] later). Registered with the timer when first
/// polled, removed when dropped.
pub struct CoarseSleep {
    shared: Arc<Shared>,
    deadline: Instant,
    /// The entry in the slab, once polled.
    slot: Option<usize>,
    fired: bool,
}

/// The deadline of [`CoarseTimer::timeout_at`] passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl CoarseTimer {
    pub fn sleep_until(&self, deadline: Instant) -> CoarseSleep {
        CoarseSleep {
            shared: self.shared.clone(),
            deadline,
            slot: None,
            fired: false,
        }
    }

    /// `future`'s output, or [`Elapsed`] once `deadline` has passed first. A named future
    /// rather than an async fn: an async fn would hold `future` twice (as its argument and as
    /// its pinned local), and the request path's is nearly a kilobyte.
    pub fn timeout_at<F: Future>(&self, deadline: Instant, future: F) -> Timeout<F> {
        Timeout {
            future,
            sleep: self.sleep_until(deadline),
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`CoarseTimer::timeout_at`].
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: CoarseSleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.fired {
            return Poll::Ready(());
        }
        let mut waiting = lock(&this.shared.waiting);
        let Some(slot) = this.slot else {
            let first = waiting.is_empty();
            this.slot = Some(waiting.insert(Waiting {
                deadline: this.deadline,
                waker: cx.waker().clone(),
                fired: false,
            }));
            drop(waiting);
            if first {
                this.shared.sweep_soon();
            }
            return Poll::Pending;
        };
        let entry = &mut waiting[slot];
        if entry.fired {
            waiting.remove(slot);
            this.slot = None;
            this.fired = true;
            return Poll::Ready(());
        }
        if !entry.waker.will_wake(cx.waker()) {
            entry.waker = cx.waker().clone();
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            lock(&self.shared.waiting).remove(slot);
        }
    }
}

impl Shared {
    /// Starts the sweeper on first use, and wakes it if it sleeps for want of entries.
    fn sweep_soon(self: &Arc<Self>) {
        if !self.sweeper_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweep(Arc::downgrade(self), self.arrivals.clone()));
        }
        self.arrivals.notify_one();
    }

    /// Marks the entries past their deadline as fired and wakes their tasks. Returns whether
    /// any entries are left.
    fn fire_due(&self, now: Instant) -> bool {
        let mut waiting = lock(&self.waiting);
        for (_, entry) in waiting.iter_mut() {
            if !entry.fired && entry.deadline <= now {
                entry.fired = true;
                entry.waker.wake_by_ref();
            }
        }
        !waiting.is_empty()
    }
}

impl Drop for Shared {
    /// Lets a sweeper waiting for entries see that its timer is gone, and end.
    fn drop(&mut self) {
        self.arrivals.notify_one();
    }
}

/// Every [`RESOLUTION`] while sleeps are waiting, fires those due; ends with its timer.
async fn sweep(shared: Weak<Shared>, arrivals: Arc<Notify>) {
    loop {
        arrivals.notified().await;
        loop {
            tokio::time::sleep(RESOLUTION).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if !shared.fire_due(Instant::now()) {
                break;
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_sleep_fires_at_its_deadline_within_the_resolution() {
        let timer = CoarseTimer::default();
        let start = Instant::now();
        timer.sleep_until(start + Duration::from_millis(95)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(95), "{waited:?}");
        assert!(
            waited <= Duration::from_millis(95) + RESOLUTION,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_passes_the_output_or_says_elapsed() {
        let timer = CoarseTimer::default();
        let soon = Instant::now() + Duration::from_secs(1);
        assert_eq!(timer.timeout_at(soon, async { 7 }).await, Ok(7));
        let never = std::future::pending::<()>();
        assert_eq!(timer.timeout_at(soon, never).await, Err(Elapsed));
        assert!(Instant::now() >= soon);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_sleep_leaves_no_entry_and_the_sweeper_rests() {
        let timer = CoarseTimer::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let answered = timer.timeout_at(far, async { "answer" }).await;
        assert_eq!(answered, Ok("answer"));
        let mut sleep = timer.sleep_until(far);
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut sleep).poll(cx))).await;
        assert!(polled.is_pending());
        assert_eq!(lock(&timer.shared.waiting).len(), 1);
        drop(sleep);
        assert!(lock(&timer.shared.waiting).is_empty());
        // Later sleeps still fire after the sweeper found the slab empty and rested.
        tokio::time::sleep(RESOLUTION * 5).await;
        let start = Instant::now();
        timer.sleep_until(start + RESOLUTION * 3).await;
        assert!(start.elapsed() >= RESOLUTION * 3);
    }
}
