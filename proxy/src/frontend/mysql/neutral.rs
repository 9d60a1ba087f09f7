//! Cross-protocol answers for MySQL clients: neutral result sets (SQLite routes) written as
//! MySQL column definitions and text rows.

use backends::mysql::mysql_async::Column as MyColumn;
use backends::result::{ColumnType as NeutralType, ResultSet, Value as Neutral};
use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::packet::Packets;
use super::write::{self, OkInfo};

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
        NeutralType::Text => (
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
        .with_decimals(if ty == NeutralType::Float8 { 31 } else { 0 })
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
