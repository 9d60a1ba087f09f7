//! The relay for routes whose backend is PostgreSQL: client messages go to a pooled server
//! connection and the server's messages come back unchanged, never decoded into rows.
//!
//! The relay keeps a queue of the responses it expects from the server, one entry per
//! request message sent. That queue lets it (a) know when a transaction-mode server
//! connection is idle and can go back to the pool, (b) swallow responses to messages it
//! added itself (a Parse that re-creates a client's statement on a new server connection)
//! and (c) answer locally, in the right place in the stream, for messages it did not send
//! (a Parse of a statement the server already has, a Close of a client statement).

mod gucs;
mod scan;
mod statements;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backends::postgres::pool::CheckoutError;
use backends::postgres::wire::{self, cstr, Frame};
use backends::postgres::{PgPool, PooledServer, ServerConn};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use self::gucs::Gucs;
use self::statements::{renamed, ClientStatements, StatementDef};
use super::error::PgError;
use super::startup::Login;
use super::stream::{ClientStream, PgConn, ReadError};
use super::ConnError;
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
    Bind,
    Describe,
    Execute,
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
}

/// Serves a logged-in client on a PostgreSQL route until it leaves.
pub(super) async fn serve<S>(
    conn: &mut PgConn<ClientStream<S>>,
    login: &Login,
    route: &RouteEntry,
    pool: &PgPool,
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
    };
    // Session mode takes its server connection now. Transaction mode needs one only to
    // learn the server's parameters the first time (which also proves the backend is
    // reachable); later logins use the parameters the pool remembers, so logging in
    // never waits for a busy pool.
    let needs_server = !relay.transaction_mode || pool.server_params().is_empty();
    if needs_server {
        if let Err(mut e) = relay.attach().await {
            e.fatal = true;
            return super::refuse(relay.client, e).await;
        }
    }
    let params = relay.greeting_params();
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

