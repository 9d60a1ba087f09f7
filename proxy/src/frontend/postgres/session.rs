//! The message loop of a session on a neutral (non-relayed) route: simple and extended
//! query protocol over a backend that returns [`ResultSet`]s.
//!
//! Every frontend message is seen one at a time. After an error in an extended-protocol
//! batch, messages are skipped until Sync, as PostgreSQL does.

mod cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use backends::neutral::NeutralSession;
use backends::result::Description;
use backends::result::{ColumnType, ResultSet, Value};
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::simplequery::Query;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::codec::{Decode, Frame};
use super::encode::{self, OID_TEXT};
use super::error::PgError;
use super::stream::{PgConn, ReadError};
use crate::access::{Permit, SessionPolicy};
use crate::pipeline;
use crate::state::State;

/// A statement prepared by Parse.
struct Prepared {
    /// The policy decision made at Parse (checked again at Bind after a reload).
    permit: Permit,
    sql: String,
    param_oids: Vec<u32>,
    desc: Description,
}

impl Prepared {
    fn is_empty(&self) -> bool {
        self.sql.trim().is_empty()
    }

    /// Column types as Describe of the statement reports them (before any row exists).
    fn types(&self) -> Vec<ColumnType> {
        self.desc.columns.iter().map(|c| c.ty).collect()
    }
}

/// A bound statement; runs at its first Describe or Execute and then hands out rows.
struct Portal {
    stmt: Arc<Prepared>,
    params: Vec<Value>,
    formats: Vec<i16>,
    types: Option<Vec<ColumnType>>,
    result: Option<(ResultSet, usize)>,
}

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// The client sent Terminate or closed the connection.
    Client,
    /// sluice is shutting down.
    Shutdown,
}

