//! The read cache in the relay: reads answered from it (simple Query, and Bind/Execute of
//! the unnamed portal), misses captured from the server's answer, and the tables writes
//! touch invalidated before the client learns the write is done (at COMMIT for writes in
//! a transaction; not after ROLLBACK).
//!
//! An extended-protocol hit answers Bind with BindComplete and keeps the answer for the
//! portal: Describe gets its RowDescription and Execute its rows, in steps when it has a
//! row limit (PortalSuspended, then the rest counted in CommandComplete, as the server
//! answers). A miss's portal is described by sluice when the client did not, so stored
//! answers hold their RowDescription, and when the client executed it with a row limit,
//! sluice fetches the rest before the Sync, so the whole answer is stored. Whatever a
//! stored answer cannot serve sends the Bind to the server after all, before any row was
//! sent, and the portal runs there.

use backends::postgres::wire::{cstr, Frame};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::portal::{complete_tag, CachedPortal};
use super::{simple_message, Expect, Relay};
use crate::access::Permit;
use crate::cache::{bypass, Cache, Fill, KeyParts, Lookup, RouteRules, TxWrites};
use crate::classify::Classified;
use crate::frontend::postgres::rows_in;

/// A miss being filled from the server's answer.
pub(super) struct Capture {
    fill: Fill,
    answer: BytesMut,
    ok: bool,
    /// Bind/Execute: the RowDescription apart from the rows, and whether the Execute's
    /// CommandComplete came.
    extended: Option<Extended>,
}

#[derive(Default)]
struct Extended {
    row_description: Option<Bytes>,
    complete: bool,
    /// Whether a Describe of the portal was sent (by the client or by sluice).
    described: bool,
    /// Whether the client executed the portal with a row limit: sluice then fetches the
    /// rest itself before the Sync (up to [`LOOKAHEAD_ROWS`]), unseen by the client.
    limited: bool,
    /// Whether the portal was suspended (its answer's CommandComplete is recounted).
    suspended: bool,
    /// DataRows captured.
    rows: usize,
}

/// The most rows sluice fetches, after a client's Execute with a row limit, to store the
/// whole answer; a portal with more is not stored.
const LOOKAHEAD_ROWS: i32 = 1000;

/// Tables written, waiting for the end of their request or transaction.
#[derive(Default)]
pub(super) struct Writes {
    /// By the request now running.
    request: Vec<String>,
    /// By earlier requests of the open transaction.
    transaction: TxWrites,
    /// The running request's last command was a ROLLBACK (`ROLLBACK TO SAVEPOINT`
    /// has the same tag, but a transaction that goes on is not ended by it).
    rolled_back: bool,
    /// Due for invalidation before the client sees the ReadyForQuery in its buffer.
    due: Vec<String>,
}

