//! An in-memory, bounded, full-duplex byte stream for tests: two [`PipeEnd`]s that behave like the
//! two ends of a TCP connection as the relay sees them — readiness with wakers, partial writes
//! when the peer's buffer is full (backpressure), half-close (`shutdown_write` = FIN), end of file,
//! `BrokenPipe` when writing to a peer that is gone, and a reset (`ConnectionReset` on the peer)
//! for a close after [`StreamSocket::reset`] or with unread bytes.
//!
//! Test-only (`#[cfg(test)]`): it proves that the copy engine and the relay only need the
//! [`StreamSocket`] contract, with no kernel socket and no `splice`.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stream::StreamSocket;

/// One direction of the pipe: the bytes end `i` wrote and end `1 - i` has not read yet.
#[derive(Default)]
struct Lane {
    bytes: VecDeque<u8>,
    /// The writer shut down or dropped its end: the reader gets end of file after the bytes.
    write_shut: bool,
    /// The reader dropped its end: writes fail with `BrokenPipe`.
    reader_gone: bool,
    /// The connection was reset: reads and writes fail with `ConnectionReset`.
    reset: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Lane {
    fn wake_reader(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.write_waker.take() {
            waker.wake();
        }
    }
}

struct Shared {
    /// `lanes[i]` carries what end `i` writes.
    lanes: [Lane; 2],
    /// End `i` asked that its close be a reset.
    reset_on_drop: [bool; 2],
    /// Bytes one lane holds at most.
    capacity: usize,
}

/// One end of an in-memory pipe (see the module docs).
pub(crate) struct PipeEnd {
    shared: Arc<Mutex<Shared>>,
    side: usize,
}

/// Two connected ends; each direction buffers at most `capacity` (≥ 1) bytes.
pub(crate) fn pipe(capacity: usize) -> (PipeEnd, PipeEnd) {
    let shared = Arc::new(Mutex::new(Shared {
        lanes: [Lane::default(), Lane::default()],
        reset_on_drop: [false; 2],
        capacity: capacity.max(1),
    }));
    (PipeEnd { shared: shared.clone(), side: 0 }, PipeEnd { shared, side: 1 })
}

impl PipeEnd {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StreamSocket for PipeEnd {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.lock();
        let lane = &mut shared.lanes[1 - self.side];
        if !lane.bytes.is_empty() || lane.write_shut || lane.reset {
            return Poll::Ready(Ok(()));
        }
        lane.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.lock();
        let capacity = shared.capacity;
        let lane = &mut shared.lanes[self.side];
        if lane.bytes.len() < capacity || lane.reader_gone || lane.write_shut || lane.reset {
            return Poll::Ready(Ok(()));
        }
        lane.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut shared = self.lock();
        let lane = &mut shared.lanes[1 - self.side];
        if lane.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if lane.bytes.is_empty() {
            return if lane.write_shut || buf.is_empty() {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(lane.bytes.len());
        for (slot, byte) in buf.iter_mut().zip(lane.bytes.drain(..n)) {
            *slot = byte;
        }
        lane.wake_writer();
        Ok(n)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut shared = self.lock();
        let capacity = shared.capacity;
        let lane = &mut shared.lanes[self.side];
        if lane.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if lane.write_shut || lane.reader_gone {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(capacity - lane.bytes.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        lane.bytes.extend(&buf[..n]);
        lane.wake_reader();
        Ok(n)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        let mut shared = self.lock();
        let lane = &mut shared.lanes[self.side];
        if lane.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        lane.write_shut = true;
        lane.wake_reader();
        Ok(())
    }

    fn reset(&self) {
        self.lock().reset_on_drop[self.side] = true;
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut shared = self.lock();
        let (out, into) = (self.side, 1 - self.side);
        // Like TCP: closing with unread bytes, or after a reset was asked for, aborts.
        let reset = shared.reset_on_drop[out] || !shared.lanes[into].bytes.is_empty();
        for lane in &mut shared.lanes {
            lane.reset |= reset;
        }
        shared.lanes[out].write_shut = true;
        shared.lanes[into].reader_gone = true;
        for lane in &mut shared.lanes {
            lane.wake_reader();
            lane.wake_writer();
        }
    }
}

impl std::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeEnd").field("side", &self.side).finish()
    }
}

/// For the tests' own side of a pipe: `AsyncReadExt` / `AsyncWriteExt` on top of the readiness
/// contract (`shutdown` is the half-close).
impl AsyncRead for PipeEnd {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(StreamSocket::poll_read_ready(&*self, cx))?;
            match StreamSocket::try_read(&*self, buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for PipeEnd {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(StreamSocket::poll_write_ready(&*self, cx))?;
            match StreamSocket::try_write(&*self, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(StreamSocket::shutdown_write(&*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_backpressure_half_close_and_reset() {
        let (mut a, mut b) = pipe(4);
        assert_eq!(StreamSocket::try_write(&a, b"hello").unwrap(), 4, "a full lane takes a prefix");
        assert_eq!(StreamSocket::try_write(&a, b"o").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let mut got = [0u8; 8];
        assert_eq!(StreamSocket::try_read(&b, &mut got).unwrap(), 4);
        assert_eq!(&got[..4], b"hell");
        assert_eq!(StreamSocket::try_read(&b, &mut got).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"o").await.unwrap();
        a.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"o", "bytes, then end of file");
        // The other direction still works after the half-close.
        let mut answer = [0u8; 6];
        let (written, read) = tokio::join!(b.write_all(b"answer"), a.read_exact(&mut answer));
        written.unwrap();
        read.unwrap();
        assert_eq!(&answer, b"answer");
        assert_eq!(a.write(b"x").await.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        StreamSocket::reset(&b);
        drop(b);
        assert_eq!(a.read(&mut got).await.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn writer_to_a_dropped_reader_gets_broken_pipe() {
        let (a, b) = pipe(16);
        drop(b);
        assert_eq!(StreamSocket::try_write(&a, b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
