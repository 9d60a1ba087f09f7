//! The read cache on neutral routes (SQLite, MariaDB behind a PostgreSQL client): simple
//! queries answered from it, answers stored as the messages sent, and writes invalidated
//! before their ReadyForQuery is flushed (at COMMIT inside a transaction).

use backends::result::Value;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::access::Permit;
use crate::cache::{bypass, Fill, KeyParts, Lookup};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// Looks a read up: a simple query's messages (`params` None), or a bound
    /// statement's result (`params`: the values bound, keyed with their types); the fill
    /// for a miss; and
    /// `Unavailable` when the cache is not used for it.
    pub(super) async fn cache_lookup(
        &mut self,
        sql: &str,
        permit: &Permit,
        params: Option<&[Value]>,
    ) -> Lookup {
        let (Some(cache), Some(route)) = (self.state.cache.as_deref(), self.cache_route.as_ref())
        else {
            return Lookup::Unavailable;
        };
        if !route.rules.enabled {
            return Lookup::Unavailable;
        }
        if self.backend.in_transaction() {
            return bypass("transaction");
        }
        let Some(settings) = self.policy.cache_settings() else {
            return bypass("session_settings");
        };
        let bound = params.map(|p| format!("{p:?}"));
        let access = self.state.access();
        // messages and results are stored differently: never under the same key
        let route_key = match params {
            None => self.policy.route.clone(),
            Some(_) => format!("{}#result", self.policy.route),
        };
        let parts = KeyParts {
            route: &route_key,
            scope: self.policy.cache_scope(&access),
            session: settings,
            sql,
            params: bound.as_deref().unwrap_or_default().as_bytes(),
        };
        cache.read(route, &parts, &permit.statements).await
    }

    /// Stores the messages sent since `mark` for a miss.
    pub(super) fn cache_fill(&mut self, fill: Fill, mark: (u64, usize)) {
        let (Some(cache), Some(answer)) = (self.state.cache.as_ref(), self.conn.since(mark)) else {
            return;
        };
        cache.fill(fill, Bytes::copy_from_slice(answer));
    }

    /// Invalidates what a request wrote (at the end of its transaction).
    pub(super) async fn settle_writes(&mut self, permit: &Permit) {
        let (Some(cache), Some(route)) = (self.state.cache.as_deref(), self.cache_route.as_ref())
        else {
            return;
        };
        let tables = crate::cache::written(&permit.statements, !permit.unclassified);
        let rolled_back = crate::cache::ends_in_rollback(&permit.statements);
        let in_transaction = self.backend.in_transaction();
        let due = self.writes.settle(tables, in_transaction, rolled_back);
        cache.invalidate(route, &due).await;
    }
}
