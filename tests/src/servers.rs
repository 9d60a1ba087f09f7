//! Ephemeral database servers for tests, started from the installed binaries in temp dirs
//! on free loopback ports, and stopped when dropped. When running as root, PostgreSQL runs
//! as the `postgres` system user (it refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

const START_LIMIT: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest installed PostgreSQL server binary directory.
fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server is installed (scripts/setup)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("a PostgreSQL bin directory under /usr/lib/postgresql")
}

/// A command run as the postgres user when we are root.
fn pg_command(bin: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn stop_child(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// An ephemeral PostgreSQL server with trust authentication for user `postgres`.
pub struct Postgres {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub async fn start() -> Postgres {
        let root = is_root();
        let bindir = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        if root {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path())
                .status();
            assert!(
                ok.map(|s| s.success()).unwrap_or(false),
                "chown of the PostgreSQL temp dir"
            );
        }
        let out = pg_command(&bindir.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = pg_command(&bindir.join("postgres"), root)
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        let pg = Postgres {
            port,
            child,
            _dir: dir,
        };
        wait_for("PostgreSQL to accept connections", START_LIMIT, || async {
            let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
            crate::clients::connect_plain(&conninfo)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        pg
    }

    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the data dir is thrown away anyway.
        stop_child(&mut self.child, "QUIT");
    }
}

/// An ephemeral MariaDB server; `root` has no password, reachable on 127.0.0.1 only.
pub struct Mariadb {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mariadb {
    pub async fn start() -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("sluice-maria")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let user = if is_root() { "--user=root" } else { "--user=" };
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(user)
            .output()
            .expect("mariadb-install-db is installed (scripts/setup)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
            ])
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        let db = Mariadb {
            port,
            child,
            _dir: dir,
        };
        wait_for("MariaDB to answer queries", START_LIMIT, || async {
            db.sql("SELECT 1").ok().map(|_| ())
        })
        .await;
        db
    }

    /// Runs SQL through the mariadb CLI as root; returns tab-separated output.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "-u", "root", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .arg("-e")
            .arg(sql)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        stop_child(&mut self.child, "KILL");
    }
}

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
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup)");
        let redis = Redis {
            port,
            child,
            _dir: dir,
        };
        wait_for("Redis to answer PING", START_LIMIT, || async {
            (port_open(port).await && redis.command("PING").ok()? == "+PONG").then_some(())
        })
        .await;
        redis
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
