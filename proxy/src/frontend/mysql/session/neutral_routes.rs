//! Text queries on routes answered through neutral results (SQLite, and PostgreSQL for
//! MySQL clients), and COM_FIELD_LIST on every kind of route.

use backends::mysql::mysql_async::Column as MyColumn;
use backends::result::BatchOutcome;
use bytes::{BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncWrite};

use std::sync::Arc;

use backends::mysql::mysql_async::prelude::Queryable;

use super::{no_database, server, Flow, Session, Target};
use crate::frontend::mysql::neutral::{neutral_column, write_neutral};
use crate::frontend::mysql::packet::Packets;
use crate::frontend::mysql::pg;
use crate::frontend::mysql::write::{
    self, MyError, OkInfo, MORE_RESULTS, STATUS_AUTOCOMMIT, STATUS_IN_TRANS,
};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    pub(super) async fn query_sqlite(&mut self, sql: String) -> (Flow, bool) {
        let Target::Sqlite(session) = &self.target else {
            return (Flow::Continue, false);
        };
        let outcome = session.execute_batch(sql).await;
        let in_trans = session.in_transaction();
        self.write_outcome(outcome, in_trans)
    }

    pub(super) async fn query_postgres(&mut self, sql: &str) -> (Flow, bool) {
        let Target::Postgres { pool, conn } = &mut self.target else {
            return self.fail(no_database());
        };
        let server = match pg::server(pool, conn).await {
            Ok(s) => s,
            Err(e) => return self.fail(e),
        };
        let Ok(outcome) = pg::run(&mut self.p, server, sql).await else {
            // The client is gone; the connection was cancelled and is dropped as broken.
            *conn = None;
            return (Flow::End, false);
        };
        let in_trans = server.status != b'I';
        if server.broken {
            *conn = None;
        }
        self.write_outcome(outcome, in_trans)
    }

    /// Writes the answers of a neutral backend: one result set or OK per statement that
    /// ran, then the error that stopped the rest.
    fn write_outcome(&mut self, outcome: BatchOutcome, in_trans: bool) -> (Flow, bool) {
        self.status = if in_trans {
            STATUS_IN_TRANS | STATUS_AUTOCOMMIT
        } else {
            STATUS_AUTOCOMMIT
        };
        let count = outcome.results.len();
        for (i, result) in outcome.results.iter().enumerate() {
            let more = i + 1 < count || outcome.error.is_some();
            let status = self.status | if more { MORE_RESULTS } else { 0 };
            write_neutral(&mut self.p, result, status);
        }
        match outcome.error {
            Some(e) => {
                self.error(MyError::from(&e));
                (Flow::Continue, false)
            }
            None => {
                if count == 0 {
                    self.ok(OkInfo::default());
                }
                (Flow::Continue, true)
            }
        }
    }

    pub(super) async fn field_list(&mut self, body: Bytes) -> (Flow, bool) {
        let table = body.split(|&b| b == 0).next().unwrap_or_default();
        let table = String::from_utf8_lossy(table);
        let sql = if matches!(self.target, Target::Postgres { .. }) {
            format!("SELECT * FROM \"{}\" LIMIT 0", table.replace('"', "\"\""))
        } else {
            format!("SELECT * FROM `{}` LIMIT 0", table.replace('`', "``"))
        };
        if let Err(d) = self.check(&sql) {
            self.error(MyError::from(&d));
            return (Flow::Continue, false);
        }
        let status = self.status;
        match &self.target {
            Target::Mysql { .. } => {
                let conn = match server(&mut self.target, &self.registration).await {
                    Ok(c) => c,
                    Err(e) => return self.fail(e),
                };
                let cols = match conn.conn.query_iter(sql.as_str()).await {
                    Ok(qr) => {
                        let cols = qr.columns().unwrap_or_else(|| Arc::from(Vec::new()));
                        let _ = qr.drop_result().await;
                        Ok(cols)
                    }
                    Err(e) => Err(backends::mysql::error(e)),
                };
                match cols {
                    Ok(cols) => {
                        for col in cols.iter() {
                            send_field(&mut self.p, col);
                        }
                        write::eof(&mut self.p, 0, status);
                        (Flow::Continue, true)
                    }
                    Err(e) => {
                        self.error(MyError::from(&e));
                        (Flow::Continue, false)
                    }
                }
            }
            Target::Sqlite(_) | Target::Postgres { .. } => match self.describe_neutral(sql).await {
                Ok(columns) => {
                    for c in &columns {
                        send_field(&mut self.p, &neutral_column(&c.name, c.ty));
                    }
                    write::eof(&mut self.p, 0, status);
                    (Flow::Continue, true)
                }
                Err(e) => {
                    self.error(e);
                    (Flow::Continue, false)
                }
            },
            Target::None => {
                self.error(no_database());
                (Flow::Continue, false)
            }
        }
    }

    /// Result columns of a query on a neutral route (for COM_FIELD_LIST).
    async fn describe_neutral(
        &mut self,
        sql: String,
    ) -> Result<Vec<backends::result::Column>, MyError> {
        match &mut self.target {
            Target::Sqlite(session) => session
                .describe(sql)
                .await
                .map(|d| d.columns)
                .map_err(|e| MyError::from(&e)),
            Target::Postgres { pool, conn } => {
                let server = pg::server(pool, conn).await?;
                let mut outcome = server.neutral_batch(&sql).await;
                match outcome.error {
                    Some(e) => Err(MyError::from(&e)),
                    None => Ok(outcome.results.pop().map(|r| r.columns).unwrap_or_default()),
                }
            }
            _ => Err(no_database()),
        }
    }
}

/// A COM_FIELD_LIST definition: a column definition ending with an (empty) default.
fn send_field<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Packets<S>, col: &MyColumn) {
    let mark = p.begin();
    write::put_definition(p.buf(), col);
    p.buf().put_u8(0xFB);
    p.finish(mark);
}
