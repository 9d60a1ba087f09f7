//! The read cache in a MySQL session: text queries answered from it (the packets of the
//! answer recorded and sent again with new sequence ids), and writes invalidated before
//! their answer is flushed (at COMMIT inside a transaction; nothing after ROLLBACK).

use backends::mysql::mysql_async;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Session, STATUS_IN_TRANS};
use crate::access::Permit;
use crate::cache::{bypass, Fill, KeyParts, Lookup};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// Looks a query up (`params`: a prepared statement's bound values, answered in the
    /// binary protocol; None: a text query): true when it was answered from the cache;
    /// on a miss the answer is recorded for [`Session::cache_fill`].
    pub(super) async fn cached_query(
        &mut self,
        sql: &str,
        permit: &Permit,
        params: Option<&mysql_async::Params>,
    ) -> (bool, Option<Fill>) {
        let lookup = self.cache_read(sql, permit, params).await;
        match lookup {
            Lookup::Hit(answer) => {
                self.p.replay(&answer);
                (true, None)
            }
            Lookup::Miss(fill) => {
                let limit = self.state.cache.as_ref().map_or(0, |c| c.max_entry_bytes());
                self.p.record(limit);
                (false, Some(fill))
            }
            Lookup::Unavailable => (false, None),
        }
    }

    /// The cache's lookup of a query: `Unavailable` when the route does not cache or
    /// the session may not use the cache now.
    async fn cache_read(
        &self,
        sql: &str,
        permit: &Permit,
        params: Option<&mysql_async::Params>,
    ) -> Lookup {
        let (Some(cache), Some(route), Some(policy)) = (
            self.state.cache.as_ref(),
            self.route.as_ref().and_then(|r| r.cache.as_ref()),
            self.policy.as_ref(),
        ) else {
            return Lookup::Unavailable;
        };
        if !route.rules.enabled {
            return Lookup::Unavailable;
        }
        if self.status & STATUS_IN_TRANS != 0 {
            return bypass("transaction");
        }
        let Some(settings) = policy.cache_settings() else {
            return bypass("session_settings");
        };
        // the packet formats depend on the client's capabilities
        let session = format!("{settings}:{:x}", self.capabilities.bits());
        // text and binary answers of the same statement differ
        let protocol = if params.is_some() {
            "mysql-binary"
        } else {
            "mysql"
        };
        let route_key = format!("{protocol}/{}", policy.route);
        // the values as bound, types included, whatever the client resent
        let bound = params.map(|p| format!("{p:?}"));
        let access = self.state.access();
        let parts = KeyParts {
            route: &route_key,
            scope: policy.cache_scope(&access),
            session: &session,
            sql,
            params: bound.as_deref().unwrap_or_default().as_bytes(),
        };
        cache.read(route, &parts, &permit.statements).await
    }

    /// Stores the recorded answer of a miss that succeeded outside a transaction.
    pub(super) fn cache_fill(&mut self, fill: Option<Fill>, ok: bool) {
        let recorded = self.p.recorded();
        let (Some(fill), Some(answer), Some(cache)) = (fill, recorded, self.state.cache.as_ref())
        else {
            return;
        };
        if ok && self.status & STATUS_IN_TRANS == 0 {
            cache.fill(fill, answer);
        }
    }

    /// After a request ran: invalidates in the read cache what it wrote, or, inside a
    /// transaction, keeps that for COMMIT (a ROLLBACK drops it). Runs before the answer
    /// is flushed to the client.
    pub(super) async fn settle_writes(&mut self, permit: &Permit) {
        let (Some(cache), Some(route)) = (
            self.state.cache.as_ref(),
            self.route.as_ref().and_then(|r| r.cache.as_ref()),
        ) else {
            return;
        };
        let tables = crate::cache::written(&permit.statements, !permit.unclassified);
        let rolled_back = crate::cache::ends_in_rollback(&permit.statements);
        let in_transaction = self.status & STATUS_IN_TRANS != 0;
        let tables = self
            .cache_writes
            .settle(tables, in_transaction, rolled_back);
        cache.invalidate(route, &tables).await;
    }
}
