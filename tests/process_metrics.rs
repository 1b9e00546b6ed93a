//! The standard process metrics on the admin `/metrics`: present, plausible, and clean for promtool.

mod common;

use common::TestGateway;
use common::metrics::{prometheus_tool, promtool_check_metrics};
use std::time::{SystemTime, UNIX_EPOCH};

fn one(scrape: &common::metrics::Scrape, name: &str) -> f64 {
    let found: Vec<_> = scrape.matching(name, &[]).collect();
    assert_eq!(found.len(), 1, "{name} once in:\n{}", scrape.text);
    assert!(
        scrape.text.contains(&format!("# TYPE {name} ")),
        "{name} has no TYPE line"
    );
    found[0].value
}

#[tokio::test]
async fn process_metrics_are_scraped_with_plausible_values() {
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let scrape = gateway.scrape().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    // The test process is the gateway's process: it started before now, and not long ago.
    let start = one(&scrape, "process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "start {start}, now {now}"
    );
    assert!(one(&scrape, "process_resident_memory_bytes") > 1024.0 * 1024.0);
    assert!(one(&scrape, "process_virtual_memory_bytes") > 0.0);
    let fds = one(&scrape, "process_open_fds");
    assert!(fds >= 3.0, "stdin, stdout, stderr and the listeners: {fds}");
    assert!(one(&scrape, "process_max_fds") >= fds);
    let cpu = one(&scrape, "process_cpu_seconds_total");
    assert!(cpu >= 0.0);
    assert!(
        scrape
            .text
            .contains("# TYPE process_cpu_seconds_total counter\n")
    );

    // CPU time only grows; the open descriptors follow the connections.
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(
            tokio::net::TcpStream::connect(gateway.admin_addr)
                .await
                .unwrap(),
        );
    }
    let later = gateway.scrape().await;
    assert!(one(&later, "process_cpu_seconds_total") >= cpu);
    assert!(
        one(&later, "process_open_fds") >= fds + 15.0,
        "20 more client sockets (some slack for others closing): {fds} then {}",
        one(&later, "process_open_fds")
    );
    drop(clients);

    if let Some(promtool) = prometheus_tool("promtool") {
        promtool_check_metrics(&promtool, &later.text).unwrap();
    }
    gateway.shutdown().await;
}
