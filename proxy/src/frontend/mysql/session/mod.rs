//! The command loop of one MySQL client.
//!
//! A client's database name is a route. On a MySQL/MariaDB route the session holds a
//! pooled server connection while it needs one: for the whole session in session mode,
//! and in transaction mode until the server reports no open transaction (status flags), or
//! for good once the client changes session state (variables, locks, temporary tables),
//! which also marks the connection for COM_RESET_CONNECTION before reuse. A client that
//! disconnects, even mid-query, never leaves a transaction, lock or query behind: the
//! running query is killed and the connection reset or closed. SQLite routes answer
//! through the protocol-neutral result set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use backends::mysql::{MyPool, PooledMyConn};
use backends::pool::CheckoutError;
use backends::postgres::{PgPool, PooledServer};
use backends::sqlite::SqliteSession;
use bytes::Bytes;
use mysql_common::constants::CapabilityFlags;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::kill::Registration;
use super::login::{self, Login};
use super::packet::{Packets, ReadError};
use super::pg;
use super::stmt::{self, Prepared};
use super::write::{self, MyError, OkInfo, STATUS_AUTOCOMMIT, STATUS_IN_TRANS};
use super::ConnError;
use crate::access::{Permit, SessionPolicy};
use crate::config::PoolMode;
use crate::pipeline::Recorder;
use crate::state::{BackendHandle, LimitSlot, RouteEntry, State};

mod access;
mod cache;
mod neutral_routes;
mod statements;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_FIELD_LIST: u8 = 0x04;
const COM_PING: u8 = 0x0e;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;
const COM_STMT_RESET: u8 = 0x1a;
const COM_SET_OPTION: u8 = 0x1b;
const COM_RESET_CONNECTION: u8 = 0x1f;

/// What serves the current route.
enum Target {
    /// No database selected yet.
    None,
    Mysql {
        pool: Arc<MyPool>,
        conn: Option<PooledMyConn>,
        mode: PoolMode,
        /// The connection stays with this client (session state changed).
        pinned: bool,
    },
    Sqlite(SqliteSession),
    /// A PostgreSQL route: one server connection held for the rest of the session once
    /// the first query needs it, cleaned (ROLLBACK, DISCARD ALL) when the session ends.
    Postgres {
        pool: Arc<PgPool>,
        conn: Option<Box<PooledServer>>,
    },
}

/// How a request ended for the loop.
enum Flow {
    Continue,
    /// The client is gone (or asked to quit).
    End,
}

pub(super) struct Session<'a, S> {
    p: Packets<S>,
    state: &'a State,
    user: String,
    capabilities: CapabilityFlags,
    multi_statements: bool,
    scramble: [u8; 20],
    /// The character set of the client's handshake.
    charset: String,
    route: Option<Arc<RouteEntry>>,
    _route_slot: Option<LimitSlot>,
    target: Target,
    /// Status flags as the server last reported them.
    status: u16,
    pub(super) statements: HashMap<u32, Prepared>,
    pub(super) next_statement: u32,
    recorder: Recorder,
    registration: Registration,
    peer: Option<SocketAddr>,
    /// The policy state of the current route (None before a database is chosen).
    policy: Option<SessionPolicy>,
    /// The policy decision of each prepared statement, by statement id.
    permits: HashMap<u32, Permit>,
    /// Tables written in the open transaction, invalidated in the read cache at COMMIT.
    cache_writes: crate::cache::TxWrites,
}

