//! Neutral results from a MySQL/MariaDB server, for clients of another protocol: text
//! queries (every result set of a multi-statement request) and server-side prepared
//! statements with bound parameters, typed from the server's column definitions.

use mysql_async::consts::{ColumnFlags, ColumnType as MyType};
use mysql_async::prelude::{Protocol, Queryable};
use mysql_async::{Column as MyColumn, Params, QueryResult, Value as MyValue};

use super::scan::scan;
use super::{error, MyConn};
use crate::result::{BatchOutcome, Column, ColumnType, Description, ResultSet, Value};
use crate::BackendError;

/// The character set number MySQL gives binary strings.
const BINARY_CHARSET: u16 = 63;

/// The neutral type of a MySQL column.
pub fn neutral_type(col: &MyColumn) -> ColumnType {
    match col.column_type() {
        MyType::MYSQL_TYPE_TINY
        | MyType::MYSQL_TYPE_SHORT
        | MyType::MYSQL_TYPE_INT24
        | MyType::MYSQL_TYPE_LONG
        | MyType::MYSQL_TYPE_YEAR => ColumnType::Int8,
        MyType::MYSQL_TYPE_LONGLONG if col.flags().contains(ColumnFlags::UNSIGNED_FLAG) => {
            ColumnType::Numeric
        }
        MyType::MYSQL_TYPE_LONGLONG => ColumnType::Int8,
        MyType::MYSQL_TYPE_FLOAT | MyType::MYSQL_TYPE_DOUBLE => ColumnType::Float8,
        MyType::MYSQL_TYPE_DECIMAL | MyType::MYSQL_TYPE_NEWDECIMAL => ColumnType::Numeric,
        MyType::MYSQL_TYPE_DATE | MyType::MYSQL_TYPE_NEWDATE => ColumnType::Date,
        MyType::MYSQL_TYPE_DATETIME
        | MyType::MYSQL_TYPE_DATETIME2
        | MyType::MYSQL_TYPE_TIMESTAMP
        | MyType::MYSQL_TYPE_TIMESTAMP2 => ColumnType::Timestamp,
        MyType::MYSQL_TYPE_JSON => ColumnType::Json,
        MyType::MYSQL_TYPE_BIT | MyType::MYSQL_TYPE_GEOMETRY => ColumnType::Bytea,
        // TIME spans -838:59:59 to 838:59:59, more than a time of day: kept as text.
        MyType::MYSQL_TYPE_TIME | MyType::MYSQL_TYPE_TIME2 | MyType::MYSQL_TYPE_NULL => {
            ColumnType::Text
        }
        _ if col.character_set() == BINARY_CHARSET => ColumnType::Bytea,
        _ => ColumnType::Text,
    }
}

fn columns_of(cols: &[MyColumn]) -> Vec<Column> {
    cols.iter()
        .map(|c| Column::new(c.name_str().into_owned(), Some(neutral_type(c))))
        .collect()
}

fn fraction(us: u32, decimals: u8) -> String {
    let digits = usize::from(decimals.min(6));
    if digits == 0 {
        return String::new();
    }
    let text = format!("{us:06}");
    format!(".{}", &text[..digits])
}

/// One value from the server (text or binary protocol) as a neutral value.
fn neutral_value(v: MyValue, col: &MyColumn, ty: ColumnType) -> Value {
    match v {
        MyValue::NULL => Value::Null,
        MyValue::Bytes(b) => match ty {
            ColumnType::Bytea => Value::Bytes(b),
            _ => {
                let text = String::from_utf8_lossy(&b).into_owned();
                match ty {
                    ColumnType::Int8 => text.parse().map(Value::Int).unwrap_or(Value::Text(text)),
                    ColumnType::Float8 => {
                        text.parse().map(Value::Float).unwrap_or(Value::Text(text))
                    }
                    _ => Value::Text(text),
                }
            }
        },
        MyValue::Int(i) => match ty {
            ColumnType::Int8 => Value::Int(i),
            _ => Value::Text(i.to_string()),
        },
        MyValue::UInt(u) => match i64::try_from(u) {
            Ok(i) if ty == ColumnType::Int8 => Value::Int(i),
            _ => Value::Text(u.to_string()),
        },
        // Through the float's shortest text, so 0.1 stays 0.1 and not 0.10000000149.
        MyValue::Float(f) => Value::Float(f.to_string().parse().unwrap_or(f as f64)),
        MyValue::Double(d) => Value::Float(d),
        MyValue::Date(y, mo, d, h, mi, s, us) => {
            let date = format!("{y:04}-{mo:02}-{d:02}");
            if ty == ColumnType::Date {
                Value::Text(date)
            } else {
                let frac = fraction(us, col.decimals());
                Value::Text(format!("{date} {h:02}:{mi:02}:{s:02}{frac}"))
            }
        }
        MyValue::Time(neg, days, h, mi, s, us) => {
            let hours = days * 24 + u32::from(h);
            let sign = if neg { "-" } else { "" };
            let frac = fraction(us, col.decimals());
            Value::Text(format!("{sign}{hours:02}:{mi:02}:{s:02}{frac}"))
        }
    }
}

/// A neutral value as a statement parameter.
fn param(v: Value) -> MyValue {
    match v {
        Value::Null => MyValue::NULL,
        Value::Bool(b) => MyValue::Int(i64::from(b)),
        Value::Int(i) => MyValue::Int(i),
        Value::Float(f) => MyValue::Double(f),
        Value::Text(s) => MyValue::Bytes(s.into_bytes()),
        Value::Bytes(b) => MyValue::Bytes(b),
    }
}

