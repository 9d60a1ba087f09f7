//! The read cache in the relay: simple-query reads answered from it, misses captured
//! from the server's answer, and the tables writes touch invalidated before the client
//! learns the write is done (at COMMIT for writes in a transaction; not after ROLLBACK).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Relay;
use crate::access::Permit;
use crate::cache::{Fill, KeyParts, Lookup};
use crate::metrics as m;

/// A miss being filled from the server's answer.
pub(super) struct Capture {
    fill: Fill,
    answer: BytesMut,
    ok: bool,
}

/// Tables written, waiting for the end of their request or transaction.
#[derive(Default)]
pub(super) struct Writes {
    /// By the request now running.
    request: Vec<String>,
    /// By earlier requests of the open transaction.
    transaction: Vec<String>,
    /// The running request's last command was a ROLLBACK (`ROLLBACK TO SAVEPOINT`
    /// has the same tag, but a transaction that goes on is not ended by it).
    rolled_back: bool,
    /// Due for invalidation before the client sees the ReadyForQuery in its buffer.
    due: Vec<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Relay<'_, S> {
    /// Answers a simple-query read from the cache when it can (true: answered). On a
    /// miss, the server's answer is captured for the cache.
    pub(super) async fn cached_query(&mut self, sql: &str, permit: &Permit) -> bool {
        let (Some(cache), Some(route)) = (self.state.cache.clone(), self.route.cache.as_ref())
        else {
            return false;
        };
        if !route.rules.enabled {
            return false;
        }
        let bypass = |reason: &'static str| {
            metrics::counter!(m::CACHE_BYPASSES, "reason" => reason).increment(1);
            false
        };
        if self.server.as_ref().is_some_and(|s| s.status != b'I') {
            return bypass("transaction");
        }
        if !self.expect.is_empty() || self.in_pipeline {
            return bypass("pipeline");
        }
        let Some(settings) = self.policy.cache_settings() else {
            return bypass("session_settings");
        };
        let scope = if self.state.access().policy.is_some() {
            self.policy.user.as_str()
        } else {
            "*"
        };
        let parts = KeyParts {
            route: &self.route.name,
            scope,
            session: settings,
            sql,
            params: &[],
        };
        let plan = match cache.plan(route, &parts, &permit.statements) {
            Ok(p) => p,
            Err(reason) => return bypass(reason),
        };
        match cache.lookup(plan).await {
            Lookup::Hit(answer) => {
                self.start_request();
                self.executed = true;
                self.rows = rows_in(&answer);
                self.inject(answer);
                self.inject(super::simple_message(b'Z', b"I"));
                self.finish_request();
                true
            }
            Lookup::Miss(fill) => {
                self.capture = Some(Capture {
                    fill,
                    answer: BytesMut::new(),
                    ok: true,
                });
                false
            }
            Lookup::Unavailable => false,
        }
    }

    /// One server message of the request being captured.
    pub(super) fn capture(&mut self, tag: u8, raw: &[u8]) {
        let limit = self.state.cache.as_ref().map_or(0, |c| c.max_entry_bytes());
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        match tag {
            b'T' | b'D' | b'C' if c.ok => {
                if c.answer.len() + raw.len() > limit {
                    c.ok = false;
                    c.answer = BytesMut::new();
                } else {
                    c.answer.extend_from_slice(raw);
                }
            }
            // notices and parameter changes are not part of the answer
            b'N' | b'S' | b'A' | b'Z' => {}
            _ => c.ok = false,
        }
    }

    /// The request's ReadyForQuery: stores a complete captured answer, and settles the
    /// writes of the request and its transaction.
    pub(super) fn cache_ready(&mut self, status: u8) {
        if let Some(c) = self.capture.take() {
            if c.ok && status == b'I' {
                if let Some(cache) = &self.state.cache {
                    cache.fill(c.fill, c.answer.freeze());
                }
            }
        }
        let w = &mut self.writes;
        if w.request.is_empty() && w.transaction.is_empty() {
            w.rolled_back = false;
            return;
        }
        let mut request = std::mem::take(&mut w.request);
        match status {
            b'I' => {
                let transaction = std::mem::take(&mut w.transaction);
                if !w.rolled_back {
                    request.extend(transaction);
                }
                request.sort();
                request.dedup();
                w.due = request;
            }
            // in a transaction (or a failed one): at its end
            _ => w.transaction.extend(request),
        }
        w.rolled_back = false;
    }

    /// A CommandComplete of the running request.
    pub(super) fn cache_command(&mut self, body: &[u8]) {
        self.writes.rolled_back = body.starts_with(b"ROLLBACK");
    }

    /// Notes what a request about to run writes.
    pub(super) fn note_writes(&mut self, permit: &Permit) {
        if self.route.cache.is_some() {
            let tables = crate::cache::written(&permit.statements, !permit.unclassified);
            self.writes.request.extend(tables);
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

/// The rows an answer's CommandComplete messages report.
fn rows_in(answer: &Bytes) -> u64 {
    let mut rows = 0;
    let mut rest = &answer[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let end = (1 + len).min(rest.len());
        if rest[0] == b'C' {
            rows += crate::audit::command_tag_rows(&rest[5..end]);
        }
        rest = &rest[end..];
    }
    rows
}
