//! MySQL clients on PostgreSQL routes: the session's server connection, queries answered
//! through neutral results, and cleaning the connection before it goes back to the pool.

use std::time::Duration;

use backends::postgres::{PgPool, PooledServer};
use backends::result::BatchOutcome;
use tokio::io::{AsyncRead, AsyncWrite};

use super::packet::Packets;
use super::results::{watching, Vanished};
use super::write::MyError;

/// The session's server connection, checked out (and set to UTC) on first use.
pub(super) async fn server<'a>(
    pool: &PgPool,
    conn: &'a mut Option<Box<PooledServer>>,
) -> Result<&'a mut PooledServer, MyError> {
    if conn.is_none() {
        let mut server = pool
            .checkout()
            .await
            .map_err(|e| super::session::checkout_failed(&e))?;
        if let Err(e) = server.prepare_neutral().await {
            server.broken = true;
            return Err(MyError::from(&e));
        }
        *conn = Some(Box::new(server));
    }
    conn.as_deref_mut()
        .ok_or_else(|| MyError::new(2013, "08S01", "no server connection"))
}

/// Runs a query while watching the client; a client that leaves gets its query cancelled
/// on the server and the connection marked broken.
pub(super) async fn run<S>(
    p: &mut Packets<S>,
    server: &mut PooledServer,
    sql: &str,
) -> Result<BatchOutcome, Vanished>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = server.key;
    match watching(p, server.neutral_batch(sql)).await {
        Ok(outcome) => Ok(outcome),
        Err(Vanished) => {
            server.broken = true;
            if let Err(e) = backends::postgres::cancel::send(key, Duration::from_secs(5)).await {
                tracing::warn!(error = %e, "could not cancel the query of a vanished client");
            }
            Err(Vanished)
        }
    }
}

/// Leaves a connection as the pool expects it: no transaction, no session state.
pub(super) async fn clean(mut server: Box<PooledServer>) {
    if server.broken {
        return;
    }
    let clean = async {
        if server.status != b'I' {
            server.simple_query("ROLLBACK").await?;
        }
        server.simple_query("DISCARD ALL").await?;
        server.statements.clear();
        server.session.clear();
        server.unnamed = None;
        Ok::<_, backends::BackendError>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), clean).await {
        Ok(Ok(())) => server.last_used = std::time::Instant::now(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "server connection could not be reset; closing it");
            server.broken = true;
        }
        Err(_) => {
            tracing::warn!("server connection reset timed out; closing it");
            server.broken = true;
        }
    }
}
