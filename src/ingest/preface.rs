//! A deadline for the first bytes of an inbound connection.
//!
//! hyper-util's `auto` builder reads the first bytes of a connection to tell
//! HTTP/1 from HTTP/2 (it waits until they differ from the HTTP/2 preface or
//! complete it) before either protocol's own timers exist, and it waits with
//! no deadline: a peer that connects and sends nothing, or sends part of the
//! preface and stops, would hold its connection, task and file descriptor
//! forever. [`PrefaceDeadline`] fails reads with `TimedOut` once the deadline
//! passes while the protocol is still undecided. Once it is decided, hyper's
//! `header_read_timeout` (HTTP/1) or keep-alive pings (HTTP/2) take over.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An inbound stream whose reads time out while everything read so far is
/// still a (possibly empty) prefix of the HTTP/2 preface.
pub struct PrefaceDeadline<T> {
    inner: T,
    /// Running while the protocol is undecided; `None` once it is.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes read so far (all of them matching the preface).
    seen: usize,
}

impl<T> PrefaceDeadline<T> {
    #[cfg(test)]
    pub fn new(inner: T, timeout: std::time::Duration) -> PrefaceDeadline<T> {
        PrefaceDeadline::until(inner, tokio::time::Instant::now() + timeout)
    }

    /// With the deadline given as an instant: over TLS the handshake and
    /// the first bytes share one deadline, counted from the accept.
    pub fn until(inner: T, deadline: tokio::time::Instant) -> PrefaceDeadline<T> {
        PrefaceDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            seen: 0,
        }
    }

    /// Notes bytes just read (none: end of stream). The protocol is decided
    /// when they leave the preface, complete it, or the stream ends.
    fn saw(&mut self, bytes: &[u8]) {
        let end = (self.seen + bytes.len()).min(H2_PREFACE.len());
        let n = end - self.seen;
        if bytes.is_empty() || bytes[..n] != H2_PREFACE[self.seen..end] || end == H2_PREFACE.len() {
            self.deadline = None;
        } else {
            self.seen = end;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if room {
                    this.saw(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within request_timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
            err => err,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_after(sent: &[u8]) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(sent).await.unwrap();
        let mut s = PrefaceDeadline::new(server, Duration::from_millis(50));
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        // Read what was sent, then wait for more (the client stays open).
        loop {
            let n = s.read(&mut buf).await?;
            got.extend_from_slice(&buf[..n]);
            if n == 0 {
                return Ok(got);
            }
        }
    }

    #[tokio::test]
    async fn undecided_connections_time_out() {
        for sent in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n"] {
            let e = read_after(sent).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "after {sent:?}");
        }
    }

    #[tokio::test]
    async fn decided_connections_wait_without_a_deadline() {
        for sent in [&b"G"[..], b"PO", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\0"] {
            let read = tokio::time::timeout(Duration::from_millis(300), read_after(sent)).await;
            assert!(read.is_err(), "{sent:?} still waits for more bytes");
        }
    }

    #[tokio::test]
    async fn end_of_stream_is_passed_on() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let mut s = PrefaceDeadline::new(server, Duration::from_millis(50));
        assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0);
    }
}
