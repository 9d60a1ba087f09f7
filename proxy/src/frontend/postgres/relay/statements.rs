//! Prepared statements in transaction pooling mode. A client's statements belong to the
//! client: each is stored with its Parse body and given a server-side name derived from
//! that body, so identical statements from different clients share one server statement,
//! and any server connection can be given it on demand.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use ring::digest;

use backends::postgres::wire::{put_cstr, put_message};

/// One statement as the client defined it.
#[derive(Debug)]
pub struct StatementDef {
    /// Parse body after the statement name: query, parameter count and type OIDs.
    pub body: Bytes,
    /// Digest of `body`.
    pub digest: [u8; 16],
    /// Name on server connections: `sluice_` and the digest in hex.
    pub server_name: Arc<str>,
}

impl StatementDef {
    pub fn new(body: Bytes) -> Arc<StatementDef> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let d = digest::digest(&digest::SHA256, &body);
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&d.as_ref()[..16]);
        let mut name = String::with_capacity(7 + 32);
        name.push_str("sluice_");
        for b in digest {
            name.push(HEX[usize::from(b >> 4)] as char);
            name.push(HEX[usize::from(b & 15)] as char);
        }
        Arc::new(StatementDef {
            body,
            digest,
            server_name: name.into(),
        })
    }

    /// A Parse message creating this statement under `name` on a server.
    pub fn parse_message(&self, out: &mut BytesMut, name: &[u8]) {
        put_message(out, b'P', |b| {
            put_cstr(b, name);
            b.put_slice(&self.body);
        });
    }
}

/// A client's statements: named ones and the unnamed one.
#[derive(Default)]
pub struct ClientStatements {
    pub named: HashMap<Vec<u8>, Arc<StatementDef>>,
    pub unnamed: Option<Arc<StatementDef>>,
}

/// Appends a Bind or Describe that names `server_name` instead of the client's
/// statement: `prefix` is what precedes the name (the portal name, or the 'S' byte) and
/// `rest` what follows it.
pub fn put_renamed(out: &mut BytesMut, tag: u8, prefix: &[u8], server_name: &str, rest: &[u8]) {
    put_message(out, tag, |b| {
        b.put_slice(prefix);
        put_cstr(b, server_name.as_bytes());
        b.put_slice(rest);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_statements_share_a_server_name() {
        let a = StatementDef::new(Bytes::from_static(b"select $1\0\0\x01\0\0\0\x17"));
        let b = StatementDef::new(Bytes::from_static(b"select $1\0\0\x01\0\0\0\x17"));
        let c = StatementDef::new(Bytes::from_static(b"select $1\0\0\x01\0\0\0\x19"));
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert_eq!(a.server_name.len(), "sluice_".len() + 32);
    }

    #[test]
    fn a_bind_is_renamed_with_its_tail_kept() {
        let mut out = BytesMut::new();
        put_renamed(&mut out, b'B', b"portal\0", "sluice_x", b"\0\0\0\0\0\0");
        assert_eq!(&out[..1], b"B");
        assert_eq!(&out[5..], b"portal\0sluice_x\0\0\0\0\0\0\0");
        let len = i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len, out.len() - 1);
    }
}
