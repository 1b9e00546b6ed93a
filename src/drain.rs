//! Graceful shutdown of a server's connections: when it begins, each connection is told to
//! finish what it is serving and close, and the server waits until all have.
//!
//! hyper-util's `GracefulShutdown` does the same, but its watcher polls a
//! `watch::Receiver::changed` future, which takes a `Notify`'s lock, on every poll of the
//! connection: about 300 instructions per proxied request (callgrind, benches/load arm C). Here
//! a poll reads one flag; a connection's waker is handed over once, when it is first polled.

use hyper_util::server::graceful::GracefulConnection;
use slab::Slab;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// A connection that can be told to finish what it serves and close: hyper's, through
/// hyper-util's trait (which is sealed, hence this one).
pub trait Closable: Future {
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<C: GracefulConnection> Closable for C {
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The connections being served, and whether they are to close. Clones share them.
#[derive(Default, Clone)]
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Set once, when the drain begins; read on every poll of every connection.
    draining: AtomicBool,
    /// One entry per watched connection: its waker once it has been polled.
    connections: Mutex<Slab<Option<Waker>>>,
    /// Told when the last watched connection ends.
    all_closed: Notify,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, Slab<Option<Waker>>> {
        crate::lock(&self.connections)
    }
}

impl Drain {
    /// `connection`, told to shut down gracefully when the drain begins.
    pub fn watch<C: Closable>(&self, connection: C) -> Watched<C> {
        let slot = self.shared.connections().insert(None);
        Watched {
            connection,
            shared: self.shared.clone(),
            slot,
            waker: None,
            closing: false,
        }
    }

    /// Tells every watched connection to close, then waits until all have ended.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        // Set before the wakers are taken: a connection that registers after this sees it
        // under the same lock (see `Watched::poll`).
        shared.draining.store(true, Ordering::Release);
        loop {
            let all_closed = shared.all_closed.notified();
            {
                let connections = shared.connections();
                if connections.is_empty() {
                    return;
                }
                for waker in connections.iter().filter_map(|(_, waker)| waker.as_ref()) {
                    waker.wake_by_ref();
                }
            }
            all_closed.await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection under a [`Drain`]; see [`Drain::watch`].
    pub struct Watched<C> {
        #[pin]
        connection: C,
        shared: Arc<Shared>,
        slot: usize,
        // The waker handed to the drain, handed over again only if the task's changes.
        waker: Option<Waker>,
        // Told to close.
        closing: bool,
    }

    impl<C> PinnedDrop for Watched<C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut connections = this.shared.connections();
            connections.try_remove(*this.slot);
            if connections.is_empty() {
                this.shared.all_closed.notify_waiters();
            }
        }
    }
}

impl<C: Closable> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.closing {
            let mut draining = this.shared.draining.load(Ordering::Acquire);
            if !draining && !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let mut connections = this.shared.connections();
                // Under the lock the drain wakes connections with: either it has begun (and
                // this sees it) or it will find this waker.
                draining = this.shared.draining.load(Ordering::Acquire);
                if let Some(entry) = connections.get_mut(*this.slot) {
                    *entry = Some(cx.waker().clone());
                }
                *this.waker = Some(cx.waker().clone());
            }
            if draining {
                *this.closing = true;
                this.connection.as_mut().close_gracefully();
            }
        }
        this.connection.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection that ends once told to close; says when it is first polled.
    struct Probe {
        told: bool,
        polled: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if let Some(polled) = self.polled.take() {
                let _ = polled.send(());
            }
            if self.told {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Closable for Probe {
        fn close_gracefully(mut self: Pin<&mut Self>) {
            self.told = true;
        }
    }

    #[tokio::test]
    async fn shutdown_tells_every_connection_and_waits_for_them() {
        let drain = Arc::new(Drain::default());
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
            let watched = drain.watch(Probe {
                told: false,
                polled: Some(polled_tx),
            });
            tasks.push(tokio::spawn(watched));
            polled_rx.await.unwrap();
        }
        // Not yet polled: it must be told as well.
        let unpolled = drain.watch(Probe {
            told: false,
            polled: None,
        });
        let shutdown = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.shutdown().await })
        };
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("a connection was not told to close")
                .unwrap();
        }
        // The unpolled one is still open: shutdown is still waiting for it.
        assert!(!shutdown.is_finished());
        tokio::time::timeout(Duration::from_secs(10), unpolled)
            .await
            .expect("a connection first polled after the drain began was not told");
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("shutdown did not return once every connection had ended")
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_with_nothing_open_returns() {
        tokio::time::timeout(Duration::from_secs(10), Drain::default().shutdown())
            .await
            .expect("shutdown waited with no connection open");
    }
}
