//! Errors from backends, classified by SQLSTATE (the SQL standard's protocol-neutral codes).

/// An error a backend reported or a failure to reach it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The statement failed; `sqlstate` is the SQL standard class/code that fits best.
    #[error("{message}")]
    Statement {
        sqlstate: &'static str,
        message: String,
    },
    /// A server reported this error (a relayed backend's own SQLSTATE and message).
    #[error("{message}")]
    Server { sqlstate: String, message: String },
    /// A MySQL/MariaDB server reported this error, with its error code.
    #[error("{message}")]
    MySql {
        code: u16,
        sqlstate: String,
        message: String,
    },
    /// The backend could not be opened or reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The statement was interrupted by a cancel request.
    #[error("canceling statement due to user request")]
    Canceled,
}

impl BackendError {
    /// Short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Statement { .. }
            | BackendError::Server { .. }
            | BackendError::MySql { .. } => "statement",
            BackendError::Unavailable(_) => "unavailable",
            BackendError::Canceled => "canceled",
        }
    }

    /// SQLSTATE for this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            BackendError::Statement { sqlstate, .. } => sqlstate,
            BackendError::Server { sqlstate, .. } => sqlstate,
            BackendError::MySql { sqlstate, .. } => sqlstate,
            BackendError::Unavailable(_) => "08006",
            BackendError::Canceled => "57014",
        }
    }

    /// A statement-level error with the given SQLSTATE.
    pub fn statement(sqlstate: &'static str, message: impl Into<String>) -> Self {
        BackendError::Statement {
            sqlstate,
            message: message.into(),
        }
    }
}
