//! Plain connections to a single Redis node, used by the session doing a lookup itself,
//! and what sluice's own Redis connections share: the node's address and set-up, and the
//! parser of an MGET's reply.
//!
//! Through a shared connection a lookup crosses two tasks (to the writer, and back from
//! the reader); on a cache hit at low concurrency that is about a tenth of the hit's
//! latency. A lookup alone in flight writes its MGET on a plain connection and parses the
//! reply in place; under concurrency lookups share the pipelined connection instead
//! (`pipelined.rs`), where concurrent sessions' commands leave in one write (fewer
//! syscalls for sluice and Redis).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// The largest bulk reply read (Redis' own limit for a string).
const MAX_BULK: usize = 512 * 1024 * 1024;

pub type Conn = BufStream<TcpStream>;

/// A single Redis node reached over TCP, speaking RESP2.
pub struct Endpoint {
    addr: String,
    /// AUTH and SELECT, sent on every new connection.
    setup: Vec<Vec<u8>>,
}

impl Endpoint {
    /// The node of `info`: None for what sluice's own connections do not speak (TLS, Unix
    /// sockets, RESP3).
    pub fn new(info: &ConnectionInfo) -> Option<Endpoint> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        if settings.protocol() != ProtocolVersion::RESP2 {
            return None;
        }
        let mut setup = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            setup.push(auth.arg(password).get_packed_command());
        }
        if settings.db() != 0 {
            setup.push(redis::cmd("SELECT").arg(settings.db()).get_packed_command());
        }
        Some(Endpoint {
            addr: format!("{host}:{port}"),
            setup,
        })
    }

    /// A new connection, set up (AUTH, SELECT).
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = BufStream::new(stream);
        for command in &self.setup {
            conn.write_all(command).await?;
            conn.flush().await?;
            let mut line = Vec::new();
            read_line(&mut conn, &mut line).await?;
            if line.first() != Some(&b'+') {
                return Err(reply_error(&line));
            }
        }
        Ok(conn)
    }
}

/// Plain connections to one node.
pub struct Direct {
    endpoint: Endpoint,
    idle: Mutex<Vec<Conn>>,
    /// Connections open (idle or in use).
    open: AtomicUsize,
    max: usize,
}

/// A connection in use: given back when its exchange completed, closed otherwise (an
/// exchange cut short, by an error or a timeout, leaves its reply unread).
struct Lease<'a> {
    conn: Option<Conn>,
    direct: &'a Direct,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.direct.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lease<'_> {
    fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.direct.open.fetch_add(1, Ordering::AcqRel);
            self.direct.lock().push(conn);
        }
    }
}

