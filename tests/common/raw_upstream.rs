//! Misbehaving upstreams written as raw TCP servers: each connection is handed to a script
//! that reads requests and writes whatever bytes the test wants (or closes, or resets).
#![allow(dead_code)]

use super::raw::{Message, Wire};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One request as the raw upstream read it, and on which connection (0 = the first accepted).
#[derive(Debug)]
pub struct RawRequest {
    pub connection: usize,
    pub message: Message,
}

/// The server side of one connection from the gateway.
pub struct UpConn {
    pub index: usize,
    pub wire: Wire,
    log: Arc<Mutex<Vec<RawRequest>>>,
}

impl UpConn {
    /// Reads and records the next request (with its body); None when the gateway closed.
    pub async fn request(&mut self) -> Option<()> {
        let message = self.wire.message(false).await?;
        self.log.lock().unwrap().push(RawRequest {
            connection: self.index,
            message,
        });
        Some(())
    }

    /// Writes raw bytes; the gateway may have gone, so failures are ignored.
    pub async fn write(&mut self, bytes: &[u8]) {
        let _ = self.wire.send(bytes).await;
    }

    /// A complete keep-alive 200 with a small body.
    pub async fn ok(&mut self) {
        self.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
            .await;
    }

    /// Closes with a TCP reset rather than a FIN.
    pub fn reset(self) {
        let _ = self.wire.stream.set_zero_linger();
        drop(self);
    }
}

/// A TCP server that runs `script` on every accepted connection.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<RawRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    pub async fn start<S, F>(script: S) -> RawUpstream
    where
        S: Fn(UpConn) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let log: Arc<Mutex<Vec<RawRequest>>> = Arc::default();
        let (count, requests) = (accepted.clone(), log.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(UpConn {
                    index,
                    wire: Wire::new(stream),
                    log: requests.clone(),
                }));
            }
        });
        RawUpstream {
            addr,
            accepted,
            log,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (connection, request line) of every request read so far, in order.
    pub fn requests(&self) -> Vec<(usize, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.connection, r.message.start.clone()))
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
