//! The access-policy side of a MySQL session: checking a request's SQL, and checking a
//! prepared statement again when policies were reloaded since it was prepared.

use tokio::io::{AsyncRead, AsyncWrite};

use policies::Action;

use super::super::write::MyError;
use super::{Session, STATUS_IN_TRANS};
use crate::access::{Denial, Permit, SessionPolicy};
use crate::classify::{Access, Dialect};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// The policy check of one request's SQL (no route yet: the caller answers 1046).
    pub(super) fn check(&mut self, sql: &str) -> Result<Permit, Denial> {
        let in_transaction = self.status & STATUS_IN_TRANS != 0;
        match &mut self.policy {
            Some(policy) => policy.check(&self.state.access(), sql, in_transaction),
            None => Ok(Permit {
                generation: 0,
                text: sql.into(),
                statements: std::sync::Arc::new([]),
                unclassified: true,
            }),
        }
    }

    /// Records a request the session refused itself (not by policy: a form sluice does
    /// not accept) in the audit log, as a denial of `action` on `object`.
    pub(super) fn audit_refusal(&self, sql: &str, action: Action, object: &str, e: &MyError) {
        let access = self.state.access();
        if access.audit.is_none() {
            return;
        }
        let d = Denial {
            access: Some(Access {
                action,
                object: object.to_string(),
            }),
            reason: e.message.clone(),
        };
        match &self.policy {
            Some(p) => p.refused(&access, sql, &[], &d),
            None => {
                let p = SessionPolicy::new(&self.user, "", "mysql", self.peer, Dialect::Mysql, "");
                p.refused(&access, sql, &[], &d);
            }
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
