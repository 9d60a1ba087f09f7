//! Embedded SQLite backend: one rusqlite connection per client session, run on tokio's
//! blocking threads so a slow statement never stalls the async workers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{ffi, Batch, Connection, InterruptHandle, OpenFlags, Statement};

use crate::error::BackendError;
pub use crate::result::{BatchOutcome, Description};
use crate::result::{Column, ColumnType, CommandKind, ResultSet, Value};

/// How long a statement waits for a lock held by another session before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite database file that sessions open connections to.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    path: PathBuf,
}

/// Interrupts whatever statement its session is running; a no-op when it runs none.
#[derive(Clone)]
pub struct Canceller(Arc<InterruptHandle>);

impl Canceller {
    pub fn cancel(&self) {
        self.0.interrupt();
    }
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Canceller")
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database file. When the file is new and `seed` names a
    /// SQL file, that file is run once to create the initial schema and data.
    pub fn open(path: &Path, seed: Option<&Path>) -> Result<Self, BackendError> {
        let is_new = !path.exists();
        let conn = open_connection(path)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(map_error)?;
        if let (true, Some(seed)) = (is_new, seed) {
            let sql = std::fs::read_to_string(seed).map_err(|e| {
                BackendError::Unavailable(format!("cannot read seed file {}: {e}", seed.display()))
            })?;
            if let Err(e) = conn.execute_batch(&sql) {
                drop(conn);
                let _ = std::fs::remove_file(path);
                return Err(BackendError::Unavailable(format!(
                    "seed file {} failed: {e}",
                    seed.display()
                )));
            }
        }
        Ok(SqliteBackend {
            path: path.to_path_buf(),
        })
    }

    /// Opens a connection for one client session.
    pub async fn connect(&self) -> Result<SqliteSession, BackendError> {
        let path = self.path.clone();
        let conn = tokio::task::spawn_blocking(move || open_connection(&path))
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))??;
        let interrupt = Arc::new(conn.get_interrupt_handle());
        Ok(SqliteSession {
            conn: Arc::new(Mutex::new(conn)),
            interrupt,
            in_transaction: Arc::new(AtomicBool::new(false)),
        })
    }
}

fn open_connection(path: &Path) -> Result<Connection, BackendError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| BackendError::Unavailable(format!("cannot open SQLite database: {e}")))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_error)?;
    Ok(conn)
}

/// One client's connection to the database.
pub struct SqliteSession {
    conn: Arc<Mutex<Connection>>,
    interrupt: Arc<InterruptHandle>,
    in_transaction: Arc<AtomicBool>,
}

impl SqliteSession {
    /// True while an explicit transaction (BEGIN ...) is open.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction.load(Ordering::Acquire)
    }

    /// A handle that interrupts this session's running statement.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.interrupt.clone())
    }

    /// Runs every statement of `sql` in order, stopping at the first error.
    pub async fn execute_batch(&self, sql: String) -> BatchOutcome {
        let sql = transaction_start(&sql).map(str::to_string).unwrap_or(sql);
        let outcome = self
            .blocking(move |conn| {
                let mut results = Vec::new();
                let mut batch = Batch::new(conn, &sql);
                loop {
                    match batch.next() {
                        Ok(Some(mut stmt)) => match run_statement(conn, &mut stmt, &[]) {
                            Ok(rs) => results.push(rs),
                            Err(e) => {
                                return Ok(BatchOutcome {
                                    results,
                                    error: Some(e),
                                })
                            }
                        },
                        Ok(None) => {
                            return Ok(BatchOutcome {
                                results,
                                error: None,
                            })
                        }
                        Err(e) => {
                            let error = Some(map_error(e));
                            return Ok(BatchOutcome { results, error });
                        }
                    }
                }
            })
            .await;
        outcome.unwrap_or_else(|e| BatchOutcome {
            results: Vec::new(),
            error: Some(e),
        })
    }

    /// Runs one statement with bound parameters.
    pub async fn execute(
        &self,
        sql: String,
        params: Vec<Value>,
    ) -> Result<ResultSet, BackendError> {
        let sql = transaction_start(&sql).map(str::to_string).unwrap_or(sql);
        self.blocking(move |conn| {
            let mut stmt = prepare_single(conn, &sql)?;
            run_statement(conn, &mut stmt, &params)
        })
        .await
    }

    /// Parameter count and result columns of one statement, without running it.
    pub async fn describe(&self, sql: String) -> Result<Description, BackendError> {
        self.blocking(move |conn| {
            let stmt = prepare_single(conn, &sql)?;
            Ok(Description {
                params: stmt.parameter_count(),
                columns: columns_of(&stmt),
            })
        })
        .await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, BackendError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let in_tx = self.in_transaction.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let out = f(&conn);
            in_tx.store(!conn.is_autocommit(), Ordering::Release);
            out
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("SQLite worker failed: {e}")))?
    }
}

