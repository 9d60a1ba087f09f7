//! Server packets: OK, ERR, EOF, column definitions, and text and binary result rows.

use bytes::{BufMut, BytesMut};
use mysql_common::constants::ColumnType;
use mysql_common::packets::Column;
use mysql_common::proto::MySerialize;
use mysql_common::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::packet::{put_lenenc_bytes, put_lenenc_int, Packets};

/// Server status flags sluice passes on.
pub const STATUS_IN_TRANS: u16 = 0x0001;
pub const STATUS_AUTOCOMMIT: u16 = 0x0002;
pub const MORE_RESULTS: u16 = 0x0008;

/// Server status flags that pass through to clients: transaction state, index use,
/// NO_BACKSLASH_ESCAPES, slow query and read-only transaction. Not SESSION_STATE_CHANGED
/// (clients would look for session tracking data sluice does not forward) nor cursor flags.
pub const PASSED_STATUS: u16 = 0x0001 | 0x0002 | 0x0010 | 0x0020 | 0x0200 | 0x0800 | 0x2000;

/// An error as the client sees it: MySQL error code, SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyError {
    pub code: u16,
    pub state: String,
    pub message: String,
}

impl MyError {
    pub fn new(code: u16, state: &str, message: impl Into<String>) -> Self {
        MyError {
            code,
            state: state.to_string(),
            message: message.into(),
        }
    }

    /// 1045: access denied.
    pub fn access_denied(user: &str, tls: bool) -> Self {
        let using = if tls { "YES" } else { "NO" };
        MyError::new(
            1045,
            "28000",
            format!("Access denied for user '{user}' (using password: {using})"),
        )
    }
}

/// Maps a backend error: MySQL servers' own errors pass through unchanged; others get the
/// closest MySQL code.
impl From<&backends::BackendError> for MyError {
    fn from(e: &backends::BackendError) -> Self {
        use backends::BackendError as B;
        match e {
            B::MySql {
                code,
                sqlstate,
                message,
            } => MyError::new(*code, sqlstate, message.clone()),
            B::Unavailable(_) => MyError::new(2013, "08S01", e.to_string()),
            B::Canceled => MyError::new(1317, "70100", "Query execution was interrupted"),
            B::Statement { sqlstate, message } => {
                MyError::new(pg_code(sqlstate), sqlstate, message.clone())
            }
            B::Server { sqlstate, message } => {
                MyError::new(pg_code(sqlstate), sqlstate, message.clone())
            }
        }
    }
}

impl From<&crate::access::Denial> for MyError {
    fn from(d: &crate::access::Denial) -> Self {
        metrics::counter!(crate::metrics::POLICY_DENIALS, "protocol" => "mysql").increment(1);
        MyError::new(1142, "42000", d.message())
    }
}

impl From<&backends::pool::CheckoutError> for MyError {
    fn from(e: &backends::pool::CheckoutError) -> Self {
        use backends::pool::CheckoutError as C;
        match e {
            C::Timeout(d) => MyError::new(
                1040,
                "08004",
                format!(
                    "Too many connections: no server connection became free within {:.1}s",
                    d.as_secs_f64()
                ),
            ),
            C::Unavailable(e) => MyError::new(2013, "08S01", e.to_string()),
        }
    }
}

/// A MySQL error code for a SQLSTATE reported by a non-MySQL backend.
fn pg_code(sqlstate: &str) -> u16 {
    match sqlstate {
        "42601" | "42000" => 1064,
        "42P01" => 1146,
        "42703" => 1054,
        "23505" => 1062,
        "23502" => 1048,
        "23503" => 1452,
        "22012" => 1365,
        "40001" | "40P01" => 1213,
        "57014" => 1317,
        "3D000" => 1049,
        _ => 1105,
    }
}

/// What an OK packet reports.
#[derive(Debug, Default, Clone)]
pub struct OkInfo {
    pub affected: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: String,
}

pub fn ok<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Packets<S>, ok: &OkInfo) {
    p.rows += ok.affected;
    let mark = p.begin();
    let buf = p.buf();
    buf.put_u8(0x00);
    put_lenenc_int(buf, ok.affected);
    put_lenenc_int(buf, ok.last_insert_id);
    buf.put_u16_le(ok.status);
    buf.put_u16_le(ok.warnings);
    // Servers send the info text length-encoded, and clients read it that way.
    if !ok.info.is_empty() {
        put_lenenc_bytes(buf, ok.info.as_bytes());
    }
    p.finish(mark);
}

pub fn err<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Packets<S>, e: &MyError) {
    let mark = p.begin();
    let buf = p.buf();
    buf.put_u8(0xFF);
    buf.put_u16_le(e.code);
    buf.put_u8(b'#');
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    if e.state.len() == 5 {
        state.copy_from_slice(e.state.as_bytes());
    }
    buf.extend_from_slice(&state);
    buf.extend_from_slice(e.message.as_bytes());
    p.finish(mark);
}

