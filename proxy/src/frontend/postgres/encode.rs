//! Neutral results to PostgreSQL messages, and Bind parameters to neutral values, following
//! the type mapping in `backends::result`.

use backends::postgres::wire::unhex;
use backends::result::{Column, ColumnType, Value};
use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};

use super::error::PgError;

pub const OID_BOOL: u32 = 16;
pub const OID_BYTEA: u32 = 17;
pub const OID_INT8: u32 = 20;
pub const OID_INT2: u32 = 21;
pub const OID_INT4: u32 = 23;
pub const OID_TEXT: u32 = 25;
pub const OID_FLOAT4: u32 = 700;
pub const OID_FLOAT8: u32 = 701;
pub const OID_VARCHAR: u32 = 1043;
pub const OID_JSON: u32 = 114;
pub const OID_DATE: u32 = 1082;
pub const OID_TIME: u32 = 1083;
pub const OID_TIMESTAMP: u32 = 1114;
pub const OID_NUMERIC: u32 = 1700;

pub fn oid_of(ty: ColumnType) -> u32 {
    match ty {
        ColumnType::Bool => OID_BOOL,
        ColumnType::Int8 => OID_INT8,
        ColumnType::Float8 => OID_FLOAT8,
        ColumnType::Text => OID_TEXT,
        ColumnType::Bytea => OID_BYTEA,
        ColumnType::Numeric => OID_NUMERIC,
        ColumnType::Date => OID_DATE,
        ColumnType::Time => OID_TIME,
        ColumnType::Timestamp => OID_TIMESTAMP,
        ColumnType::Json => OID_JSON,
    }
}

fn type_size(ty: ColumnType) -> i16 {
    match ty {
        ColumnType::Bool => 1,
        ColumnType::Date => 4,
        ColumnType::Int8 | ColumnType::Float8 | ColumnType::Time | ColumnType::Timestamp => 8,
        ColumnType::Text | ColumnType::Bytea | ColumnType::Numeric | ColumnType::Json => -1,
    }
}

/// Result format codes as Bind gives them: none (all text), one (for all), or one each.
pub fn format_for(formats: &[i16], column: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(column).copied().unwrap_or(0),
    }
}

/// Checks result format codes against a column count.
pub fn check_formats(formats: &[i16], columns: usize) -> Result<(), PgError> {
    if formats.iter().any(|f| *f != 0 && *f != 1) {
        return Err(PgError::error("22023", "unsupported format code"));
    }
    if formats.len() > 1 && formats.len() != columns {
        return Err(PgError::protocol(format!(
            "bind message has {} result formats but query has {columns} columns",
            formats.len()
        )));
    }
    Ok(())
}

pub fn row_description(
    columns: &[Column],
    types: &[ColumnType],
    formats: &[i16],
) -> RowDescription {
    let fields = columns
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (c, ty))| {
            FieldDescription::new(
                c.name.clone(),
                0,
                0,
                oid_of(*ty),
                type_size(*ty),
                -1,
                format_for(formats, i),
            )
        })
        .collect();
    RowDescription::new(fields)
}

