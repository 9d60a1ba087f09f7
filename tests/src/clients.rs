//! Real clients: tokio-postgres over rustls, and the psql and pgbench command-line tools.

use std::process::Output;

use tokio::process::Command;

use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::certs::TestPki;

/// Connects tokio-postgres with TLS (trusting the test CA), spawning its connection task.
pub async fn connect_tls(conninfo: &str, pki: &TestPki) -> Result<Client, tokio_postgres::Error> {
    let tls = MakeRustlsConnect::new(pki.client_config());
    let (client, conn) = tokio_postgres::connect(conninfo, tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Connects tokio-postgres without TLS.
pub async fn connect_plain(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Runs psql with `conninfo` and extra arguments; no psqlrc, no password prompt.
pub async fn psql(conninfo: &str, args: &[&str]) -> Output {
    Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env_remove("PGPASSWORD")
        .output()
        .await
        .expect("psql is installed (scripts/setup)")
}

/// Runs pgbench with `conninfo` pieces given as arguments.
pub async fn pgbench(args: &[&str], password: &str, sslmode: &str) -> Output {
    Command::new("pgbench")
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", sslmode)
        .output()
        .await
        .expect("pgbench is installed (scripts/setup)")
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Runs a Python snippet with the test venv (made by scripts/setup); returns its output.
pub async fn python(script: &str, env: &[(&str, String)]) -> Output {
    Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("run python")
}

/// Runs a Python snippet with the test venv, feeding `input` on stdin.
pub async fn python_stdin(script: &str, env: &[(&str, String)], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write to python");
    drop(stdin);
    child.wait_with_output().await.expect("python output")
}

/// Starts a Python snippet with the test venv, stdout piped, killed when dropped: for
/// clients that must die mid-session.
pub fn python_spawn(script: &str, env: &[(&str, String)]) -> tokio::process::Child {
    Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python")
}

/// A Python snippet of the test venv that the test talks to line by line (stdin and
/// stdout; stderr goes to the test's); killed when dropped.
pub struct Interactive {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Interactive {
    pub fn start(script: &str, env: &[(&str, String)]) -> Interactive {
        use tokio::io::AsyncBufReadExt;
        let mut child = Command::new(venv_python())
            .arg("-c")
            .arg(script)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run python");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        Interactive {
            _child: child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// The next line the snippet prints (None: it ended).
    pub async fn line(&mut self) -> Option<String> {
        self.lines.next_line().await.expect("python stdout")
    }

    /// Sends one line to the snippet's stdin.
    pub async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("python stdin");
    }
}

/// The Python of the test venv (made by scripts/setup).
pub fn venv_python() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.is_file(),
        "{} is missing: run scripts/setup",
        venv.display()
    );
    venv
}

/// One HTTP/1.1 GET; returns the status line and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    http(addr, "GET", path).await
}

/// POSTs to the admin listener: (status line, body).
pub async fn http_post(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    http(addr, "POST", path).await
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to admin");
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read response");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Starts psql reading commands from a pipe, for tests that kill it mid-session.
pub fn psql_interactive(conninfo: &str) -> tokio::process::Child {
    Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-w", "-q"])
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("psql is installed (scripts/setup)")
}

/// Runs psql with `input` on stdin (COPY FROM STDIN).
pub async fn psql_with_input(conninfo: &str, args: &[&str], input: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql is installed (scripts/setup)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("write to psql");
    drop(stdin);
    child.wait_with_output().await.expect("psql output")
}

/// Runs the mariadb CLI (batch mode, no defaults files) with `args`, feeding `input`.
pub async fn mariadb(args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("mariadb")
        .arg("--no-defaults")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mariadb client is installed (scripts/setup)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    child.wait_with_output().await.expect("mariadb output")
}

/// The sum of the Prometheus lines of `body` that start with `prefix` (name and labels),
/// or 0.
pub fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
