//! A real Prometheus server (Debian package `prometheus`) scrapes a running gateway every
//! second, loads the shipped alert rules, and answers the README's PromQL and every dashboard
//! query. Skipped, saying so, when `prometheus` is not installed (fails instead with
//! KBGATE_REQUIRE_PROMETHEUS=1, as .ci/run sets).

mod common;

use common::TestGateway;
use common::free_port;
use common::metrics::prometheus_tool;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: Prometheus starts, scrapes every second and evaluates every second, but this
/// machine may be busy with other builds.
const WAIT: Duration = Duration::from_secs(90);

/// A Prometheus process; killed when dropped, whatever the test's outcome.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(binary: &Path, target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  \
               - job_name: kbgate\n    \
                 metrics_path: /metrics\n    \
                 static_configs: [{{ targets: [\"{target}\"] }}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut server = Prometheus {
            child,
            url: format!("http://{listen}"),
            dir,
            client: reqwest::Client::new(),
        };
        server.wait_until_ready().await;
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            let ready = self
                .client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never became ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query; panics unless Prometheus accepts it. Returns `data.result`.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let response = self
            .client
            .post(format!("{}/api/v1/query", self.url))
            .form(&[("query", promql)])
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "success", "{promql}\n{body}");
        body["data"]["result"].as_array().unwrap().clone()
    }

    /// Polls until `check` accepts the query's result; panics with the last result after WAIT.
    async fn until(&self, promql: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let result = self.query(promql).await;
            if check(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} never gave what was expected; last: {result:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The value of the series with `label` = `value`, if the result has one.
fn value_of(result: &[Value], label: &str, value: &str) -> Option<f64> {
    result
        .iter()
        .find(|s| s["metric"][label] == value)
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
}

/// The README's ```promql blocks, each as (first comment line, whole query).
fn readme_queries() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .split("```promql\n")
        .skip(1)
        .map(|block| {
            let query = block.split("```").next().unwrap().to_string();
            let title = query.lines().next().unwrap_or("").to_string();
            (title, query)
        })
        .collect()
}

fn readme_query<'a>(queries: &'a [(String, String)], title: &str) -> &'a str {
    queries
        .iter()
        .find(|(t, _)| t.starts_with(title))
        .map(|(_, q)| q.as_str())
        .unwrap_or_else(|| panic!("README has no ```promql block starting {title:?}"))
}

#[tokio::test]
async fn prometheus_scrapes_per_key_counts_and_answers_the_readme_queries() {
    let Some(binary) = prometheus_tool("prometheus") else {
        return;
    };
    let (_upstream, gateway) = TestGateway::builder().start_on_echo().await;
    let (used, secret) = gateway.create_key(json!({"name": "Chatbot"})).await;
    let (idle, _) = gateway.create_key(json!({"name": "Idle export"})).await;
    let prometheus = Prometheus::start(&binary, gateway.admin_addr).await;

    // First let Prometheus see the key's counter at 0, so increase() counts every request.
    let series = format!("kbgate_key_requests_total{{key_id=\"{used}\"}}");
    prometheus
        .until(&series, |r| value_of(r, "key_id", &used) == Some(0.0))
        .await;
    for _ in 0..7 {
        assert_eq!(gateway.get("/v1/article", &secret).await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(gateway.send("POST", "/v1/article", &secret).await.0, 403);
    }
    prometheus
        .until(&series, |r| value_of(r, "key_id", &used) == Some(9.0))
        .await;

    let queries = readme_queries();
    assert!(queries.len() >= 4, "{queries:?}");
    for (title, query) in &queries {
        prometheus.query(query).await;
        println!("README query ok: {title}");
    }
    let per_key = readme_query(&queries, "# Requests per second per key");
    let named = prometheus
        .until(per_key, |r| {
            r.iter()
                .any(|s| s["metric"]["key_id"] == used.as_str() && s["metric"]["name"] == "Chatbot")
        })
        .await;
    assert!(
        value_of(&named, "key_id", &used).unwrap() > 0.0,
        "{named:?}"
    );

    let unused = prometheus
        .query(readme_query(&queries, "# Keys unused for 30 days"))
        .await;
    assert!(value_of(&unused, "key_id", &idle).is_some(), "{unused:?}");
    assert!(value_of(&unused, "key_id", &used).is_none(), "{unused:?}");

    let refusals = readme_query(&queries, "# Refusals per second by reason");
    prometheus
        .until(refusals, |r| {
            value_of(r, "outcome", "insufficient_permissions").is_some_and(|v| v > 0.0)
        })
        .await;

    let dashboard: Value =
        serde_json::from_str(include_str!("../deploy/grafana/kbgate-dashboard.json")).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            prometheus.query(target["expr"].as_str().unwrap()).await;
        }
    }

    // The shipped alert rules load and evaluate against the real series without error.
    let shipped = include_str!("../deploy/prometheus/alerts.yml")
        .matches("- alert:")
        .count();
    let rules_url = format!("{}/api/v1/rules", prometheus.url);
    common::eventually("the shipped alert rules evaluate", || async {
        let response = prometheus.client.get(&rules_url).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        let rules = body["data"]["groups"][0]["rules"].as_array().cloned();
        let rules = rules.unwrap_or_default();
        assert!(rules.iter().all(|r| r["health"] != "err"), "{rules:?}");
        rules.len() == shipped && rules.iter().all(|r| r["health"] == "ok")
    })
    .await;
    gateway.shutdown().await;
}