/// The answer to a statement that returned no rows, tagged the way PostgreSQL would.
fn ok_result(head: Option<&String>, affected: u64) -> ResultSet {
    let head = head.map(String::as_str).unwrap_or("");
    let first = head.split(' ').next().unwrap_or("");
    let tag = match first {
        "INSERT" | "REPLACE" => format!("INSERT 0 {affected}"),
        "UPDATE" => format!("UPDATE {affected}"),
        "DELETE" => format!("DELETE {affected}"),
        "CREATE" | "DROP" | "ALTER" => head.to_string(),
        "" => "OK".to_string(),
        other => other.to_string(),
    };
    ResultSet::from_tag(&tag, Vec::new(), Vec::new())
}

/// Collects every result set of a running query.
async fn collect<P: Protocol>(
    qr: &mut QueryResult<'_, '_, P>,
    heads: &[String],
    results: &mut Vec<ResultSet>,
) -> Result<(), BackendError> {
    loop {
        let cols = qr
            .columns()
            .unwrap_or_else(|| std::sync::Arc::from(Vec::new()));
        if cols.is_empty() {
            results.push(ok_result(heads.get(results.len()), qr.affected_rows()));
            if qr.is_empty() {
                return Ok(());
            }
            qr.next().await.map_err(error)?;
            continue;
        }
        let types: Vec<ColumnType> = cols.iter().map(neutral_type).collect();
        let mut rows = Vec::new();
        while let Some(row) = qr.next().await.map_err(error)? {
            let values = row
                .unwrap_raw()
                .into_iter()
                .zip(cols.iter().zip(&types))
                .map(|(v, (col, ty))| neutral_value(v.unwrap_or(MyValue::NULL), col, *ty))
                .collect();
            rows.push(values);
        }
        results.push(ResultSet {
            columns: columns_of(&cols),
            rows,
            command: crate::result::CommandKind::Select,
            affected: 0,
        });
        if qr.is_empty() {
            return Ok(());
        }
    }
}

impl MyConn {
    /// Runs `sql` (one or several statements) with the text protocol and collects each
    /// statement's answer, stopping at the first error.
    pub async fn neutral_batch(&mut self, sql: &str) -> BatchOutcome {
        let heads = scan(sql).heads;
        let mut results = Vec::new();
        let outcome = match self.conn.query_iter(sql).await {
            Ok(mut qr) => collect(&mut qr, &heads, &mut results).await,
            Err(e) => Err(error(e)),
        };
        self.note_failure(&outcome);
        BatchOutcome {
            results,
            error: outcome.err(),
        }
    }

    /// Runs one statement as a server-side prepared statement with `params`.
    pub async fn neutral_execute(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<ResultSet, BackendError> {
        let heads = scan(sql).heads;
        let params = if params.is_empty() {
            Params::Empty
        } else {
            Params::Positional(params.into_iter().map(param).collect())
        };
        let mut results = Vec::new();
        let outcome = match self.conn.exec_iter(sql, params).await {
            Ok(mut qr) => collect(&mut qr, &heads, &mut results).await,
            Err(e) => Err(error(e)),
        };
        self.note_failure(&outcome);
        outcome?;
        results
            .pop()
            .ok_or_else(|| BackendError::statement("08P01", "the statement returned no result"))
    }

    /// Parameter count and result columns of one statement, prepared on the server.
    pub async fn neutral_describe(&mut self, sql: &str) -> Result<Description, BackendError> {
        let outcome = self.conn.prep(sql).await.map_err(error);
        self.note_failure(&outcome);
        let stmt = outcome?;
        Ok(Description {
            params: usize::from(stmt.num_params()),
            columns: columns_of(&stmt.columns()),
        })
    }

    fn note_failure<T>(&mut self, outcome: &Result<T, BackendError>) {
        if matches!(outcome, Err(BackendError::Unavailable(_))) || self.conn.is_disconnected() {
            self.broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_results_are_tagged_like_postgresql() {
        let tag = |head: &str, n| ok_result(Some(&head.to_string()), n).command_tag();
        assert_eq!(tag("INSERT INTO", 2), "INSERT 0 2");
        assert_eq!(tag("UPDATE t", 1), "UPDATE 1");
        assert_eq!(tag("CREATE TABLE", 0), "CREATE TABLE");
        assert_eq!(tag("BEGIN", 0), "BEGIN");
    }

    #[test]
    fn dates_and_times_keep_their_precision() {
        let col = MyColumn::new(MyType::MYSQL_TYPE_DATETIME).with_decimals(3);
        let v = neutral_value(
            MyValue::Date(2024, 2, 29, 1, 2, 3, 500_000),
            &col,
            ColumnType::Timestamp,
        );
        assert_eq!(v, Value::Text("2024-02-29 01:02:03.500".into()));
        let col = MyColumn::new(MyType::MYSQL_TYPE_TIME);
        let v = neutral_value(
            MyValue::Time(true, 34, 22, 59, 58, 0),
            &col,
            ColumnType::Text,
        );
        assert_eq!(v, Value::Text("-838:59:58".into()));
        assert_eq!(
            neutral_value(MyValue::UInt(u64::MAX), &col, ColumnType::Numeric),
            Value::Text("18446744073709551615".into())
        );
    }
}
