//! The byte stream the relay drives: readiness, one non-blocking read or write at a time, and a
//! half-close. Implemented for a kernel TCP socket (`tokio::net::TcpStream`) here, for the
//! client's socket ([`super::ClientStream`]) and, in tests, for an in-memory pipe; a userspace TCP
//! stack's socket plugs in the same way.
//!
//! The contract is tokio's readiness model: `poll_*_ready` completes once the operation may make
//! progress and registers the task's waker otherwise; `try_*` never blocks and answers
//! `WouldBlock` when it cannot make progress, which also clears the readiness seen earlier (so the
//! next `poll_*_ready` waits again). A stream is shared by `&` between the two copy directions: a
//! read and a write may be in progress at the same time, from one task.

use std::io;
use std::net::Shutdown;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;

/// A byte stream the copy engine can drive (see the module docs for the readiness contract).
pub(crate) trait StreamSocket {
    /// Ready once a read may make progress: bytes, end of file or an error are waiting.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ready once a write may make progress: room, or an error is waiting.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what is available into `buf` without waiting. `Ok(0)` is end of file.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes a prefix of `buf` without waiting; returns its length. `Ok(0)` for a non-empty
    /// `buf` means the stream can take no more bytes (callers turn it into `WriteZero`).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;

    /// Ends the write side: the peer reads end of file once it has read everything written.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Makes the coming close an abort (a TCP reset) instead of a clean end. Best effort.
    fn reset(&self);

    /// The kernel socket under this stream, when there is one that `splice(2)` can move bytes
    /// from and to without user space seeing them.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Runs `op`, a non-blocking operation on [`StreamSocket::splice_fd`], so that its
    /// `WouldBlock` clears the readiness of `interest` (tokio's `try_io`). Streams without a
    /// `splice_fd` are never asked.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn try_splice(
        &self,
        interest: tokio::io::Interest,
        op: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let _ = interest;
        op()
    }
}

impl StreamSocket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(Shutdown::Write)
    }

    fn reset(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.as_raw_fd())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn try_splice(
        &self,
        interest: tokio::io::Interest,
        op: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.try_io(interest, op)
    }
}
