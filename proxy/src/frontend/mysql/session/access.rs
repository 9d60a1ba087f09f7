//! The access-policy side of a MySQL session: checking a request's SQL, and checking a
//! prepared statement again when policies were reloaded since it was prepared.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Session, STATUS_IN_TRANS};
use crate::access::{Denial, Permit};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// The policy check of one request's SQL (no route yet: the caller answers 1046).
    pub(super) fn check(&mut self, sql: &str) -> Result<Permit, Denial> {
        let in_transaction = self.status & STATUS_IN_TRANS != 0;
        match &mut self.policy {
            Some(policy) => policy.check(&self.state.access(), sql, in_transaction),
            None => Ok(Permit {
                generation: 0,
                statements: std::sync::Arc::new([]),
                unclassified: true,
            }),
        }
    }

    /// COM_STMT_EXECUTE: the statement's permit, checked again after a reload.
    pub(super) fn recheck_statement(&mut self, body: &[u8]) -> Result<(), Denial> {
        let Some(id) = body.get(..4) else {
            return Ok(());
        };
        let id = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
        match (self.permits.get_mut(&id), &self.policy) {
            (Some(permit), Some(policy)) => policy.recheck(&self.state.access(), permit),
            _ => Ok(()),
        }
    }
}
