//! The server side of the relay: taking and giving back pooled connections (with the
//! client's settings), reading the server's responses against the queue of what is
//! expected, and leaving a connection clean when the client goes.

use std::time::{Duration, Instant};

use backends::postgres::pool::CheckoutError;
use backends::postgres::wire::{self, cstr, Frame};
use tokio::io::{AsyncRead, AsyncWrite};

use super::gucs;
use super::{Expect, Relay};
use crate::frontend::postgres::error::PgError;
use crate::frontend::postgres::ConnError;
use crate::metrics as m;

impl<S: AsyncRead + AsyncWrite + Unpin> Relay<'_, S> {
    pub(super) async fn attach(&mut self) -> Result<(), PgError> {
        let started = Instant::now();
        let mut server = match self.pool.checkout().await {
            Ok(s) => s,
            Err(e) => {
                if let CheckoutError::Timeout(_) = e {
                    metrics::counter!(m::POOL_CHECKOUT_TIMEOUTS).increment(1);
                    tracing::warn!(state = ?self.pool.state(), "checkout timed out");
                } else {
                    tracing::warn!(error = %e, "no server connection");
                }
                return Err(PgError::from(&e));
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
    pub(super) async fn release(&mut self) {
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

    pub(super) fn on_server(&mut self, frame: Frame) {
        tracing::trace!(tag = %(frame.tag() as char), expect = ?self.expect, "server message");
        self.pump_injects();
        if self.capture.is_some() {
            self.capture(frame.tag(), frame.raw());
        }
        // the answer to sluice's own Execute reaches the cache only (an error too: the
        // client asked for no more rows than it got)
        if matches!(self.expect.front(), Some(Expect::Execute { swallow: true })) {
            if matches!(frame.tag(), b'C' | b's' | b'I' | b'E') {
                self.expect.pop_front();
            }
            if matches!(frame.tag(), b'D' | b'C' | b's' | b'I' | b'E') {
                self.pump_injects();
                return;
            }
        }
        let forward = match frame.tag() {
            b'1' => match self.expect.pop_front() {
                Some(Expect::Parse { swallow, .. }) => !swallow,
                other => self.out_of_step(b'1', other),
            },
            b'2' => match self.expect.pop_front() {
                Some(Expect::Bind { swallow }) => !swallow,
                other => self.out_of_step(b'2', other),
            },
            b'3' => match self.expect.pop_front() {
                Some(Expect::Close { swallow }) => !swallow,
                other => self.out_of_step(b'3', other),
            },
            b'T' | b'n' => match self.expect.front() {
                Some(Expect::Describe { swallow }) => {
                    let forward = !swallow;
                    self.expect.pop_front();
                    forward
                }
                _ => true,
            },
            b'C' => {
                self.cache_command(frame.body());
                if self.policy.awaiting_outcome() {
                    self.rows += crate::audit::command_tag_rows(frame.body());
                }
                self.pop_if(|e| matches!(e, Expect::Execute { .. }))
            }
            b'I' | b's' => self.pop_if(|e| matches!(e, Expect::Execute { .. })),
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
        if status == b'I' {
            // portals end with their transaction
            self.portal_permits.clear();
        }
        self.cache_ready(status);
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
        self.policy.server_reported(&name, &value);
        if self.gucs.reported(&name, &value) {
            if let Some(s) = self.server.as_deref_mut() {
                if let Some((canonical, _)) = gucs::tracked(&name) {
                    s.session.insert(canonical.to_string(), value);
                }
            }
        }
    }

    /// The server connection failed: the client gets an error and the connection ends.
    pub(super) async fn server_lost(&mut self, e: std::io::Error) -> Result<(), ConnError> {
        tracing::warn!(error = %e, "server connection lost");
        self.capture = None;
        self.invalidate_lost().await;
        if let Some(mut s) = self.server.take() {
            s.broken = true;
        }
        self.slot.set(None).await;
        self.expect.clear();
        let err = PgError::fatal(
            "08006",
            "server connection lost: the database server closed the connection unexpectedly",
        );
        crate::frontend::postgres::refuse(self.client, err)
            .await
            .or(Ok(()))
    }

    /// Settings reported to the client at login: the server's, with the client's own.
    pub(super) fn greeting_params(&self) -> Vec<(String, String)> {
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
    pub(super) async fn finish(&mut self) {
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
