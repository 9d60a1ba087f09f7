//! Protocol-neutral results: what a backend returns when the client speaks another protocol.
//!
//! Every cross-protocol answer goes through these types; the full mapping table between
//! PostgreSQL, MySQL and SQLite types is in the README ("Cross-protocol routes").
//! Values of the date, time, numeric and JSON types travel as text in the backend's own
//! output format; each frontend writes them in its protocol's type.
//!
//! SQLite declared types map as follows:
//!
//! | declared type contains        | neutral            | PostgreSQL  |
//! |-------------------------------|--------------------|-------------|
//! | `BOOL`                        | [`ColumnType::Bool`]  | `bool`   |
//! | `INT`                         | [`ColumnType::Int8`]  | `int8`   |
//! | `REAL`, `FLOA`, `DOUB`        | [`ColumnType::Float8`]| `float8` |
//! | `BLOB` or `BYTEA`             | [`ColumnType::Bytea`] | `bytea`  |
//! | anything else (`TEXT`, ...)   | [`ColumnType::Text`]  | `text`   |
//!
//! Expression columns have no declared type. Before a statement runs (Describe), common
//! aggregates are typed by name (`count(...)` and `length(...)` as `int8`, `avg(...)` and
//! `total(...)` as `float8`) and other expressions as `text`. Once rows exist (simple query,
//! Describe of a portal), an expression takes the type of its first non-NULL value.

