//! Cross-protocol answers for MySQL clients: neutral result sets (SQLite and PostgreSQL
//! routes) written as MySQL column definitions and text rows.

use backends::mysql::mysql_async::Column as MyColumn;
use backends::result::{ColumnType as NeutralType, ResultSet, Value as Neutral};
use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::packet::Packets;
use super::write::{self, MyError, OkInfo};

/// A MySQL column definition for a neutral column type (cross-protocol routes).
pub(super) fn neutral_column(name: &str, ty: NeutralType) -> MyColumn {
    let (column_type, charset, length, flags) = match ty {
        NeutralType::Bool => (ColumnType::MYSQL_TYPE_TINY, 63, 1, ColumnFlags::NUM_FLAG),
        NeutralType::Int8 => (
            ColumnType::MYSQL_TYPE_LONGLONG,
            63,
            20,
            ColumnFlags::NUM_FLAG,
        ),
        NeutralType::Float8 => (ColumnType::MYSQL_TYPE_DOUBLE, 63, 22, ColumnFlags::NUM_FLAG),
        NeutralType::Numeric => (
            ColumnType::MYSQL_TYPE_NEWDECIMAL,
            63,
            67,
            ColumnFlags::NUM_FLAG,
        ),
        NeutralType::Date => (
            ColumnType::MYSQL_TYPE_DATE,
            63,
            10,
            ColumnFlags::BINARY_FLAG,
        ),
        NeutralType::Time => (
            ColumnType::MYSQL_TYPE_TIME,
            63,
            17,
            ColumnFlags::BINARY_FLAG,
        ),
        NeutralType::Timestamp => (
            ColumnType::MYSQL_TYPE_DATETIME,
            63,
            26,
            ColumnFlags::BINARY_FLAG,
        ),
        // JSON as MariaDB sends it: a utf8mb4 text column.
        NeutralType::Text | NeutralType::Json => (
            ColumnType::MYSQL_TYPE_VAR_STRING,
            45,
            1 << 24,
            ColumnFlags::empty(),
        ),
        NeutralType::Bytea => (
            ColumnType::MYSQL_TYPE_BLOB,
            63,
            1 << 24,
            ColumnFlags::BLOB_FLAG | ColumnFlags::BINARY_FLAG,
        ),
    };
    MyColumn::new(column_type)
        .with_name(name.as_bytes())
        .with_org_name(name.as_bytes())
        .with_character_set(charset)
        .with_column_length(length)
        .with_flags(flags)
        .with_decimals(match ty {
            NeutralType::Float8 => 31,
            NeutralType::Numeric => 30,
            NeutralType::Time | NeutralType::Timestamp => 6,
            _ => 0,
        })
}

/// Writes one neutral result: a row set ended by EOF, or an OK.
pub(super) fn write_neutral<S>(p: &mut Packets<S>, result: &ResultSet, status: u16)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !result.returns_rows() {
        write::ok(
            p,
            &OkInfo {
                affected: result.affected,
                status,
                ..Default::default()
            },
        );
        return;
    }
    let cols: Vec<MyColumn> = result
        .columns
        .iter()
        .map(|c| neutral_column(&c.name, c.ty))
        .collect();
    write::columns(p, &cols, status);
    let mut values = Vec::with_capacity(cols.len());
    for row in &result.rows {
        values.clear();
        values.extend(row.iter().map(|v| match v {
            Neutral::Null => Value::NULL,
            Neutral::Bool(b) => Value::Bytes(if *b { b"1".to_vec() } else { b"0".to_vec() }),
            Neutral::Int(i) => Value::Bytes(i.to_string().into_bytes()),
            Neutral::Float(f) => Value::Bytes(f.to_string().into_bytes()),
            Neutral::Text(t) => Value::Bytes(t.clone().into_bytes()),
            Neutral::Bytes(b) => Value::Bytes(b.clone()),
        }));
        write::text_row(p, &values);
    }
    write::eof(p, 0, status);
}

/// Connection setup that MySQL client libraries send, answered by sluice on routes whose
/// backend speaks another dialect: `SET NAMES` for UTF-8 (answers are always utf8mb4) and
/// `SET autocommit` on. Returns `None` for any other statement (it goes to the backend).
pub(super) fn client_setup(sql: &str) -> Option<Result<(), MyError>> {
    let lowered = sql.trim().trim_end_matches(';').to_ascii_lowercase();
    let tokens: Vec<&str> = lowered
        .split(|c: char| c.is_ascii_whitespace() || c == '=')
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_matches(|c| c == '\'' || c == '"' || c == '`'))
        .collect();
    match tokens.as_slice() {
        ["set", "names", charset, rest @ ..] if rest.is_empty() || rest[0] == "collate" => {
            Some(if matches!(*charset, "utf8mb4" | "utf8" | "utf8mb3") {
                Ok(())
            } else {
                Err(MyError::new(
                    1115,
                    "42000",
                    format!(
                        "Unknown character set: '{charset}': this route answers in utf8mb4 only"
                    ),
                ))
            })
        }
        ["set", "autocommit" | "@@autocommit" | "@@session.autocommit", value] => {
            Some(if matches!(*value, "1" | "on" | "true") {
                Ok(())
            } else {
                Err(MyError::new(
                    1235,
                    "42000",
                    "This route's backend does not support autocommit off through sluice; use BEGIN and COMMIT",
                ))
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_setup_is_answered_for_utf8_and_autocommit_on() {
        assert!(client_setup("SET NAMES utf8mb4").unwrap().is_ok());
        assert!(
            client_setup("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'")
                .unwrap()
                .is_ok()
        );
        assert_eq!(
            client_setup("SET NAMES latin1").unwrap().unwrap_err().code,
            1115
        );
        assert!(client_setup("SET autocommit=1").unwrap().is_ok());
        assert_eq!(
            client_setup("SET AUTOCOMMIT = 0")
                .unwrap()
                .unwrap_err()
                .code,
            1235
        );
        assert!(client_setup("SET search_path = x").is_none());
        assert!(client_setup("SELECT 1").is_none());
    }
}
