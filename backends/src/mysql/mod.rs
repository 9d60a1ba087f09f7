//! MySQL/MariaDB backends: mysql_async connections in a bb8 pool per route.
//!
//! The pool hands out [`MyConn`]s: a driver connection plus what sluice tracks about it
//! (when it was last used, whether its session was changed, whether it broke). A
//! connection idle for a while is pinged before it is handed out; one whose session a
//! client changed is reset (COM_RESET_CONNECTION) before reuse. `LOAD DATA LOCAL INFILE`
//! has no handler, so the driver never reads a file on the sluice host.

use std::time::{Duration, Instant};

pub mod neutral;
pub mod scan;

pub use mysql_async;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};
use tokio::sync::watch;

use crate::pool::{CheckoutError, Failures, PoolSettings};
use crate::BackendError;

/// How to reach and log in to one server database.
#[derive(Clone)]
pub struct MyConnectConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub connect_timeout: Duration,
    /// TLS with the server certificate checked against this CA (PEM), and optionally a
    /// name other than `host` to check it for.
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_server_name: Option<String>,
}

impl MyConnectConfig {
    fn opts(&self, statement_cache: usize) -> Opts {
        let ssl = self.tls_ca.as_ref().map(|ca| {
            let mut ssl = SslOpts::default()
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
            if let Some(name) = &self.tls_server_name {
                ssl = ssl.with_danger_tls_hostname_override(Some(name.clone()));
            }
            ssl
        });
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .db_name(Some(self.database.clone()))
            .prefer_socket(false)
            .tcp_nodelay(true)
            .stmt_cache_size(statement_cache.max(1))
            .ssl_opts(ssl)
            .into()
    }
}

/// What a server says of itself that decides how sluice reads statements for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `@@SESSION.sql_mode` of a new connection (the server's default).
    pub sql_mode: String,
    /// `@@lower_case_table_names`: 0 table names are case-sensitive, 1 and 2 compared
    /// in lower case.
    pub lower_case_table_names: u8,
}

type SharedFacts = std::sync::Arc<std::sync::Mutex<Option<ServerFacts>>>;

/// A server connection with sluice's bookkeeping.
pub struct MyConn {
    pub conn: Conn,
    /// The route's database, selected again after a reset (a client may have switched).
    database: String,
    pub last_used: Instant,
    /// The client changed session state (variables, temporary tables, locks...): reset
    /// before another client gets it.
    pub dirty: bool,
    /// The connection cannot be trusted any more: close it.
    pub broken: bool,
}

impl MyConn {
    /// The server's id for this connection (for KILL).
    pub fn id(&self) -> u32 {
        self.conn.id()
    }

    /// True while the server reports an open transaction.
    pub fn in_transaction(&self) -> bool {
        self.conn
            .last_ok_packet()
            .map(|ok| {
                ok.status_flags()
                    .contains(mysql_async::consts::StatusFlags::SERVER_STATUS_IN_TRANS)
            })
            .unwrap_or(false)
    }

    /// COM_RESET_CONNECTION: rolls back, drops temporary tables, locks, variables and
    /// prepared statements (COM_CHANGE_USER on servers too old for it). Marks the
    /// connection broken when that fails.
    pub async fn reset(&mut self) -> bool {
        let result = match self.conn.reset().await {
            Ok(true) => {
                let use_db = format!("USE `{}`", self.database.replace('`', "``"));
                self.conn.query_drop(use_db).await
            }
            Ok(false) => self.conn.change_user(Default::default()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.dirty = false;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "server connection reset failed");
                self.broken = true;
                false
            }
        }
    }
}

/// Maps a driver error: server errors keep their code, SQLSTATE and message; everything
/// else means the connection is gone.
pub fn error(e: mysql_async::Error) -> BackendError {
    match e {
        mysql_async::Error::Server(s) => BackendError::MySql {
            code: s.code,
            sqlstate: s.state,
            message: s.message,
        },
        other => BackendError::Unavailable(other.to_string()),
    }
}

/// Opens and checks connections for bb8.
pub struct Manager {
    opts: Opts,
    connect_timeout: Duration,
    failures: Failures,
    facts: SharedFacts,
}

/// Reads what decides how sluice reads statements for this server.
async fn read_facts(conn: &mut Conn) -> Result<ServerFacts, mysql_async::Error> {
    let row: Option<(String, u8)> = conn
        .query_first("SELECT @@SESSION.sql_mode, @@lower_case_table_names")
        .await?;
    let (sql_mode, lower_case_table_names) = row.unwrap_or_default();
    Ok(ServerFacts {
        sql_mode,
        lower_case_table_names,
    })
}