/// Encodes one row in the given column types and formats.
pub fn data_row(row: &[Value], types: &[ColumnType], formats: &[i16]) -> Result<DataRow, PgError> {
    let mut data = BytesMut::with_capacity(row.len() * 16);
    for (i, (value, ty)) in row.iter().zip(types).enumerate() {
        if matches!(value, Value::Null) {
            data.put_i32(-1);
            continue;
        }
        let start = data.len();
        data.put_i32(0);
        if format_for(formats, i) == 1 {
            put_binary(&mut data, value, *ty)?;
        } else {
            put_text(&mut data, value, *ty);
        }
        let len = (data.len() - start - 4) as i32;
        data[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(DataRow::new(data, row.len() as i16))
}

fn put_text(out: &mut BytesMut, value: &Value, ty: ColumnType) {
    match (value, ty) {
        (Value::Int(i), ColumnType::Bool) => out.put_slice(if *i != 0 { b"t" } else { b"f" }),
        (Value::Bool(b), _) => out.put_slice(if *b { b"t" } else { b"f" }),
        (Value::Int(i), _) => out.put_slice(i.to_string().as_bytes()),
        (Value::Float(f), _) => out.put_slice(float_text(*f).as_bytes()),
        (Value::Text(s), ColumnType::Bytea) => put_hex(out, s.as_bytes()),
        (Value::Text(s), _) => out.put_slice(s.as_bytes()),
        (Value::Bytes(b), ColumnType::Text) => {
            out.put_slice(&String::from_utf8_lossy(b).into_owned().into_bytes())
        }
        (Value::Bytes(b), _) => put_hex(out, b),
        (Value::Null, _) => {}
    }
}

fn put_hex(out: &mut BytesMut, bytes: &[u8]) {
    out.put_slice(b"\\x");
    out.put_slice(crate::auth::hex_encode(bytes).as_bytes());
}

fn mismatch(value: &Value, ty: ColumnType) -> PgError {
    PgError::error(
        "22P02",
        format!(
            "value {value:?} cannot be sent in binary as {}",
            type_name(ty)
        ),
    )
}

fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "boolean",
        ColumnType::Int8 => "bigint",
        ColumnType::Float8 => "double precision",
        ColumnType::Text => "text",
        ColumnType::Bytea => "bytea",
        ColumnType::Numeric => "numeric",
        ColumnType::Date => "date",
        ColumnType::Time => "time",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Json => "json",
    }
}

fn put_binary(out: &mut BytesMut, value: &Value, ty: ColumnType) -> Result<(), PgError> {
    match ty {
        ColumnType::Bool => match value {
            Value::Bool(b) => out.put_u8(*b as u8),
            Value::Int(i) => out.put_u8((*i != 0) as u8),
            other => return Err(mismatch(other, ty)),
        },
        ColumnType::Int8 => match value {
            Value::Int(i) => out.put_i64(*i),
            Value::Bool(b) => out.put_i64(*b as i64),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => out.put_i64(*f as i64),
            Value::Text(s) => out.put_i64(s.trim().parse().map_err(|_| mismatch(value, ty))?),
            other => return Err(mismatch(other, ty)),
        },
        ColumnType::Float8 => match value {
            Value::Float(f) => out.put_f64(*f),
            Value::Int(i) => out.put_f64(*i as f64),
            Value::Text(s) => out.put_f64(s.trim().parse().map_err(|_| mismatch(value, ty))?),
            other => return Err(mismatch(other, ty)),
        },
        ColumnType::Text | ColumnType::Json => put_text(out, value, ty),
        ColumnType::Bytea => match value {
            Value::Bytes(b) => out.put_slice(b),
            Value::Text(s) => out.put_slice(s.as_bytes()),
            other => return Err(mismatch(other, ty)),
        },
        ColumnType::Numeric => {
            let text = match value {
                Value::Int(i) => i.to_string(),
                Value::Text(s) => s.clone(),
                other => return Err(mismatch(other, ty)),
            };
            put_numeric(out, &text).ok_or_else(|| mismatch(value, ty))?;
        }
        ColumnType::Date | ColumnType::Time | ColumnType::Timestamp => {
            let Value::Text(text) = value else {
                return Err(mismatch(value, ty));
            };
            let out_of_range = || {
                PgError::error(
                    "22008",
                    format!("{} value out of range: \"{text}\"", type_name(ty)),
                )
            };
            match ty {
                ColumnType::Date => out.put_i32(
                    parse_date(text)
                        .and_then(|d| i32::try_from(d).ok())
                        .ok_or_else(out_of_range)?,
                ),
                ColumnType::Time => out.put_i64(parse_time(text).ok_or_else(out_of_range)?),
                _ => {
                    let (date, time) = text.split_once(' ').ok_or_else(out_of_range)?;
                    let days = parse_date(date).ok_or_else(out_of_range)?;
                    let micros = parse_time(time).ok_or_else(out_of_range)?;
                    out.put_i64(days * 86_400_000_000 + micros);
                }
            }
        }
    }
    Ok(())
}

/// Days from 2000-01-01 (PostgreSQL's epoch) to a `YYYY-MM-DD` date.
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1 {
        return None;
    }
    // Days from civil (proleptic Gregorian), shifted to the 2000-01-01 epoch.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468 - 10_957)
}

