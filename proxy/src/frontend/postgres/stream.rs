//! The client connection: a plain or TLS byte stream with read and write buffers, reading
//! whole frames and writing encoded messages.

use std::io;

use backends::stream::MaybeTls;
use bytes::BytesMut;
use pgwire::messages::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;

use super::codec::{self, CodecError, Frame, StartupPacket};

/// A client byte stream before or after the TLS upgrade.
pub type ClientStream<S> = MaybeTls<S, TlsStream<S>>;

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("client closed the connection")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// A framed connection to one client.
pub struct PgConn<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_message: usize,
    /// Writes of the buffer to the client so far (to tell whether bytes sent since a
    /// mark are still in the buffer).
    flushes: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PgConn<S> {
    pub fn new(io: S, max_message: usize) -> Self {
        PgConn {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
            max_message,
            flushes: 0,
        }
    }

    /// Bytes received but not yet consumed.
    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn buffered(&self) -> usize {
        self.rbuf.len()
    }

    /// Gives back the stream, dropping the buffers; callers check `buffered()` first.
    pub fn into_inner(self) -> S {
        self.io
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(8 * 1024);
        }
        match self.io.read_buf(&mut self.rbuf).await? {
            0 => Err(ReadError::Closed),
            _ => Ok(()),
        }
    }

    /// Reads one startup-phase packet.
    pub async fn read_startup(&mut self) -> Result<StartupPacket, ReadError> {
        loop {
            if let Some(packet) = codec::split_startup(&mut self.rbuf)? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    /// Reads one regular message.
    pub async fn read_frame(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = codec::split_frame(&mut self.rbuf, self.max_message)? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// True if a complete message is already buffered (so no flush is needed before it).
    pub fn has_frame(&self) -> bool {
        self.rbuf.len() >= 5 && {
            let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
            len >= 4 && self.rbuf.len() > len as usize
        }
    }

    /// Queues a message for sending.
    pub fn send<M: Message>(&mut self, msg: &M) {
        if let Err(e) = msg.encode(&mut self.wbuf) {
            // Only an over-long message fails to encode; the client gets an error instead.
            tracing::warn!(error = %e, "message could not be encoded");
            let err = super::error::PgError::internal("result message too large");
            let _ = err.to_response().encode(&mut self.wbuf);
        }
    }

    /// Queues raw bytes (a single-byte SSL answer, or relayed messages).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Writes everything queued.
    /// Where the buffer stands now, for [`PgConn::since`].
    pub fn mark(&self) -> (u64, usize) {
        (self.flushes, self.wbuf.len())
    }

    /// What was sent since `mark`, while it is all still in the buffer.
    pub fn since(&self, mark: (u64, usize)) -> Option<&[u8]> {
        (self.flushes == mark.0).then(|| &self.wbuf[mark.1..])
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.flushes += 1;
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await
    }

    /// Writes queued bytes once they pass a threshold, to bound memory on big results.
    pub async fn flush_if_large(&mut self) -> io::Result<()> {
        if self.wbuf.len() >= 64 * 1024 {
            self.flushes += 1;
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
