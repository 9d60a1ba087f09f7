//! Statements in a MySQL session: text queries (with the USE, KILL and LOAD DATA
//! intercepts), and prepared statements (COM_STMT_PREPARE and COM_STMT_EXECUTE).

use std::time::Instant;

use backends::mysql::mysql_async::prelude::Queryable;
use backends::mysql::scan::{scan_with, Scan};
use bytes::Bytes;
use policies::Action;
use tokio::io::{AsyncRead, AsyncWrite};

use super::super::kill;
use super::super::neutral::client_setup;
use super::super::results::{stream_binary, stream_text, Vanished};
use super::super::stmt;
use super::super::write::{MyError, OkInfo, STATUS_AUTOCOMMIT, STATUS_IN_TRANS};

/// SERVER_STATUS_NO_BACKSLASH_ESCAPES.
const STATUS_NO_BACKSLASH_ESCAPES: u16 = 0x0200;
use super::{no_database, server, Flow, Session, Target};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    pub(super) async fn query(&mut self, body: Bytes) -> (Flow, bool) {
        let sql = String::from_utf8_lossy(&body).into_owned();
        let lexing = self.policy.as_ref().map(|p| p.lexing()).unwrap_or_default();
        let scanned = scan_with(&sql, lexing.backslash_escapes, lexing.ansi_quotes);
        if scanned.statements > 1 && !self.multi_statements {
            let e = MyError::new(
                1064,
                "42000",
                "You have an error in your SQL syntax: several statements in one query need \
                 the client's multi-statements option",
            );
            self.audit_refusal(&sql, Action::Other, "*", &e);
            return self.fail(e);
        }

        let words: Vec<&str> = scanned.words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["USE", _, ..] if scanned.statements == 1 => {
                // the scanner's words are upper-cased: take the name as the client wrote it
                let db = sql
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .trim_end_matches(';')
                    .trim_matches('`')
                    .to_string();
                return self.use_database(&db).await;
            }
            ["KILL", ..] if scanned.statements == 1 => return self.kill(&sql).await,
            ["LOAD", "DATA", "LOCAL", ..] | ["LOAD", "XML", "LOCAL", ..] => {
                let e = MyError::new(
                    1148,
                    "42000",
                    "LOAD DATA LOCAL INFILE is not allowed through sluice",
                );
                self.audit_refusal(&sql, Action::Admin, "*", &e);
                return self.fail(e);
            }
            _ => {}
        }
        let permit = match self.check(&sql) {
            Ok(p) => p,
            Err(d) => return self.fail(MyError::from(&d)),
        };
        if scanned.statements > 1 && scanned.heads.iter().any(|h| h.starts_with("USE")) {
            // a database switch sluice would not follow: routes change only with a USE
            // alone (policies refuse it above, as a `session` action on `database`)
            let e = MyError::new(
                1295,
                "HY000",
                "USE is accepted only as a statement of its own through sluice",
            );
            self.audit_refusal(&sql, Action::Session, "database", &e);
            return self.fail(e);
        }
        let (answered, fill) = self.cached_query(&sql, &permit, None).await;
        if answered {
            return (Flow::Continue, true);
        }
        let flow = self.run_query(&sql, &scanned, &words).await;
        if let Some(policy) = self.policy.as_mut() {
            policy.settle(flow.1);
        }
        self.cache_fill(fill, flow.1);
        self.settle_writes(&permit).await;
        flow
    }

    pub(super) async fn run_query(
        &mut self,
        sql: &str,
        scanned: &Scan,
        words: &[&str],
    ) -> (Flow, bool) {
        let sql = sql.to_string();
        let session_state = scanned.user_variables
            || scanned.named_locks
            || matches!(
                words.first().copied(),
                Some("SET" | "PREPARE" | "EXECUTE" | "DEALLOCATE" | "LOCK" | "HANDLER")
            )
            || matches!(words, ["CREATE", "TEMPORARY", ..]);
        match &self.target {
            Target::None => {
                self.error(no_database());
                (Flow::Continue, false)
            }
            Target::Sqlite(_) | Target::Postgres { .. } => {
                if let Some(answer) = client_setup(&sql) {
                    return match answer {
                        Ok(()) => {
                            self.ok(OkInfo::default());
                            (Flow::Continue, true)
                        }
                        Err(e) => self.fail(e),
                    };
                }
                if let Target::Sqlite(_) = self.target {
                    self.query_sqlite(sql).await
                } else {
                    self.query_postgres(&sql).await
                }
            }
            Target::Mysql { .. } => {
                if session_state {
                    self.pin();
                }
                let flow = self.query_mysql(&sql).await;
                if session_state {
                    self.pin();
                }
                flow
            }
        }
    }

    /// KILL with a sluice connection id; other forms never reach the server, where they
    /// could name another client's server thread.
    pub(super) async fn kill(&mut self, sql: &str) -> (Flow, bool) {
        let Some(kill) = kill::parse(sql) else {
            let e = MyError::new(
                1064,
                "42000",
                "KILL through sluice takes [QUERY | CONNECTION] and a connection id",
            );
            self.audit_refusal(sql, Action::Admin, "*", &e);
            return self.fail(e);
        };
        match self.state.mysql_sessions.kill(&self.user, &kill).await {
            Ok(()) => {
                self.ok(OkInfo::default());
                (Flow::Continue, true)
            }
            Err(e) => {
                self.audit_refusal(sql, Action::Admin, "connection", &e);
                self.fail(e)
            }
        }
    }

    pub(super) async fn query_mysql(&mut self, sql: &str) -> (Flow, bool) {
        let status = self.status;
        let conn = match server(&mut self.target, &self.registration).await {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        let thread = conn.id();
        let result = stream_text(&mut self.p, conn, sql, status).await;
        self.finish_server_request(result, thread).await
    }

    /// Bookkeeping after a request ran on the server connection: status, and what to do
    /// with the connection when the client went away or the connection broke.
    pub(super) async fn finish_server_request(
        &mut self,
        result: Result<bool, Vanished>,
        thread: u32,
    ) -> (Flow, bool) {
        let Target::Mysql { pool, conn, .. } = &mut self.target else {
            return (Flow::Continue, false);
        };
        match result {
            Ok(ok) => {
                if let Some(c) = conn.as_mut() {
                    c.last_used = Instant::now();
                    if c.conn.is_disconnected() {
                        c.broken = true;
                    }
                    if let Some(okp) = c.conn.last_ok_packet() {
                        let flags = okp.status_flags().bits();
                        self.status = flags & (STATUS_IN_TRANS | STATUS_AUTOCOMMIT);
                        if let Some(policy) = self.policy.as_mut() {
                            // the server says whether backslashes escape
                            policy
                                .server_backslash_escapes(flags & STATUS_NO_BACKSLASH_ESCAPES == 0);
                        }
                    }
                    if c.broken {
                        *conn = None;
                        self.status = STATUS_AUTOCOMMIT;
                        self.registration.set_server(None);
                    }
                }
                (Flow::Continue, ok)
            }
            Err(Vanished) => {
                // The query may still run: kill the whole server session, which also rolls
                // back its transaction and frees its locks, and never reuse the connection.
                if let Some(c) = conn.as_mut() {
                    c.broken = true;
                }
                *conn = None;
                self.registration.set_server(None);
                if let Err(e) = pool.run(&format!("KILL {thread}")).await {
                    tracing::warn!(error = %e, thread, "could not kill the server session of a vanished client");
                }
                (Flow::End, false)
            }
        }
    }

    pub(super) async fn prepare(&mut self, body: Bytes) -> (Flow, bool) {
        let sql = String::from_utf8_lossy(&body).into_owned();
        if !matches!(self.target, Target::Mysql { .. }) {
            let e = match self.target {
                Target::None => no_database(),
                _ => MyError::new(
                    1295,
                    "HY000",
                    "This route's backend does not support the prepared statement protocol; use text queries",
                ),
            };
            self.error(e);
            return (Flow::Continue, false);
        }
        let lexing = self.policy.as_ref().map(|p| p.lexing()).unwrap_or_default();
        let scanned = scan_with(&sql, lexing.backslash_escapes, lexing.ansi_quotes);
        if scanned.statements > 1 {
            self.error(MyError::new(
                1064,
                "42000",
                "You have an error in your SQL syntax: a prepared statement holds one statement",
            ));
            return (Flow::Continue, false);
        }
        let permit = match self.check(&sql) {
            Ok(p) => p,
            Err(d) => return self.fail(MyError::from(&d)),
        };
        self.permits.insert(self.next_statement, permit);
        let conn = match server(&mut self.target, &self.registration).await {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        let prepared = conn.conn.prep(sql.as_str()).await;
        conn.last_used = Instant::now();
        match prepared {
            Ok(statement) => {
                stmt::describe(self, sql, &statement);
                (Flow::Continue, true)
            }
            Err(e) => {
                let e = backends::mysql::error(e);
                self.error(MyError::from(&e));
                (Flow::Continue, false)
            }
        }
    }

    pub(super) async fn execute(&mut self, body: Bytes) -> (Flow, bool) {
        if let Err(d) = self.recheck_statement(&body) {
            return self.fail(MyError::from(&d));
        }
        let (sql, params) = match stmt::bind(self, &body) {
            Ok(b) => b,
            Err(e) => return self.fail(e),
        };
        let id = body
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let permit = id.and_then(|id| self.permits.get(&id)).cloned();
        let mut fill = None;
        if let Some(permit) = &permit {
            let (answered, f) = self.cached_query(&sql, permit, Some(&params)).await;
            if answered {
                return (Flow::Continue, true);
            }
            fill = f;
        }
        let status = self.status;
        let conn = match server(&mut self.target, &self.registration).await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.p.recorded();
                return self.fail(e);
            }
        };
        let thread = conn.id();
        let result = stream_binary(&mut self.p, conn, &sql, params, status).await;
        let flow = self.finish_server_request(result, thread).await;
        self.cache_fill(fill, flow.1);
        if let Some(permit) = permit {
            self.settle_writes(&permit).await;
        }
        flow
    }
}
