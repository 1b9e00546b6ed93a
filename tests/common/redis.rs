//! A real `redis-server` per test, on a free port, with an append-only file so it can be killed
//! and restarted with its data. Where redis-server is not installed, tests say so and skip —
//! unless KBGATE_REQUIRE_REDIS=1 (set by .ci/run), which makes its absence a failure.

use kbgate::keys::StoreConfig;
use kbgate::keys::redis::RedisConfig;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts redis-server, or returns None (after saying so) when it is not installed.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_on(super::free_port())
    }

    /// Starts redis-server on `port` (e.g. one a gateway was configured with before).
    pub fn start_on(port: u16) -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("KBGATE_REQUIRE_REDIS").is_err(),
                "KBGATE_REQUIRE_REDIS is set but redis-server is not installed"
            );
            eprintln!("SKIPPED: redis-server is not installed; this Redis test did not run");
            return None;
        }
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A store config for this server; instances sharing a prefix share their keys. Its 2 s
    /// timeout: long enough that an admin write on a loaded 2-core machine does not fail.
    pub fn store(&self, prefix: &str) -> StoreConfig {
        StoreConfig::Redis(RedisConfig {
            urls: vec![self.url()],
            cluster: false,
            prefix: prefix.into(),
            timeout: Duration::from_secs(2),
        })
    }

    /// (Re)starts the server on the same port and data folder, and waits until it answers.
    pub fn restart(&mut self) {
        self.start_with(&[]);
    }

    fn start_with(&mut self, extra: &[&str]) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a slow Redis, connections left open.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Runs one command with a plain RESP client; None when the server does not answer.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut buffer = vec![0u8; 64 * 1024];
        let n = stream.read(&mut buffer).ok()?;
        let reply = String::from_utf8_lossy(&buffer[..n]).to_string();
        Some(reply.trim_start_matches(['+', ':']).trim_end().to_string())
    }

    /// How many times Redis has run `command` (from INFO commandstats).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]).unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

/// Three redis-server nodes joined into a Redis Cluster (no replicas) by `redis-cli --cluster`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Option<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = super::free_port();
            let mut node = RedisServer {
                port,
                dir: tempfile::tempdir().unwrap(),
                child: None,
            };
            node.start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed with redis-server");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "INFO"])
                .is_some_and(|info| info.contains("cluster_state:ok"))
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not become ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    pub fn store(&self, prefix: &str) -> StoreConfig {
        StoreConfig::Redis(RedisConfig {
            urls: self
                .nodes
                .iter()
                .map(|n| n.url().replace("/0", ""))
                .collect(),
            cluster: true,
            // A hash tag keeps all of kbgate's keys in one slot, as the config does for clusters.
            prefix: format!("{{{prefix}}}"),
            timeout: Duration::from_millis(1000),
        })
    }
}
