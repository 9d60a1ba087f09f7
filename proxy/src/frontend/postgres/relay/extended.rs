//! The extended query protocol on the client side: Parse, Bind, Describe and Close, with
//! the client's statements kept by sluice in transaction mode and created on whichever
//! server connection runs them.

use std::sync::Arc;

use backends::postgres::wire::{self, cstr, Frame};
use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::statements::{put_renamed, StatementDef};
use super::{simple_message, Expect, Relay};
use crate::frontend::postgres::error::PgError;

/// The kind byte (`S` statement, `P` portal) and name of a Describe or Close body.
fn kind_and_name(body: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (&kind, rest) = body.split_first()?;
    cstr(rest).map(|(name, _)| (kind, name.to_vec()))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Relay<'_, S> {
    pub(super) async fn parse(&mut self, frame: Frame) {
        self.start_request();
        let Some((name, rest)) = cstr(frame.body()) else {
            return self.fail_request(PgError::protocol("malformed Parse message"), false);
        };
        let sql = cstr(rest).map(|(s, _)| s).unwrap_or_default();
        match self.check(&String::from_utf8_lossy(sql)) {
            Ok(permit) => {
                self.permits.insert(name.to_vec(), permit);
            }
            Err(d) => return self.fail_request(PgError::from(&d), false),
        }
        if name.is_empty() {
            // a new unnamed statement ends the unnamed portal
            self.cached_portal = None;
        }
        if self.route.cache.as_ref().is_some_and(|c| c.rules.enabled) {
            let body = frame.raw().slice(5 + name.len() + 1..);
            self.parse_bodies.insert(name.to_vec(), body);
        }
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
        if let Err(e) = self.gucs.check(&String::from_utf8_lossy(sql)) {
            return self.fail_request(e, false);
        }
        let def = StatementDef::new(frame.raw().slice(5 + name.len() + 1..));
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

    /// Checks a statement prepared under older policies again before it runs.
    /// Checks the bound statement again after a reload, and notes what it writes.
    fn recheck(&mut self, statement: &[u8]) -> Result<(), crate::access::Denial> {
        let Some(permit) = self.permits.get_mut(statement) else {
            // The server answers for a statement that was never parsed.
            return Ok(());
        };
        self.policy.recheck(&self.state.access(), permit)?;
        if self.route.cache.is_some() {
            self.writes.note(permit);
        }
        Ok(())
    }

    /// Execute: the portal's statement checked again when policies were reloaded since
    /// it was bound (a revoked right stops a portal bound before the reload).
    pub(super) fn recheck_portal(&mut self, frame: &Frame) -> Result<(), crate::access::Denial> {
        let portal = cstr(frame.body()).map(|(p, _)| p).unwrap_or_default();
        match self.portal_permits.get_mut(portal) {
            Some(permit) => self.policy.recheck(&self.state.access(), permit),
            None => Ok(()),
        }
    }

    pub(super) async fn bind(&mut self, frame: Frame) {
        self.start_request();
        let Some((portal, _)) = cstr(frame.body()) else {
            return self.fail_request(PgError::protocol("malformed Bind message"), false);
        };
        let at = portal.len() + 1;
        let statement = cstr(&frame.body()[at..])
            .map(|(s, _)| s)
            .unwrap_or_default();
        if let Err(d) = self.recheck(statement) {
            return self.fail_request(PgError::from(&d), false);
        }
        match self.permits.get(statement) {
            Some(p) => {
                self.portal_permits.insert(portal.to_vec(), p.clone());
            }
            None => {
                self.portal_permits.remove(portal);
            }
        }
        let statement = statement.to_vec();
        if self.cached_bind(&frame, &statement, at).await {
            return;
        }
        if !self.ensure_server(false).await {
            return;
        }
        self.in_pipeline = true;
        if self.send_naming_statement(&frame, at) {
            self.expect.push_back(Expect::Bind { swallow: false });
        }
    }

    pub(super) async fn describe(&mut self, frame: Frame) {
        self.start_request();
        let Some((kind, name)) = kind_and_name(frame.body()) else {
            return self.fail_request(PgError::protocol("malformed Describe message"), false);
        };
        if kind == b'P' && name.is_empty() {
            if self.cached_describe().await {
                return;
            }
            self.capture_described();
        }
        if !self.ensure_server(false).await {
            return;
        }
        self.in_pipeline = true;
        let sent = if kind == b'S' {
            self.send_naming_statement(&frame, 1)
        } else {
            self.server_mut().send_raw(frame.raw());
            true
        };
        if sent {
            self.expect.push_back(Expect::Describe { swallow: false });
        }
    }

    /// Sends a Bind or a Describe of a statement whose statement name starts at byte
    /// `at` of the body: unchanged in session mode; in transaction mode after making
    /// sure the server holds the client's statement, under the server's name for it.
    /// Returns false when the client was answered with an error instead.
    pub(super) fn send_naming_statement(&mut self, frame: &Frame, at: usize) -> bool {
        let body = frame.body();
        let Some((stmt, tail)) = cstr(&body[at..]) else {
            self.fail_request(PgError::protocol("malformed message"), false);
            return false;
        };
        if !self.transaction_mode || stmt.is_empty() {
            if self.transaction_mode {
                self.ensure_unnamed();
            }
            self.server_mut().send_raw(frame.raw());
            return true;
        }
        let Some(server_name) = self.ensure_statement(stmt) else {
            return false;
        };
        let out = self.server_mut().queue();
        put_renamed(out, frame.tag(), &body[..at], &server_name, tail);
        true
    }

    pub(super) async fn close(&mut self, frame: Frame) {
        self.start_request();
        let Some((kind, name)) = kind_and_name(frame.body()) else {
            return self.fail_request(PgError::protocol("malformed Close message"), false);
        };
        if self.cached_close(kind, &name) {
            return;
        }
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
}