/// Microseconds since midnight of `HH:MM:SS[.ffffff]`.
fn parse_time(text: &str) -> Option<i64> {
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: i64 = parts.next()?.parse().ok()?;
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&s) {
        return None;
    }
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{frac:0<6}").parse().ok()?;
    Some(((h * 60 + m) * 60 + s) * 1_000_000 + micros)
}

/// PostgreSQL's binary numeric: base-10000 digits with a weight, a sign and a scale.
fn put_numeric(out: &mut BytesMut, text: &str) -> Option<()> {
    let text = text.trim();
    if text == "NaN" {
        out.put_slice(&[0, 0, 0, 0, 0xC0, 0, 0, 0]);
        return Some(());
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let group = |s: &str| {
        s.bytes()
            .fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0'))
    };
    let int = int.trim_start_matches('0');
    let lead = int.len() % 4;
    let mut groups: Vec<i16> = Vec::new();
    if lead > 0 {
        groups.push(group(&int[..lead]));
    }
    groups.extend(
        int.as_bytes()[lead..]
            .chunks(4)
            .map(|c| group(std::str::from_utf8(c).unwrap_or("0"))),
    );
    let mut weight = groups.len() as i16 - 1;
    let padded = format!("{frac:0<width$}", width = frac.len().div_ceil(4) * 4);
    groups.extend(
        padded
            .as_bytes()
            .chunks(4)
            .map(|c| group(std::str::from_utf8(c).unwrap_or("0"))),
    );
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(sign);
    out.put_i16(i16::try_from(frac.len()).ok()?);
    for g in groups {
        out.put_i16(g);
    }
    Some(())
}

/// PostgreSQL's float8 output: shortest round-trip digits, exponent outside 1e-4..1e15.
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..15).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// Decodes one Bind parameter given its declared type (0 = unspecified) and format.
pub fn decode_param(raw: Option<&[u8]>, oid: u32, format: i16) -> Result<Value, PgError> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    if format == 1 {
        return decode_binary(raw, oid);
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| PgError::error("22021", "parameter is not valid UTF-8"))?;
    let bad = |t: &str| {
        PgError::error(
            "22P02",
            format!("invalid input syntax for type {t}: \"{text}\""),
        )
    };
    Ok(match oid {
        OID_BOOL => match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => Value::Bool(true),
            "f" | "false" | "n" | "no" | "off" | "0" => Value::Bool(false),
            _ => return Err(bad("boolean")),
        },
        OID_INT2 | OID_INT4 | OID_INT8 => {
            Value::Int(text.trim().parse().map_err(|_| bad("bigint"))?)
        }
        OID_FLOAT4 | OID_FLOAT8 => {
            Value::Float(text.trim().parse().map_err(|_| bad("double precision"))?)
        }
        OID_BYTEA => match text.strip_prefix("\\x") {
            Some(hex) => Value::Bytes(unhex(hex).ok_or_else(|| bad("bytea"))?),
            None => Value::Bytes(raw.to_vec()),
        },
        0 => untyped_text(text),
        _ => Value::Text(text.to_string()),
    })
}

/// An untyped text parameter becomes a number only when it is exactly a number's canonical
/// text, so `'0123'` stays text while `'123'` can compare with an INTEGER column.
fn untyped_text(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        if i.to_string() == text {
            return Value::Int(i);
        }
    }
    Value::Text(text.to_string())
}

