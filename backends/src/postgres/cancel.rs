//! Cancel requests to a PostgreSQL server: a fresh connection carrying the server's
//! (pid, secret) key, as libpq sends it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a server needs to cancel the query running on one of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// Sends a cancel request and waits until the server has taken it (closes the
/// connection), so the caller knows the signal was delivered before it moves on.
pub async fn send(key: BackendKey, timeout: Duration) -> std::io::Result<()> {
    let run = async {
        let mut tcp = TcpStream::connect(key.addr).await?;
        let mut req = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(key.pid, key.secret, &mut req);
        tcp.write_all(&req).await?;
        let mut sink = [0u8; 64];
        while tcp.read(&mut sink).await? > 0 {}
        Ok(())
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}
