//! MySQL frontend, our own layer on mysql_common: framing ([`packet`]), server packets
//! ([`write`]), the connection phase ([`login`]), and the command loop ([`session`]) that
//! serves MySQL/MariaDB routes through pooled mysql_async connections and SQLite routes
//! through the neutral result set.

mod kill;
pub mod login;
mod neutral;
pub mod packet;
mod pg;
mod results;
mod session;
mod stmt;
pub mod write;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use self::login::LoginError;
use self::packet::Packets;
use crate::metrics as m;
use crate::state::State;

pub use self::kill::Sessions;

/// Why a client connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("login timed out")]
    LoginTimeout,
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Read(#[from] packet::ReadError),
    #[error("{0}")]
    Refused(String),
}

/// Connection ids shown to clients (in the greeting and CONNECTION_ID()).
static NEXT_CONNECTION_ID: AtomicU32 = AtomicU32::new(1);

/// Serves one client connection from accept to close.
pub async fn handle<S>(
    io: S,
    peer: Option<std::net::SocketAddr>,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let packets = Packets::new(io, state.config.server.max_message_bytes);
    let timeout = state.config.server.login_timeout();
    let opened = tokio::select! {
        r = tokio::time::timeout(timeout, login::login(packets, &state, id, peer)) => r,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let (packets, login) = match opened {
        Ok(r) => r?,
        Err(_) => {
            metrics::counter!(m::AUTH_FAILURES, "protocol" => "mysql", "reason" => "timeout")
                .increment(1);
            return Err(ConnError::LoginTimeout);
        }
    };
    session::serve(packets, login, id, peer, &state, &shutdown).await
}
