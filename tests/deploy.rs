//! The deployment files in deploy/ agree with kbgate and with each other: the container config
//! is a valid config with the shipped routes, the ConfigMap carries it unchanged, every `${ENV}`
//! it needs is set by compose and by the Deployment, probes and scrapes hit the admin port, and
//! dashboards and alerts name only metrics kbgate exports. The tools' own checks (promtool,
//! systemd-analyze, hadolint, yamllint) are in deploy/check.sh.

use kbgate::Config;
use kbgate::keys::StoreConfig;
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

    // The Secret is made by hand with the command in the header; it must hold what is read.
    let (secret_name, secret_keys) = documented_secret(&text);
    let env = container["env"].as_sequence().unwrap();
    for name in env_refs(&read("deploy/kbgate.yaml")) {
        let var = env.iter().find(|v| v["name"] == name.as_str());
        assert!(var.is_some(), "{name} is not set in the Deployment");
    }
    for name in ["KBGATE_ADMIN_TOKEN", "KB_API_KEY"] {
        let var = env.iter().find(|v| v["name"] == name).unwrap();
        let from = &var["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], secret_name.as_str(), "{name}");
        let key = from["key"].as_str().unwrap();
        assert!(
            secret_keys.contains(key),
            "{name}: the documented `kubectl create secret` sets no {key}"
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

/// The Secret name and keys of the `kubectl create secret generic NAME --from-literal=KEY=...`
/// command in a manifest's header comment.
fn documented_secret(text: &str) -> (String, BTreeSet<String>) {
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().trim_end_matches('\\'))
        .collect::<Vec<_>>()
        .join(" ");
    let command = header
        .split_once("kubectl create secret generic ")
        .unwrap_or_else(|| panic!("the header documents no `kubectl create secret`"))
        .1;
    let name = command.split_whitespace().next().unwrap().to_string();
    let keys = command
        .split("--from-literal=")
        .skip(1)
        .map(|rest| rest.split_once('=').unwrap().0.to_string())
        .collect();
    (name, keys)
}

/// Every file below `dir` of the repository, subfolders included, as a path string.
fn files_under(dir: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut folders = vec![format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"))];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path.display().to_string());
            } else {
                files.push(path.display().to_string());
            }
        }
    }
    files
}

/// Every document of every YAML file under `dir`, subfolders included (`kubectl apply -R`).
fn manifests(dir: &str) -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for name in files_under(dir) {
        let text = std::fs::read_to_string(&name).unwrap();
        if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc: Yaml =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !doc.is_null() {
                out.push((name.clone(), doc));
            }
        }
    }
    out
}

#[test]
fn applying_the_kubernetes_folder_installs_no_secret_and_everything_it_names() {
    let docs = manifests("deploy/kubernetes");
    assert!(docs.len() >= 3, "{docs:?}");
    for (file, doc) in &docs {
        assert_ne!(
            doc["kind"], "Secret",
            "{file}: `kubectl apply -f deploy/kubernetes/` would install (or overwrite) a Secret"
        );
        assert!(
            !serde_yaml::to_string(doc).unwrap().contains("REPLACE"),
            "{file} holds a placeholder"
        );
    }
    let find = |kind: &str, name: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    };

    // The Redis the Deployment names is a Service in the folder, selecting a Redis pod there.
    let deployment = find("Deployment", "kbgate").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let redis_url = env
        .iter()
        .find(|v| v["name"] == "KBGATE_REDIS_URL")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    let (host, port) = redis_url
        .strip_prefix("redis://")
        .and_then(|rest| rest.split_once(':'))
        .unwrap_or_else(|| panic!("{redis_url}"));
    let service =
        find("Service", host).unwrap_or_else(|| panic!("no Service {host} in the folder"));
    let port: u64 = port.parse().unwrap();
    assert!(
        service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["port"] == port),
        "Service {host} has no port {port}"
    );
    let selector = &service["spec"]["selector"];
    let redis = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| {
            d["kind"] == "StatefulSet" && &d["spec"]["template"]["metadata"]["labels"] == selector
        })
        .expect("a StatefulSet behind the Redis Service");
    let image = redis["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(image.starts_with("redis:"), "{image}");
    assert_eq!(
        yaml("deploy/compose.yaml")["services"]["redis"]["image"],
        image,
        "the same Redis as compose"
    );
    assert!(
        !redis["spec"]["volumeClaimTemplates"].is_null(),
        "the keys live in Redis: it keeps them on a volume"
    );
}

