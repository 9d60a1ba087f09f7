//! PostgreSQL message framing shared by both directions of the relay: splitting complete
//! messages off a buffer without decoding them, and the few field readers the relay needs.

use bytes::{BufMut, Bytes, BytesMut};

/// One complete regular message (type byte, length, body), as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// Everything after the type byte and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }

    /// The exact bytes of the message, header included.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// Why bytes are not a valid message stream.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
}

/// Splits one regular message off `buf`, or returns `None` until it is complete.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len.into()));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLarge(total, max));
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        raw: buf.split_to(total).freeze(),
    }))
}

/// Appends one message: `tag`, then a length patched in after `body` wrote its bytes.
pub fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// Splits a NUL-terminated string off the front of `buf`: `(string, rest)`.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// One field of an ErrorResponse body (`b'C'` SQLSTATE, `b'M'` message, `b'S'` severity).
pub fn error_field(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        let (value, tail) = cstr(tail).filter(|_| c != 0)?;
        if c == code {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = tail;
    }
    None
}

/// An ErrorResponse body as the server's statement error (SQLSTATE and message).
pub fn server_error(body: &[u8]) -> crate::BackendError {
    crate::BackendError::Server {
        sqlstate: error_field(body, b'C').unwrap_or_default(),
        message: error_field(body, b'M').unwrap_or_default(),
    }
}

/// Bytes from hex digits (bytea's `\x...` text form without its prefix).
pub fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Appends a simple Query message.
pub fn put_query(out: &mut BytesMut, sql: &str) {
    put_message(out, b'Q', |b| put_cstr(b, sql.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_split_only_when_complete() {
        let mut out = BytesMut::new();
        put_query(&mut out, "select 1");
        let whole = out.clone();
        let mut part = BytesMut::from(&whole[..6]);
        assert_eq!(split_frame(&mut part, 1024).unwrap(), None);
        part.extend_from_slice(&whole[6..]);
        let frame = split_frame(&mut part, 1024).unwrap().unwrap();
        assert_eq!(frame.tag(), b'Q');
        assert_eq!(frame.body(), b"select 1\0");
        assert!(part.is_empty());
    }

    #[test]
    fn lengths_below_four_and_above_the_limit_are_errors() {
        let mut bad = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(split_frame(&mut bad, 1024), Err(FrameError::BadLength(3)));
        let mut big = BytesMut::from(&[b'Q', 0, 1, 0, 0][..]);
        assert!(matches!(
            split_frame(&mut big, 1024),
            Err(FrameError::TooLarge(..))
        ));
    }

    #[test]
    fn error_responses_round_trip_their_fields() {
        let mut out = BytesMut::new();
        put_message(&mut out, b'E', |b| {
            for (code, value) in [(b'S', "ERROR"), (b'C', "42P01"), (b'M', "no such table")] {
                b.put_u8(code);
                put_cstr(b, value.as_bytes());
            }
            b.put_u8(0);
        });
        let frame = split_frame(&mut out, 1024).unwrap().unwrap();
        assert_eq!(error_field(frame.body(), b'C').as_deref(), Some("42P01"));
        assert_eq!(
            error_field(frame.body(), b'M').as_deref(),
            Some("no such table")
        );
    }
}
