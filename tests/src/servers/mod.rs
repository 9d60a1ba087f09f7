//! Ephemeral database servers for tests, started from the installed binaries in temp dirs
//! on free loopback ports, and stopped when dropped. When running as root, PostgreSQL runs
//! as the `postgres` system user (it refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

mod redis;
pub use redis::{Redis, RedisCluster};

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

/// Role sluice logs in as on test PostgreSQL servers (SCRAM-SHA-256 password).
pub const PG_ROLE: &str = "sluice_backend";
/// A role with an md5-hashed password, for the md5 path.
pub const PG_MD5_ROLE: &str = "sluice_md5";
/// Password of both roles.
pub const PG_PASSWORD: &str = "backend-pw";

/// An ephemeral PostgreSQL server: `postgres` is trusted; [`PG_ROLE`] (SCRAM) and
/// [`PG_MD5_ROLE`] (md5) log in with [`PG_PASSWORD`] over TCP.
pub struct Postgres {
    pub port: u16,
    bindir: PathBuf,
    data: PathBuf,
    root: bool,
    /// Extra `-c` settings (TLS).
    settings: Vec<String>,
    child: std::sync::Mutex<Option<Child>>,
    dir: tempfile::TempDir,
}

static SHARED_PG: tokio::sync::Mutex<std::sync::Weak<Postgres>> =
    tokio::sync::Mutex::const_new(std::sync::Weak::new());

impl Postgres {
    /// A server shared by the tests running at the same time; it stops when the last of
    /// them lets go. Tests that stop or restart a server start their own instead.
    pub async fn shared() -> std::sync::Arc<Postgres> {
        let mut slot = SHARED_PG.lock().await;
        if let Some(pg) = slot.upgrade() {
            return pg;
        }
        let pg = std::sync::Arc::new(Postgres::start().await);
        *slot = std::sync::Arc::downgrade(&pg);
        pg
    }

    pub async fn start() -> Postgres {
        Postgres::start_with(None).await
    }

    /// A server that accepts [`PG_ROLE`] and [`PG_MD5_ROLE`] only over TLS, with the
    /// certificate of `pki` (valid for `localhost` and `127.0.0.1`).
    pub async fn start_tls(pki: &crate::certs::TestPki) -> Postgres {
        Postgres::start_with(Some(pki)).await
    }

    async fn start_with(pki: Option<&crate::certs::TestPki>) -> Postgres {
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
        let mut hba = String::from(
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n",
        );
        let mut settings = Vec::new();
        if let Some(pki) = pki {
            // The key must belong to the server's user and be private to it.
            for (from, to) in [
                (&pki.server_cert, "server.crt"),
                (&pki.server_key, "server.key"),
            ] {
                let dest = data.join(to);
                std::fs::copy(from, &dest).expect("copy TLS file into the data dir");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod TLS file");
                if root {
                    let ok = Command::new("chown").arg("postgres:").arg(&dest).status();
                    assert!(ok.map(|s| s.success()).unwrap_or(false), "chown TLS file");
                }
            }
            settings.push("ssl=on".to_string());
            hba.push_str("hostnossl all all 127.0.0.1/32 reject\n");
        }
        hba.push_str(&format!(
            "host all {PG_MD5_ROLE} 127.0.0.1/32 md5\n\
             host all all 127.0.0.1/32 scram-sha-256\n"
        ));
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let pg = Postgres {
            port: free_port(),
            bindir,
            data,
            root,
            settings,
            child: std::sync::Mutex::new(None),
            dir,
        };
        pg.spawn().await;
        let admin = crate::clients::connect_plain(&pg.conninfo("postgres"))
            .await
            .expect("connect as postgres");
        admin
            .batch_execute(&format!(
                "CREATE ROLE {PG_ROLE} LOGIN CREATEDB PASSWORD '{PG_PASSWORD}';\n\
                 SET password_encryption = 'md5';\n\
                 CREATE ROLE {PG_MD5_ROLE} LOGIN PASSWORD '{PG_PASSWORD}';"
            ))
            .await
            .expect("create test roles");
        pg
    }