impl Writes {
    /// Notes what a request about to run writes.
    pub(super) fn note(&mut self, permit: &Permit) {
        let tables = crate::cache::written(&permit.statements, !permit.unclassified);
        self.request.extend(tables);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Relay<'_, S> {
    /// Answers a simple-query read from the cache when it can (true: answered). On a
    /// miss, the server's answer is captured for the cache.
    pub(super) async fn cached_query(&mut self, sql: &str, permit: &Permit) -> bool {
        let Some(cache) = self.state.cache.as_deref() else {
            return false;
        };
        let Some(route) = self.route.cache.as_ref().filter(|r| r.rules.enabled) else {
            return false;
        };
        let lookup = if !self.expect.is_empty() || self.in_pipeline {
            bypass("pipeline")
        } else {
            self.cache_read(cache, route, sql, &[], &permit.statements)
                .await
        };
        match lookup {
            Lookup::Hit(answer) => {
                self.start_request();
                self.executed = true;
                self.rows = rows_in(&answer);
                self.inject(answer);
                self.inject(simple_message(b'Z', b"I"));
                self.finish_request();
                true
            }
            Lookup::Miss(fill) => {
                self.capture = Some(Capture {
                    fill,
                    answer: BytesMut::new(),
                    ok: true,
                    extended: None,
                });
                false
            }
            Lookup::Unavailable => false,
        }
    }

    /// A Bind of the unnamed portal to a cacheable read: answered from the cache when it
    /// holds the answer (true), else the server's answer is captured.
    pub(super) async fn cached_bind(&mut self, frame: &Frame, statement: &[u8], at: usize) -> bool {
        let portal_is_unnamed = frame.body().first() == Some(&0);
        if portal_is_unnamed {
            // a new unnamed portal replaces the old one
            self.cached_portal = None;
        }
        if let Some(c) = self.capture.as_mut() {
            // a second Bind before the Sync: the answers cannot be told apart
            c.ok = false;
        }
        let Some(cache) = self.state.cache.as_deref() else {
            return false;
        };
        let Some(route) = self
            .route
            .cache
            .as_ref()
            .filter(|r| r.rules.enabled && portal_is_unnamed)
        else {
            return false;
        };
        // only Parse answers may be pending: anything else would mix into the capture
        let pending_other = self.skipping
            || self.server_failed
            || !self
                .expect
                .iter()
                .all(|e| matches!(e, Expect::Parse { .. }));
        let lookup = match (
            self.permits.get(statement),
            self.parse_bodies.get(statement).and_then(|p| cstr(p)),
        ) {
            _ if pending_other => bypass("pipeline"),
            (Some(permit), Some((text, types))) => {
                let params = bound_params(types, &frame.body()[at + statement.len() + 1..]);
                let text = String::from_utf8_lossy(text);
                self.cache_read(cache, route, &text, &params, &permit.statements)
                    .await
            }
            _ => bypass("unknown_statement"),
        };
        self.bind_looked_up(lookup, frame, at)
    }

    /// The cache's lookup of a read in this session: `Unavailable` (counted as a bypass)
    /// when the session may not use the cache now.
    async fn cache_read(
        &self,
        cache: &Cache,
        route: &RouteRules,
        sql: &str,
        params: &[u8],
        statements: &[Classified],
    ) -> Lookup {
        if self.server.as_ref().is_some_and(|s| s.status != b'I') {
            return bypass("transaction");
        }
        let Some(settings) = self.policy.cache_settings() else {
            return bypass("session_settings");
        };
        let access = self.state.access();
        let parts = KeyParts {
            route: &self.route.name,
            scope: self.policy.cache_scope(&access),
            session: settings,
            sql,
            params,
        };
        cache.read(route, &parts, statements).await
    }

    /// A Bind's lookup: a hit answers BindComplete and keeps the portal's answer (true);
    /// a miss captures the server's answer.
    fn bind_looked_up(&mut self, lookup: Lookup, frame: &Frame, at: usize) -> bool {
        match lookup {
            Lookup::Hit(answer) => {
                let Some((row_description, rows)) = split_extended(&answer) else {
                    return false;
                };
                self.cached_portal = Some(CachedPortal {
                    row_description,
                    rows,
                    stepped: false,
                    bind: frame.clone(),
                    at,
                });
                self.inject(simple_message(b'2', &[]));
                true
            }
            Lookup::Miss(fill) => {
                self.capture = Some(Capture {
                    fill,
                    answer: BytesMut::new(),
                    ok: true,
                    extended: Some(Extended::default()),
                });
                false
            }
            Lookup::Unavailable => false,
        }
    }

    /// Describe of the unnamed portal: answered from the cache when it can be (true).
    pub(super) async fn cached_describe(&mut self) -> bool {
        let Some(p) = &self.cached_portal else {
            return false;
        };
        match p.row_description.clone() {
            Some(rd) => {
                self.inject(rd);
                true
            }
            None => {
                self.materialize().await;
                false
            }
        }
    }

    /// Execute of the unnamed portal: answered from the cache when it can be (true).
    pub(super) async fn cached_execute(&mut self, frame: &Frame) -> bool {
        if self.cached_portal.is_none() || frame.body().first() != Some(&0) {
            return false;
        }
        let max_rows = frame
            .body()
            .get(1..5)
            .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let Some(p) = self.cached_portal.as_mut() else {
            return false;
        };
        let Some(step) = p.step(usize::try_from(max_rows).unwrap_or(0)) else {
            // a row limit on an answer whose CommandComplete cannot be recounted
            self.materialize().await;
            return false;
        };
        if p.row_description.is_none() {
            // with no RowDescription to answer a later Describe, the portal ends here
            self.cached_portal = None;
        }
        self.executed = true;
        self.rows += step.rows;
        self.inject(step.answer);
        true
    }

    /// The client described the unnamed portal whose answer is being captured.
    pub(super) fn capture_described(&mut self) {
        if let Some(e) = self.capture.as_mut().and_then(|c| c.extended.as_mut()) {
            e.described = true;
        }
    }

    /// Before the Execute of a miss being captured: when the client did not describe the
    /// portal, sluice describes it, unseen by the client, so the stored answer holds a
    /// RowDescription (a later client's Describe, or an Execute with a row limit, can then
    /// be answered from the cache); and an Execute with a row limit is noted, for
    /// [`Relay::lookahead`].
    pub(super) async fn before_captured_execute(&mut self, execute: &Frame) {
        let Some(e) = self
            .capture
            .as_mut()
            .filter(|c| c.ok)
            .and_then(|c| c.extended.as_mut())
            .filter(|e| !e.complete && execute.body().first() == Some(&0))
        else {
            return;
        };
        let max_rows = execute
            .body()
            .get(1..5)
            .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        e.limited |= max_rows > 0;
        if e.described || !self.ensure_server(false).await {
            return;
        }
        self.capture_described();
        self.in_pipeline = true;
        self.server_mut().send_raw(&simple_message(b'D', b"P\0"));
        self.expect.push_back(Expect::Describe { swallow: true });
    }

    /// At the Sync of a miss whose portal the client executed with a row limit: one more
    /// Execute, whose answer only the cache sees, fetches the rest of the portal (the
    /// portal ends with the Sync anyway), so the whole answer can be stored.
    pub(super) fn lookahead(&mut self) {
        let wanted = self.capture.as_ref().is_some_and(|c| {
            c.ok && c
                .extended
                .as_ref()
                .is_some_and(|e| e.limited && !e.complete)
        });
        let Some(server) = self.server.as_deref_mut().filter(|_| wanted) else {
            return;
        };
        let mut body = vec![0];
        body.extend_from_slice(&LOOKAHEAD_ROWS.to_be_bytes());
        server.send_raw(&simple_message(b'E', &body));
        self.expect.push_back(Expect::Execute { swallow: true });
    }

    /// Close of the unnamed portal answered from the cache (true: answered).
    pub(super) fn cached_close(&mut self, kind: u8, name: &[u8]) -> bool {
        if kind != b'P' || !name.is_empty() || self.cached_portal.take().is_none() {
            return false;
        }
        self.inject(simple_message(b'3', &[]));
        true
    }

    /// Sends the cached portal's Bind to the server after all (its BindComplete was
    /// already given): the portal then runs there.
    async fn materialize(&mut self) {
        let Some(p) = self.cached_portal.take() else {
            return;
        };
        if !self.ensure_server(false).await {
            return;
        }
        self.in_pipeline = true;
        if self.send_naming_statement(&p.bind, p.at) {
            self.expect.push_back(Expect::Bind { swallow: true });
        }
    }

    /// One server message of the request being captured.
    pub(super) fn capture(&mut self, tag: u8, raw: &[u8]) {
        let limit = self.state.cache.as_ref().map_or(0, |c| c.max_entry_bytes());
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if c.answer.len() + raw.len() > limit {
            c.ok = false;
            c.answer = BytesMut::new();
        }
        if !c.ok {
            return;
        }
        match (tag, c.extended.as_mut()) {
            // notices and parameter changes are not part of the answer
            (b'N' | b'S' | b'A' | b'Z', _) => {}
            (b'T' | b'D' | b'C', None) => c.answer.extend_from_slice(raw),
            // the extended protocol: Parse and Bind answers are the client's own
            (b'1' | b'2', Some(e)) if !e.complete => {}
            (b'T', Some(e))
                if !e.complete && e.row_description.is_none() && c.answer.is_empty() =>
            {
                e.row_description = Some(Bytes::copy_from_slice(raw));
            }
            (b'n', Some(e)) if !e.complete && c.answer.is_empty() => {}
            (b'D', Some(e)) if !e.complete => {
                c.answer.extend_from_slice(raw);
                e.rows += 1;
            }
            // the client's Execute reached its row limit; sluice's own fetches the rest
            (b's', Some(e)) if !e.complete && e.limited => e.suspended = true,
            (b'C', Some(e)) if !e.complete && !e.suspended => {
                c.answer.extend_from_slice(raw);
                e.complete = true;
            }
            // the whole answer came in steps: its CommandComplete counts every row
            (b'C', Some(e))
                if !e.complete && raw.get(5..).is_some_and(|t| t.starts_with(b"SELECT ")) =>
            {
                c.answer.extend_from_slice(&complete_tag(e.rows));
                e.complete = true;
            }
            // sluice's own Execute of a portal the client's had already finished
            (b'C', Some(e)) if e.complete && e.limited => {}
            _ => c.ok = false,
        }
    }

    /// The request's ReadyForQuery: stores a complete captured answer, and settles the
    /// writes of the request and its transaction.
    pub(super) fn cache_ready(&mut self, status: u8) {
        if let Some(c) = self.capture.take() {
            let answer = match c.extended {
                None => Some(c.answer.freeze()),
                Some(e) if e.complete => Some(join_extended(e.row_description, &c.answer)),
                Some(_) => None,
            };
            if let (true, b'I', Some(answer)) = (c.ok, status, answer) {
                if let Some(cache) = &self.state.cache {
                    cache.fill(c.fill, answer);
                }
            }
        }
        let w = &mut self.writes;
        let request = std::mem::take(&mut w.request);
        let due = w.transaction.settle(request, status != b'I', w.rolled_back);
        w.due.extend(due);
        w.rolled_back = false;
    }

    /// A CommandComplete of the running request.
    pub(super) fn cache_command(&mut self, body: &[u8]) {
        self.writes.rolled_back = body.starts_with(b"ROLLBACK");
    }

    /// Notes what a request about to run writes.
    pub(super) fn note_writes(&mut self, permit: &Permit) {
        if self.route.cache.is_some() {
            self.writes.note(permit);
        }
    }

    /// Invalidates what completed writes touched; awaited before the client is sent the
    /// ReadyForQuery that tells it the write is done.
    pub(super) async fn invalidate_due(&mut self) {
        if self.writes.due.is_empty() {
            return;
        }
        let due = std::mem::take(&mut self.writes.due);
        if let (Some(cache), Some(route)) = (&self.state.cache, &self.route.cache) {
            cache.invalidate(route, &due).await;
        }
    }

    /// The server connection was lost: writes of the running request may have happened
    /// (autocommit), those of an open transaction did not.
    pub(super) async fn invalidate_lost(&mut self) {
        let request = std::mem::take(&mut self.writes.request);
        self.writes.transaction.clear();
        if let (Some(cache), Some(route)) = (&self.state.cache, &self.route.cache) {
            cache.invalidate(route, &request).await;
        }
    }
}

/// The key material of a Bind: the statement's parameter types, then the Bind's
/// parameter formats and values and result formats (`tail`).
fn bound_params(types: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut params = Vec::with_capacity(4 + types.len() + tail.len());
    params.extend_from_slice(&(types.len() as u32).to_be_bytes());
    params.extend_from_slice(types);
    params.extend_from_slice(tail);
    params
}

/// An extended-protocol answer: the RowDescription (length-prefixed; `u32::MAX`: none),
/// then the DataRows and CommandComplete.
fn join_extended(row_description: Option<Bytes>, rows: &[u8]) -> Bytes {
    let rd = row_description.unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + rd.len() + rows.len());
    let len = if rd.is_empty() {
        u32::MAX
    } else {
        rd.len() as u32
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&rd);
    out.extend_from_slice(rows);
    out.freeze()
}

fn split_extended(answer: &Bytes) -> Option<(Option<Bytes>, Bytes)> {
    let len = u32::from_be_bytes(answer.get(..4)?.try_into().ok()?);
    if len == u32::MAX {
        return Some((None, answer.slice(4..)));
    }
    let end = 4 + len as usize;
    answer.get(4..end)?;
    Some((Some(answer.slice(4..end)), answer.slice(end..)))
}
