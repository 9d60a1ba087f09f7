//! One server connection: TCP (optionally TLS) to PostgreSQL, startup and authentication
//! as a client (SCRAM-SHA-256, md5 or cleartext), then raw message I/O for the relay and a
//! small simple-query helper for the statements sluice itself runs (session replay, reset).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::cancel::BackendKey;
use super::wire::{self, Frame};
use crate::stream::MaybeTls;
use crate::BackendError;

/// Largest message accepted from a server (PostgreSQL's own limit is 1 GiB).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

/// TLS to the server: verified against the configured roots and this name.
#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// Where and as whom server connections are opened.
#[derive(Clone)]
pub struct ConnectConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub connect_timeout: Duration,
    pub tls: Option<TlsTarget>,
}

type ServerStream = MaybeTls<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

fn tcp(stream: &ServerStream) -> &TcpStream {
    match stream {
        MaybeTls::Plain(s) => s,
        MaybeTls::Tls(s) => s.get_ref().0,
    }
}

/// Server-side prepared statements on one connection, bounded, least recently used first
/// out.
pub struct StatementCache {
    names: HashMap<Arc<str>, u64>,
    tick: u64,
    capacity: usize,
}

impl StatementCache {
    fn new(capacity: usize) -> Self {
        StatementCache {
            names: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    /// True (and marks it used) when `name` is prepared on this connection.
    pub fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `name` as prepared; returns the statement evicted to make room, which the
    /// caller closes on the server.
    pub fn insert(&mut self, name: Arc<str>) -> Option<Arc<str>> {
        self.tick += 1;
        let evicted = if self.names.len() >= self.capacity && !self.names.contains_key(&name) {
            let oldest = self
                .names
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| n.clone());
            oldest.inspect(|n| {
                self.names.remove(n);
            })
        } else {
            None
        };
        self.names.insert(name, self.tick);
        evicted
    }

    pub fn remove(&mut self, name: &str) {
        self.names.remove(name);
    }

    pub fn clear(&mut self) {
        self.names.clear();
    }
}

/// An authenticated server connection.
pub struct ServerConn {
    io: ServerStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The server's key for cancel requests.
    pub key: BackendKey,
    /// ParameterStatus values the server reported at startup.
    pub params: Vec<(String, String)>,
    /// Transaction status from the last ReadyForQuery: `I`, `T` or `E`.
    pub status: u8,
    /// Set when the connection must not be reused (I/O failure, unknown state).
    pub broken: bool,
    /// Prepared statements sluice created under its own names.
    pub statements: StatementCache,
    /// Digest of what the unnamed statement holds, when sluice knows.
    pub unnamed: Option<[u8; 16]>,
    /// Session settings sluice applied on top of the connection's defaults.
    pub session: BTreeMap<String, String>,
    pub last_used: Instant,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("{what}: {e}"))
}

