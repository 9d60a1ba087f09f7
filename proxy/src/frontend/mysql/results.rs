//! Streaming a server's answer to the client: every result set of a text query or a
//! prepared statement, rows re-encoded in the protocol the client asked for, while
//! watching for a client that goes away.

use std::sync::Arc;

use backends::mysql::mysql_async::prelude::Queryable;
use backends::mysql::mysql_async::{self, Row};
use backends::mysql::PooledMyConn;
use mysql_common::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::packet::Packets;
use super::write::{self, MyError, OkInfo, MORE_RESULTS, STATUS_AUTOCOMMIT};

/// The client went away while its request ran.
pub(super) struct Vanished;

/// Waits for `fut` while watching the client: a client that closes its connection makes
/// this return `Err(Vanished)`; bytes it sends meanwhile stay buffered for later.
pub(super) async fn watching<S, F, T>(p: &mut Packets<S>, fut: F) -> Result<T, Vanished>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: std::future::Future<Output = T>,
{
    tokio::pin!(fut);
    loop {
        tokio::select! {
            // The answer first: it is often ready at once (rows already buffered).
            biased;
            r = &mut fut => return Ok(r),
            // Bytes of a pipelined request stay buffered and are answered after this one.
            read = p.fill() => if read.is_err() {
                return Err(Vanished);
            },
        }
    }
}

/// Runs a text query and streams every result set to the client. Returns whether the
/// query succeeded.
pub(super) async fn stream_text<S>(
    p: &mut Packets<S>,
    conn: &mut PooledMyConn,
    sql: &str,
    status: u16,
) -> Result<bool, Vanished>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = watching(p, conn.conn.query_iter(sql)).await?;
    let mut qr = match started {
        Ok(qr) => qr,
        Err(e) => {
            write::err(p, &MyError::from(&backends::mysql::error(e)));
            return Ok(false);
        }
    };
    let outcome = stream_sets(p, &mut qr, status, false).await;
    drop(qr);
    finish_sets(p, conn, outcome)
}

/// Executes a prepared statement and streams its results in the binary protocol.
pub(super) async fn stream_binary<S>(
    p: &mut Packets<S>,
    conn: &mut PooledMyConn,
    sql: &str,
    params: mysql_async::Params,
    status: u16,
) -> Result<bool, Vanished>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = watching(p, conn.conn.exec_iter(sql, params)).await?;
    let mut qr = match started {
        Ok(qr) => qr,
        Err(e) => {
            write::err(p, &MyError::from(&backends::mysql::error(e)));
            return Ok(false);
        }
    };
    let outcome = stream_sets(p, &mut qr, status, true).await;
    drop(qr);
    finish_sets(p, conn, outcome)
}

/// How streaming result sets ended.
enum Sets {
    /// The final set is open: write its terminator from the connection's last OK packet
    /// (`true` when it was a row set, ended by EOF).
    Done {
        rows: bool,
    },
    /// The server reported an error (already written).
    Failed,
    Vanished,
}

async fn stream_sets<S, P>(
    p: &mut Packets<S>,
    qr: &mut mysql_async::QueryResult<'_, '_, P>,
    status: u16,
    binary: bool,
) -> Sets
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: mysql_async::prelude::Protocol,
{
    let mut status = status;
    loop {
        let cols = qr.columns().unwrap_or_else(|| Arc::from(Vec::new()));
        if cols.is_empty() {
            if qr.is_empty() {
                return Sets::Done { rows: false };
            }
            // An OK-only set with more to come: report it now, before the next set
            // replaces the connection's OK packet.
            let info = OkInfo {
                affected: qr.affected_rows(),
                last_insert_id: qr.last_insert_id().unwrap_or(0),
                status: status | MORE_RESULTS,
                warnings: qr.warnings(),
                info: qr.info().into_owned(),
            };
            write::ok(p, &info);
            match watching(p, qr.next()).await {
                Err(Vanished) => return Sets::Vanished,
                Ok(Err(e)) => {
                    write::err(p, &MyError::from(&backends::mysql::error(e)));
                    return Sets::Failed;
                }
                Ok(Ok(_)) => continue,
            }
        }
        write::columns(p, &cols, status);
        let mut values: Vec<Value> = Vec::with_capacity(cols.len());
        loop {
            let next = match watching(p, qr.next()).await {
                Err(Vanished) => return Sets::Vanished,
                Ok(r) => r,
            };
            match next {
                Ok(Some(row)) => {
                    row_values(row, &mut values);
                    if binary {
                        write::binary_row(p, &cols, &values);
                    } else {
                        write::text_row(p, &values);
                    }
                    if p.flush_if_large().await.is_err() {
                        return Sets::Vanished;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    write::eof(p, 0, status | MORE_RESULTS);
                    write::err(p, &MyError::from(&backends::mysql::error(e)));
                    return Sets::Failed;
                }
            }
        }
        if qr.is_empty() {
            return Sets::Done { rows: true };
        }
        status |= MORE_RESULTS;
        write::eof(p, qr.warnings(), status);
        status &= !MORE_RESULTS;
    }
}

fn finish_sets<S>(
    p: &mut Packets<S>,
    conn: &mut PooledMyConn,
    outcome: Sets,
) -> Result<bool, Vanished>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match outcome {
        Sets::Vanished => Err(Vanished),
        Sets::Failed => Ok(false),
        Sets::Done { rows } => {
            let (status, warnings, affected, last_id, info) = match conn.conn.last_ok_packet() {
                Some(ok) => (
                    ok.status_flags().bits() & write::PASSED_STATUS,
                    ok.warnings(),
                    ok.affected_rows(),
                    ok.last_insert_id().unwrap_or(0),
                    ok.info_ref()
                        .map(|i| String::from_utf8_lossy(i).into_owned())
                        .unwrap_or_default(),
                ),
                None => (STATUS_AUTOCOMMIT, 0, 0, 0, String::new()),
            };
            if rows {
                write::eof(p, warnings, status);
            } else {
                write::ok(
                    p,
                    &OkInfo {
                        affected,
                        last_insert_id: last_id,
                        status,
                        warnings,
                        info,
                    },
                );
            }
            Ok(true)
        }
    }
}

fn row_values(row: Row, out: &mut Vec<Value>) {
    out.clear();
    out.extend(
        row.unwrap_raw()
            .into_iter()
            .map(|v| v.unwrap_or(Value::NULL)),
    );
}