pub fn eof<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Packets<S>, warnings: u16, status: u16) {
    let mark = p.begin();
    let buf = p.buf();
    buf.put_u8(0xFE);
    buf.put_u16_le(warnings);
    buf.put_u16_le(status);
    p.finish(mark);
}

/// Column count, the definitions, and the EOF that ends them.
pub fn columns<S: AsyncRead + AsyncWrite + Unpin>(
    p: &mut Packets<S>,
    cols: &[Column],
    status: u16,
) {
    let mark = p.begin();
    put_lenenc_int(p.buf(), cols.len() as u64);
    p.finish(mark);
    definitions(p, cols, status);
}

/// Column (or parameter) definitions followed by EOF; nothing for an empty list.
pub fn definitions<S: AsyncRead + AsyncWrite + Unpin>(
    p: &mut Packets<S>,
    cols: &[Column],
    status: u16,
) {
    if cols.is_empty() {
        return;
    }
    for col in cols {
        let mark = p.begin();
        put_definition(p.buf(), col);
        p.finish(mark);
    }
    eof(p, 0, status);
}

/// A Protocol::ColumnDefinition41 payload, with the server's metadata as it came.
pub fn put_definition(buf: &mut BytesMut, col: &Column) {
    put_lenenc_bytes(buf, b"def");
    put_lenenc_bytes(buf, col.schema_ref());
    put_lenenc_bytes(buf, col.table_ref());
    put_lenenc_bytes(buf, col.org_table_ref());
    put_lenenc_bytes(buf, col.name_ref());
    put_lenenc_bytes(buf, col.org_name_ref());
    buf.put_u8(0x0c);
    buf.put_u16_le(col.character_set());
    buf.put_u32_le(col.column_length());
    buf.put_u8(col.column_type() as u8);
    buf.put_u16_le(col.flags().bits());
    buf.put_u8(col.decimals());
    buf.put_u16(0);
}

/// A text-protocol row: each value a length-encoded string, NULL as 0xFB.
pub fn text_row<S: AsyncRead + AsyncWrite + Unpin>(p: &mut Packets<S>, values: &[Value]) {
    p.rows += 1;
    let mark = p.begin();
    let buf = p.buf();
    for v in values {
        match v {
            Value::NULL => buf.put_u8(0xFB),
            Value::Bytes(b) => put_lenenc_bytes(buf, b),
            other => put_lenenc_bytes(buf, other.as_sql(true).trim_matches('\'').as_bytes()),
        }
    }
    p.finish(mark);
}

/// A binary-protocol row: header, NULL bitmap (offset 2), then each value in the width its
/// column type has on the wire.
pub fn binary_row<S: AsyncRead + AsyncWrite + Unpin>(
    p: &mut Packets<S>,
    cols: &[Column],
    values: &[Value],
) {
    p.rows += 1;
    let mark = p.begin();
    let buf = p.buf();
    buf.put_u8(0x00);
    let bitmap_at = buf.len();
    buf.put_bytes(0, (values.len() + 7 + 2) / 8);
    for (i, v) in values.iter().enumerate() {
        if matches!(v, Value::NULL) {
            let bit = i + 2;
            buf[bitmap_at + bit / 8] |= 1 << (bit % 8);
        }
    }
    for (col, v) in cols.iter().zip(values) {
        put_binary_value(buf, col.column_type(), v);
    }
    p.finish(mark);
}

fn put_binary_value(buf: &mut BytesMut, ty: ColumnType, v: &Value) {
    let int = match v {
        Value::Int(i) => Some(*i as u64),
        Value::UInt(u) => Some(*u),
        _ => None,
    };
    if let Some(n) = int {
        match ty {
            ColumnType::MYSQL_TYPE_TINY => return buf.put_u8(n as u8),
            ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR => {
                return buf.put_u16_le(n as u16)
            }
            ColumnType::MYSQL_TYPE_LONG | ColumnType::MYSQL_TYPE_INT24 => {
                return buf.put_u32_le(n as u32)
            }
            ColumnType::MYSQL_TYPE_LONGLONG => return buf.put_u64_le(n),
            _ => {}
        }
    }
    match (ty, v) {
        (ColumnType::MYSQL_TYPE_FLOAT, Value::Double(d)) => buf.put_f32_le(*d as f32),
        (ColumnType::MYSQL_TYPE_DOUBLE, Value::Float(f)) => buf.put_f64_le(*f as f64),
        (_, Value::NULL) => {}
        _ => {
            let mut out = Vec::with_capacity(v.bin_len() as usize);
            v.serialize(&mut out);
            buf.extend_from_slice(&out);
        }
    }
}