    /// Starts the server process on the data dir and waits until it accepts connections.
    async fn spawn(&self) {
        let child = pg_command(&self.bindir.join("postgres"), self.root)
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
            ])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        *self.child.lock().expect("child lock") = Some(child);
        let conninfo = self.conninfo("postgres");
        wait_for("PostgreSQL to accept connections", START_LIMIT, || async {
            crate::clients::connect_plain(&conninfo)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// Stops the server at once, as `pg_ctl stop -m immediate` does (SIGQUIT).
    pub fn stop_immediate(&self) {
        if let Some(mut child) = self.child.lock().expect("child lock").take() {
            stop_child(&mut child, "QUIT");
        }
    }

    /// Starts the server again after [`Postgres::stop_immediate`].
    pub async fn restart(&self) {
        self.spawn().await;
    }

    /// A conninfo for the trusted superuser.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// A conninfo for [`PG_ROLE`], the owner of the databases tests create.
    pub fn owner_conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={PG_ROLE} password={PG_PASSWORD} dbname={db}",
            self.port
        )
    }

    /// Connects as [`PG_ROLE`] to `db`, directly (not through sluice).
    pub async fn connect_owner(&self, db: &str) -> tokio_postgres::Client {
        crate::clients::connect_plain(&self.owner_conninfo(db))
            .await
            .expect("connect as the database owner")
    }

    /// Creates a fresh database owned by [`PG_ROLE`] and returns its name.
    pub async fn create_database(&self, prefix: &str) -> String {
        let name = crate::unique_name(prefix);
        let admin = crate::clients::connect_plain(&self.conninfo("postgres"))
            .await
            .expect("connect as postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {PG_ROLE}"))
            .await
            .expect("create database");
        name
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the data dir is thrown away anyway.
        self.stop_immediate();
    }
}

/// An ephemeral MariaDB server; `root` has no password, reachable on 127.0.0.1 only.
pub struct Mariadb {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

static SHARED_MARIA: tokio::sync::Mutex<std::sync::Weak<Mariadb>> =
    tokio::sync::Mutex::const_new(std::sync::Weak::new());

/// The account sluice logs in to test MariaDB servers with ([`PG_PASSWORD`]).
pub const MY_ROLE: &str = "sluice_backend";

impl Mariadb {
    pub async fn start() -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("sluice-maria")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        // temporary tables in the server's own dir: names in a shared /tmp can collide
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let tmpdir = format!("--tmpdir={}", tmp.display());
        let user = if is_root() { "--user=root" } else { "--user=" };
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(&tmpdir)
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
            .arg(&tmpdir)
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
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
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
        db.sql(&format!(
            "CREATE USER '{MY_ROLE}'@'%' IDENTIFIED BY '{PG_PASSWORD}';\
             GRANT ALL ON *.* TO '{MY_ROLE}'@'%';"
        ))
        .expect("create the sluice role");
        db
    }

    /// A server shared by the tests running at the same time (see [`Postgres::shared`]).
    pub async fn shared() -> std::sync::Arc<Mariadb> {
        let mut slot = SHARED_MARIA.lock().await;
        if let Some(db) = slot.upgrade() {
            return db;
        }
        let db = std::sync::Arc::new(Mariadb::start().await);
        *slot = std::sync::Arc::downgrade(&db);
        db
    }

    /// Creates a fresh database and returns its name.
    pub fn create_database(&self, prefix: &str) -> String {
        let name = crate::unique_name(prefix);
        self.sql(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        name
    }

    fn sql_command(&self, sql: &str) -> Command {
        let mut c = Command::new("mariadb");
        c.args([
            "--no-defaults",
            "--default-character-set=utf8mb4",
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-N",
            "-B",
        ])
        .arg(format!("-P{}", self.port))
        .arg("-e")
        .arg(sql);
        c
    }

    /// Runs SQL through the mariadb CLI as root; returns tab-separated output. Blocks the
    /// thread: use [`Mariadb::query`] while an in-process sluice must keep serving.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        cli_output(self.sql_command(sql).output())
    }

    /// [`Mariadb::sql`] without blocking the runtime.
    pub async fn query(&self, sql: &str) -> Result<String, String> {
        cli_output(
            tokio::process::Command::from(self.sql_command(sql))
                .output()
                .await,
        )
    }
}

fn cli_output(out: std::io::Result<std::process::Output>) -> Result<String, String> {
    let out = out.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        stop_child(&mut self.child, "KILL");
    }
}
