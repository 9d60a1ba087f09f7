//! PostgreSQL wire errors: the one place internal errors become ErrorResponse fields.
//! Messages are client-safe: no host names, paths or credentials.

use std::borrow::Cow;

use backends::pool::CheckoutError;
use backends::BackendError;
use pgwire::messages::response::ErrorResponse;

use super::codec::CodecError;

/// An error as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub fatal: bool,
    pub code: Cow<'static, str>,
    pub message: String,
    pub position: Option<usize>,
}

impl PgError {
    pub fn error(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        PgError {
            fatal: false,
            code: code.into(),
            message: message.into(),
            position: None,
        }
    }

    pub fn fatal(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        PgError {
            fatal: true,
            ..PgError::error(code, message)
        }
    }

    /// The same error, ending the connection.
    pub fn into_fatal(mut self) -> Self {
        self.fatal = true;
        self
    }

    pub fn internal(message: impl Into<String>) -> Self {
        PgError::error("XX000", message)
    }

    /// The protocol violation answer: malformed or unexpected messages.
    pub fn protocol(message: impl Into<String>) -> Self {
        PgError::fatal("08P01", message)
    }

    pub fn to_response(&self) -> ErrorResponse {
        let severity = if self.fatal { "FATAL" } else { "ERROR" };
        let mut fields = vec![
            (b'S', severity.to_string()),
            (b'V', severity.to_string()),
            (b'C', self.code.to_string()),
            (b'M', self.message.clone()),
        ];
        if let Some(p) = self.position {
            fields.push((b'P', p.to_string()));
        }
        ErrorResponse::new(fields)
    }
}

impl From<&crate::access::Denial> for PgError {
    fn from(d: &crate::access::Denial) -> Self {
        metrics::counter!(crate::metrics::POLICY_DENIALS, "protocol" => "postgres").increment(1);
        PgError::error("42501", d.message())
    }
}

impl From<&BackendError> for PgError {
    fn from(e: &BackendError) -> Self {
        match e {
            BackendError::Statement { sqlstate, message } => {
                PgError::error(*sqlstate, message.clone())
            }
            // A MySQL query stopped by a cancel request (KILL QUERY).
            BackendError::MySql { code: 1317, .. } => {
                PgError::error("57014", "canceling statement due to user request")
            }
            BackendError::Server { sqlstate, message }
            | BackendError::MySql {
                sqlstate, message, ..
            } => PgError::error(sqlstate.clone(), message.clone()),
            BackendError::Canceled => {
                PgError::error("57014", "canceling statement due to user request")
            }
            // The cause may name files or hosts; it goes to the log, not the client.
            BackendError::Unavailable(_) => PgError::error("08006", "backend unavailable"),
        }
    }
}

impl From<&CheckoutError> for PgError {
    fn from(e: &CheckoutError) -> Self {
        match e {
            CheckoutError::Timeout(d) => PgError::error(
                "53300",
                format!(
                    "no server connection became free within {:.1}s; the route's pool is exhausted",
                    d.as_secs_f64()
                ),
            ),
            // The reason names no address: "backend unavailable: TLS handshake: ...".
            CheckoutError::Unavailable(e) => PgError::error("08006", e.to_string()),
        }
    }
}

impl From<&CodecError> for PgError {
    fn from(e: &CodecError) -> Self {
        match e {
            CodecError::TooLarge(..) => PgError::fatal("54000", e.to_string()),
            _ => PgError::protocol(e.to_string()),
        }
    }
}