/// An idle connection unused for this long is pinged before it is handed out.
const PING_AFTER: Duration = Duration::from_secs(5);

impl bb8::ManageConnection for Manager {
    type Connection = MyConn;
    type Error = BackendError;

    async fn connect(&self) -> Result<MyConn, BackendError> {
        let opened = tokio::time::timeout(self.connect_timeout, async {
            let mut conn = Conn::new(self.opts.clone()).await?;
            let facts = read_facts(&mut conn).await?;
            *self.facts.lock().unwrap_or_else(|e| e.into_inner()) = Some(facts);
            Ok::<_, mysql_async::Error>(conn)
        })
        .await;
        let result = match opened {
            Ok(Ok(conn)) => Ok(MyConn {
                conn,
                database: self.opts.db_name().unwrap_or_default().to_string(),
                last_used: Instant::now(),
                dirty: false,
                broken: false,
            }),
            Ok(Err(e)) => Err(match error(e) {
                BackendError::MySql { code, message, .. } => BackendError::Unavailable(format!(
                    "server refused the connection: {code} {message}"
                )),
                other => other,
            }),
            Err(_) => Err(BackendError::Unavailable(format!(
                "connect: timed out after {:?}",
                self.connect_timeout
            ))),
        };
        if let Err(e) = &result {
            tracing::warn!(
                host = %self.opts.ip_or_hostname(),
                port = self.opts.tcp_port(),
                error = %e,
                "server connection failed"
            );
            crate::pool::report_failure(&self.failures, e);
        }
        result
    }

    async fn is_valid(&self, conn: &mut MyConn) -> Result<(), BackendError> {
        if conn.dirty && !conn.reset().await {
            return Err(BackendError::Unavailable("reset failed".into()));
        }
        if conn.last_used.elapsed() >= PING_AFTER {
            conn.conn.ping().await.map_err(error)?;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut MyConn) -> bool {
        conn.broken || conn.conn.is_disconnected()
    }
}

/// A checked-out server connection; returns to the pool when dropped unless broken.
pub type PooledMyConn = bb8::PooledConnection<'static, Manager>;

/// The server connections of one MySQL/MariaDB route.
pub struct MyPool {
    pool: bb8::Pool<Manager>,
    failures: watch::Receiver<(u64, String)>,
    settings: PoolSettings,
    facts: SharedFacts,
}

impl MyPool {
    /// Builds the pool without connecting, so sluice starts while the server is down.
    pub fn new(cfg: &MyConnectConfig, settings: PoolSettings) -> MyPool {
        let (tx, rx) = watch::channel((0, String::new()));
        let facts = SharedFacts::default();
        let manager = Manager {
            opts: cfg.opts(settings.statement_cache),
            connect_timeout: cfg.connect_timeout,
            failures: tx,
            facts: facts.clone(),
        };
        let pool = crate::pool::builder(&settings).build_unchecked(manager);
        MyPool {
            pool,
            failures: rx,
            settings,
            facts,
        }
    }

    /// The server's facts as its newest connection reported them, connecting first when
    /// no connection was made yet.
    pub async fn server_facts(&self) -> Result<ServerFacts, BackendError> {
        if let Some(f) = self.facts.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(f);
        }
        let conn = self.checkout().await.map_err(|e| match e {
            CheckoutError::Unavailable(e) => e,
            t @ CheckoutError::Timeout(_) => BackendError::Unavailable(t.to_string()),
        })?;
        drop(conn);
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| BackendError::Unavailable("server facts unknown".into()))
    }

    /// Takes a server connection (see [`crate::pool::checkout`]).
    pub async fn checkout(&self) -> Result<PooledMyConn, CheckoutError> {
        crate::pool::checkout(&self.pool, &self.failures, &self.settings).await
    }

    /// Runs one statement on a pooled connection and drops its results (KILL QUERY).
    pub async fn run(&self, sql: &str) -> Result<(), BackendError> {
        let mut conn = self.checkout().await.map_err(|e| match e {
            CheckoutError::Unavailable(e) => e,
            t @ CheckoutError::Timeout(_) => BackendError::Unavailable(t.to_string()),
        })?;
        let r = conn.conn.query_drop(sql).await.map_err(error);
        conn.last_used = Instant::now();
        r
    }

    /// (open connections, idle connections).
    pub fn state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }
}
