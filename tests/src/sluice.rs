//! sluice under test: a config written to a temp dir, started in-process on port 0, or as
//! a child process of the built `sluice` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use proxy::app::Running;
use proxy::config::Config;

use crate::certs::TestPki;

/// Password of every user [`SluiceConfig`] creates.
pub const PASSWORD: &str = "s3cret-pw";

/// Builds a config: TLS from a fresh PKI, users with SCRAM verifiers, a seeded SQLite route.
pub struct SluiceConfig {
    pub tls_mode: &'static str,
    pub users: Vec<(String, &'static str)>,
    pub seed_sql: String,
    pub login_timeout_secs: f64,
    pub shutdown_timeout_secs: f64,
    pub extra: String,
    /// Lines added to every user's table (connection rules).
    pub user_options: String,
    /// Lines added to the `[server]` table.
    pub server_options: String,
}

impl Default for SluiceConfig {
    fn default() -> Self {
        SluiceConfig {
            tls_mode: "require",
            users: vec![("alice".into(), "scram-sha-256")],
            seed_sql: "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, \
                       in_stock BOOLEAN, data BLOB);\n\
                       INSERT INTO items VALUES (1, 'apple', 0.5, 1, x'00ff'), (2, 'pear', 0.75, 0, NULL), \
                       (3, 'plum', NULL, 1, x'');\n"
                .into(),
            login_timeout_secs: 10.0,
            shutdown_timeout_secs: 10.0,
            extra: String::new(),
            user_options: String::new(),
            server_options: String::new(),
        }
    }
}

/// A config on disk with everything it references.
pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
    pub path: PathBuf,
}

impl SluiceConfig {
    /// Writes the config, seed file and certificates into a temp dir.
    pub fn write(&self) -> Prepared {
        let pki = TestPki::generate();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("seed.sql"), &self.seed_sql).expect("write seed");
        let mut text = format!(
            "[server]\nlogin_timeout_secs = {}\nshutdown_timeout_secs = {}\n{}\n\
             [listeners]\npostgres = \"127.0.0.1:0\"\nmysql = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [tls]\nmode = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [backends.lite]\nkind = \"sqlite\"\npath = \"app.db\"\nseed = \"seed.sql\"\n\
             [routes.app]\nbackend = \"lite\"\n",
            self.login_timeout_secs,
            self.shutdown_timeout_secs,
            self.server_options,
            self.tls_mode,
            pki.server_cert.display(),
            pki.server_key.display(),
        );
        for (name, method) in &self.users {
            let verifier = match *method {
                "md5" => proxy::auth::md5_verifier(PASSWORD, name),
                _ => proxy::auth::scram_verifier(PASSWORD, 4096),
            };
            text.push_str(&format!(
                "[users.{name}]\npassword = \"{verifier}\"\nauth = \"{method}\"\n\
                 mysql_native_password = \"{}\"\n{}\n",
                proxy::auth::mysql::native_verifier(PASSWORD),
                self.user_options
            ));
        }
        text.push_str(&self.extra);
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, text).expect("write config");
        Prepared { dir, pki, path }
    }

    /// Starts sluice in this process.
    pub async fn start(&self) -> TestSluice {
        // SLUICE_TEST_LOG=debug (an env filter) shows sluice's log while debugging a test.
        if let Ok(filter) = std::env::var("SLUICE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let prepared = self.write();
        let config = Config::load(&prepared.path).expect("test config is valid");
        let running = proxy::app::start(config).await.expect("sluice starts");
        TestSluice {
            pg: running.postgres_addr.expect("postgres listener"),
            mysql: running.mysql_addr.expect("mysql listener"),
            admin: running.admin_addr.expect("admin listener"),
            running: Some(running),
            prepared,
        }
    }
}

/// An in-process sluice; stopped when dropped (or explicitly with [`TestSluice::stop`]).
pub struct TestSluice {
    pub pg: SocketAddr,
    pub mysql: SocketAddr,
    pub admin: SocketAddr,
    pub prepared: Prepared,
    running: Option<Running>,
}

