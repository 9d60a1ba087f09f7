//! One pipelined connection to a single Redis node for lookups under concurrency.
//!
//! Sessions append their MGETs to one buffer and wait for their reply; a writer task
//! sends what gathered in one write, and a reader task parses the replies in order and
//! hands each to its waiter. On a single-threaded runtime the writer runs after every
//! session made ready in the same turn, so their lookups leave together: one write and
//! one read for sluice and for Redis, whatever the number of sessions. The writer also
//! lets the runtime poll for I/O once before it writes, so that queries that arrived
//! meanwhile join the batch. The replies are parsed in place (no general RESP parser, no
//! per-command channel to a connection task).
//!
//! An error on the connection fails every waiting lookup and closes it; the next lookup
//! opens a new one. So does a lookup that gives up before its reply came (its deadline
//! passed): a Redis that stopped answering is not waited on again by later lookups.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redis::RedisResult;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::direct::{protocol_error, read_mget, Endpoint, Values};

/// Lookups through one shared connection, opened on first use and again after a failure.
pub struct Pipelined {
    endpoint: Endpoint,
    live: Mutex<Option<Arc<Shared>>>,
    /// Held while a connection is being opened (one at a time).
    connecting: tokio::sync::Mutex<()>,
}

/// What a connection's sessions, writer and reader share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer: requests are waiting, or the connection closed.
    wake: Notify,
    /// Stops the reader and a write in progress when the connection closed (a stuck
    /// server may never answer, nor take more bytes).
    stop: CancellationToken,
    closed: AtomicBool,
}

#[derive(Default)]
struct Queue {
    /// Packed commands not yet written.
    out: Vec<u8>,
    /// One per command written or waiting, in order.
    waiters: VecDeque<oneshot::Sender<RedisResult<Values>>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails every waiting lookup and stops the writer and the reader.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut q = self.lock();
        q.out.clear();
        q.waiters.clear();
        drop(q);
        self.wake.notify_one();
        self.stop.cancel();
    }

    async fn request(&self, packed: &[u8]) -> RedisResult<Values> {
        let reply = {
            let mut q = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Err(closed());
            }
            if q.out.is_empty() {
                self.wake.notify_one();
            }
            q.out.extend_from_slice(packed);
            let (tx, rx) = oneshot::channel();
            q.waiters.push_back(tx);
            rx
        };
        // given up before the reply came (dropped): the connection is closed
        let mut abandon = Abandon(Some(self));
        let reply = reply.await.unwrap_or_else(|_| Err(closed()));
        abandon.0 = None;
        reply
    }
}

/// Closes the connection when a lookup is dropped while it waits for its reply.
struct Abandon<'a>(Option<&'a Shared>);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.close();
        }
    }
}

fn closed() -> redis::RedisError {
    protocol_error("the lookup connection closed")
}

impl Pipelined {
    pub fn new(endpoint: Endpoint) -> Pipelined {
        Pipelined {
            endpoint,
            live: Mutex::default(),
            connecting: tokio::sync::Mutex::const_new(()),
        }
    }

    fn live(&self) -> Option<Arc<Shared>> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.as_ref()
            .filter(|s| !s.closed.load(Ordering::Acquire))
            .cloned()
    }

    /// Runs a packed MGET.
    pub async fn mget(&self, packed: &[u8]) -> RedisResult<Values> {
        let shared = match self.live() {
            Some(s) => s,
            None => self.connect().await?,
        };
        shared.request(packed).await
    }

    async fn connect(&self) -> RedisResult<Arc<Shared>> {
        let _one = self.connecting.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        // the setup's replies were read whole: nothing is left in the buffer
        let (read, write) = self.endpoint.connect().await?.into_inner().into_split();
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(write_loop(shared.clone(), write));
        tokio::spawn(read_loop(shared.clone(), BufReader::new(read)));
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
        Ok(shared)
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        if let Some(shared) = self
            .live
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            shared.close();
        }
    }
}

async fn write_loop(shared: Arc<Shared>, mut write: OwnedWriteHalf) {
    let mut buf = Vec::new();
    loop {
        shared.wake.notified().await;
        // one turn of the runtime first: sessions whose queries arrived meanwhile add
        // their lookups to this write
        tokio::task::yield_now().await;
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        std::mem::swap(&mut buf, &mut shared.lock().out);
        if buf.is_empty() {
            continue;
        }
        let written = tokio::select! {
            biased;
            written = write.write_all(&buf) => written,
            () = shared.stop.cancelled() => break,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "cache: lookup connection write failed");
            shared.close();
            break;
        }
        buf.clear();
    }
    // dropping the write half shuts the connection's sending side down
}