#[test]
fn the_image_tag_is_the_same_in_the_dockerfile_compose_and_kubernetes() {
    let wanted = format!("kbgate:{}", env!("CARGO_PKG_VERSION"));
    let compose = yaml("deploy/compose.yaml");
    assert_eq!(compose["services"]["kbgate"]["image"], wanted.as_str());
    let docs = manifests("deploy/kubernetes");
    let deployment = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "kbgate")
        .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        wanted.as_str()
    );
    let build = format!("docker build -f deploy/Dockerfile -t {wanted} .");
    for file in [
        "deploy/Dockerfile",
        "deploy/kubernetes/kbgate.yaml",
        "README.md",
    ] {
        assert!(
            read(file).contains(&build),
            "{file} does not document `{build}`"
        );
    }
}

/// Every admin-token value written out in the files a user copies from (deploy/, README,
/// config/), skipping `${VAR}` references and `$(command)` substitutions.
fn published_admin_tokens() -> BTreeSet<String> {
    let mut files = vec![
        format!("{}/README.md", env!("CARGO_MANIFEST_DIR")),
        format!("{}/config/kbgate.yaml", env!("CARGO_MANIFEST_DIR")),
    ];
    files.extend(files_under("deploy"));
    let mut tokens = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            for marker in [
                "admin-token:",
                "admin-token=",
                "KBGATE_ADMIN_TOKEN=",
                "KBGATE_ADMIN_TOKEN:",
                "token:",
            ] {
                for (_, rest) in line.match_indices(marker).map(|(i, _)| line.split_at(i)) {
                    let value = rest[marker.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_matches(|c| c == '"' || c == '\'' || c == '`');
                    if !value.is_empty() && !value.starts_with('$') {
                        tokens.insert(value.to_string());
                    }
                }
            }
        }
    }
    tokens
}

/// `kbgate check-config` on the container config with this admin token.
fn check_container_config(admin_token: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kbgate"))
        .args(["check-config", "--config", "deploy/kbgate.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("KBGATE_ADMIN_TOKEN", admin_token)
        .env("KB_URL", "https://kb.example.com")
        .env("KB_API_KEY", "kb-credential")
        .env("KBGATE_REDIS_URL", "redis://127.0.0.1:6379")
        .env_remove("RUST_LOG")
        .output()
        .expect("run kbgate")
}

#[test]
fn the_binary_refuses_every_admin_token_published_in_the_repository() {
    let good = check_container_config("a-secret-nobody-has-seen-0123456789");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let mut tokens = published_admin_tokens();
    tokens.extend(
        kbgate::config::PLACEHOLDER_ADMIN_TOKENS
            .iter()
            .map(|t| t.to_string()),
    );
    // The example Secret this repository once shipped.
    assert!(tokens.contains("REPLACE-with-at-least-16-random-characters"));
    for token in tokens {
        let output = check_container_config(&token);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{token:?} was accepted: {stderr}"
        );
        assert!(
            stderr.contains("config error: admin.token: "),
            "{token:?}: {stderr}"
        );
    }
    let upper = check_container_config("REPLACE-with-your-own-random-token");
    assert!(
        String::from_utf8_lossy(&upper.stderr).contains("admin.token: is a placeholder"),
        "{upper:?}"
    );
}

/// The README's worked example for a KB that is not HelpDocs is a valid config: its
/// `upstream`, `resources` and `routes` over the shipped config's other sections.
#[test]
fn the_readme_route_example_for_another_kb_is_a_valid_config() {
    let readme = read("README.md");
    let section = readme
        .split_once("### Routes for a KB that is not HelpDocs")
        .expect("the README's worked route example")
        .1;
    let example = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap()
        .0;
    let mut config: Yaml = serde_yaml::from_str(&read("config/kbgate.yaml")).unwrap();
    let example: Yaml = serde_yaml::from_str(example).unwrap();
    for (field, value) in example.as_mapping().unwrap() {
        config[field.as_str().unwrap()] = value.clone();
    }
    let env = |name: &str| Some(format!("{name}-0123456789abcdef"));
    let config = Config::parse_with_env(&serde_yaml::to_string(&config).unwrap(), &env)
        .unwrap_or_else(|e| panic!("README example: {e}"));
    assert_eq!(config.resources, ["book", "chapter", "page", "search"]);
    assert_eq!(
        config.upstream.origin.to_string(),
        "https://wiki.example.com/"
    );
    let table = config.routes.to_string();
    assert!(table.contains("/api/pages/{id}/export/{format}"), "{table}");
}