fn decode_binary(raw: &[u8], oid: u32) -> Result<Value, PgError> {
    let bad = || {
        PgError::error(
            "22P03",
            format!("incorrect binary data format for type oid {oid}"),
        )
    };
    let fixed = |n: usize| if raw.len() == n { Ok(raw) } else { Err(bad()) };
    Ok(match oid {
        OID_BOOL => Value::Bool(fixed(1)?[0] != 0),
        OID_INT2 => Value::Int(i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| bad())?).into()),
        OID_INT4 => Value::Int(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?).into()),
        OID_INT8 => Value::Int(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?)),
        OID_FLOAT4 => {
            Value::Float(f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?).into())
        }
        OID_FLOAT8 => Value::Float(f64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?)),
        OID_BYTEA => Value::Bytes(raw.to_vec()),
        0 | OID_TEXT | OID_VARCHAR => {
            Value::Text(String::from_utf8(raw.to_vec()).map_err(|_| bad())?)
        }
        _ => {
            return Err(PgError::error(
                "0A000",
                format!("binary parameters of type oid {oid} are not supported on this route"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(float_text(0.1), "0.1");
        assert_eq!(float_text(1.5), "1.5");
        assert_eq!(float_text(1e21), "1e+21");
        assert_eq!(float_text(1.5e-7), "1.5e-07");
        assert_eq!(float_text(f64::INFINITY), "Infinity");
        assert_eq!(float_text(123456789012345.0), "123456789012345");
    }

    #[test]
    fn rows_encode_nulls_text_and_binary() {
        let types = [ColumnType::Int8, ColumnType::Text, ColumnType::Bool];
        let row = [Value::Int(258), Value::Null, Value::Int(1)];
        let text = data_row(&row, &types, &[]).unwrap();
        assert_eq!(&text.data[..], b"\0\0\0\x03258\xff\xff\xff\xff\0\0\0\x01t");
        let bin = data_row(&row, &types, &[1]).unwrap();
        assert_eq!(
            &bin.data[..],
            b"\0\0\0\x08\0\0\0\0\0\0\x01\x02\xff\xff\xff\xff\0\0\0\x01\x01"
        );
        assert_eq!(text.field_count, 3);
    }

    #[test]
    fn dates_times_and_numerics_encode_in_binary() {
        let bin = |v: &str, ty| {
            let mut out = BytesMut::new();
            put_binary(&mut out, &Value::Text(v.into()), ty).map(|()| out.to_vec())
        };
        assert_eq!(
            bin("2000-01-01", ColumnType::Date).unwrap(),
            0i32.to_be_bytes()
        );
        assert_eq!(
            bin("2024-02-29", ColumnType::Date).unwrap(),
            8825i32.to_be_bytes()
        );
        assert_eq!(
            bin("1999-12-31", ColumnType::Date).unwrap(),
            (-1i32).to_be_bytes()
        );
        assert_eq!(
            bin("01:00:00.5", ColumnType::Time).unwrap(),
            3_600_500_000i64.to_be_bytes()
        );
        assert_eq!(
            bin("2000-01-02 00:00:01", ColumnType::Timestamp).unwrap(),
            86_401_000_000i64.to_be_bytes()
        );
        assert_eq!(
            bin("0000-00-00", ColumnType::Date).unwrap_err().code,
            "22008"
        );
        // 12345678.9012 -> digits 1234 5678 9012, weight 1, scale 4
        assert_eq!(
            bin("-12345678.9012", ColumnType::Numeric).unwrap(),
            [0, 3, 0, 1, 0x40, 0, 0, 4, 0x04, 0xD2, 0x16, 0x2E, 0x23, 0x34]
        );
        // 0.05 -> digit 500 at weight -1, scale 2
        assert_eq!(
            bin("0.05", ColumnType::Numeric).unwrap(),
            [0, 1, 0xFF, 0xFF, 0, 0, 0, 2, 0x01, 0xF4]
        );
        assert_eq!(
            bin("0.00", ColumnType::Numeric).unwrap(),
            [0, 0, 0, 0, 0, 0, 0, 2]
        );
    }

    #[test]
    fn params_decode_by_type_and_format() {
        assert_eq!(
            decode_param(Some(b"42"), OID_INT4, 0).unwrap(),
            Value::Int(42)
        );
        assert_eq!(
            decode_param(Some(&42i32.to_be_bytes()), OID_INT4, 1).unwrap(),
            Value::Int(42)
        );
        assert_eq!(
            decode_param(Some(b"\\x0aff"), OID_BYTEA, 0).unwrap(),
            Value::Bytes(vec![10, 255])
        );
        assert_eq!(decode_param(None, OID_INT8, 0).unwrap(), Value::Null);
        assert_eq!(
            decode_param(Some(b"0123"), 0, 0).unwrap(),
            Value::Text("0123".into())
        );
        assert_eq!(decode_param(Some(b"123"), 0, 0).unwrap(), Value::Int(123));
        assert_eq!(
            decode_param(Some(b"x"), OID_INT8, 0).unwrap_err().code,
            "22P02"
        );
        assert_eq!(
            decode_param(Some(b"abc"), OID_INT8, 1).unwrap_err().code,
            "22P03"
        );
    }
}
