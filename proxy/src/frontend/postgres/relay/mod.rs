//! The relay for routes whose backend is PostgreSQL: client messages go to a pooled server
//! connection and the server's messages come back unchanged, never decoded into rows.
//!
//! The relay keeps a queue of the responses it expects from the server, one entry per
//! request message sent. That queue lets it (a) know when a transaction-mode server
//! connection is idle and can go back to the pool, (b) swallow responses to messages it
//! added itself (a Parse that re-creates a client's statement on a new server connection)
//! and (c) answer locally, in the right place in the stream, for messages it did not send
//! (a Parse of a statement the server already has, a Close of a client statement).

mod cache;
mod extended;
mod gucs;
mod portal;
mod scan;
mod server;
mod statements;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use backends::postgres::wire::{self, cstr, Frame};
use backends::postgres::{PgPool, PooledServer, ServerConn};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use self::gucs::Gucs;
use self::statements::ClientStatements;
use super::error::PgError;
use super::startup::Login;
use super::stream::{ClientStream, PgConn, ReadError};
use super::ConnError;
use crate::access::{Denial, Permit, SessionPolicy};
use crate::config::PoolMode;
use crate::metrics as m;
use crate::pipeline;
use crate::state::{CancelTarget, RouteEntry, ServerSlot, State};

/// A response the relay waits for from the server, in order.
#[derive(Debug)]
enum Expect {
    /// ParseComplete; `name` is the server statement sluice created (None: unnamed).
    Parse {
        swallow: bool,
        name: Option<Arc<str>>,
    },
    /// BindComplete; `swallow`: the client already had one (a cached portal that runs
    /// on the server after all).
    Bind {
        swallow: bool,
    },
    /// RowDescription or NoData; `swallow`: sluice asked, to store with a cached answer.
    Describe {
        swallow: bool,
    },
    /// The answer to an Execute; `swallow`: sluice's own, seen by the cache only.
    Execute {
        swallow: bool,
    },
    Close {
        swallow: bool,
    },
    /// ReadyForQuery after Sync.
    Sync,
    /// Everything up to ReadyForQuery after a simple Query or FunctionCall.
    Query,
    /// A response sluice produces itself when its turn comes.
    Inject(Bytes),
}

enum Event {
    Client(Result<Frame, ReadError>),
    Server(std::io::Result<Frame>),
    Shutdown,
}

struct Relay<'a, S> {
    client: &'a mut PgConn<ClientStream<S>>,
    route: &'a RouteEntry,
    pool: &'a PgPool,
    transaction_mode: bool,
    server: Option<PooledServer>,
    slot: Arc<ServerSlot>,
    expect: VecDeque<Expect>,
    /// Extended-protocol messages went to the server since the last Sync.
    in_pipeline: bool,
    /// The server reported an error and skips messages until Sync.
    server_failed: bool,
    /// sluice answered an extended-protocol message with an error: skip until Sync.
    skipping: bool,
    statements: ClientStatements,
    gucs: Gucs,
    /// When the request now running started, and whether it failed (for metrics).
    request: Option<(Instant, bool)>,
    recorder: pipeline::Recorder,
    checkout_wait: metrics::Histogram,
    state: &'a State,
    policy: SessionPolicy,
    /// The policy decision for each client statement, by name ("" is the unnamed one).
    permits: HashMap<Vec<u8>, Permit>,
    /// The decision of the statement each open portal was bound from, checked again at
    /// Execute when policies were reloaded since (portals end with their transaction).
    portal_permits: HashMap<Vec<u8>, Permit>,
    /// Rows the running request returned or changed so far, and whether it executed
    /// anything (for its audit event).
    rows: u64,
    executed: bool,
    /// A cache miss being filled from the server's answer.
    capture: Option<cache::Capture>,
    /// Tables written, to invalidate in the cache.
    writes: cache::Writes,
    /// Parse bodies (query and parameter types) by statement name, for cache keys.
    parse_bodies: HashMap<Vec<u8>, bytes::Bytes>,
    /// The unnamed portal, when the cache answers it.
    cached_portal: Option<portal::CachedPortal>,
}

