//! Pure PostgreSQL frame codec: splits complete messages off a read buffer without
//! decoding them. A [`Frame`] keeps the exact bytes the client sent, so a relay can forward
//! them unchanged; typed views come from pgwire's message types on demand.

use bytes::{Buf, Bytes, BytesMut};
use pgwire::messages::startup::Startup;
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};

/// Largest startup-phase packet accepted (PostgreSQL uses the same bound).
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST_CODE: i32 = 80877103;
const GSSENC_REQUEST_CODE: i32 = 80877104;
const CANCEL_REQUEST_CODE: i32 = 80877102;

/// Why bytes from the client are not a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("invalid startup packet: {0}")]
    BadStartup(String),
    #[error("invalid {0} message: {1}")]
    Malformed(char, String),
}

/// A packet of the startup phase (these have no type byte).
#[derive(Debug, PartialEq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: Bytes },
    Startup(Startup),
}

pub use backends::postgres::wire::Frame;
use backends::postgres::wire::FrameError;

/// Typed views of a frame through pgwire's message types.
pub trait Decode {
    /// Decodes the body as the pgwire message type `M`.
    fn decode<M: Message>(&self) -> Result<M, CodecError>;
}

impl Decode for Frame {
    fn decode<M: Message>(&self) -> Result<M, CodecError> {
        let mut body = BytesMut::from(self.body());
        let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        M::decode_body(&mut body, self.raw().len() - 1, &ctx)
            .map_err(|e| CodecError::Malformed(self.tag() as char, e.to_string()))
    }
}

/// Splits one startup-phase packet off `buf`, or returns `None` until it is complete.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 || len as usize > MAX_STARTUP_PACKET {
        return Err(CodecError::BadLength(len.into()));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_i32();
    Ok(Some(match code {
        SSL_REQUEST_CODE if len == 8 => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE if len == 8 => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE if (12..=12 + 256).contains(&len) => StartupPacket::Cancel {
            pid: packet.get_i32(),
            secret: packet.freeze(),
        },
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            return Err(CodecError::BadLength(len as i64))
        }
        _ => StartupPacket::Startup(decode_startup(code, packet)?),
    }))
}

fn decode_startup(code: i32, mut body: BytesMut) -> Result<Startup, CodecError> {
    let major = (code >> 16) as u16;
    let minor = (code & 0xffff) as u16;
    if major != 3 {
        return Err(CodecError::BadStartup(format!(
            "unsupported frontend protocol {major}.{minor}: server supports 3.0"
        )));
    }
    let mut startup = Startup::default();
    startup.protocol_number_major = major;
    startup.protocol_number_minor = minor;
    loop {
        let key = cstring(&mut body)?;
        if key.is_empty() {
            break;
        }
        let value = cstring(&mut body)?;
        startup.parameters.insert(key, value);
    }
    Ok(startup)
}

fn cstring(buf: &mut BytesMut) -> Result<String, CodecError> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| CodecError::BadStartup("unterminated string".into()))?;
    let s = buf.split_to(end);
    buf.advance(1);
    String::from_utf8(s.to_vec()).map_err(|_| CodecError::BadStartup("invalid UTF-8".into()))
}

/// Splits one regular message off `buf`, or returns `None` until it is complete.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, CodecError> {
    backends::postgres::wire::split_frame(buf, max).map_err(|e| match e {
        FrameError::BadLength(n) => CodecError::BadLength(n),
        FrameError::TooLarge(n, max) => CodecError::TooLarge(n, max),
    })
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use pgwire::messages::extendedquery::{Execute, Parse};
    use pgwire::messages::simplequery::Query;

    use super::*;

    fn startup_bytes(params: &[(&str, &str)]) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i32(196608);
        for (k, v) in params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
        out
    }

    #[test]
    fn a_startup_packet_round_trips_its_parameters() {
        let mut buf = startup_bytes(&[("user", "alice"), ("database", "app")]);
        let Some(StartupPacket::Startup(s)) = split_startup(&mut buf).unwrap() else {
            panic!("not a startup packet")
        };
        assert_eq!(s.parameters["user"], "alice");
        assert_eq!(s.parameters["database"], "app");
        assert!(buf.is_empty());
    }

    #[test]
    fn an_ssl_request_leaves_pipelined_bytes_in_the_buffer() {
        let mut buf = BytesMut::new();
        buf.put_i32(8);
        buf.put_i32(SSL_REQUEST_CODE);
        buf.put_slice(b"Q\0\0\0");
        assert_eq!(
            split_startup(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn a_cancel_request_carries_pid_and_key() {
        let mut buf = BytesMut::new();
        buf.put_i32(16);
        buf.put_i32(CANCEL_REQUEST_CODE);
        buf.put_i32(42);
        buf.put_i32(7);
        let got = split_startup(&mut buf).unwrap().unwrap();
        assert_eq!(
            got,
            StartupPacket::Cancel {
                pid: 42,
                secret: Bytes::from_static(&[0, 0, 0, 7])
            }
        );
    }

    #[test]
    fn oversized_and_undersized_startup_lengths_are_errors() {
        let mut buf = BytesMut::new();
        buf.put_i32(1_000_000);
        assert!(split_startup(&mut buf).is_err());
        let mut buf = BytesMut::new();
        buf.put_i32(3);
        assert!(split_startup(&mut buf).is_err());
    }

    #[test]
    fn frames_split_only_when_complete_and_keep_their_bytes() {
        let mut encoded = BytesMut::new();
        Query::new("select 1".into()).encode(&mut encoded).unwrap();
        let mut buf = BytesMut::from(&encoded[..4]);
        assert_eq!(split_frame(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(&encoded[4..]);
        let frame = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag(), b'Q');
        assert_eq!(&frame.raw()[..], &encoded[..]);
        assert_eq!(frame.decode::<Query>().unwrap().query, "select 1");
    }

    #[test]
    fn extended_messages_decode_from_frames() {
        let mut buf = BytesMut::new();
        Parse::new(Some("s1".into()), "select $1".into(), vec![23])
            .encode(&mut buf)
            .unwrap();
        Execute::new(None, 10).encode(&mut buf).unwrap();
        let parse: Parse = split_frame(&mut buf, 1024)
            .unwrap()
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(parse.name.as_deref(), Some("s1"));
        assert_eq!(parse.type_oids, vec![23]);
        let exec: Execute = split_frame(&mut buf, 1024)
            .unwrap()
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(exec.max_rows, 10);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_buffered() {
        let mut buf = BytesMut::new();
        buf.put_u8(b'Q');
        buf.put_i32(1 << 30);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(CodecError::TooLarge((1 << 30) + 1, 1024))
        );
    }
}