/// The type of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int8,
    Float8,
    /// Exact decimal, as text (`-12.50`).
    Numeric,
    Text,
    Bytea,
    /// `YYYY-MM-DD`, as text.
    Date,
    /// `HH:MM:SS[.ffffff]` within one day, as text.
    Time,
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]` without a zone, as text.
    Timestamp,
    /// A JSON document, as text.
    Json,
}

impl ColumnType {
    /// Maps a SQLite declared column type (column affinity rules, plus BOOL).
    pub fn from_declared(decl: &str) -> ColumnType {
        let upper = decl.to_ascii_uppercase();
        if upper.contains("BOOL") {
            ColumnType::Bool
        } else if upper.contains("INT") {
            ColumnType::Int8
        } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
            ColumnType::Float8
        } else if upper.contains("BLOB") || upper.contains("BYTEA") {
            ColumnType::Bytea
        } else {
            ColumnType::Text
        }
    }

    /// The type a value naturally has, when no column type is declared.
    pub fn of_value(value: &Value) -> Option<ColumnType> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(ColumnType::Bool),
            Value::Int(_) => Some(ColumnType::Int8),
            Value::Float(_) => Some(ColumnType::Float8),
            Value::Text(_) => Some(ColumnType::Text),
            Value::Bytes(_) => Some(ColumnType::Bytea),
        }
    }
}

/// One value in a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A result column: its name, its declared type if the backend knows one, and the type
/// resolved for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub declared: Option<ColumnType>,
    pub ty: ColumnType,
}

impl Column {
    /// A column whose client type is its declared type, or text until values say otherwise.
    pub fn new(name: impl Into<String>, declared: Option<ColumnType>) -> Self {
        let name = name.into();
        let ty = declared
            .or_else(|| guess_from_name(&name))
            .unwrap_or(ColumnType::Text);
        Column { name, declared, ty }
    }
}

/// The type of a well-known aggregate expression, from the column name SQLite gives it.
fn guess_from_name(name: &str) -> Option<ColumnType> {
    let lower = name.trim().to_ascii_lowercase();
    let call = |f: &str| lower.starts_with(f) && lower.ends_with(')');
    if call("count(") || call("length(") {
        Some(ColumnType::Int8)
    } else if call("avg(") || call("total(") {
        Some(ColumnType::Float8)
    } else {
        None
    }
}

/// What a statement needs and returns, known before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub params: usize,
    pub columns: Vec<Column>,
}

/// The outcome of a multi-statement request: results of the statements that ran, in order,
/// and the error that stopped the rest, if any.
#[derive(Debug)]
pub struct BatchOutcome {
    pub results: Vec<ResultSet>,
    pub error: Option<crate::BackendError>,
}

/// What kind of statement produced a result, for the command tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// A statement that returns rows.
    Select,
    Insert,
    Update,
    Delete,
    /// Anything else, with its tag (`CREATE TABLE`, `BEGIN`, ...).
    Other(String),
}

/// The whole answer to one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub command: CommandKind,
    /// Rows changed by INSERT/UPDATE/DELETE.
    pub affected: u64,
}

impl ResultSet {
    /// True when the statement returns rows (even zero of them).
    pub fn returns_rows(&self) -> bool {
        !self.columns.is_empty()
    }

    /// The rows it returned, or for a command the rows it changed.
    pub fn row_count(&self) -> u64 {
        if self.returns_rows() {
            self.rows.len() as u64
        } else {
            self.affected
        }
    }

    /// Gives every column without a declared type the type of its first non-NULL value.
    pub fn resolve_types(&mut self) {
        for (i, col) in self.columns.iter_mut().enumerate() {
            if col.declared.is_some() {
                continue;
            }
            col.ty = self
                .rows
                .iter()
                .find_map(|row| row.get(i).and_then(ColumnType::of_value))
                .unwrap_or(ColumnType::Text);
        }
    }

    /// The result of a statement known by its command tag (`SELECT 2`, `INSERT 0 1`,
    /// `CREATE TABLE`); `rows` holds the rows of a row-returning statement.
    pub fn from_tag(tag: &str, columns: Vec<Column>, rows: Vec<Vec<Value>>) -> ResultSet {
        let mut words = tag.split_whitespace();
        let first = words.next().unwrap_or("");
        let count = tag
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let command = match first {
            "SELECT" | "FETCH" | "SHOW" if !columns.is_empty() => CommandKind::Select,
            "INSERT" => CommandKind::Insert,
            "UPDATE" => CommandKind::Update,
            "DELETE" => CommandKind::Delete,
            _ if !columns.is_empty() => CommandKind::Select,
            _ => CommandKind::Other(tag.to_string()),
        };
        let affected = match command {
            CommandKind::Select => 0,
            _ => count,
        };
        ResultSet {
            columns,
            rows,
            command,
            affected,
        }
    }

    /// The command tag PostgreSQL clients expect (`SELECT 3`, `INSERT 0 1`, ...).
    pub fn command_tag(&self) -> String {
        match &self.command {
            CommandKind::Select => format!("SELECT {}", self.rows.len()),
            CommandKind::Insert => format!("INSERT 0 {}", self.affected),
            CommandKind::Update => format!("UPDATE {}", self.affected),
            CommandKind::Delete => format!("DELETE {}", self.affected),
            CommandKind::Other(tag) => tag.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_sqlite_affinity() {
        assert_eq!(ColumnType::from_declared("INTEGER"), ColumnType::Int8);
        assert_eq!(ColumnType::from_declared("bigint"), ColumnType::Int8);
        assert_eq!(ColumnType::from_declared("BOOLEAN"), ColumnType::Bool);
        assert_eq!(
            ColumnType::from_declared("double precision"),
            ColumnType::Float8
        );
        assert_eq!(ColumnType::from_declared("BLOB"), ColumnType::Bytea);
        assert_eq!(ColumnType::from_declared("varchar(20)"), ColumnType::Text);
    }

    #[test]
    fn undeclared_columns_take_the_type_of_their_first_value() {
        let mut rs = ResultSet {
            columns: vec![Column::new("a", None), Column::new("b", None)],
            rows: vec![
                vec![Value::Null, Value::Null],
                vec![Value::Int(1), Value::Null],
            ],
            command: CommandKind::Select,
            affected: 0,
        };
        rs.resolve_types();
        assert_eq!(rs.columns[0].ty, ColumnType::Int8);
        assert_eq!(rs.columns[1].ty, ColumnType::Text);
        assert_eq!(rs.command_tag(), "SELECT 2");
    }

    #[test]
    fn well_known_aggregates_are_typed_before_they_run() {
        assert_eq!(Column::new("count(*)", None).ty, ColumnType::Int8);
        assert_eq!(Column::new("AVG(price)", None).ty, ColumnType::Float8);
        assert_eq!(Column::new("1 + 1", None).ty, ColumnType::Text);
    }
}