pub(super) async fn serve<S>(
    mut p: Packets<S>,
    login: Login,
    id: u32,
    peer: Option<SocketAddr>,
    state: &State,
    shutdown: &CancellationToken,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = p.is_tls();
    let route = login.database.as_deref();
    if let Err(reason) = crate::access::admit(state, "mysql", &login.user, peer, tls, route) {
        tracing::info!(user = %login.user, reason = %reason, "login refused by connection rules");
        let e = MyError::access_denied(&login.user, true);
        write::err(&mut p, &e);
        p.close().await;
        return Err(ConnError::Refused(e.message));
    }
    let Some(_user_slot) = state.user_slot(&login.user) else {
        let e = MyError::new(
            1203,
            "42000",
            format!(
                "User {} already has more than 'max_user_connections' active connections",
                login.user
            ),
        );
        write::err(&mut p, &e);
        p.close().await;
        return Err(ConnError::Refused(e.message));
    };
    let mut s = Session {
        p,
        state,
        registration: state.mysql_sessions.register(id, &login.user),
        user: login.user,
        multi_statements: login
            .capabilities
            .contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS),
        capabilities: login.capabilities,
        scramble: login.scramble,
        charset: login.charset,
        route: None,
        _route_slot: None,
        target: Target::None,
        status: STATUS_AUTOCOMMIT,
        statements: HashMap::new(),
        next_statement: 1,
        recorder: Recorder::new("mysql"),
        peer,
        policy: None,
        permits: HashMap::new(),
        cache_writes: Default::default(),
    };
    if let Some(db) = login.database {
        if let Err(e) = s.switch_route(&db).await {
            write::err(&mut s.p, &e);
            s.p.close().await;
            return Err(ConnError::Refused(e.message));
        }
    }
    s.ok(OkInfo::default());
    metrics::counter!(crate::metrics::LOGINS, "protocol" => "mysql").increment(1);
    tracing::debug!(user = %s.user, "session started");
    let result = s.run(shutdown).await;
    s.release(true).await;
    result
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), ConnError> {
        loop {
            if let Err(e) = self.p.flush().await {
                tracing::debug!(error = %e, "client write failed");
                return Ok(());
            }
            let packet = tokio::select! {
                r = self.p.read() => r,
                _ = self.registration.kill.cancelled() => {
                    let e = MyError::new(1927, "70100", "Connection was killed");
                    self.p.reset_seq();
                    write::err(&mut self.p, &e);
                    self.p.close().await;
                    return Ok(());
                }
                _ = shutdown.cancelled() => {
                    let e = MyError::new(1053, "08S01", "Server shutdown in progress");
                    self.p.reset_seq();
                    write::err(&mut self.p, &e);
                    self.p.close().await;
                    return Ok(());
                }
            };
            let packet = match packet {
                Ok(p) => p,
                Err(ReadError::Closed) => return Ok(()),
                Err(ReadError::TooLarge(n)) => {
                    let e = MyError::new(
                        1153,
                        "08S01",
                        format!("Got a packet bigger than 'max_allowed_packet' bytes ({n})"),
                    );
                    write::err(&mut self.p, &e);
                    self.p.close().await;
                    return Err(ConnError::Refused(e.message));
                }
                Err(e) => return Err(e.into()),
            };
            let started = Instant::now();
            let _in_flight = crate::pipeline::in_flight("mysql");
            let Some((&command, body)) = packet.split_first() else {
                self.error(MyError::new(1047, "08S01", "Unknown command"));
                continue;
            };
            let body = packet.slice_ref(body);
            if command == COM_QUIT {
                return Ok(());
            }
            self.p.rows = 0;
            let answer = self.dispatch(command, body).await?;
            // a prepare alone does not finish its audit event: the first execution does
            if let Some(policy) = self.policy.as_mut().filter(|p| p.awaiting_outcome()) {
                if matches!(command, COM_QUERY | COM_STMT_EXECUTE | COM_FIELD_LIST) {
                    policy.finished(Some(self.p.rows));
                }
            }
            let Some((flow, ok)) = answer else {
                continue;
            };
            self.recorder.record(ok, started);
            if let Flow::End = flow {
                return Ok(());
            }
            self.after_request().await;
        }
    }

    /// Runs one command; `None` for the commands that get no answer.
    async fn dispatch(
        &mut self,
        command: u8,
        body: Bytes,
    ) -> Result<Option<(Flow, bool)>, ConnError> {
        Ok(Some(match command {
            COM_PING => {
                self.ok(OkInfo::default());
                (Flow::Continue, true)
            }
            COM_QUERY => self.query(body).await,
            COM_INIT_DB => {
                let db = String::from_utf8_lossy(&body).into_owned();
                self.use_database(&db).await
            }
            COM_FIELD_LIST => self.field_list(body).await,
            COM_SET_OPTION => {
                match body.first() {
                    Some(0) => self.multi_statements = true,
                    Some(1) => self.multi_statements = false,
                    _ => {}
                }
                if body.len() == 2 && body[0] <= 1 {
                    write::eof(&mut self.p, 0, self.status);
                    (Flow::Continue, true)
                } else {
                    self.error(MyError::new(1047, "08S01", "Unknown COM_SET_OPTION value"));
                    (Flow::Continue, false)
                }
            }
            COM_RESET_CONNECTION => {
                self.statements.clear();
                self.reset_server().await;
                self.ok(OkInfo::default());
                (Flow::Continue, true)
            }
            COM_CHANGE_USER => self.change_user(body).await?,
            COM_STMT_PREPARE => self.prepare(body).await,
            COM_STMT_EXECUTE => self.execute(body).await,
            COM_STMT_SEND_LONG_DATA => {
                stmt::send_long_data(self, &body);
                return Ok(None);
            }
            COM_STMT_CLOSE => {
                if body.len() >= 4 {
                    let id = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                    self.statements.remove(&id);
                }
                return Ok(None);
            }
            COM_STMT_RESET => {
                let found = stmt::reset(self, &body);
                if found {
                    self.ok(OkInfo::default());
                } else {
                    self.error(unknown_statement());
                }
                (Flow::Continue, found)
            }
            other => {
                self.error(MyError::new(
                    1047,
                    "08S01",
                    format!("Unknown command (0x{other:02x})"),
                ));
                (Flow::Continue, false)
            }
        }))
    }

    pub(super) fn ok(&mut self, mut info: OkInfo) {
        info.status |= self.status;
        write::ok(&mut self.p, &info);
    }

    pub(super) fn error(&mut self, e: MyError) {
        write::err(&mut self.p, &e);
    }

    /// Answers a failed request with `e`.
    fn fail(&mut self, e: MyError) -> (Flow, bool) {
        self.error(e);
        (Flow::Continue, false)
    }

    pub(super) fn packets(&mut self) -> &mut Packets<S> {
        &mut self.p
    }

    pub(super) fn status(&self) -> u16 {
        self.status
    }

    /// Selects the route named `db`, releasing the current server connection.
    async fn switch_route(&mut self, db: &str) -> Result<(), MyError> {
        if self.status & STATUS_IN_TRANS != 0 {
            return Err(MyError::new(
                1179,
                "25000",
                "You are not allowed to switch databases while in a transaction",
            ));
        }
        if !self.state.access().may_use(&self.user, db) {
            return Err(MyError::new(
                1044,
                "42000",
                format!("Access denied for user '{}' to database '{db}'", self.user),
            ));
        }
        let Some(route) = self.state.routes.get(db).cloned() else {
            return Err(MyError::new(
                1049,
                "42000",
                format!("Unknown database '{db}'"),
            ));
        };
        let Some(slot) = route.clients.enter() else {
            return Err(MyError::new(
                1040,
                "08004",
                format!("Too many connections for database '{db}'"),
            ));
        };
        // how the server reads statements, for the policy's lexing and name folding
        let (lexing, fold) = match &route.backend {
            BackendHandle::Mysql(pool) => match pool.server_facts().await {
                Ok(f) => (
                    crate::classify::Lexing::from_sql_mode(&f.sql_mode),
                    f.lower_case_table_names != 0,
                ),
                Err(e) => return Err(MyError::from(&e)),
            },
            _ => (Some(Default::default()), true),
        };
        let target = match &route.backend {
            BackendHandle::Mysql(pool) => Target::Mysql {
                pool: pool.clone(),
                conn: None,
                mode: route.pool_mode,
                pinned: false,
            },
            BackendHandle::Sqlite(b) => match b.connect().await {
                Ok(s) => Target::Sqlite(s),
                Err(e) => return Err(MyError::from(&e)),
            },
            BackendHandle::Postgres(pool) => Target::Postgres {
                pool: pool.clone(),
                conn: None,
            },
        };
        self.release(true).await;
        self.statements.clear();
        self.permits.clear();
        self.target = target;
        let mut policy = SessionPolicy::new(
            &self.user,
            &route.name,
            "mysql",
            self.peer,
            route.backend.dialect(),
            &route.database,
        )
        .with_cache(route.cache.is_some(), &Default::default())
        .with_lexing(lexing.unwrap_or_default(), fold);
        policy.client_encoding(&self.charset);
        if lexing.is_none() {
            // a server default sql_mode whose lexing sluice does not model
            policy.unknown_lexing();
        }
        self.policy = Some(policy);
        self.cache_writes.clear();
        self.route = Some(route);
        self._route_slot = Some(slot);
        self.status = STATUS_AUTOCOMMIT;
        Ok(())
    }

    async fn use_database(&mut self, db: &str) -> (Flow, bool) {
        match self.switch_route(db).await {
            Ok(()) => {
                self.ok(OkInfo::default());
                (Flow::Continue, true)
            }
            Err(e) => {
                let sql = format!("USE `{}`", db.replace('`', "``"));
                self.audit_refusal(&sql, policies::Action::Session, db, &e);
                self.fail(e)
            }
        }
    }

    /// Gives the server connection back when the pool mode allows it; `end` gives it back
    /// regardless (session end, route switch), reset when it may carry client state.
    async fn release(&mut self, end: bool) {
        if let Target::Postgres { conn, .. } = &mut self.target {
            if end {
                if let Some(server) = conn.take() {
                    pg::clean(server).await;
                }
            }
            return;
        }
        if let Target::Mysql {
            conn, mode, pinned, ..
        } = &mut self.target
        {
            let Some(c) = conn.as_mut() else { return };
            let in_trans = c.in_transaction();
            if !end && (*mode == PoolMode::Session || *pinned || in_trans) {
                return;
            }
            if (*mode == PoolMode::Session || *pinned || in_trans || c.dirty) && !c.broken {
                c.reset().await;
            }
            c.last_used = Instant::now();
            *conn = None;
            *pinned = false;
            self.registration.set_server(None);
        }
    }

    async fn after_request(&mut self) {
        self.release(false).await;
    }

    /// COM_RESET_CONNECTION: the server session starts over too.
    async fn reset_server(&mut self) {
        if let Target::Mysql {
            conn: Some(c),
            pinned,
            ..
        } = &mut self.target
        {
            c.reset().await;
            *pinned = false;
        }
        self.status = STATUS_AUTOCOMMIT;
    }

    /// Marks the server session as changed by the client: keep it, reset it afterwards.
    fn pin(&mut self) {
        if let Target::Mysql { conn, pinned, .. } = &mut self.target {
            *pinned = true;
            if let Some(c) = conn {
                c.dirty = true;
            }
        }
    }

    async fn change_user(&mut self, body: Bytes) -> Result<(Flow, bool), ConnError> {
        let Some((user, data, database, plugin)) =
            login::parse_change_user(&body, self.capabilities)
        else {
            self.error(MyError::new(1043, "08S01", "Bad handshake"));
            return Ok((Flow::End, false));
        };
        let tls = self.p.is_tls();
        let scramble = self.scramble;
        let ok = login::authenticate(&mut self.p, self.state, &user, &scramble, plugin, data, tls)
            .await?;
        if !ok {
            crate::access::audit_failed_login(
                self.state,
                "mysql",
                &user,
                self.peer,
                database.as_deref().unwrap_or(""),
                "password authentication failed",
            );
            let e = MyError::access_denied(&user, true);
            self.error(e.clone());
            self.p.close().await;
            return Err(ConnError::Refused(e.message));
        }
        let route = database.as_deref();
        if let Err(reason) = crate::access::admit(self.state, "mysql", &user, self.peer, tls, route)
        {
            tracing::info!(user = %user, reason = %reason, "change of user refused by connection rules");
            let e = MyError::access_denied(&user, true);
            self.error(e.clone());
            self.p.close().await;
            return Err(ConnError::Refused(e.message));
        }
        // Full re-authentication: nothing of the old session survives.
        self.release(true).await;
        self.statements.clear();
        self.user = user;
        self.target = Target::None;
        self.policy = None;
        self.permits.clear();
        self.route = None;
        self._route_slot = None;
        self.status = STATUS_AUTOCOMMIT;
        if let Some(db) = database {
            if let Err(e) = self.switch_route(&db).await {
                self.error(e);
                return Ok((Flow::Continue, false));
            }
        }
        self.ok(OkInfo::default());
        Ok((Flow::Continue, true))
    }
}

