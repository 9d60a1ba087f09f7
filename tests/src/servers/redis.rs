//! Ephemeral Redis servers and Redis Clusters.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{port_open, stop_child, START_LIMIT};
use crate::{free_port, wait_for};

/// An ephemeral Redis server that keeps nothing on disk.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("sluice-redis")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let child = Redis::spawn(port, dir.path());
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        redis.wait_ready().await;
        redis
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup)")
    }

    async fn wait_ready(&self) {
        wait_for("Redis to answer PING", START_LIMIT, || async {
            (port_open(self.port).await && self.command("PING").ok()? == "+PONG").then_some(())
        })
        .await;
    }

    /// Kills the server (SIGKILL: everything it held is gone).
    pub fn kill(&mut self) {
        stop_child(&mut self.child, "KILL");
    }

    /// Starts a new, empty server on the same port.
    pub async fn restart(&mut self) {
        self.child = Redis::spawn(self.port, self._dir.path());
        self.wait_ready().await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Sends one inline command and returns the first reply line.
    pub fn command(&self, cmd: &str) -> std::io::Result<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_child(&mut self.child, "KILL");
    }
}

/// An ephemeral Redis Cluster of three masters that keeps nothing on disk.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-redis-cluster")
            .tempdir()
            .expect("tempdir");
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let node_dir = dir.path().join(i.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .arg("--port")
                .arg(port.to_string())
                .arg("--cluster-port")
                .arg(free_port().to_string())
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/setup)");
            ports.push(port);
            children.push(child);
        }
        let cluster = RedisCluster {
            ports,
            children,
            _dir: dir,
        };
        for &port in &cluster.ports {
            wait_for("a cluster node to answer", START_LIMIT, || async move {
                port_open(port).await.then_some(())
            })
            .await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (scripts/setup)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for &port in &cluster.ports {
            wait_for("the cluster to be ready", START_LIMIT, || async move {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains("cluster_state:ok")
                    .then_some(())
            })
            .await;
        }
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            stop_child(child, "KILL");
        }
    }
}
