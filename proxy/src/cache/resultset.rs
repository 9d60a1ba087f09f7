//! A compact binary form of a neutral [`ResultSet`], for answers cached on paths that
//! hand out rows from a result (the extended protocol on SQLite and MariaDB routes).
//! Floats keep their exact bits.

use backends::result::{Column, ColumnType, CommandKind, ResultSet, Value};
use bytes::{Buf, BufMut, Bytes, BytesMut};

const TYPES: [ColumnType; 10] = [
    ColumnType::Bool,
    ColumnType::Int8,
    ColumnType::Float8,
    ColumnType::Numeric,
    ColumnType::Text,
    ColumnType::Bytea,
    ColumnType::Date,
    ColumnType::Time,
    ColumnType::Timestamp,
    ColumnType::Json,
];

fn type_code(t: ColumnType) -> u8 {
    TYPES.iter().position(|x| *x == t).unwrap_or(4) as u8
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

pub fn encode(rs: &ResultSet) -> Bytes {
    let mut out = BytesMut::new();
    match &rs.command {
        CommandKind::Select => out.put_u8(0),
        CommandKind::Insert => out.put_u8(1),
        CommandKind::Update => out.put_u8(2),
        CommandKind::Delete => out.put_u8(3),
        CommandKind::Other(tag) => {
            out.put_u8(4);
            put_bytes(&mut out, tag.as_bytes());
        }
    }
    out.put_u64(rs.affected);
    out.put_u32(rs.columns.len() as u32);
    for c in &rs.columns {
        put_bytes(&mut out, c.name.as_bytes());
        out.put_u8(c.declared.map_or(255, type_code));
        out.put_u8(type_code(c.ty));
    }
    out.put_u32(rs.rows.len() as u32);
    for row in &rs.rows {
        out.put_u32(row.len() as u32);
        for v in row {
            match v {
                Value::Null => out.put_u8(0),
                Value::Bool(b) => {
                    out.put_u8(1);
                    out.put_u8(u8::from(*b));
                }
                Value::Int(i) => {
                    out.put_u8(2);
                    out.put_i64(*i);
                }
                Value::Float(f) => {
                    out.put_u8(3);
                    out.put_u64(f.to_bits());
                }
                Value::Text(t) => {
                    out.put_u8(4);
                    put_bytes(&mut out, t.as_bytes());
                }
                Value::Bytes(b) => {
                    out.put_u8(5);
                    put_bytes(&mut out, b);
                }
            }
        }
    }
    out.freeze()
}

pub fn decode(mut b: &[u8]) -> Option<ResultSet> {
    fn bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        if b.remaining() < 4 {
            return None;
        }
        let n = b.get_u32() as usize;
        let (head, tail) = (b.get(..n)?, b.get(n..)?);
        *b = tail;
        Some(head)
    }
    fn text(b: &mut &[u8]) -> Option<String> {
        String::from_utf8(bytes(b)?.to_vec()).ok()
    }
    fn need(b: &[u8], n: usize) -> Option<()> {
        (b.remaining() >= n).then_some(())
    }
    need(b, 1)?;
    let command = match b.get_u8() {
        0 => CommandKind::Select,
        1 => CommandKind::Insert,
        2 => CommandKind::Update,
        3 => CommandKind::Delete,
        4 => CommandKind::Other(text(&mut b)?),
        _ => return None,
    };
    need(b, 12)?;
    let affected = b.get_u64();
    let ncols = b.get_u32() as usize;
    let mut columns = Vec::with_capacity(ncols.min(4096));
    for _ in 0..ncols {
        let name = text(&mut b)?;
        need(b, 2)?;
        let declared = match b.get_u8() {
            255 => None,
            t => Some(*TYPES.get(t as usize)?),
        };
        let ty = *TYPES.get(b.get_u8() as usize)?;
        columns.push(Column { name, declared, ty });
    }
    need(b, 4)?;
    let nrows = b.get_u32() as usize;
    let mut rows = Vec::with_capacity(nrows.min(65536));
    for _ in 0..nrows {
        need(b, 4)?;
        let n = b.get_u32() as usize;
        let mut row = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            need(b, 1)?;
            row.push(match b.get_u8() {
                0 => Value::Null,
                1 => {
                    need(b, 1)?;
                    Value::Bool(b.get_u8() != 0)
                }
                2 => {
                    need(b, 8)?;
                    Value::Int(b.get_i64())
                }
                3 => {
                    need(b, 8)?;
                    Value::Float(f64::from_bits(b.get_u64()))
                }
                4 => Value::Text(text(&mut b)?),
                5 => Value::Bytes(bytes(&mut b)?.to_vec()),
                _ => return None,
            });
        }
        rows.push(row);
    }
    b.is_empty().then_some(ResultSet {
        columns,
        rows,
        command,
        affected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_sets_round_trip_exactly() {
        let rs = ResultSet {
            columns: vec![
                Column {
                    name: "a".into(),
                    declared: Some(ColumnType::Float8),
                    ty: ColumnType::Float8,
                },
                Column {
                    name: "é".into(),
                    declared: None,
                    ty: ColumnType::Json,
                },
            ],
            rows: vec![
                vec![Value::Float(0.1 + 0.2), Value::Text("x".into())],
                vec![Value::Float(f64::NAN), Value::Null],
                vec![Value::Int(-7), Value::Bytes(vec![0, 255])],
                vec![Value::Bool(true), Value::Float(f64::NEG_INFINITY)],
            ],
            command: CommandKind::Other("SHOW".into()),
            affected: 3,
        };
        let back = decode(&encode(&rs)).unwrap();
        assert_eq!(back.columns, rs.columns);
        assert_eq!(back.command, rs.command);
        assert_eq!(format!("{:?}", back.rows), format!("{:?}", rs.rows));
        let Value::Float(f) = back.rows[0][0] else {
            panic!()
        };
        assert_eq!(f.to_bits(), (0.1f64 + 0.2).to_bits());
        // truncated or trailing input is refused
        let bytes = encode(&rs);
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(&[&bytes[..], &[0]].concat()).is_none());
    }
}
