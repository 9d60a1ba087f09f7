//! Prepared statements (COM_STMT_*). A client's statements are kept by sluice under its
//! own ids; on the server each runs as a server-side prepared statement on whichever
//! connection serves the client (the driver prepares it there once and caches it).

use backends::mysql::mysql_async::{Params, Statement};
use bytes::BufMut;
use mysql_common::constants::{ColumnFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::value::{BinValue, ValueDeserializer};
use mysql_common::Value;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::{unknown_statement, Session};
use super::write::{self, MyError};

/// One client statement.
pub struct Prepared {
    sql: String,
    params: usize,
    /// Parameter types from the latest execution that sent them: (type, unsigned).
    types: Vec<(u8, bool)>,
    /// COM_STMT_SEND_LONG_DATA chunks by parameter.
    long_data: HashMap<u16, Vec<u8>>,
}

/// Registers a statement the server prepared and answers COM_STMT_PREPARE.
pub(super) fn describe<S>(session: &mut Session<'_, S>, sql: String, statement: &Statement)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = session.next_statement;
    session.next_statement = session.next_statement.wrapping_add(1).max(1);
    let params = statement.params().to_vec();
    let columns = statement.columns();
    let status = session.status();
    let p = session.packets();
    let mark = p.begin();
    let buf = p.buf();
    buf.put_u8(0x00);
    buf.put_u32_le(id);
    buf.put_u16_le(columns.len() as u16);
    buf.put_u16_le(params.len() as u16);
    buf.put_u8(0x00);
    buf.put_u16_le(0);
    p.finish(mark);
    write::definitions(p, &params, status);
    write::definitions(p, &columns, status);
    session.statements.insert(
        id,
        Prepared {
            sql,
            params: params.len(),
            types: Vec::new(),
            long_data: HashMap::new(),
        },
    );
}

fn bad_arguments() -> MyError {
    MyError::new(1210, "HY000", "Incorrect arguments to mysqld_stmt_execute")
}

/// Decodes COM_STMT_EXECUTE into the statement text and its parameters.
pub(super) fn bind<S>(
    session: &mut Session<'_, S>,
    body: &[u8],
) -> Result<(String, Params), MyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if body.len() < 9 {
        return Err(bad_arguments());
    }
    let id = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let stmt = session
        .statements
        .get_mut(&id)
        .ok_or_else(unknown_statement)?;
    // body[4] holds cursor flags: sluice always sends the whole result.
    let mut rest = &body[9..];
    let n = stmt.params;
    let mut values = Vec::with_capacity(n);
    if n > 0 {
        let bitmap_len = n.div_ceil(8);
        if rest.len() < bitmap_len + 1 {
            return Err(bad_arguments());
        }
        let (bitmap, tail) = rest.split_at(bitmap_len);
        let bitmap = bitmap.to_vec();
        let bound = tail[0];
        rest = &tail[1..];
        if bound == 1 {
            if rest.len() < 2 * n {
                return Err(bad_arguments());
            }
            stmt.types = rest[..2 * n]
                .chunks(2)
                .map(|c| (c[0], c[1] & 0x80 != 0))
                .collect();
            rest = &rest[2 * n..];
        }
        if stmt.types.len() != n {
            return Err(bad_arguments());
        }
        for i in 0..n {
            if let Some(data) = stmt.long_data.remove(&(i as u16)) {
                values.push(Value::Bytes(data));
                continue;
            }
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                values.push(Value::NULL);
                continue;
            }
            let (ty, unsigned) = stmt.types[i];
            values.push(read_param(&mut rest, ty, unsigned).ok_or_else(bad_arguments)?);
        }
    }
    stmt.long_data.clear();
    let params = if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values)
    };
    Ok((stmt.sql.clone(), params))
}

/// Reads one binary parameter value of a known type.
fn read_param(buf: &mut &[u8], ty: u8, unsigned: bool) -> Option<Value> {
    let column_type = ColumnType::try_from(ty).ok()?;
    let known = matches!(
        column_type,
        ColumnType::MYSQL_TYPE_DECIMAL
            | ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_FLOAT
            | ColumnType::MYSQL_TYPE_DOUBLE
            | ColumnType::MYSQL_TYPE_NULL
            | ColumnType::MYSQL_TYPE_TIMESTAMP
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_DATE
            | ColumnType::MYSQL_TYPE_TIME
            | ColumnType::MYSQL_TYPE_DATETIME
            | ColumnType::MYSQL_TYPE_YEAR
            | ColumnType::MYSQL_TYPE_VARCHAR
            | ColumnType::MYSQL_TYPE_BIT
            | ColumnType::MYSQL_TYPE_JSON
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
            | ColumnType::MYSQL_TYPE_ENUM
            | ColumnType::MYSQL_TYPE_SET
            | ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_BLOB
            | ColumnType::MYSQL_TYPE_VAR_STRING
            | ColumnType::MYSQL_TYPE_STRING
            | ColumnType::MYSQL_TYPE_GEOMETRY
    );
    if !known {
        return None;
    }
    if column_type == ColumnType::MYSQL_TYPE_NULL {
        return Some(Value::NULL);
    }
    let flags = if unsigned {
        ColumnFlags::UNSIGNED_FLAG
    } else {
        ColumnFlags::empty()
    };
    let mut parse = ParseBuf(buf);
    let value = parse
        .parse::<ValueDeserializer<BinValue>>((column_type, flags))
        .ok()?
        .0;
    *buf = parse.0;
    // Unsigned integers arrive as Int from the deserializer; keep their sign right.
    Some(match value {
        Value::Int(i) if unsigned && column_type == ColumnType::MYSQL_TYPE_LONGLONG => {
            Value::UInt(i as u64)
        }
        v => v,
    })
}

/// COM_STMT_SEND_LONG_DATA: appends a chunk to a parameter; never answered.
pub(super) fn send_long_data<S>(session: &mut Session<'_, S>, body: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if body.len() < 6 {
        return;
    }
    let id = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let param = u16::from_le_bytes([body[4], body[5]]);
    if let Some(stmt) = session.statements.get_mut(&id) {
        if usize::from(param) < stmt.params {
            stmt.long_data
                .entry(param)
                .or_default()
                .extend_from_slice(&body[6..]);
        }
    }
}

/// COM_STMT_RESET: drops long data sent so far. False for an unknown statement.
pub(super) fn reset<S>(session: &mut Session<'_, S>, body: &[u8]) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if body.len() < 4 {
        return false;
    }
    let id = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    match session.statements.get_mut(&id) {
        Some(stmt) => {
            stmt.long_data.clear();
            true
        }
        None => false,
    }
}