/// Checks out a server connection when the session holds none, and records it for KILL.
async fn server<'a>(
    target: &'a mut Target,
    registration: &Registration,
) -> Result<&'a mut PooledMyConn, MyError> {
    let Target::Mysql { pool, conn, .. } = target else {
        return Err(no_database());
    };
    if conn.is_none() {
        let started = Instant::now();
        match pool.checkout().await {
            Ok(c) => {
                registration.set_server(Some((pool.clone(), c.id())));
                *conn = Some(c);
            }
            Err(e) => return Err(checkout_failed(&e)),
        }
        metrics::histogram!(crate::metrics::POOL_CHECKOUT_WAIT)
            .record(started.elapsed().as_secs_f64());
    }
    conn.as_mut().ok_or_else(no_database)
}

/// Counts and logs a failed checkout; the client's error for it.
pub(super) fn checkout_failed(e: &CheckoutError) -> MyError {
    if let CheckoutError::Timeout(_) = e {
        metrics::counter!(crate::metrics::POOL_CHECKOUT_TIMEOUTS).increment(1);
    }
    tracing::warn!(error = %e, "no server connection");
    MyError::from(e)
}

pub(super) fn no_database() -> MyError {
    MyError::new(1046, "3D000", "No database selected")
}

pub(super) fn unknown_statement() -> MyError {
    MyError::new(
        1243,
        "HY000",
        "Unknown prepared statement handler given to mysqld_stmt",
    )
}
