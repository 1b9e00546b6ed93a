//! Driving limited keys: many clients at once, a steady pace, and the RateLimit headers read
//! with a structured-field parser from a library (sfv), not the gateway's own code.

use super::TestGateway;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Held by the tests of one binary that load the machine ([`hammer`]) or time it ([`paced`]), so
/// that they do not run at once: a rate run beside 16 hammering clients measures the starved
/// test process, not the limiter.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The key's `quota_state` as the admin API shows it (`null` for a key without a quota).
pub async fn quota_state(gateway: &TestGateway, id: &str) -> serde_json::Value {
    let (status, key) = gateway.admin("GET", &format!("/v1/keys/{id}"), None).await;
    assert_eq!(status, 200, "{key}");
    key["quota_state"].clone()
}

/// Sends `total` GETs of `path` with `key` from `clients` concurrent clients, each request to
/// the next of `gateways` in turn; returns how many were answered with each status.
pub async fn hammer(
    gateways: &[&TestGateway],
    key: &str,
    path: &str,
    total: usize,
    clients: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let next = AtomicUsize::new(0);
    let urls: Vec<String> = gateways.iter().map(|g| g.url(path)).collect();
    let client = reqwest::Client::new();
    let one_client = || async {
        let mut statuses = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= total {
                return statuses;
            }
            let response = client.get(&urls[i % urls.len()]).bearer_auth(key).send();
            statuses.push(response.await.unwrap().status().as_u16());
        }
    };
    let all = futures_util::future::join_all((0..clients).map(|_| one_client())).await;
    let mut counts = std::collections::BTreeMap::new();
    for status in all.into_iter().flatten() {
        *counts.entry(status).or_default() += 1;
    }
    counts
}

/// What [`paced`] sent and how it went.
pub struct Paced {
    /// Answered 200.
    pub admitted: usize,
    /// From the first send to the last.
    pub elapsed: Duration,
    /// When each request was sent, from the first.
    pub sent: Vec<Duration>,
}

/// Sends GETs of `path` at `per_second` for `duration`, in turn to each of `gateways`, without
/// waiting for one answer to send the next.
pub async fn paced(
    gateways: &[&TestGateway],
    key: &str,
    path: &str,
    per_second: u32,
    duration: Duration,
) -> Paced {
    let urls: Vec<String> = gateways.iter().map(|g| g.url(path)).collect();
    let client = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / per_second);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::new();
    let mut sent = Vec::new();
    let started = Instant::now();
    let mut last = started;
    while started.elapsed() < duration {
        ticker.tick().await;
        last = Instant::now();
        sent.push(last - started);
        let request = client
            .get(&urls[requests.len() % urls.len()])
            .bearer_auth(key)
            .send();
        requests.push(tokio::spawn(async move {
            request.await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let mut admitted = 0;
    for request in requests {
        admitted += usize::from(request.await.unwrap() == 200);
    }
    Paced {
        admitted,
        elapsed: last - started,
        sent,
    }
}

/// How far below the ideal a rate run may fall. Quiet runs are within 1.2% (see the report
/// line each run prints); on a shared 2-core machine at load 8 the test process itself (its
/// clients and gateways) stalls, requests reach the gateway in bunches, and a bunch beyond the
/// burst is refused however exact the limiter: measured down to -4%.
const STARVED: f64 = 0.08;

/// Checks a rate limit of `per_second` with bursts of `burst` against a paced run: never more
/// than the ideal, burst + rate × elapsed (within `tolerance`, a share: the limit is exact);
/// never less (within [`STARVED`]) than a perfect limiter would have admitted of the requests
/// as they were actually sent (GCRA's virtual scheduling, written here on its own), which on a
/// quiet machine is the same ideal and on a starved one accounts for a client that could not
/// keep its pace.
pub fn assert_rate(run: &Paced, per_second: f64, burst: u32, tolerance: f64, what: &str) {
    let ideal = f64::from(burst) + per_second * run.elapsed.as_secs_f64();
    let interval = 1.0 / per_second;
    let tolerance_window = interval * f64::from(burst - 1);
    let (mut tat, mut offered) = (0.0f64, 0usize);
    for at in run.sent.iter().map(Duration::as_secs_f64) {
        if tat <= at + tolerance_window {
            tat = tat.max(at) + interval;
            offered += 1;
        }
    }
    let admitted = run.admitted as f64;
    eprintln!(
        "{what}: admitted {}, ideal {ideal:.1} (off by {:+.2}%), as sent {offered}",
        run.admitted,
        (admitted - ideal) / ideal * 100.0
    );
    assert!(
        admitted <= ideal * (1.0 + tolerance),
        "{what}: more than the limit"
    );
    assert!(
        admitted >= offered.min(ideal as usize) as f64 * (1.0 - tolerance.max(STARVED)),
        "{what}: fewer than the limit allowed"
    );
}

/// One member of `RateLimit-Policy` or `RateLimit`: its name and integer parameters.
#[derive(Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub params: Vec<(String, i64)>,
}

impl Field {
    pub fn param(&self, key: &str) -> i64 {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
            .1
    }
}

/// Parses a structured-field list of strings with integer parameters (sfv's parser).
pub fn parse_list(header: &reqwest::header::HeaderValue) -> Vec<Field> {
    let list: sfv::List = sfv::Parser::new(header.as_bytes())
        .parse()
        .unwrap_or_else(|e| panic!("{header:?} is not a structured-field list: {e}"));
    list.into_iter()
        .map(|entry| match entry {
            sfv::ListEntry::Item(item) => Field {
                name: item
                    .bare_item
                    .as_string()
                    .expect("a string item")
                    .as_str()
                    .to_string(),
                params: item
                    .params
                    .iter()
                    .map(|(k, v)| {
                        let value = v.as_integer().expect("an integer parameter");
                        (k.as_str().to_string(), i64::from(value))
                    })
                    .collect(),
            },
            sfv::ListEntry::InnerList(_) => panic!("no inner lists expected in {header:?}"),
        })
        .collect()
}

/// `RateLimit` of a response, parsed: the one limit nearest to exhaustion.
pub fn ratelimit(response: &reqwest::Response) -> Field {
    let mut fields = parse_list(&response.headers()["ratelimit"]);
    assert_eq!(fields.len(), 1, "{fields:?}");
    fields.remove(0)
}

/// `Retry-After` of a response, in seconds.
pub fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}