/// Serves a logged-in client on a PostgreSQL route until it leaves.
pub(super) async fn serve<S>(
    conn: &mut PgConn<ClientStream<S>>,
    login: &Login,
    route: &RouteEntry,
    pool: &PgPool,
    policy: SessionPolicy,
    state: &State,
    shutdown: &CancellationToken,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let gucs = match Gucs::from_startup(&login.params) {
        Ok(g) => g,
        Err(p) => {
            let msg = format!("unsupported startup parameter \"{p}\"; set it with SET instead");
            return super::refuse(conn, PgError::fatal("08P01", msg)).await;
        }
    };
    let slot = Arc::new(ServerSlot::default());
    let mut relay = Relay {
        client: conn,
        route,
        pool,
        transaction_mode: route.pool_mode == PoolMode::Transaction,
        server: None,
        slot: slot.clone(),
        expect: VecDeque::new(),
        in_pipeline: false,
        server_failed: false,
        skipping: false,
        statements: ClientStatements::default(),
        gucs,
        request: None,
        recorder: pipeline::Recorder::new("postgres"),
        checkout_wait: metrics::histogram!(m::POOL_CHECKOUT_WAIT),
        state,
        policy,
        permits: HashMap::new(),
        portal_permits: HashMap::new(),
        rows: 0,
        executed: false,
        capture: None,
        writes: cache::Writes::default(),
        parse_bodies: HashMap::new(),
        cached_portal: None,
    };
    // Session mode takes its server connection now. Transaction mode needs one only to
    // learn the server's parameters the first time (which also proves the backend is
    // reachable); later logins use the parameters the pool remembers, so logging in
    // never waits for a busy pool.
    let needs_server = !relay.transaction_mode || !pool.knows_server();
    if needs_server {
        if let Err(e) = relay.attach().await {
            return super::refuse(relay.client, e.into_fatal()).await;
        }
    }
    let params = relay.greeting_params();
    for (name, value) in &params {
        // the server's lexing settings (standard_conforming_strings, client_encoding)
        relay.policy.server_reported(name, value);
    }
    if relay.transaction_mode {
        relay.release().await;
    }
    let key = state.cancels.register(CancelTarget::Postgres(slot));
    super::greet(relay.client, &params, &key);
    relay.client.send_raw(&simple_message(b'Z', b"I"));
    relay
        .client
        .flush()
        .await
        .map_err(|e| ConnError::Read(e.into()))?;
    tracing::debug!(user = %login.user, route = %route.name, "relay session started");
    let result = relay.run(shutdown).await;
    relay.finish().await;
    drop(key);
    result
}

/// The next server message, or never when no server connection is held.
async fn next_server_frame(server: Option<&mut ServerConn>) -> std::io::Result<Frame> {
    match server {
        Some(s) => s.read_frame().await,
        None => std::future::pending().await,
    }
}

fn simple_message(tag: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + body.len());
    wire::put_message(&mut out, tag, |b| b.put_slice(body));
    out.freeze()
}