impl TestSluice {
    /// A libpq connection string for `user` with the test password.
    pub fn conninfo(&self, user: &str, dbname: &str, sslmode: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={PASSWORD} dbname={dbname} sslmode={sslmode}",
            self.pg.port()
        )
    }

    /// A PostgreSQL conninfo that verifies the server against the test CA.
    pub fn verified_conninfo(&self, user: &str, dbname: &str) -> String {
        format!(
            "{} sslrootcert={}",
            self.conninfo(user, dbname, "verify-ca"),
            self.prepared.pki.ca_cert.display()
        )
    }

    /// The environment Python client snippets read: the MySQL listener's `PORT`, the
    /// test password `PW`, and the test CA certificate `CA`.
    pub fn mysql_env(&self) -> Vec<(&'static str, String)> {
        self.client_env(self.mysql.port())
    }

    /// As [`TestSluice::mysql_env`], with the PostgreSQL listener's `PORT`.
    pub fn pg_env(&self) -> Vec<(&'static str, String)> {
        self.client_env(self.pg.port())
    }

    fn client_env(&self, port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("PORT", port.to_string()),
            ("PW", PASSWORD.to_string()),
            ("CA", self.prepared.pki.ca_cert.display().to_string()),
        ]
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

impl Drop for TestSluice {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown_token().cancel();
        }
    }
}

/// The `sluice` binary built next to this test executable.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("sluice");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p proxy --bin sluice)",
        bin.display()
    );
    bin
}

/// Runs `sluice ARGS` to completion, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("sluice output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A sluice child process; killed when dropped.
pub struct SluiceProcess {
    pub child: Child,
}

impl SluiceProcess {
    pub fn spawn(config: &Path) -> SluiceProcess {
        Self::spawn_via(&[], config)
    }

    /// Runs sluice through `wrapper` (a command and its arguments, e.g. taskset's).
    pub fn spawn_via(wrapper: &[&str], config: &Path) -> SluiceProcess {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = command
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        SluiceProcess { child }
    }

    /// Reads sluice's log (stderr) until a line contains `text`: that line, or None when
    /// the log ended first.
    pub fn log_line(&mut self, text: &str) -> Option<String> {
        use std::io::BufRead;
        let stderr = self.child.stderr.as_mut()?;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains(text))
    }

    /// Sends a signal by name (TERM, INT, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Config lines for a PostgreSQL backend `{route}_pg` on `port` (as [`PG_ROLE`]) and a
/// route `route` to database `db` in pool mode `mode`; `opts` adds route keys.
///
/// [`PG_ROLE`]: crate::servers::PG_ROLE
pub fn pg_route(route: &str, port: u16, db: &str, mode: &str, opts: &str) -> String {
    pg_route_as(route, port, db, mode, opts, crate::servers::PG_ROLE)
}

/// A route to a MariaDB database, logging in as [`crate::servers::MY_ROLE`].
pub fn my_route(route: &str, port: u16, db: &str, mode: &str, opts: &str) -> String {
    format!(
        "[backends.{route}_my]\nkind = \"mysql\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         user = \"{role}\"\npassword = \"{pw}\"\nconnect_timeout_secs = 2\n\
         [routes.{route}]\nbackend = \"{route}_my\"\ndatabase = \"{db}\"\npool_mode = \"{mode}\"\n{opts}\n",
        role = crate::servers::MY_ROLE,
        pw = crate::servers::PG_PASSWORD,
    )
}

/// [`pg_route`] logging in to the server as `role`.
pub fn pg_route_as(route: &str, port: u16, db: &str, mode: &str, opts: &str, role: &str) -> String {
    format!(
        "[backends.{route}_pg]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         user = \"{role}\"\npassword = \"{pw}\"\nconnect_timeout_secs = 2\n\
         [routes.{route}]\nbackend = \"{route}_pg\"\ndatabase = \"{db}\"\npool_mode = \"{mode}\"\n{opts}\n",
        pw = crate::servers::PG_PASSWORD,
    )
}
