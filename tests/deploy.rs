//! The deployment files in deploy/ agree with kbgate and with each other: the container config
//! is a valid config with the shipped routes, the ConfigMap carries it unchanged, every `${ENV}`
//! it needs is set by compose and by the Deployment, probes and scrapes hit the admin port, and
//! dashboards and alerts name only metrics kbgate exports. The tools' own checks (promtool,
//! systemd-analyze, hadolint, yamllint) are in deploy/check.sh.

use kbgate::Config;
use kbgate::config::StoreConfig;
use kbgate::metrics as m;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `${NAME}` the text refers to.
fn env_refs(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Parses the container config with every variable it names set.
fn container_config() -> Config {
    let env = |name: &str| match name {
        "KB_URL" => Some("https://kb.example.com".to_string()),
        "KBGATE_REDIS_URL" => Some("redis://redis:6379".to_string()),
        _ => Some(format!("{name}-0123456789abcdef")),
    };
    Config::parse_with_env(&read("deploy/kbgate.yaml"), &env)
        .unwrap_or_else(|e| panic!("deploy/kbgate.yaml: {e}"))
}

#[test]
fn the_container_config_is_valid_and_routes_like_the_shipped_one() {
    let config = container_config();
    assert!(
        matches!(config.store, StoreConfig::Redis(_)),
        "replicas share a Redis store"
    );
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin.listen.to_string(), "0.0.0.0:9090");
    let env = |_: &str| Some("0123456789abcdef".to_string());
    let shipped = Config::parse_with_env(&read("config/kbgate.yaml"), &env).unwrap();
    assert_eq!(config.routes.to_string(), shipped.routes.to_string());
    assert_eq!(
        env_refs(&read("deploy/kbgate.yaml")),
        [
            "KBGATE_ADMIN_TOKEN",
            "KBGATE_REDIS_URL",
            "KB_API_KEY",
            "KB_URL"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn compose_runs_the_gateway_redis_and_prometheus_with_what_the_config_needs() {
    let compose = yaml("deploy/compose.yaml");
    let services = &compose["services"];
    for name in ["kbgate", "redis", "prometheus", "grafana"] {
        assert!(services[name].is_mapping(), "service {name}");
    }
    let kbgate = &services["kbgate"];
    assert_eq!(kbgate["build"]["dockerfile"], "deploy/Dockerfile");
    for name in env_refs(&read("deploy/kbgate.yaml")) {
        assert!(
            !kbgate["environment"][name.as_str()].is_null(),
            "{name} is not set"
        );
    }
    assert_eq!(
        kbgate["environment"]["KBGATE_REDIS_URL"],
        "redis://redis:6379"
    );
    let ports: Vec<&str> = kbgate["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        ports,
        ["8080:8080", "127.0.0.1:9090:9090"],
        "admin on loopback only"
    );

    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(job["static_configs"][0]["targets"][0], "kbgate:9090");
    assert_eq!(prometheus["rule_files"][0], "alerts.yml");
}

#[test]
fn kubernetes_carries_the_config_probes_the_admin_port_and_reads_secrets() {
    let text = read("deploy/kubernetes/kbgate.yaml");
    let docs: Vec<Yaml> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("{k}"))
    };
    assert_eq!(
        kind("ConfigMap")["data"]["kbgate.yaml"].as_str().unwrap(),
        read("deploy/kbgate.yaml"),
        "the ConfigMap is deploy/kbgate.yaml, unchanged"
    );

    let pod = &kind("Deployment")["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9090");
    let container = &pod["spec"]["containers"][0];
    let admin = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .unwrap();
    assert_eq!(admin["containerPort"], 9090);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    let secret = yaml("deploy/kubernetes/secret.example.yaml");
    let env = container["env"].as_sequence().unwrap();
    for name in env_refs(&read("deploy/kbgate.yaml")) {
        let var = env.iter().find(|v| v["name"] == name.as_str());
        assert!(var.is_some(), "{name} is not set in the Deployment");
    }
    for name in ["KBGATE_ADMIN_TOKEN", "KB_API_KEY"] {
        let var = env.iter().find(|v| v["name"] == name).unwrap();
        let from = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], secret["metadata"]["name"], "{name}");
        let key = from["key"].as_str().unwrap();
        assert!(
            !secret["stringData"][key].is_null(),
            "{name}: no {key} in the Secret"
        );
    }
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > container_config().limits.shutdown_grace.as_secs());
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let text = read("deploy/Dockerfile");
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 2, "a build stage and a runtime stage");
    assert!(text.contains("COPY --from=build"));
    assert!(text.contains("COPY deploy/kbgate.yaml /etc/kbgate/kbgate.yaml"));
    let user = text.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
}

/// Every `kbgate_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("kbgate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn assert_exported(what: &str, text: &str) {
    let exported = [
        m::REQUESTS,
        m::IN_FLIGHT,
        m::AUTH_DECISIONS,
        m::HOT_TIER_LOOKUPS,
        m::STORE_LOOKUPS,
        m::STORE_ERRORS,
        m::UPSTREAM_ERRORS,
        m::KEY_REQUESTS,
        m::KEY_INFO,
        m::BUILD_INFO,
    ];
    let histograms = [m::REQUEST_DURATION, m::UPSTREAM_DURATION];
    let names = metric_names(text);
    assert!(!names.is_empty(), "{what} names no kbgate metric");
    for name in names {
        let known = exported.contains(&name.as_str())
            || histograms.iter().any(|h| {
                ["_bucket", "_sum", "_count"]
                    .map(|s| format!("{h}{s}"))
                    .contains(&name)
            });
        assert!(known, "{what}: kbgate exports no {name}");
    }
}

#[test]
fn dashboards_and_alerts_use_only_exported_metrics() {
    let dashboard: Json =
        serde_json::from_str(&read("deploy/grafana/kbgate-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            assert_exported(title, target["expr"].as_str().unwrap());
        }
    }
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Traffic per key",
        "Refusals by code",
        "Request latency percentiles",
        "Keys unused for 30 days",
    ] {
        assert!(titles.contains(&wanted), "{wanted}");
    }

    let alerts = yaml("deploy/prometheus/alerts.yml");
    for rule in alerts["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        let expr = rule["expr"].as_str().unwrap();
        if name != "KbgateDown" {
            assert_exported(name, expr);
        }
    }
}