/// PostgreSQL's ways to open a transaction (`START TRANSACTION`, `BEGIN ISOLATION LEVEL
/// ...`, `BEGIN READ WRITE`) as SQLite's `BEGIN`, which is always serializable. Only a whole
/// request that is exactly one such statement is recognised.
fn transaction_start(sql: &str) -> Option<&'static str> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let modes = |rest: &[String]| {
        !rest.is_empty()
            && rest.iter().all(|w| {
                let w = w.trim_end_matches(',');
                matches!(
                    w,
                    "ISOLATION"
                        | "LEVEL"
                        | "SERIALIZABLE"
                        | "REPEATABLE"
                        | "READ"
                        | "COMMITTED"
                        | "UNCOMMITTED"
                        | "WRITE"
                        | "ONLY"
                        | "DEFERRABLE"
                        | "NOT"
                )
            })
    };
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["START", "TRANSACTION"] => Some("BEGIN"),
        ["START", "TRANSACTION", ..] if modes(&words[2..]) => Some("BEGIN"),
        ["BEGIN", "WORK" | "TRANSACTION", ..] if modes(&words[2..]) => Some("BEGIN"),
        ["BEGIN", ..] if modes(&words[1..]) => Some("BEGIN"),
        _ => None,
    }
}

/// Prepares exactly one statement; several in one string is an error, as in PostgreSQL's
/// extended protocol.
fn prepare_single<'c>(conn: &'c Connection, sql: &str) -> Result<Statement<'c>, BackendError> {
    let mut batch = Batch::new(conn, sql);
    let first = batch.next().map_err(map_error)?;
    let Some(stmt) = first else {
        return Err(BackendError::statement("42601", "empty statement"));
    };
    if batch.next().map_err(map_error)?.is_some() {
        return Err(BackendError::statement(
            "42601",
            "cannot insert multiple commands into a prepared statement",
        ));
    }
    Ok(stmt)
}

fn columns_of(stmt: &Statement<'_>) -> Vec<Column> {
    stmt.columns()
        .map(|c| Column::new(c.name(), c.decl_type().map(ColumnType::from_declared)))
        .collect()
}

fn run_statement(
    conn: &Connection,
    stmt: &mut Statement<'_>,
    params: &[Value],
) -> Result<ResultSet, BackendError> {
    let expected = stmt.parameter_count();
    if params.len() != expected {
        return Err(BackendError::statement(
            "08P01",
            format!(
                "bind message supplies {} parameters, but prepared statement requires {expected}",
                params.len()
            ),
        ));
    }
    for (i, p) in params.iter().enumerate() {
        bind_value(stmt, i + 1, p).map_err(map_error)?;
    }
    let verb = leading_keyword(&stmt.expanded_sql().unwrap_or_default());
    let columns = columns_of(stmt);
    let ncols = columns.len();
    let mut rows_out = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next().map_err(map_error)? {
        let mut values = Vec::with_capacity(ncols);
        for i in 0..ncols {
            values.push(value_of(row.get_ref(i).map_err(map_error)?));
        }
        rows_out.push(values);
    }
    let affected = conn.changes();
    let mut rs = ResultSet {
        command: command_kind(&verb, ncols > 0),
        columns,
        rows: rows_out,
        affected,
    };
    rs.resolve_types();
    Ok(rs)
}

fn bind_value(stmt: &mut Statement<'_>, idx: usize, v: &Value) -> rusqlite::Result<()> {
    match v {
        Value::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null),
        Value::Bool(b) => stmt.raw_bind_parameter(idx, *b),
        Value::Int(i) => stmt.raw_bind_parameter(idx, *i),
        Value::Float(f) => stmt.raw_bind_parameter(idx, *f),
        Value::Text(s) => stmt.raw_bind_parameter(idx, s.as_str()),
        Value::Bytes(b) => stmt.raw_bind_parameter(idx, b.as_slice()),
    }
}

fn value_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

/// The first keyword of a statement, upper-cased, skipping leading comments.
fn leading_keyword(sql: &str) -> Vec<String> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once('\n')
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r
                .split_once("*/")
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else {
            break;
        }
    }
    rest.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

fn command_kind(words: &[String], returns_rows: bool) -> CommandKind {
    let first = words.first().map(String::as_str).unwrap_or("");
    match first {
        "INSERT" | "REPLACE" => CommandKind::Insert,
        "UPDATE" => CommandKind::Update,
        "DELETE" => CommandKind::Delete,
        _ if returns_rows => CommandKind::Select,
        "CREATE" | "DROP" | "ALTER" => CommandKind::Other(words.join(" ")),
        "END" => CommandKind::Other("COMMIT".into()),
        "" => CommandKind::Other(String::new()),
        other => CommandKind::Other(other.to_string()),
    }
}