impl Direct {
    /// Plain connections for `info`, at most `max`: None for what they do not speak (TLS,
    /// Unix sockets, RESP3).
    pub fn new(info: &ConnectionInfo, max: usize) -> Option<Direct> {
        if max == 0 {
            return None;
        }
        Some(Direct {
            endpoint: Endpoint::new(info)?,
            idle: Mutex::default(),
            open: AtomicUsize::new(0),
            max,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a packed MGET on an idle connection, or a new one while fewer than `max` are
    /// open. None: none is free (the caller uses the shared connection).
    pub async fn mget(&self, packed: &[u8]) -> Option<redis::RedisResult<Values>> {
        let idle = self.lock().pop();
        let mut lease = match idle {
            Some(conn) => Lease {
                conn: Some(conn),
                direct: self,
            },
            None => {
                if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                let mut lease = Lease {
                    conn: None,
                    direct: self,
                };
                match self.endpoint.connect().await {
                    Ok(conn) => lease.conn = Some(conn),
                    Err(e) => return Some(Err(e)),
                }
                lease
            }
        };
        let conn = lease.conn.as_mut()?;
        let reply = exchange(conn, packed).await;
        if reply.is_ok() {
            lease.give_back();
        }
        Some(reply)
    }
}

/// An MGET's reply: a value or nil per key.
pub type Values = Vec<Option<Vec<u8>>>;

/// Sends a packed MGET and reads its reply.
async fn exchange(conn: &mut Conn, packed: &[u8]) -> redis::RedisResult<Values> {
    conn.write_all(packed).await?;
    conn.flush().await?;
    read_mget(conn).await
}

/// Reads an MGET's reply: an array of bulk strings.
pub async fn read_mget<R: AsyncBufRead + Unpin>(conn: &mut R) -> redis::RedisResult<Values> {
    let mut line = Vec::with_capacity(32);
    read_line(conn, &mut line).await?;
    let n = match line.split_first() {
        Some((b'*', n)) => number(n)?,
        _ => return Err(reply_error(&line)),
    };
    let mut values = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        read_line(conn, &mut line).await?;
        let len = match line.split_first() {
            Some((b'$', len)) => number(len)?,
            _ => return Err(reply_error(&line)),
        };
        let Ok(len) = usize::try_from(len) else {
            values.push(None);
            continue;
        };
        if len > MAX_BULK {
            return Err(protocol_error("bulk reply too long"));
        }
        let mut value = vec![0; len + 2];
        conn.read_exact(&mut value).await?;
        if !value.ends_with(b"\r\n") {
            return Err(protocol_error("bulk reply not terminated"));
        }
        value.truncate(len);
        values.push(Some(value));
    }
    Ok(values)
}

/// One reply line, without its CRLF.
async fn read_line<R: AsyncBufRead + Unpin>(
    conn: &mut R,
    line: &mut Vec<u8>,
) -> redis::RedisResult<()> {
    line.clear();
    // a line longer than this is not a reply header
    let n = (&mut *conn).take(64 * 1024).read_until(b'\n', line).await?;
    if n == 0 {
        return Err(protocol_error("connection closed"));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol_error("reply line not terminated"));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

fn number(digits: &[u8]) -> redis::RedisResult<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| protocol_error("bad length in reply"))
}

fn reply_error(line: &[u8]) -> RedisError {
    let text = String::from_utf8_lossy(line.strip_prefix(b"-").unwrap_or(line)).into_owned();
    RedisError::from((redis::ErrorKind::Client, "Redis refused", text))
}

pub fn protocol_error(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Parse, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(url: &str) -> ConnectionInfo {
        redis::Client::open(url)
            .unwrap()
            .get_connection_info()
            .clone()
    }

    #[test]
    fn plain_tcp_resp2_only() {
        let d = Direct::new(&info("redis://127.0.0.1:6390/"), 4).unwrap();
        assert_eq!(d.endpoint.addr, "127.0.0.1:6390");
        assert!(d.endpoint.setup.is_empty());
        let d = Direct::new(&info("redis://user:pw@127.0.0.1:6390/3"), 4).unwrap();
        assert_eq!(
            d.endpoint.setup,
            [
                b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$2\r\npw\r\n".to_vec(),
                b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n".to_vec()
            ]
        );
        assert!(Direct::new(&info("redis://127.0.0.1:6390/?protocol=resp3"), 4).is_none());
        assert!(Direct::new(&info("redis+unix:///tmp/redis.sock"), 4).is_none());
        assert!(Direct::new(&info("redis://127.0.0.1:6390/"), 0).is_none());
    }

    /// A server answering one request with `reply`, then closing.
    async fn server(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            if let Ok(1..) = s.read(&mut buf).await {
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn replies_are_parsed_and_bad_ones_refused() {
        let addr = server(b"*3\r\n$1\r\n7\r\n$-1\r\n$5\r\nab\r\nc\r\n").await;
        let d = Direct::new(&info(&format!("redis://{addr}/")), 1).unwrap();
        let got = d.mget(b"MGET").await.unwrap().unwrap();
        assert_eq!(got, [Some(b"7".to_vec()), None, Some(b"ab\r\nc".to_vec())]);
        // the connection went back, and is the only one allowed
        assert_eq!(d.lock().len(), 1);
        let idle = d.lock().pop().unwrap();
        assert!(d.mget(b"MGET").await.is_none(), "none free");
        d.lock().push(idle);

        for reply in [
            &b"-ERR wrong\r\n"[..],
            b"*1\r\n$9\r\nshort\r\n",
            b"*1\r\n+OK\r\n",
            b"*x\r\n",
        ] {
            let addr = server(reply).await;
            let d = Direct::new(&info(&format!("redis://{addr}/")), 1).unwrap();
            let err = tokio::time::timeout(std::time::Duration::from_secs(2), d.mget(b"MGET"))
                .await
                .ok()
                .flatten();
            assert!(
                !matches!(err, Some(Ok(_))),
                "{}: {err:?}",
                String::from_utf8_lossy(reply)
            );
            // a failed exchange closes its connection
            assert_eq!(d.open.load(Ordering::Acquire), 0);
            assert!(d.lock().is_empty());
        }
    }
}