impl ServerConn {
    /// Opens, optionally upgrades to TLS, starts up and authenticates.
    pub async fn connect(
        cfg: &ConnectConfig,
        statement_cache: usize,
    ) -> Result<ServerConn, BackendError> {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let open = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|e| unavailable("connect", e))?;
            let _ = tcp.set_nodelay(true);
            let peer = tcp
                .peer_addr()
                .map_err(|e| unavailable("peer address", e))?;
            let io = match &cfg.tls {
                None => MaybeTls::Plain(tcp),
                Some(tls) => MaybeTls::Tls(Box::new(upgrade(tcp, tls).await?)),
            };
            let mut conn = ServerConn {
                io,
                rbuf: BytesMut::with_capacity(16 * 1024),
                wbuf: BytesMut::with_capacity(16 * 1024),
                key: BackendKey {
                    addr: peer,
                    pid: 0,
                    secret: 0,
                },
                params: Vec::new(),
                status: b'I',
                broken: false,
                statements: StatementCache::new(statement_cache),
                unnamed: None,
                session: BTreeMap::new(),
                last_used: Instant::now(),
            };
            conn.startup(cfg).await?;
            Ok(conn)
        };
        match tokio::time::timeout(cfg.connect_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unavailable(format!(
                "connect: timed out after {:?}",
                cfg.connect_timeout
            ))),
        }
    }

    async fn startup(&mut self, cfg: &ConnectConfig) -> Result<(), BackendError> {
        let params = [("user", cfg.user.as_str()), ("database", &cfg.database)];
        postgres_protocol::message::frontend::startup_message(params, &mut self.wbuf)
            .map_err(|e| unavailable("startup", e))?;
        self.flush().await.map_err(|e| unavailable("startup", e))?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self
                .read_frame()
                .await
                .map_err(|e| unavailable("startup", e))?;
            let body = frame.body();
            match frame.tag() {
                b'R' => self.authenticate(cfg, body, &mut scram).await?,
                b'S' => {
                    if let Some((name, rest)) = wire::cstr(body) {
                        let value = wire::cstr(rest).map(|(v, _)| v).unwrap_or_default();
                        self.params.push((
                            String::from_utf8_lossy(name).into_owned(),
                            String::from_utf8_lossy(value).into_owned(),
                        ));
                    }
                }
                b'K' if body.len() >= 8 => {
                    self.key.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    self.key.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'Z' => {
                    self.status = body.first().copied().unwrap_or(b'I');
                    return Ok(());
                }
                b'E' => {
                    let code = wire::error_field(body, b'C').unwrap_or_default();
                    let msg = wire::error_field(body, b'M').unwrap_or_default();
                    return Err(BackendError::Unavailable(format!(
                        "server refused the connection: {code} {msg}"
                    )));
                }
                _ => {}
            }
        }
    }

    async fn authenticate(
        &mut self,
        cfg: &ConnectConfig,
        body: &[u8],
        scram: &mut Option<ScramSha256>,
    ) -> Result<(), BackendError> {
        if body.len() < 4 {
            return Err(unavailable("authentication", "short message"));
        }
        let kind = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let data = &body[4..];
        let password = || {
            cfg.password
                .as_deref()
                .ok_or_else(|| unavailable("authentication", "the server asks for a password"))
        };
        use postgres_protocol::message::frontend as fe;
        let sent = match kind {
            0 => return Ok(()),
            3 => fe::password_message(password()?.as_bytes(), &mut self.wbuf),
            5 if data.len() >= 4 => {
                let salt = [data[0], data[1], data[2], data[3]];
                let hash = md5_hash(cfg.user.as_bytes(), password()?.as_bytes(), salt);
                fe::password_message(hash.as_bytes(), &mut self.wbuf)
            }
            10 => {
                let offers_scram = data
                    .split(|&b| b == 0)
                    .any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(unavailable("authentication", "no supported SASL mechanism"));
                }
                let s = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                let r = fe::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.wbuf);
                *scram = Some(s);
                r
            }
            11 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| unavailable("authentication", "unexpected SASL step"))?;
                s.update(data).map_err(|e| unavailable("SCRAM", e))?;
                fe::sasl_response(s.message(), &mut self.wbuf)
            }
            12 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| unavailable("authentication", "unexpected SASL step"))?;
                return s.finish(data).map_err(|e| unavailable("SCRAM", e));
            }
            other => {
                return Err(unavailable(
                    "authentication",
                    format!("unsupported method {other}"),
                ))
            }
        };
        sent.map_err(|e| unavailable("authentication", e))?;
        self.flush()
            .await
            .map_err(|e| unavailable("authentication", e))
    }

    /// Reads one message. Cancel-safe: a partial message stays buffered.
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(frame);
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(16 * 1024);
            }
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
    }

    /// A message already received in full, if any.
    pub fn buffered_frame(&mut self) -> io::Result<Option<Frame>> {
        wire::split_frame(&mut self.rbuf, MAX_SERVER_MESSAGE)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Queues bytes for the server.
    pub fn queue(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Queues one relayed message unchanged.
    pub fn send_raw(&mut self, raw: &Bytes) {
        self.wbuf.extend_from_slice(raw);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let r = self.io.write_all(&self.wbuf).await;
            self.wbuf.clear();
            r?;
        }
        self.io.flush().await
    }

    /// Runs sluice's own simple query on an idle connection; returns the text rows of the
    /// last result, or the server's error as a statement error.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        wire::put_query(&mut self.wbuf, sql);
        let io_err = |e: io::Error| unavailable("server connection", e);
        self.flush().await.map_err(io_err)?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.read_frame().await.map_err(io_err)?;
            match frame.tag() {
                b'T' => rows.clear(),
                b'D' => rows.push(data_row_text(frame.body())),
                b'E' => error = Some(wire::server_error(frame.body())),
                b'Z' => {
                    self.status = frame.body().first().copied().unwrap_or(b'I');
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    /// Reads and discards until ReadyForQuery; returns the transaction status.
    pub async fn drain_until_ready(&mut self) -> io::Result<u8> {
        loop {
            let frame = self.read_frame().await?;
            if frame.tag() == b'Z' {
                self.status = frame.body().first().copied().unwrap_or(b'I');
                return Ok(self.status);
            }
        }
    }

    /// True when an idle connection shows no sign of having been closed by the server:
    /// nothing unread is waiting on the socket. Costs one non-blocking peek.
    pub fn looks_alive(&self) -> bool {
        if !self.rbuf.is_empty() || self.broken {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(tcp(&self.io).poll_peek(&mut cx, &mut buf), Poll::Pending)
    }

    /// Sends Terminate and closes, ignoring errors.
    pub async fn terminate(mut self) {
        wire::put_message(&mut self.wbuf, b'X', |_| {});
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

async fn upgrade(
    mut tcp: TcpStream,
    tls: &TlsTarget,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BackendError> {
    let mut req = BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut req);
    tcp.write_all(&req)
        .await
        .map_err(|e| unavailable("TLS request", e))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| unavailable("TLS request", e))?;
    if answer[0] != b'S' {
        return Err(unavailable("TLS", "the server does not accept TLS"));
    }
    tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| unavailable("TLS handshake", e))
}

pub(crate) fn data_row_text(body: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    if body.len() < 2 {
        return out;
    }
    let n = i16::from_be_bytes([body[0], body[1]]).max(0) as usize;
    let mut rest = &body[2..];
    for _ in 0..n {
        if rest.len() < 4 {
            break;
        }
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = (len as usize).min(rest.len());
        out.push(Some(String::from_utf8_lossy(&rest[..len]).into_owned()));
        rest = &rest[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    #[test]
    fn the_statement_cache_evicts_the_least_recently_used() {
        let mut cache = StatementCache::new(2);
        assert_eq!(cache.insert("a".into()), None);
        assert_eq!(cache.insert("b".into()), None);
        assert!(cache.touch("a"));
        assert_eq!(cache.insert("c".into()).as_deref(), Some("b"));
        assert!(cache.touch("a") && cache.touch("c") && !cache.touch("b"));
    }

    #[test]
    fn data_rows_decode_to_text_and_nulls() {
        let mut body = BytesMut::new();
        body.put_i16(2);
        body.put_i32(3);
        body.put_slice(b"abc");
        body.put_i32(-1);
        assert_eq!(data_row_text(&body), vec![Some("abc".into()), None]);
    }
}