/// Maps a SQLite error to the SQLSTATE that PostgreSQL would use for the same condition.
fn map_error(e: rusqlite::Error) -> BackendError {
    use rusqlite::ErrorCode as C;
    let message = match &e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    };
    let sqlstate = match &e {
        rusqlite::Error::SqliteFailure(err, _) => match err.code {
            C::OperationInterrupted => return BackendError::Canceled,
            C::ConstraintViolation => constraint_sqlstate(err.extended_code),
            C::DatabaseBusy | C::DatabaseLocked => "55P03",
            C::ReadOnly => "25006",
            C::TooBig => "54000",
            C::TypeMismatch => "42804",
            C::OutOfMemory => "53200",
            C::DiskFull => "53100",
            C::CannotOpen | C::NotADatabase | C::DatabaseCorrupt => "58030",
            C::PermissionDenied | C::AuthorizationForStatementDenied => "42501",
            _ => message_sqlstate(&message),
        },
        rusqlite::Error::SqlInputError { .. } => message_sqlstate(&message),
        rusqlite::Error::MultipleStatement => "42601",
        rusqlite::Error::InvalidParameterCount(..) => "08P01",
        rusqlite::Error::Utf8Error(..) => "22021",
        _ => "XX000",
    };
    BackendError::Statement { sqlstate, message }
}

fn constraint_sqlstate(extended: i32) -> &'static str {
    match extended {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => "23505",
        ffi::SQLITE_CONSTRAINT_NOTNULL => "23502",
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "23503",
        ffi::SQLITE_CONSTRAINT_CHECK => "23514",
        _ => "23000",
    }
}

fn message_sqlstate(message: &str) -> &'static str {
    if message.starts_with("no such table") {
        "42P01"
    } else if message.starts_with("no such column") {
        "42703"
    } else if message.starts_with("no such function") {
        "42883"
    } else if message.contains("syntax error") || message.starts_with("incomplete input") {
        "42601"
    } else if message.contains("already exists") {
        "42P07"
    } else if message.contains("no transaction is active") {
        "25P01"
    } else if message.contains("within a transaction") {
        "25001"
    } else {
        "42000"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn session() -> (tempfile::TempDir, SqliteSession) {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("t.db"), None).unwrap();
        let s = backend.connect().await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn a_batch_runs_every_statement_and_stops_at_the_first_error() {
        let (_d, s) = session().await;
        let out = s
            .execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT); \
                 INSERT INTO t VALUES (1, 'a'), (2, 'b'); SELECT * FROM t; \
                 INSERT INTO t VALUES (1, 'dup'); SELECT 1"
                    .into(),
            )
            .await;
        let tags: Vec<_> = out.results.iter().map(|r| r.command_tag()).collect();
        assert_eq!(tags, ["CREATE TABLE", "INSERT 0 2", "SELECT 2"]);
        assert_eq!(out.error.unwrap().sqlstate(), "23505");
    }

    #[tokio::test]
    async fn statements_take_parameters_and_describe_their_columns() {
        let (_d, s) = session().await;
        s.execute_batch("CREATE TABLE t (id INTEGER, ok BOOLEAN, v REAL)".into())
            .await;
        let d = s
            .describe("SELECT id, ok, v, 1 + 1 FROM t WHERE id = ?".into())
            .await
            .unwrap();
        assert_eq!(d.params, 1);
        let types: Vec<_> = d.columns.iter().map(|c| c.declared).collect();
        assert_eq!(
            types,
            [
                Some(ColumnType::Int8),
                Some(ColumnType::Bool),
                Some(ColumnType::Float8),
                None
            ]
        );
        let rs = s
            .execute(
                "INSERT INTO t VALUES (?, ?, ?)".into(),
                vec![Value::Int(7), Value::Bool(true), Value::Float(0.5)],
            )
            .await
            .unwrap();
        assert_eq!(rs.command_tag(), "INSERT 0 1");
        let rs = s
            .execute("SELECT v FROM t WHERE id = ?".into(), vec![Value::Int(7)])
            .await
            .unwrap();
        assert_eq!(rs.rows, vec![vec![Value::Float(0.5)]]);
    }

    #[tokio::test]
    async fn errors_carry_fitting_sqlstates() {
        let (_d, s) = session().await;
        let err = |sql: &str| {
            let sql = sql.to_string();
            let s = &s;
            async move {
                s.execute(sql, vec![])
                    .await
                    .unwrap_err()
                    .sqlstate()
                    .to_string()
            }
        };
        assert_eq!(err("SELECT * FROM missing").await, "42P01");
        assert_eq!(err("SELEC 1").await, "42601");
        assert_eq!(err("SELECT 1; SELECT 2").await, "42601");
    }

    #[tokio::test]
    async fn transaction_state_is_tracked() {
        let (_d, s) = session().await;
        s.execute_batch("BEGIN".into()).await;
        assert!(s.in_transaction());
        s.execute_batch("COMMIT".into()).await;
        assert!(!s.in_transaction());
    }

    #[test]
    fn postgres_transaction_starts_become_begin() {
        assert_eq!(transaction_start("START TRANSACTION"), Some("BEGIN"));
        assert_eq!(
            transaction_start("begin isolation level read committed;"),
            Some("BEGIN")
        );
        assert_eq!(transaction_start("BEGIN READ WRITE"), Some("BEGIN"));
        assert_eq!(transaction_start("BEGIN"), None);
        assert_eq!(transaction_start("START TRANSACTION; DROP TABLE t"), None);
    }

    #[test]
    fn leading_keywords_skip_comments() {
        assert_eq!(
            leading_keyword("  -- hi\n /* x */ create table t"),
            ["CREATE", "TABLE"]
        );
    }
}