/// The kind byte (`S` statement, `P` portal) and name of a Describe or Close body.
fn kind_and_name(body: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (&kind, rest) = body.split_first()?;
    cstr(rest).map(|(name, _)| (kind, name.to_vec()))
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
        while let Some(frame) = self.server_mut().buffered_frame()? {
            self.on_server(frame);
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
            b'F' => self.forward(frame, Expect::Query, true).await,
            b'P' => self.parse(frame).await,
            b'B' => self.bind(frame).await,
            b'D' => self.describe(frame).await,
            b'E' => self.forward(frame, Expect::Execute, false).await,
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

    async fn attach(&mut self) -> Result<(), PgError> {
        let started = Instant::now();
        let mut server = match self.pool.checkout().await {
            Ok(s) => s,
            Err(CheckoutError::Timeout(d)) => {
                metrics::counter!(m::POOL_CHECKOUT_TIMEOUTS).increment(1);
                tracing::warn!(state = ?self.pool.state(), "checkout timed out");
                let msg = format!(
                    "no server connection became free within {:.1}s; the route's pool is \
                     exhausted",
                    d.as_secs_f64()
                );
                return Err(PgError::error("53300", msg));
            }
            Err(CheckoutError::Unavailable(e)) => {
                tracing::warn!(error = %e, "no server connection");
                return Err(PgError::error(
                    "08006",
                    "backend unavailable: could not connect to the database server",
                ));
            }
        };
        self.checkout_wait.record(started.elapsed().as_secs_f64());
        if let Some(sql) = gucs::sync_statement(&server.session, &self.gucs.values) {
            match server.simple_query(&sql).await {
                Ok(_) => server.session = self.gucs.values.clone(),
                Err(e @ backends::BackendError::Server { .. }) => return Err(PgError::from(&e)),
                Err(e) => {
                    tracing::warn!(error = %e, "server connection failed while applying settings");
                    server.broken = true;
                    return Err(PgError::error("08006", "backend unavailable"));
                }
            }
        }
        self.slot.set(Some(server.key)).await;
        self.server = Some(server);
        Ok(())
    }

    /// Gives the server connection back to the pool, reading back settings the client may
    /// have changed first.
    async fn release(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        if self.gucs.dirty {
            self.gucs.dirty = false;
            let (sql, names) = gucs::readback_query();
            match server.simple_query(&sql).await {
                Ok(rows) => {
                    let row = rows.into_iter().next().unwrap_or_default();
                    for (name, value) in names.into_iter().zip(row) {
                        if let Some(v) = value {
                            self.gucs.values.insert(name.to_string(), v.clone());
                            server.session.insert(name.to_string(), v);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading back session settings failed");
                    server.broken = true;
                }
            }
        }
        self.slot.set(None).await;
        server.last_used = Instant::now();
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
        if self.transaction_mode {
            let sql = cstr(frame.body()).map(|(s, _)| s).unwrap_or_default();
            if let Err(e) = self.gucs.check(&String::from_utf8_lossy(sql)) {
                self.fail_request(e, true);
                return;
            }
        }
        self.forward(frame, Expect::Query, true).await;
        if let Some(s) = self.server.as_deref_mut() {
            s.unnamed = None;
        }
    }

    async fn parse(&mut self, frame: Frame) {
        self.start_request();
        let Some((name, rest)) = cstr(frame.body()) else {
            return self.fail_request(PgError::protocol("malformed Parse message"), false);
        };
        if !self.transaction_mode {
            return self
                .forward(
                    frame,
                    Expect::Parse {
                        swallow: false,
                        name: None,
                    },
                    false,
                )
                .await;
        }
        let sql = cstr(rest).map(|(s, _)| s).unwrap_or_default();
        if let Err(e) = self.gucs.check(&String::from_utf8_lossy(sql)) {
            return self.fail_request(e, false);
        }
        let def = StatementDef::new(rest);
        if self.server.is_none() {
            // Outside a transaction no server connection is needed yet: the statement is
            // created on whichever connection first runs it. (A client that prepares
            // synchronously while its other sessions hold the pool would otherwise wait
            // on itself.) Errors in the statement surface when it is first used.
            if name.is_empty() {
                self.statements.unnamed = Some(def);
            } else if !self.define(name, def) {
                return;
            }
            self.inject(simple_message(b'1', &[]));
            return;
        }
        if name.is_empty() {
            self.statements.unnamed = Some(def.clone());
            self.forward(
                frame,
                Expect::Parse {
                    swallow: false,
                    name: None,
                },
                false,
            )
            .await;
            if let Some(s) = self.server.as_deref_mut() {
                s.unnamed = Some(def.digest);
            }
            return;
        }
        if !self.define(name, def.clone()) {
            return;
        }
        self.in_pipeline = true;
        if self.server_mut().statements.touch(&def.server_name) {
            self.inject(simple_message(b'1', &[]));
        } else {
            self.prepare_on_server(&def, false);
        }
    }

    /// Records a client statement; answers 42P05 when the name is taken.
    fn define(&mut self, name: &[u8], def: Arc<StatementDef>) -> bool {
        if self.statements.named.contains_key(name) {
            let msg = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(name)
            );
            self.fail_request(PgError::error("42P05", msg), false);
            return false;
        }
        self.statements.named.insert(name.to_vec(), def);
        true
    }

    /// Sends a Parse creating `def` under its server name (closing an evicted statement
    /// first); `swallow` hides the ParseComplete from the client.
    fn prepare_on_server(&mut self, def: &StatementDef, swallow: bool) {
        let server = self.server.as_deref_mut().expect("caller holds a server");
        if let Some(evicted) = server.statements.insert(def.server_name.clone()) {
            wire::put_message(server.queue(), b'C', |b| {
                b.put_u8(b'S');
                wire::put_cstr(b, evicted.as_bytes());
            });
            self.expect.push_back(Expect::Close { swallow: true });
        }
        let server = self.server.as_deref_mut().expect("caller holds a server");
        def.parse_message(server.queue(), def.server_name.as_bytes());
        self.expect.push_back(Expect::Parse {
            swallow,
            name: Some(def.server_name.clone()),
        });
    }

    /// Makes the client statement `name` exist on the server connection held; returns
    /// its server name, or answers with 26000 when the client never prepared it.
    fn ensure_statement(&mut self, name: &[u8]) -> Option<Arc<str>> {
        let Some(def) = self.statements.named.get(name).cloned() else {
            let msg = format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            );
            self.fail_request(PgError::error("26000", msg), false);
            return None;
        };
        if !self.server_mut().statements.touch(&def.server_name) {
            self.prepare_on_server(&def, true);
        }
        Some(def.server_name.clone())
    }

    /// Re-creates the client's unnamed statement when the server connection holds
    /// another one (or none).
    fn ensure_unnamed(&mut self) {
        let Some(def) = self.statements.unnamed.clone() else {
            return;
        };
        let server = self.server_mut();
        if server.unnamed != Some(def.digest) {
            def.parse_message(server.queue(), b"");
            server.unnamed = Some(def.digest);
            self.expect.push_back(Expect::Parse {
                swallow: true,
                name: None,
            });
        }
    }

    async fn bind(&mut self, frame: Frame) {
        self.start_request();
        let parsed = cstr(frame.body()).and_then(|(portal, rest)| {
            cstr(rest).map(|(stmt, tail)| (portal.len(), stmt.to_vec(), tail.len()))
        });
        let Some((portal_len, stmt, tail_len)) = parsed else {
            return self.fail_request(PgError::protocol("malformed Bind message"), false);
        };
        if !self.ensure_server(false).await {
            return;
        }
        self.in_pipeline = true;
        if !self.transaction_mode {
            self.server_mut().send_raw(frame.raw());
        } else if stmt.is_empty() {
            self.ensure_unnamed();
            self.server_mut().send_raw(frame.raw());
        } else {
            let Some(server_name) = self.ensure_statement(&stmt) else {
                return;
            };
            let body = frame.body();
            let msg = renamed(
                b'B',
                &body[..portal_len + 1],
                &server_name,
                &body[body.len() - tail_len..],
            );
            self.server_mut().queue().extend_from_slice(&msg);
        }
        self.expect.push_back(Expect::Bind);
    }

    async fn describe(&mut self, frame: Frame) {
        self.start_request();
        let Some((kind, name)) = kind_and_name(frame.body()) else {
            return self.fail_request(PgError::protocol("malformed Describe message"), false);
        };
        if !self.ensure_server(false).await {
            return;
        }
        self.in_pipeline = true;
        if !self.transaction_mode || kind != b'S' {
            self.server_mut().send_raw(frame.raw());
        } else if name.is_empty() {
            self.ensure_unnamed();
            self.server_mut().send_raw(frame.raw());
        } else {
            let Some(server_name) = self.ensure_statement(&name) else {
                return;
            };
            let msg = renamed(b'D', b"S", &server_name, &[]);
            self.server_mut().queue().extend_from_slice(&msg);
        }
        self.expect.push_back(Expect::Describe);
    }

    async fn close(&mut self, frame: Frame) {
        self.start_request();
        let Some((kind, name)) = kind_and_name(frame.body()) else {
            return self.fail_request(PgError::protocol("malformed Close message"), false);
        };
        if self.transaction_mode && kind == b'S' {
            if name.is_empty() {
                self.statements.unnamed = None;
            } else {
                // The server statement stays for other clients; the client's name goes.
                self.statements.named.remove(&name);
                self.in_pipeline |= self.server.is_some();
                self.inject(simple_message(b'3', &[]));
                return;
            }
        }
        self.forward(frame, Expect::Close { swallow: false }, false)
            .await;
        if kind == b'S' && name.is_empty() {
            if let Some(s) = self.server.as_deref_mut() {
                s.unnamed = None;
            }
        }
    }

    async fn sync(&mut self, frame: Frame) {
        self.start_request();
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

    fn finish_request(&mut self) {
        if let Some((started, failed)) = self.request.take() {
            self.recorder.record(!failed, started);
        }
    }

    fn on_server(&mut self, frame: Frame) {
        tracing::trace!(tag = %(frame.tag() as char), expect = ?self.expect, "server message");
        self.pump_injects();
        let forward = match frame.tag() {
            b'1' => match self.expect.pop_front() {
                Some(Expect::Parse { swallow, .. }) => !swallow,
                other => self.out_of_step(b'1', other),
            },
            b'2' => self.pop_if(|e| matches!(e, Expect::Bind)),
            b'3' => match self.expect.pop_front() {
                Some(Expect::Close { swallow }) => !swallow,
                other => self.out_of_step(b'3', other),
            },
            b'T' | b'n' => self.pop_if(|e| matches!(e, Expect::Describe)),
            b'C' | b'I' | b's' => self.pop_if(|e| matches!(e, Expect::Execute)),
            b'E' => {
                self.server_error();
                true
            }
            b'Z' => {
                self.ready(&frame);
                true
            }
            b'S' => {
                self.parameter_status(&frame);
                true
            }
            _ => true,
        };
        if forward {
            self.client.send_raw(frame.raw());
        }
        self.pump_injects();
    }

    /// Pops the front expectation when it matches; the message is forwarded either way.
    fn pop_if(&mut self, matches: impl Fn(&Expect) -> bool) -> bool {
        if self.expect.front().is_some_and(matches) {
            self.expect.pop_front();
        }
        true
    }

    fn out_of_step(&mut self, tag: u8, got: Option<Expect>) -> bool {
        tracing::warn!(message = %(tag as char), expected = ?got, "server response out of step");
        if let Some(s) = self.server.as_deref_mut() {
            s.broken = true;
        }
        true
    }

    fn server_error(&mut self) {
        if let Some((_, failed)) = self.request.as_mut() {
            *failed = true;
        }
        if matches!(self.expect.front(), None | Some(Expect::Query)) {
            return;
        }
        // Extended protocol: the server skips everything until Sync.
        self.server_failed = true;
        while let Some(front) = self.expect.front() {
            if matches!(front, Expect::Sync | Expect::Query) {
                break;
            }
            if let Some(Expect::Parse { name, .. }) = self.expect.pop_front() {
                let server = self.server_mut();
                match name {
                    Some(n) => server.statements.remove(&n),
                    None => server.unnamed = None,
                }
            }
        }
    }

    fn ready(&mut self, frame: &Frame) {
        let status = frame.body().first().copied().unwrap_or(b'I');
        self.server_mut().status = status;
        self.server_failed = false;
        while let Some(e) = self.expect.pop_front() {
            if matches!(e, Expect::Sync | Expect::Query) {
                break;
            }
        }
        self.finish_request();
    }

    fn parameter_status(&mut self, frame: &Frame) {
        let Some((name, rest)) = cstr(frame.body()) else {
            return;
        };
        let value = cstr(rest).map(|(v, _)| v).unwrap_or_default();
        let (name, value) = (
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        );
        if self.gucs.reported(&name, &value) {
            if let Some(s) = self.server.as_deref_mut() {
                if let Some((canonical, _)) = gucs::tracked(&name) {
                    s.session.insert(canonical.to_string(), value);
                }
            }
        }
    }

    /// The server connection failed: the client gets an error and the connection ends.
    async fn server_lost(&mut self, e: std::io::Error) -> Result<(), ConnError> {
        tracing::warn!(error = %e, "server connection lost");
        if let Some(mut s) = self.server.take() {
            s.broken = true;
        }
        self.slot.set(None).await;
        self.expect.clear();
        let err = PgError::fatal(
            "08006",
            "server connection lost: the database server closed the connection unexpectedly",
        );
        super::refuse(self.client, err).await.or(Ok(()))
    }

    /// Settings reported to the client at login: the server's, with the client's own.
    fn greeting_params(&self) -> Vec<(String, String)> {
        let mut params = self
            .server
            .as_ref()
            .map(|s| s.params.clone())
            .unwrap_or_else(|| self.pool.server_params());
        for (name, value) in &self.gucs.values {
            if let Some((n, true)) = gucs::tracked(name) {
                match params.iter_mut().find(|(k, _)| k == n) {
                    Some(p) => p.1 = value.clone(),
                    None => params.push((n.to_string(), value.clone())),
                }
            }
        }
        params
    }

    /// After the client has gone: brings a held server connection back to a clean idle
    /// state (cancel, end COPY and pipeline, roll back, reset) or marks it broken so the
    /// pool closes it. Nothing the client left behind reaches the next client.
    async fn finish(&mut self) {
        let Some(server) = self.server.as_deref_mut() else {
            return;
        };
        let in_flight = !self.expect.is_empty();
        let pending_ready = self
            .expect
            .iter()
            .filter(|e| matches!(e, Expect::Sync | Expect::Query))
            .count();
        let unfinished = in_flight || self.in_pipeline;
        let session_mode = !self.transaction_mode;
        let clean = async {
            if in_flight {
                backends::postgres::cancel::send(server.key, Duration::from_secs(5)).await?;
            }
            if unfinished {
                wire::put_message(server.queue(), b'f', |b| {
                    wire::put_cstr(b, b"client disconnected")
                });
                wire::put_message(server.queue(), b'S', |_| {});
                server.flush().await?;
                for _ in 0..=pending_ready {
                    server.drain_until_ready().await?;
                }
            }
            let io = |e: backends::BackendError| std::io::Error::other(e.to_string());
            if server.status != b'I' {
                server.simple_query("ROLLBACK").await.map_err(io)?;
            }
            if session_mode {
                server.simple_query("DISCARD ALL").await.map_err(io)?;
                server.statements.clear();
                server.session.clear();
                server.unnamed = None;
            }
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), clean).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "server connection could not be reset; closing it");
                server.broken = true;
            }
            Err(_) => {
                tracing::warn!("server connection reset timed out; closing it");
                server.broken = true;
            }
        }
        self.expect.clear();
        self.in_pipeline = false;
        self.release().await;
    }
}
