//! Write coalescing for connections between sidecars.
//!
//! An HTTP/2 request with a body leaves hyper as two pieces: the HEADERS frame, written by
//! the connection task, and the DATA frames, written by a body task that can only start once
//! the stream is open. Each flush would be one TLS record and one `writev`, and the peer
//! would wake up twice. [`Coalesce`] holds small writes and, on the first flush after them,
//! lets the other ready tasks run once before writing: the body lands in the same buffer, and
//! the request goes out as one record in one system call. Under load the same pass batches
//! frames of concurrent streams.
//!
//! Hand-written because no crate offers a flush that yields to the scheduler once: a
//! `BufWriter` flushes at once, and Nagle's algorithm (or `TCP_CORK`) would hold the bytes
//! in the kernel for up to 200 ms, not one scheduler pass.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes of this size or more go straight through when nothing is held.
const DIRECT: usize = 16 * 1024;

/// At most this much is held before writing.
const HOLD: usize = 64 * 1024;

/// An I/O stream whose small writes are held until a flush, and whose flush yields once to
/// the scheduler before writing.
#[derive(Debug)]
pub(crate) struct Coalesce<T> {
    io: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    written: usize,
    /// Whether this flush already yielded.
    yielded: bool,
}

impl<T> Coalesce<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io,
            buf: Vec::new(),
            written: 0,
            yielded: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Write out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() + data.len() > HOLD {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.is_empty() && data.len() >= DIRECT {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.len() + total > HOLD {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.is_empty() && total >= DIRECT {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.len() > this.written && !this.yielded {
            // Let the tasks this one woke (a request's body) add to the write first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn small_writes_go_out_together_on_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut a = Coalesce::new(a);
        a.write_all(b"head").await.expect("write");
        a.write_all(b"body").await.expect("write");
        // Nothing is written before the flush.
        let mut probe = [0u8; 8];
        assert!(
            futures::FutureExt::now_or_never(b.read(&mut probe)).is_none(),
            "bytes went out before the flush"
        );
        a.flush().await.expect("flush");
        let mut got = [0u8; 8];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"headbody");
    }

    #[tokio::test]
    async fn large_writes_and_shutdown_lose_nothing() {
        let (a, mut b) = tokio::io::duplex(1 << 22);
        let mut a = Coalesce::new(a);
        let big = vec![7u8; 3 * HOLD + 5];
        a.write_all(b"x").await.expect("write");
        a.write_all(&big).await.expect("write");
        a.write_all(b"y").await.expect("write");
        a.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), big.len() + 2);
        assert_eq!((got[0], got[got.len() - 1]), (b'x', b'y'));
    }
}
