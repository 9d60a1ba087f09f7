//! Neutral results from a PostgreSQL server, for clients of another protocol: a simple
//! query whose answers are collected as [`ResultSet`]s typed from the RowDescription.
//!
//! The session runs with `TimeZone = UTC` (see [`ServerConn::prepare_neutral`]) so that
//! `timestamptz` values become zone-less UTC timestamps.

use crate::result::{BatchOutcome, Column, ColumnType, ResultSet, Value};
use crate::BackendError;

use super::conn::{data_row_text, ServerConn};
use super::wire;

// Type OIDs, from pg_type.
const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const DATE: u32 = 1082;
const TIME: u32 = 1083;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const NUMERIC: u32 = 1700;
const JSONB: u32 = 3802;

/// The neutral type of a PostgreSQL type OID; types without a closer match are text.
pub fn neutral_type(oid: u32) -> ColumnType {
    match oid {
        BOOL => ColumnType::Bool,
        INT2 | INT4 | INT8 | OID => ColumnType::Int8,
        FLOAT4 | FLOAT8 => ColumnType::Float8,
        NUMERIC => ColumnType::Numeric,
        BYTEA => ColumnType::Bytea,
        DATE => ColumnType::Date,
        TIME => ColumnType::Time,
        TIMESTAMP | TIMESTAMPTZ => ColumnType::Timestamp,
        JSON | JSONB => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

/// One text value from the server as a neutral value of its column's type.
fn neutral_value(text: String, oid: u32) -> Value {
    match neutral_type(oid) {
        ColumnType::Bool => Value::Bool(text == "t"),
        ColumnType::Int8 => text.parse().map(Value::Int).unwrap_or(Value::Text(text)),
        ColumnType::Float8 => match text.as_str() {
            "NaN" => Value::Float(f64::NAN),
            "Infinity" => Value::Float(f64::INFINITY),
            "-Infinity" => Value::Float(f64::NEG_INFINITY),
            _ => text.parse().map(Value::Float).unwrap_or(Value::Text(text)),
        },
        ColumnType::Bytea => match text.strip_prefix("\\x").and_then(wire::unhex) {
            Some(bytes) => Value::Bytes(bytes),
            None => Value::Text(text),
        },
        ColumnType::Timestamp if oid == TIMESTAMPTZ => match text.strip_suffix("+00") {
            Some(utc) => Value::Text(utc.to_string()),
            None => Value::Text(text),
        },
        _ => Value::Text(text),
    }
}

/// Column names and type OIDs of a RowDescription body.
fn row_description(body: &[u8]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    if body.len() < 2 {
        return out;
    }
    let n = i16::from_be_bytes([body[0], body[1]]).max(0) as usize;
    let mut rest = &body[2..];
    for _ in 0..n {
        let Some((name, tail)) = wire::cstr(rest) else {
            break;
        };
        // table oid (4), attnum (2), type oid (4), size (2), typmod (4), format (2)
        if tail.len() < 18 {
            break;
        }
        let oid = u32::from_be_bytes([tail[6], tail[7], tail[8], tail[9]]);
        out.push((String::from_utf8_lossy(name).into_owned(), oid));
        rest = &tail[18..];
    }
    out
}

impl ServerConn {
    /// Readies a fresh session for neutral answers: UTC time zone, ISO dates.
    pub async fn prepare_neutral(&mut self) -> Result<(), BackendError> {
        self.simple_query("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
            .await
            .map(|_| ())
    }

    /// Runs `sql` (one or several statements) with the simple query protocol and collects
    /// each statement's answer. COPY is refused: its data has no neutral form.
    pub async fn neutral_batch(&mut self, sql: &str) -> BatchOutcome {
        match self.collect_batch(sql).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.broken = true;
                BatchOutcome {
                    results: Vec::new(),
                    error: Some(e),
                }
            }
        }
    }

    async fn collect_batch(&mut self, sql: &str) -> Result<BatchOutcome, BackendError> {
        let io = |e: std::io::Error| BackendError::Unavailable(format!("server connection: {e}"));
        wire::put_query(self.queue(), sql);
        self.flush().await.map_err(io)?;
        let mut results = Vec::new();
        let mut error = None;
        let mut columns: Vec<(String, u32)> = Vec::new();
        let mut rows: Vec<Vec<Value>> = Vec::new();
        loop {
            let frame = self.read_frame().await.map_err(io)?;
            match frame.tag() {
                b'T' => {
                    columns = row_description(frame.body());
                    rows.clear();
                }
                b'D' => {
                    let row = data_row_text(frame.body())
                        .into_iter()
                        .zip(&columns)
                        .map(|(v, (_, oid))| match v {
                            None => Value::Null,
                            Some(text) => neutral_value(text, *oid),
                        })
                        .collect();
                    rows.push(row);
                }
                b'C' => {
                    let tag = wire::cstr(frame.body())
                        .map(|(t, _)| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_default();
                    let cols = columns
                        .drain(..)
                        .map(|(name, oid)| Column::new(name, Some(neutral_type(oid))))
                        .collect();
                    results.push(ResultSet::from_tag(&tag, cols, std::mem::take(&mut rows)));
                }
                b'E' => error = Some(wire::server_error(frame.body())),
                b'G' => {
                    // COPY FROM STDIN: refuse it; the server answers with an error.
                    wire::put_message(self.queue(), b'f', |b| {
                        wire::put_cstr(b, b"COPY is not available to this client's protocol")
                    });
                    self.flush().await.map_err(io)?;
                }
                b'H' => {
                    // COPY TO STDOUT: its data is dropped; the statement counts as failed.
                    error.get_or_insert(BackendError::Server {
                        sqlstate: "0A000".into(),
                        message: "COPY is not available to this client's protocol".into(),
                    });
                }
                b'Z' => {
                    self.status = frame.body().first().copied().unwrap_or(b'I');
                    return Ok(BatchOutcome { results, error });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_type_of_their_column() {
        assert_eq!(neutral_value("t".into(), BOOL), Value::Bool(true));
        assert_eq!(neutral_value("-42".into(), INT4), Value::Int(-42));
        assert_eq!(neutral_value("1.5".into(), FLOAT8), Value::Float(1.5));
        assert_eq!(
            neutral_value("\\x00ff".into(), BYTEA),
            Value::Bytes(vec![0, 255])
        );
        assert_eq!(
            neutral_value("2024-01-01 10:00:00.5+00".into(), TIMESTAMPTZ),
            Value::Text("2024-01-01 10:00:00.5".into())
        );
        assert_eq!(
            neutral_value("12.50".into(), NUMERIC),
            Value::Text("12.50".into())
        );
        assert_eq!(neutral_type(JSONB), ColumnType::Json);
        assert_eq!(neutral_type(2950), ColumnType::Text);
    }
}
