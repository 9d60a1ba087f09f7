//! MySQL packet framing: a 3-byte little-endian length and a sequence id before each
//! payload; payloads of 16 MiB - 1 and more continue in the next packet. Reads are bounded
//! by the configured maximum; writes build packets in place in one buffer.

use std::io;

use backends::stream::MaybeTls;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Largest payload one physical packet carries.
const MAX_CHUNK: usize = 0xFF_FFFF;

/// A client byte stream before or after the TLS upgrade.
pub type ClientStream<S> = MaybeTls<Replay<S>, TlsStream<Replay<S>>>;

/// A stream that yields some already-read bytes before reading on.
pub struct Replay<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("client closed the connection")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// A framed connection to one MySQL client.
pub struct Packets<S> {
    io: ClientStream<S>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Sequence id of the next packet sent.
    seq: u8,
    max_packet: usize,
    /// Rows sent and rows reported changed since the counter was last taken (for the
    /// audit log).
    pub rows: u64,
    /// Payloads of the packets sent while recording (for the read cache), each after its
    /// length; None when not recording or past the limit.
    recording: Option<BytesMut>,
    recording_limit: usize,
    /// `rows` when the recording started.
    recording_rows: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Packets<S> {
    pub fn new(io: S, max_packet: usize) -> Self {
        Packets {
            io: MaybeTls::Plain(Replay {
                prefix: Bytes::new(),
                inner: io,
            }),
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
            seq: 0,
            max_packet,
            rows: 0,
            recording: None,
            recording_limit: 0,
            recording_rows: 0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, MaybeTls::Tls(_))
    }

    /// Runs the TLS handshake on the plain stream. Clients send their TLS hello right
    /// behind the SSL request, so bytes already read go to the handshake first.
    pub async fn upgrade(self, acceptor: &TlsAcceptor) -> io::Result<Self> {
        let MaybeTls::Plain(mut plain) = self.io else {
            return Err(io::Error::other("TLS is already on"));
        };
        plain.prefix = self.rbuf.freeze();
        let tls = acceptor.accept(plain).await?;
        Ok(Packets {
            io: MaybeTls::Tls(Box::new(tls)),
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: self.wbuf,
            seq: self.seq,
            max_packet: self.max_packet,
            rows: 0,
            recording: None,
            recording_limit: 0,
            recording_rows: 0,
        })
    }

    /// Reads more bytes from the client; cancel-safe.
    pub async fn fill(&mut self) -> Result<(), ReadError> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(8 * 1024);
        }
        match self.io.read_buf(&mut self.rbuf).await? {
            0 => Err(ReadError::Closed),
            _ => Ok(()),
        }
    }

    /// Reads one logical packet (joining continuation packets) and returns its payload.
    /// The next packet sent continues its sequence.
    pub async fn read(&mut self) -> Result<Bytes, ReadError> {
        let mut joined: Option<BytesMut> = None;
        loop {
            while self.rbuf.len() < 4 {
                self.fill().await?;
            }
            let len = u32::from_le_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], 0]) as usize;
            let total = joined.as_ref().map_or(0, |j| j.len()) + len;
            if total > self.max_packet {
                return Err(ReadError::TooLarge(total));
            }
            while self.rbuf.len() < 4 + len {
                self.rbuf.reserve(4 + len - self.rbuf.len());
                self.fill().await?;
            }
            self.seq = self.rbuf[3].wrapping_add(1);
            self.rbuf.advance(4);
            let chunk = self.rbuf.split_to(len);
            if len < MAX_CHUNK {
                return Ok(match joined {
                    None => chunk.freeze(),
                    Some(mut j) => {
                        j.extend_from_slice(&chunk);
                        j.freeze()
                    }
                });
            }
            joined
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(&chunk);
        }
    }

    /// Starts the sequence of a new command's answer (or of the server greeting).
    pub fn reset_seq(&mut self) {
        self.seq = 0;
    }

    /// Begins a packet in the write buffer; pass the returned mark to [`Packets::finish`].
    pub fn begin(&mut self) -> usize {
        let mark = self.wbuf.len();
        self.wbuf.put_bytes(0, 4);
        mark
    }

    /// The write buffer, to append the payload of the packet begun last.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Starts recording the payloads of the packets sent, up to `limit` bytes.
    pub fn record(&mut self, limit: usize) {
        // the rows the answer counts come first
        let mut recording = BytesMut::new();
        recording.put_u64(0);
        self.recording = Some(recording);
        self.recording_limit = limit;
        self.recording_rows = self.rows;
    }

    /// Stops recording: what was sent, unless it passed the limit.
    pub fn recorded(&mut self) -> Option<Bytes> {
        let mut recording = self.recording.take()?;
        let rows = self.rows - self.recording_rows;
        recording[..8].copy_from_slice(&rows.to_be_bytes());
        Some(recording.freeze())
    }

    /// Sends the packets of a recording again (with this answer's sequence ids), and
    /// counts its rows as sent.
    pub fn replay(&mut self, recording: &[u8]) {
        let Some((rows, mut rest)) = recording.split_first_chunk::<8>() else {
            return;
        };
        self.rows += u64::from_be_bytes(*rows);
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(payload) = rest.get(4..4 + len) else {
                return;
            };
            self.send(payload);
            rest = &rest[4 + len..];
        }
    }

    /// Fills in the header of the packet begun at `mark`, splitting it when it is long.
    pub fn finish(&mut self, mark: usize) {
        let len = self.wbuf.len() - mark - 4;
        if let Some(rec) = self.recording.as_mut() {
            if rec.len() + 4 + len > self.recording_limit {
                self.recording = None;
            } else {
                rec.put_u32(len as u32);
                rec.extend_from_slice(&self.wbuf[mark + 4..]);
            }
        }
        if len < MAX_CHUNK {
            let header = (len as u32).to_le_bytes();
            self.wbuf[mark..mark + 3].copy_from_slice(&header[..3]);
            self.wbuf[mark + 3] = self.seq;
            self.seq = self.seq.wrapping_add(1);
            return;
        }
        let payload = self.wbuf.split_off(mark + 4);
        self.wbuf.truncate(mark);
        let mut rest = &payload[..];
        loop {
            let n = rest.len().min(MAX_CHUNK);
            let header = (n as u32).to_le_bytes();
            self.wbuf.extend_from_slice(&header[..3]);
            self.wbuf.put_u8(self.seq);
            self.seq = self.seq.wrapping_add(1);
            self.wbuf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < MAX_CHUNK {
                break;
            }
        }
    }

    /// Queues one packet with this payload.
    pub fn send(&mut self, payload: &[u8]) {
        let mark = self.begin();
        self.wbuf.extend_from_slice(payload);
        self.finish(mark);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await
    }

    /// Writes queued bytes once they pass a threshold, to bound memory on big results.
    pub async fn flush_if_large(&mut self) -> io::Result<()> {
        if self.wbuf.len() >= 64 * 1024 {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Flushes and closes the write side, ignoring a peer that is already gone.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(buf: &mut BytesMut, n: u64) {
    match n {
        0..=250 => buf.put_u8(n as u8),
        251..=0xFFFF => {
            buf.put_u8(0xFC);
            buf.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            buf.put_u8(0xFD);
            buf.put_uint_le(n, 3);
        }
        _ => {
            buf.put_u8(0xFE);
            buf.put_u64_le(n);
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    put_lenenc_int(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Reads a length-encoded integer from the front of `buf`.
pub fn get_lenenc_int(buf: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = buf.split_first()?;
    let (n, width) = match first {
        0..=250 => (first as u64, 0),
        0xFC => (0, 2),
        0xFD => (0, 3),
        0xFE => (0, 8),
        _ => return None,
    };
    if rest.len() < width {
        return None;
    }
    let value = if width == 0 {
        n
    } else {
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(&rest[..width]);
        u64::from_le_bytes(bytes)
    };
    *buf = &rest[width..];
    Some(value)
}

/// Reads a length-encoded string from the front of `buf`.
pub fn get_lenenc_bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(get_lenenc_int(buf)?).ok()?;
    if buf.len() < len {
        return None;
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_integers_round_trip() {
        for n in [
            0u64,
            250,
            251,
            65535,
            65536,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut buf = BytesMut::new();
            put_lenenc_int(&mut buf, n);
            let mut slice = &buf[..];
            assert_eq!(get_lenenc_int(&mut slice), Some(n));
            assert!(slice.is_empty());
        }
        let mut truncated: &[u8] = &[0xFC, 1];
        assert_eq!(get_lenenc_int(&mut truncated), None);
        let mut bad: &[u8] = &[0xFF];
        assert_eq!(get_lenenc_int(&mut bad), None);
    }
}
