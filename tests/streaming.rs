//! Bodies stream through the gateway both ways and are never held whole: a 64 MiB upload and a
//! 64 MiB download, with the process's resident memory watched while they run. The gateway,
//! the upstream and the client all live in this process, so a gateway that buffered a whole
//! body would show up as >= 64 MiB of growth.

mod common;

use bytes::Bytes;
use common::{TestGateway, UPSTREAM_CREDENTIAL};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 64 * MIB;
const CHUNK: usize = 64 * 1024;
/// A gateway holding a whole 64 MiB body would exceed this; streaming stays far below it.
const MAX_GROWTH: u64 = 32 * MIB;

/// The memory tests share one process: run them one at a time so each sees only its own growth.
static MEMORY_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// VmRSS of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("no VmRSS in /proc/self/status");
    kib * 1024
}

/// The highest RSS seen by `sample` calls.
#[derive(Clone, Default)]
struct Peak(Arc<AtomicU64>);

impl Peak {
    fn sample(&self) {
        self.0.fetch_max(rss(), Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Checks and reports the growth of RSS over a transfer, at its peak and at its end.
fn assert_flat(what: &str, before: u64, peak: u64, after: u64) {
    let peak = peak.max(after);
    eprintln!(
        "{what}: VmRSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), after {:.1} MiB (+{:.1}); limit +{:.0} MiB",
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after),
        mib(after.saturating_sub(before)),
        mib(MAX_GROWTH),
    );
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH,
        "{what}: RSS grew by {:.1} MiB at its peak: the body was buffered",
        mib(peak - before)
    );
    assert!(
        after.saturating_sub(before) < MAX_GROWTH,
        "{what}: RSS grew by {:.1} MiB: the body was buffered",
        mib(after - before)
    );
}

/// A request body of `size` bytes made on the fly in 64 KiB chunks, sampling RSS every 1 MiB.
fn streamed_body(size: u64, peak: Peak) -> reqwest::Body {
    static FILL: [u8; CHUNK] = [b'u'; CHUNK];
    let chunks = futures_util::stream::unfold(0u64, move |sent| {
        let peak = peak.clone();
        async move {
            if sent >= size {
                return None;
            }
            if sent % MIB == 0 {
                peak.sample();
            }
            let n = (size - sent).min(CHUNK as u64) as usize;
            Some((
                Ok::<_, std::io::Error>(Bytes::from_static(&FILL[..n])),
                sent + n as u64,
            ))
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

async fn put(gateway: &TestGateway, key: &str, path: &str, size: u64, peak: Peak) -> (u16, Value) {
    let response = gateway
        .client
        .put(gateway.url(path))
        .bearer_auth(key)
        .header("content-type", "application/octet-stream")
        .body(streamed_body(size, peak))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GETs `path` and counts the body chunk by chunk, sampling RSS every 1 MiB.
async fn download(gateway: &TestGateway, key: &str, path: &str, peak: &Peak) -> (u16, u64) {
    let response = gateway.keyed_get(gateway.url(path), key).await;
    let status = response.status().as_u16();
    let mut chunks = response.bytes_stream();
    let mut received = 0u64;
    let mut next_sample = 0u64;
    while let Some(chunk) = chunks.next().await {
        received += chunk.unwrap().len() as u64;
        if received >= next_sample {
            peak.sample();
            next_sample += MIB;
        }
    }
    (status, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_upload_streams_through_without_being_buffered() {
    let _one_at_a_time = MEMORY_TESTS.lock().await;
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway
        .create_key(json!({"name": "uploader", "scope": "read_write"}))
        .await;

    // Warm up connections, pools and allocator arenas with a small streamed upload.
    let (status, body) = put(
        &gateway,
        &key,
        "/v1/article/warm-up",
        2 * MIB,
        Peak::default(),
    )
    .await;
    assert_eq!(status, 200, "warm-up failed: {body}");

    let peak = Peak::default();
    let before = rss();
    peak.sample();
    let (status, body) = put(&gateway, &key, "/v1/article/big", SIZE, peak.clone()).await;
    let after = rss();
    assert_eq!(status, 200, "upload failed: {body}");
    assert_eq!(
        body["body_len"], SIZE,
        "the upstream's own count, as it answered"
    );

    let seen = upstream.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path_and_query, "/v1/article/big");
    assert_eq!(seen.body_len, SIZE, "the upstream received exactly 64 MiB");

    // The client's key never reached the upstream; the KB's own credential did.
    assert_eq!(
        seen.headers
            .get_all("authorization")
            .iter()
            .collect::<Vec<_>>(),
        vec![format!("Bearer {UPSTREAM_CREDENTIAL}").as_str()]
    );
    for (name, value) in &seen.headers {
        assert!(
            !value
                .as_bytes()
                .windows(key.len())
                .any(|w| w == key.as_bytes()),
            "the client key leaked upstream in {name}"
        );
    }

    assert_flat("upload of 64 MiB", before, peak.get(), after);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_download_streams_through_without_being_buffered() {
    let _one_at_a_time = MEMORY_TESTS.lock().await;
    let (upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (_, key) = gateway.create_key(json!({"name": "downloader"})).await;

    // Warm up with a small streamed download.
    let (status, received) = download(
        &gateway,
        &key,
        &format!("/v1/article/a1?size={}", 2 * MIB),
        &Peak::default(),
    )
    .await;
    assert_eq!((status, received), (200, 2 * MIB), "warm-up failed");

    let peak = Peak::default();
    let before = rss();
    peak.sample();
    let (status, received) = download(
        &gateway,
        &key,
        &format!("/v1/article/a1?size={SIZE}"),
        &peak,
    )
    .await;
    let after = rss();
    assert_eq!(status, 200);
    assert_eq!(received, SIZE, "the client read exactly 64 MiB");
    assert_eq!(
        upstream.last().path_and_query,
        format!("/v1/article/a1?size={SIZE}")
    );

    assert_flat("download of 64 MiB", before, peak.get(), after);
    gateway.shutdown().await;
}