impl<S: AsyncRead + AsyncWrite + Unpin> Relay<'_, S> {
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), ConnError> {
        loop {
            let idle = self.expect.is_empty() && !self.in_pipeline;
            let event = {
                let server = self.server.as_deref_mut();
                tokio::select! {
                    r = self.client.read_frame() => Event::Client(r),
                    r = next_server_frame(server) => Event::Server(r),
                    _ = shutdown.cancelled(), if idle => Event::Shutdown,
                }
            };
            match event {
                Event::Client(Ok(frame)) => {
                    if !self.on_client_batch(frame).await? {
                        return Ok(());
                    }
                }
                Event::Client(Err(ReadError::Closed)) => return Ok(()),
                Event::Client(Err(ReadError::Codec(e))) => {
                    let err = PgError::from(&e);
                    return super::refuse(self.client, err).await;
                }
                Event::Client(Err(e)) => return Err(e.into()),
                Event::Server(Ok(frame)) => {
                    if let Err(e) = self.on_server_batch(frame).await {
                        return self.server_lost(e).await;
                    }
                }
                Event::Server(Err(e)) => return self.server_lost(e).await,
                Event::Shutdown => {
                    let err = PgError::fatal(
                        "57P01",
                        "terminating connection due to administrator command",
                    );
                    return super::refuse(self.client, err).await.or(Ok(()));
                }
            }
        }
    }

    /// Handles one client message and every further one already buffered, then sends.
    /// Returns false when the client said goodbye.
    async fn on_client_batch(&mut self, frame: Frame) -> Result<bool, ConnError> {
        let mut frame = frame;
        loop {
            if !self.on_client(frame).await? {
                return Ok(false);
            }
            if !self.client.has_frame() {
                break;
            }
            frame = self.client.read_frame().await?;
        }
        if let Some(server) = self.server.as_deref_mut() {
            if let Err(e) = server.flush().await {
                self.server_lost(e).await?;
                return Ok(false);
            }
        }
        self.client.flush().await.map_err(ReadError::from)?;
        Ok(true)
    }

    /// Relays one server message and every further one already buffered, then sends
    /// them to the client and gives an idle transaction-mode connection back.
    async fn on_server_batch(&mut self, frame: Frame) -> std::io::Result<()> {
        self.on_server(frame);
        // writes are invalidated before the client may see their ReadyForQuery
        self.invalidate_due().await;
        while let Some(frame) = self.server_mut().buffered_frame()? {
            self.on_server(frame);
            self.invalidate_due().await;
            self.client.flush_if_large().await?;
        }
        self.client.flush().await?;
        if self.transaction_mode
            && self.expect.is_empty()
            && !self.in_pipeline
            && self.server.as_ref().is_some_and(|s| s.status == b'I')
        {
            self.release().await;
        }
        Ok(())
    }

    fn server_mut(&mut self) -> &mut ServerConn {
        self.server
            .as_deref_mut()
            .expect("a server message implies a server connection")
    }

    async fn on_client(&mut self, frame: Frame) -> Result<bool, ConnError> {
        let tag = frame.tag();
        tracing::trace!(tag = %(tag as char), expect = ?self.expect, "client message");
        if self.skipping {
            if tag == b'S' {
                self.skipping = false;
                self.sync(frame).await;
            }
            return Ok(true);
        }
        match tag {
            b'X' => return Ok(false),
            b'Q' => self.query(frame).await,
            b'F' if self.state.access().policy.is_some() => {
                let d = Denial {
                    access: Some(crate::classify::Access {
                        action: policies::Action::Execute,
                        object: "*".into(),
                    }),
                    reason: "the function call protocol is not supported by access policy".into(),
                };
                let access = self.state.access();
                self.policy
                    .refused(&access, "(FunctionCall message)", &[], &d);
                self.fail_request(PgError::from(&d), true);
            }
            b'F' => self.forward(frame, Expect::Query, true).await,
            b'P' => self.parse(frame).await,
            b'B' => self.bind(frame).await,
            b'D' => self.describe(frame).await,
            b'E' => {
                if let Err(d) = self.recheck_portal(&frame) {
                    self.fail_request(PgError::from(&d), false);
                    return Ok(true);
                }
                self.executed = true;
                if !self.cached_execute(&frame).await {
                    self.before_captured_execute(&frame).await;
                    self.forward(frame, Expect::Execute { swallow: false }, false)
                        .await
                }
            }
            b'C' => self.close(frame).await,
            b'S' => self.sync(frame).await,
            b'H' | b'd' | b'c' | b'f' => {
                if let Some(s) = self.server.as_deref_mut() {
                    s.send_raw(frame.raw());
                }
            }
            other => {
                let msg = format!("unexpected message type {:?}", other as char);
                super::refuse(self.client, PgError::protocol(msg)).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn start_request(&mut self) {
        if self.request.is_none() {
            self.request = Some((Instant::now(), false));
        }
    }

    /// Takes a server connection if none is held; on failure answers the client.
    async fn ensure_server(&mut self, simple: bool) -> bool {
        if self.server.is_some() {
            return true;
        }
        match self.attach().await {
            Ok(()) => true,
            Err(e) => {
                self.fail_request(e, simple);
                false
            }
        }
    }

    /// Answers the current request with `err`: a simple query gets ReadyForQuery after
    /// it; an extended-protocol batch is skipped until its Sync.
    fn fail_request(&mut self, err: PgError, simple: bool) {
        self.start_request();
        if let Some((_, failed)) = self.request.as_mut() {
            *failed = true;
        }
        let mut out = BytesMut::new();
        let _ = pgwire::messages::Message::encode(&err.to_response(), &mut out);
        self.inject(out.freeze());
        if simple {
            let status = self.server.as_ref().map_or(b'I', |s| s.status);
            self.inject(simple_message(b'Z', &[status]));
            self.finish_request();
        } else {
            self.skipping = true;
        }
    }

    fn inject(&mut self, bytes: Bytes) {
        if !self.server_failed {
            self.expect.push_back(Expect::Inject(bytes));
            self.pump_injects();
        }
    }

    /// Sends every locally produced response whose turn has come.
    fn pump_injects(&mut self) {
        while let Some(Expect::Inject(_)) = self.expect.front() {
            if let Some(Expect::Inject(bytes)) = self.expect.pop_front() {
                self.client.send_raw(&bytes);
            }
        }
    }

    async fn forward(&mut self, frame: Frame, expect: Expect, simple: bool) {
        self.start_request();
        if !self.ensure_server(simple).await {
            return;
        }
        if !simple {
            self.in_pipeline = true;
        }
        self.server_mut().send_raw(frame.raw());
        self.expect.push_back(expect);
    }

    async fn query(&mut self, frame: Frame) {
        self.capture = None;
        let sql = cstr(frame.body()).map(|(s, _)| s).unwrap_or_default();
        let sql = String::from_utf8_lossy(sql);
        let permit = match self.check(&sql) {
            Ok(p) => p,
            Err(d) => {
                self.fail_request(PgError::from(&d), true);
                return;
            }
        };
        if self.transaction_mode {
            if let Err(e) = self.gucs.check(&sql) {
                self.fail_request(e, true);
                return;
            }
        }
        if self.cached_query(&sql, &permit).await {
            return;
        }
        self.note_writes(&permit);
        self.executed = true;
        self.forward(frame, Expect::Query, true).await;
        if let Some(s) = self.server.as_deref_mut() {
            s.unnamed = None;
        }
    }

    async fn sync(&mut self, frame: Frame) {
        self.start_request();
        // the unnamed portal ends with the implicit transaction
        self.cached_portal = None;
        self.lookahead();
        match self.server.as_deref_mut() {
            Some(server) => {
                server.send_raw(frame.raw());
                self.expect.push_back(Expect::Sync);
                self.in_pipeline = false;
            }
            None => {
                // Nothing reached a server: answer for it.
                self.server_failed = false;
                self.inject(simple_message(b'Z', b"I"));
                self.finish_request();
            }
        }
    }

    /// The policy check of one request's SQL.
    fn check(&mut self, sql: &str) -> Result<Permit, Denial> {
        let in_transaction = self.server.as_ref().is_some_and(|s| s.status != b'I');
        self.policy.check(&self.state.access(), sql, in_transaction)
    }

    fn finish_request(&mut self) {
        if let Some((started, failed)) = self.request.take() {
            self.recorder.record(!failed, started);
            self.policy.settle(!failed);
        }
        // a capture not completed by its own ReadyForQuery (the request failed before it
        // reached the server) must not take in the next request's answer
        self.capture = None;
        if self.executed && self.policy.awaiting_outcome() {
            self.policy.finished(Some(self.rows));
        }
        self.rows = 0;
        self.executed = false;
    }
}
