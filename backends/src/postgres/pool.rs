//! A bb8 pool of server connections for one route, with a checkout that fails fast when
//! the server cannot be reached and times out (as [`CheckoutError::Timeout`]) when every
//! connection stays busy.

use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use super::conn::{ConnectConfig, ServerConn};
use crate::BackendError;

pub use crate::pool::{CheckoutError, PoolSettings};

/// Opens and checks connections for bb8.
pub struct Manager {
    cfg: ConnectConfig,
    statement_cache: usize,
    /// Bumped with the error text on every failed connect, so waiting checkouts fail fast.
    failures: crate::pool::Failures,
    /// ParameterStatus values from the most recent successful connect.
    params: Arc<Mutex<Vec<(String, String)>>>,
}

impl bb8::ManageConnection for Manager {
    type Connection = ServerConn;
    type Error = BackendError;

    async fn connect(&self) -> Result<ServerConn, BackendError> {
        match ServerConn::connect(&self.cfg, self.statement_cache).await {
            Ok(conn) => {
                *self.params.lock().unwrap_or_else(|p| p.into_inner()) = conn.params.clone();
                Ok(conn)
            }
            Err(e) => {
                tracing::warn!(
                    host = %self.cfg.host,
                    port = self.cfg.port,
                    error = %e,
                    "server connection failed"
                );
                crate::pool::report_failure(&self.failures, &e);
                Err(e)
            }
        }
    }

    async fn is_valid(&self, conn: &mut ServerConn) -> Result<(), BackendError> {
        if conn.looks_alive() && conn.status == b'I' {
            Ok(())
        } else {
            tracing::debug!(status = conn.status, "idle server connection is not usable");
            Err(BackendError::Unavailable("server connection closed".into()))
        }
    }

    fn has_broken(&self, conn: &mut ServerConn) -> bool {
        conn.broken
    }
}

/// A checked-out server connection; returns to the pool when dropped unless broken.
pub type PooledServer = bb8::PooledConnection<'static, Manager>;

/// The server connections of one route.
pub struct PgPool {
    pool: bb8::Pool<Manager>,
    failures: watch::Receiver<(u64, String)>,
    params: Arc<Mutex<Vec<(String, String)>>>,
    settings: PoolSettings,
}

impl PgPool {
    /// Builds the pool without connecting; connections open on demand (and `min_idle`
    /// in the background), so sluice starts even while the server is down.
    pub fn new(cfg: ConnectConfig, settings: PoolSettings) -> PgPool {
        let (tx, rx) = watch::channel((0, String::new()));
        let params = Arc::new(Mutex::new(Vec::new()));
        let manager = Manager {
            cfg,
            statement_cache: settings.statement_cache,
            failures: tx,
            params: params.clone(),
        };
        let pool = crate::pool::builder(&settings).build_unchecked(manager);
        PgPool {
            pool,
            failures: rx,
            params,
            settings,
        }
    }

    /// Takes a server connection: fails at once with the connect error when opening one
    /// fails, and with [`CheckoutError::Timeout`] after the checkout timeout.
    pub async fn checkout(&self) -> Result<PooledServer, CheckoutError> {
        crate::pool::checkout(&self.pool, &self.failures, &self.settings).await
    }

    /// ParameterStatus values of the server (from the latest connection opened).
    pub fn server_params(&self) -> Vec<(String, String)> {
        self.params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True once a connection has been opened (so [`PgPool::server_params`] is known).
    pub fn knows_server(&self) -> bool {
        !self
            .params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// (open connections, idle connections).
    pub fn state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }
}
