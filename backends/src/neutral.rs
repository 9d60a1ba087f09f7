//! A backend session that answers with neutral results, whatever its protocol: what a
//! cross-protocol frontend session talks to.

use crate::mysql::PooledMyConn;
use crate::result::{BatchOutcome, Description, ResultSet, Value};
use crate::sqlite::SqliteSession;
use crate::BackendError;

/// One client's backend session on a route it reaches through neutral results.
pub enum NeutralSession {
    Sqlite(SqliteSession),
    /// A MySQL/MariaDB connection held for the whole client session; it is marked dirty,
    /// so it is reset before anyone else uses it.
    Mysql(PooledMyConn),
}

impl NeutralSession {
    /// Wraps a MySQL/MariaDB connection checked out for one client session.
    pub fn mysql(mut conn: PooledMyConn) -> NeutralSession {
        conn.dirty = true;
        NeutralSession::Mysql(conn)
    }

    /// True while an explicit transaction is open.
    pub fn in_transaction(&self) -> bool {
        match self {
            NeutralSession::Sqlite(s) => s.in_transaction(),
            NeutralSession::Mysql(c) => c.in_transaction(),
        }
    }

    /// Runs every statement of `sql` in order, stopping at the first error.
    pub async fn execute_batch(&mut self, sql: String) -> BatchOutcome {
        match self {
            NeutralSession::Sqlite(s) => s.execute_batch(sql).await,
            NeutralSession::Mysql(c) => c.neutral_batch(&sql).await,
        }
    }

    /// Runs one statement with bound parameters.
    pub async fn execute(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> Result<ResultSet, BackendError> {
        match self {
            NeutralSession::Sqlite(s) => s.execute(sql, params).await,
            NeutralSession::Mysql(c) => c.neutral_execute(&sql, params).await,
        }
    }

    /// Parameter count and result columns of one statement, without running it.
    pub async fn describe(&mut self, sql: String) -> Result<Description, BackendError> {
        match self {
            NeutralSession::Sqlite(s) => s.describe(sql).await,
            NeutralSession::Mysql(c) => c.neutral_describe(&sql).await,
        }
    }

    /// Ends the session: a server connection is reset (rolling back what the client left
    /// open) before it goes back to its pool.
    pub async fn close(self) {
        if let NeutralSession::Mysql(mut c) = self {
            if !c.broken {
                c.reset().await;
            }
            c.last_used = std::time::Instant::now();
        }
    }
}