/// One client session against a neutral backend.
pub struct Session<'a, S> {
    conn: &'a mut PgConn<S>,
    backend: NeutralSession,
    policy: SessionPolicy,
    state: &'a State,
    statements: HashMap<String, Arc<Prepared>>,
    portals: HashMap<String, Portal>,
    skip_until_sync: bool,
    /// The route's cache rules (None: no route caches).
    cache_route: Option<crate::cache::RouteRules>,
    /// Writes of the open transaction, invalidated at its end.
    writes: crate::cache::TxWrites,
    /// Rows returned or changed since the last Sync, and whether anything was executed
    /// (for the audit log).
    rows: u64,
    executed: bool,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Session<'a, S> {
    pub fn new(
        conn: &'a mut PgConn<S>,
        backend: NeutralSession,
        policy: SessionPolicy,
        state: &'a State,
    ) -> Self {
        let cache_route = state
            .routes
            .get(&policy.route)
            .and_then(|r| r.cache.clone());
        Session {
            conn,
            backend,
            policy,
            state,
            statements: HashMap::new(),
            portals: HashMap::new(),
            skip_until_sync: false,
            cache_route,
            writes: Default::default(),
            rows: 0,
            executed: false,
        }
    }

    fn status(&self) -> TransactionStatus {
        if self.backend.in_transaction() {
            TransactionStatus::Transaction
        } else {
            TransactionStatus::Idle
        }
    }

    /// Runs until the client leaves, the connection fails, or shutdown is requested; then
    /// closes the backend session (a server connection is reset before its reuse).
    pub async fn run(mut self, shutdown: &CancellationToken) -> Result<End, ReadError> {
        let end = self.serve(shutdown).await;
        self.backend.close().await;
        end
    }

    async fn serve(&mut self, shutdown: &CancellationToken) -> Result<End, ReadError> {
        self.conn.send(&ReadyForQuery::new(self.status()));
        loop {
            if !self.conn.has_frame() {
                self.conn.flush().await?;
            }
            let frame = tokio::select! {
                biased;
                frame = self.conn.read_frame() => frame,
                _ = shutdown.cancelled() => {
                    let err = PgError::fatal("57P01", "terminating connection due to administrator command");
                    self.conn.send(&err.to_response());
                    self.conn.close().await;
                    return Ok(End::Shutdown);
                }
            };
            let frame = match frame {
                Ok(f) => f,
                Err(ReadError::Closed) => return Ok(End::Client),
                Err(ReadError::Codec(e)) => {
                    self.conn.send(&PgError::from(&e).to_response());
                    self.conn.close().await;
                    return Err(ReadError::Codec(e));
                }
                Err(e) => return Err(e),
            };
            if frame.tag() == b'X' {
                return Ok(End::Client);
            }
            if let Err(e) = self.dispatch(frame).await {
                self.conn.send(&e.to_response());
                if e.fatal {
                    self.conn.close().await;
                    return Ok(End::Client);
                }
            }
            self.conn.flush_if_large().await?;
        }
    }

    async fn dispatch(&mut self, frame: Frame) -> Result<(), PgError> {
        let tag = frame.tag();
        if self.skip_until_sync && !matches!(tag, b'S' | b'Q') {
            return Ok(());
        }
        let out = match tag {
            b'Q' => {
                return self
                    .simple_query(frame.decode().map_err(|e| PgError::from(&e))?)
                    .await
            }
            b'S' => {
                self.skip_until_sync = false;
                if !self.backend.in_transaction() {
                    self.portals.clear();
                }
                let rows = std::mem::take(&mut self.rows);
                if std::mem::take(&mut self.executed) {
                    self.policy.finished(Some(rows));
                }
                self.conn.send(&ReadyForQuery::new(self.status()));
                return Ok(());
            }
            b'H' => {
                return self
                    .conn
                    .flush()
                    .await
                    .map_err(|_| PgError::protocol("flush failed"))
            }
            b'P' => {
                self.parse(frame.decode().map_err(|e| PgError::from(&e))?)
                    .await
            }
            b'B' => self.bind(frame.decode().map_err(|e| PgError::from(&e))?),
            b'D' => {
                self.describe(frame.decode().map_err(|e| PgError::from(&e))?)
                    .await
            }
            b'E' => {
                self.execute(frame.decode().map_err(|e| PgError::from(&e))?)
                    .await
            }
            b'C' => self.close(frame.decode().map_err(|e| PgError::from(&e))?),
            // Copy messages outside COPY are ignored, as PostgreSQL does.
            b'd' | b'c' | b'f' => Ok(()),
            other => Err(PgError::protocol(format!(
                "invalid frontend message type {}",
                other as char
            ))),
        };
        if out.is_err() {
            self.skip_until_sync = true;
        }
        out
    }

    async fn simple_query(&mut self, query: Query) -> Result<(), PgError> {
        self.statements.remove("");
        self.portals.remove("");
        let started = Instant::now();
        let _in_flight = pipeline::in_flight("postgres");
        let in_transaction = self.backend.in_transaction();
        let permit = match self
            .policy
            .check(&self.state.access(), &query.query, in_transaction)
        {
            Ok(p) => p,
            Err(d) => {
                self.conn.send(&PgError::from(&d).to_response());
                pipeline::record("postgres", false, started);
                self.conn.send(&ReadyForQuery::new(self.status()));
                return Ok(());
            }
        };
        let fill = match self.cache_lookup(&query.query, &permit, None).await {
            crate::cache::Lookup::Hit(answer) => {
                self.policy
                    .finished(Some(crate::frontend::postgres::rows_in(&answer)));
                self.conn.send_raw(&answer);
                pipeline::record("postgres", true, started);
                self.conn.send(&ReadyForQuery::new(self.status()));
                return Ok(());
            }
            crate::cache::Lookup::Miss(fill) => Some(fill),
            crate::cache::Lookup::Unavailable => None,
        };
        let mark = self.conn.mark();
        let outcome = self.backend.execute_batch(query.query).await;
        let ok = outcome.error.is_none();
        self.policy.settle(ok);
        if outcome.results.is_empty() && ok {
            self.conn.send(&EmptyQueryResponse::new());
        }
        let rows = outcome.results.iter().map(ResultSet::row_count).sum();
        self.policy.finished(Some(rows));
        for rs in &outcome.results {
            let types: Vec<ColumnType> = rs.columns.iter().map(|c| c.ty).collect();
            if rs.returns_rows() {
                self.conn
                    .send(&encode::row_description(&rs.columns, &types, &[]));
                self.send_rows(rs, &types, &[], 0, rs.rows.len()).await?;
            }
            self.conn.send(&CommandComplete::new(rs.command_tag()));
        }
        if let Some(e) = &outcome.error {
            self.conn.send(&PgError::from(e).to_response());
        }
        if let Some(fill) = fill {
            if ok && outcome.results.len() == 1 && outcome.results[0].returns_rows() {
                self.cache_fill(fill, mark);
            }
        }
        self.settle_writes(&permit).await;
        pipeline::record("postgres", ok, started);
        self.conn.send(&ReadyForQuery::new(self.status()));
        Ok(())
    }

    async fn send_rows(
        &mut self,
        rs: &ResultSet,
        types: &[ColumnType],
        formats: &[i16],
        from: usize,
        to: usize,
    ) -> Result<(), PgError> {
        for row in &rs.rows[from..to] {
            self.conn.send(&encode::data_row(row, types, formats)?);
            self.conn
                .flush_if_large()
                .await
                .map_err(|_| PgError::protocol("client connection lost"))?;
        }
        Ok(())
    }

    async fn parse(&mut self, parse: Parse) -> Result<(), PgError> {
        let name = parse.name.unwrap_or_default();
        if !name.is_empty() && self.statements.contains_key(&name) {
            return Err(PgError::error(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        let in_transaction = self.backend.in_transaction();
        let permit = self
            .policy
            .check(&self.state.access(), &parse.query, in_transaction)
            .map_err(|d| PgError::from(&d))?;
        let desc = if parse.query.trim().is_empty() {
            Description {
                params: 0,
                columns: vec![],
            }
        } else {
            self.backend
                .describe(parse.query.clone())
                .await
                .map_err(|e| PgError::from(&e))?
        };
        let mut param_oids = parse.type_oids;
        param_oids.resize(desc.params.max(param_oids.len()), 0);
        let prepared = Prepared {
            permit,
            sql: parse.query,
            param_oids,
            desc,
        };
        self.statements.insert(name, Arc::new(prepared));
        self.conn.send(&ParseComplete::new());
        Ok(())
    }

    fn bind(&mut self, bind: Bind) -> Result<(), PgError> {
        let stmt_name = bind.statement_name.unwrap_or_default();
        let stmt = self.statements.get(&stmt_name).cloned().ok_or_else(|| {
            PgError::error(
                "26000",
                format!("prepared statement \"{stmt_name}\" does not exist"),
            )
        })?;
        // A statement prepared under older policies is checked again before it runs
        // (the permit is a copy: the statement is shared with its portals).
        let mut permit = stmt.permit.clone();
        self.policy
            .recheck(&self.state.access(), &mut permit)
            .map_err(|d| PgError::from(&d))?;
        if bind.parameters.len() != stmt.desc.params {
            return Err(PgError::protocol(format!(
                "bind message supplies {} parameters, but prepared statement \"{stmt_name}\" requires {}",
                bind.parameters.len(),
                stmt.desc.params
            )));
        }
        let formats = &bind.parameter_format_codes;
        let params = bind
            .parameters
            .iter()
            .enumerate()
            .map(|(i, p)| {
                encode::decode_param(
                    p.as_deref(),
                    stmt.param_oids[i],
                    encode::format_for(formats, i),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        encode::check_formats(&bind.result_column_format_codes, stmt.desc.columns.len())?;
        let portal = Portal {
            stmt,
            params,
            formats: bind.result_column_format_codes,
            types: None,
            result: None,
        };
        self.portals
            .insert(bind.portal_name.unwrap_or_default(), portal);
        self.conn.send(&BindComplete::new());
        Ok(())
    }

    async fn describe(&mut self, describe: Describe) -> Result<(), PgError> {
        let name = describe.name.unwrap_or_default();
        if describe.target_type == b'S' {
            let stmt = self.statements.get(&name).ok_or_else(|| {
                PgError::error(
                    "26000",
                    format!("prepared statement \"{name}\" does not exist"),
                )
            })?;
            let oids = stmt
                .param_oids
                .iter()
                .map(|o| if *o == 0 { OID_TEXT } else { *o })
                .collect();
            self.conn.send(&ParameterDescription::new(oids));
            if stmt.desc.columns.is_empty() {
                self.conn.send(&NoData::new());
            } else {
                let msg = encode::row_description(&stmt.desc.columns, &stmt.types(), &[]);
                self.conn.send(&msg);
            }
            return Ok(());
        }
        let portal = self.run_portal(&name).await?;
        match &portal.result {
            Some((rs, _)) if rs.returns_rows() => {
                let types: Vec<ColumnType> = rs.columns.iter().map(|c| c.ty).collect();
                let msg = encode::row_description(&rs.columns, &types, &portal.formats);
                portal.types = Some(types);
                self.conn.send(&msg);
            }
            _ => self.conn.send(&NoData::new()),
        }
        Ok(())
    }

    /// Runs a portal's statement if it has not run yet.
    async fn run_portal(&mut self, name: &str) -> Result<&mut Portal, PgError> {
        let portal = self
            .portals
            .get(name)
            .ok_or_else(|| PgError::error("34000", format!("portal \"{name}\" does not exist")))?;
        if portal.result.is_none() && !portal.stmt.is_empty() {
            let (stmt, params) = (portal.stmt.clone(), portal.params.clone());
            let rs = self.run_statement(&stmt, params).await?;
            if let Some(portal) = self.portals.get_mut(name) {
                portal.result = Some((rs, 0));
            }
        }
        self.portals
            .get_mut(name)
            .ok_or_else(|| PgError::error("34000", format!("portal \"{name}\" does not exist")))
    }

    /// Runs a bound statement, or takes its result from the read cache.
    async fn run_statement(
        &mut self,
        stmt: &Prepared,
        params: Vec<Value>,
    ) -> Result<ResultSet, PgError> {
        let fill = match self
            .cache_lookup(&stmt.sql, &stmt.permit, Some(&params))
            .await
        {
            crate::cache::Lookup::Hit(answer) => {
                if let Some(rs) = crate::cache::resultset::decode(&answer) {
                    return Ok(rs);
                }
                None
            }
            crate::cache::Lookup::Miss(fill) => Some(fill),
            crate::cache::Lookup::Unavailable => None,
        };
        let rs = self
            .backend
            .execute(stmt.sql.clone(), params)
            .await
            .map_err(|e| PgError::from(&e))?;
        if let (Some(fill), Some(cache)) = (fill, self.state.cache.as_ref()) {
            if rs.returns_rows() && !self.backend.in_transaction() {
                cache.fill(fill, crate::cache::resultset::encode(&rs));
            }
        }
        Ok(rs)
    }

    async fn execute(&mut self, execute: Execute) -> Result<(), PgError> {
        let started = Instant::now();
        let _in_flight = pipeline::in_flight("postgres");
        let name = execute.name.unwrap_or_default();
        self.executed = true;
        let outcome = self.execute_portal(&name, execute.max_rows).await;
        if let Some(stmt) = self.portals.get(&name).map(|p| p.stmt.clone()) {
            self.settle_writes(&stmt.permit).await;
        }
        pipeline::record("postgres", outcome.is_ok(), started);
        outcome
    }

    async fn execute_portal(&mut self, name: &str, max_rows: i32) -> Result<(), PgError> {
        let portal = self.run_portal(name).await?;
        let Some((rs, next)) = portal.result.take() else {
            self.conn.send(&EmptyQueryResponse::new());
            return Ok(());
        };
        let types = portal.types.clone().unwrap_or_else(|| portal.stmt.types());
        let formats = portal.formats.clone();
        let end = match usize::try_from(max_rows) {
            Ok(n) if n > 0 => (next + n).min(rs.rows.len()),
            _ => rs.rows.len(),
        };
        self.send_rows(&rs, &types, &formats, next, end).await?;
        let done = end == rs.rows.len();
        self.rows += if rs.returns_rows() {
            (end - next) as u64
        } else {
            rs.affected
        };
        if done {
            let tag = match rs.command {
                backends::result::CommandKind::Select => format!("SELECT {}", end - next),
                _ => rs.command_tag(),
            };
            self.conn.send(&CommandComplete::new(tag));
        } else {
            self.conn.send(&PortalSuspended::new());
        }
        if let Some(portal) = self.portals.get_mut(name) {
            portal.result = Some((rs, end));
        }
        Ok(())
    }

    fn close(&mut self, close: Close) -> Result<(), PgError> {
        let name = close.name.unwrap_or_default();
        match close.target_type {
            b'S' => {
                self.statements.remove(&name);
            }
            b'P' => {
                self.portals.remove(&name);
            }
            other => {
                return Err(PgError::protocol(format!(
                    "invalid close target {}",
                    other as char
                )))
            }
        }
        self.conn.send(&CloseComplete::new());
        Ok(())
    }
}