async fn read_loop(shared: Arc<Shared>, mut read: BufReader<OwnedReadHalf>) {
    let stop = shared.stop.clone().cancelled_owned();
    tokio::pin!(stop);
    loop {
        // the token is polled only when no reply is ready (once per batch)
        let reply = tokio::select! {
            biased;
            reply = read_mget(&mut read) => reply,
            () = &mut stop => break,
        };
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        let failed = reply.is_err();
        let Some(waiter) = shared.lock().waiters.pop_front() else {
            // a reply nobody asked for: the connection is out of step
            shared.close();
            break;
        };
        let _ = waiter.send(reply);
        if failed {
            shared.close();
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn endpoint(addr: &str) -> Endpoint {
        let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
        Endpoint::new(client.get_connection_info()).unwrap()
    }

    const MGET: &[u8] = b"*2\r\n$4\r\nMGET\r\n$1\r\nk\r\n";

    /// A server answering the n-th MGET it reads (counting from 0 over every connection)
    /// with the value n; a connection closes, unanswered, when a request comes after
    /// `close_after` replies.
    async fn server(close_after: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok((mut s, _)) = listener.accept().await {
                let (mut pending, mut answered) = (0, 0);
                let mut buf = [0; 4096];
                while let Ok(k @ 1..) = s.read(&mut buf).await {
                    pending += k;
                    let (mut out, mut close) = (Vec::new(), false);
                    while pending >= MGET.len() {
                        if answered == close_after {
                            close = true;
                            break;
                        }
                        pending -= MGET.len();
                        let v = n.to_string();
                        out.extend_from_slice(format!("*1\r\n${}\r\n{v}\r\n", v.len()).as_bytes());
                        n += 1;
                        answered += 1;
                    }
                    if s.write_all(&out).await.is_err() || close {
                        break;
                    }
                }
            }
        });
        addr
    }

    fn value(values: Values) -> usize {
        String::from_utf8(values[0].clone().unwrap())
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn concurrent_lookups_get_their_own_replies_in_order() {
        let p = Arc::new(Pipelined::new(endpoint(&server(usize::MAX).await)));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move { p.mget(MGET).await }));
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(value(t.await.unwrap().unwrap()));
        }
        seen.sort();
        assert_eq!(
            seen,
            (0..20).collect::<Vec<_>>(),
            "each reply went to one lookup"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_fails_its_lookups_and_the_next_one_reconnects() {
        let p = Pipelined::new(endpoint(&server(1).await));
        assert!(p.mget(MGET).await.is_ok());
        // the server closes instead of answering: this lookup fails, no hang
        let failed = tokio::time::timeout(Duration::from_secs(5), p.mget(MGET)).await;
        assert!(matches!(failed, Ok(Err(_))), "{failed:?}");
        // a new connection serves the next one
        let again = tokio::time::timeout(Duration::from_secs(5), p.mget(MGET)).await;
        assert!(matches!(again, Ok(Ok(_))), "{again:?}");
    }

    #[tokio::test]
    async fn a_lookup_that_gives_up_closes_the_connection() {
        let p = Arc::new(Pipelined::new(endpoint(&server(usize::MAX).await)));
        assert_eq!(value(p.mget(MGET).await.unwrap()), 0);
        let first = p.live().unwrap();
        // a lookup dropped while it waits for its reply
        tokio::select! {
            biased;
            _ = p.mget(MGET) => panic!("answered at once"),
            _ = std::future::ready(()) => {}
        }
        assert!(first.closed.load(Ordering::Acquire));
        assert!(p.live().is_none());
        // the next lookups run on a new connection, each with its own reply
        let a = value(p.mget(MGET).await.unwrap());
        let b = value(p.mget(MGET).await.unwrap());
        assert!(a >= 1 && b == a + 1, "{a} {b}");
        assert!(!Arc::ptr_eq(&first, &p.live().unwrap()));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_let_go() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            // reads, never answers, never closes
            while let Ok(1..) = s.read(&mut buf).await {}
            std::future::pending::<()>().await;
        });
        let p = Pipelined::new(endpoint(&addr));
        let gave_up = tokio::time::timeout(Duration::from_millis(50), p.mget(MGET)).await;
        assert!(gave_up.is_err());
        let first = p.live.lock().unwrap().clone().unwrap();
        // the writer and the reader both end: only the store and this test hold it
        tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&first) > 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the connection's tasks ended");
    }
}
