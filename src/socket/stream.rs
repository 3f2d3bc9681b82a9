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

    /// A short read (fewer bytes than `buf` holds, not end of file) emptied the socket's receive
    /// queue: the readiness is cleared with it, as tokio's own `poll_read` does, so the next
    /// [`StreamSocket::poll_read_ready`] waits for new bytes instead of the caller paying a
    /// `recv` that can only answer `WouldBlock` (two per short connection).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut read = None;
        let result = self.try_io(tokio::io::Interest::READABLE, || {
            let n = std::io::Read::read(&mut &*socket2::SockRef::from(self), buf)?;
            if n > 0 && n < buf.len() {
                read = Some(n);
                // Clears the readiness (only if no newer event arrived meanwhile).
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match read {
            Some(n) => Ok(n),
            None => result,
        }
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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::StreamSocket;

    /// Whether `stream` is readable now (without waiting).
    async fn ready(stream: &TcpStream) -> bool {
        poll_fn(|cx| Poll::Ready(StreamSocket::poll_read_ready(stream, cx).is_ready())).await
    }

    /// A short read leaves the stream waiting for new bytes (no `recv` that can only answer
    /// `WouldBlock`); a full one keeps it readable; new bytes make it readable again.
    #[tokio::test]
    async fn a_short_read_waits_for_new_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (reader, _) = listener.accept().await.unwrap();
        writer.write_all(b"abcd").await.unwrap();
        poll_fn(|cx| StreamSocket::poll_read_ready(&reader, cx)).await.unwrap();
        let mut two = [0u8; 2];
        assert_eq!(StreamSocket::try_read(&reader, &mut two).unwrap(), 2, "a full read");
        assert!(ready(&reader).await, "bytes may remain after a full read");
        let mut big = [0u8; 64];
        assert_eq!(StreamSocket::try_read(&reader, &mut big).unwrap(), 2, "a short read");
        assert!(!ready(&reader).await, "a short read emptied the socket");
        writer.write_all(b"e").await.unwrap();
        poll_fn(|cx| StreamSocket::poll_read_ready(&reader, cx)).await.unwrap();
        assert_eq!(StreamSocket::try_read(&reader, &mut big).unwrap(), 1);
        drop(writer);
        poll_fn(|cx| StreamSocket::poll_read_ready(&reader, cx)).await.unwrap();
        assert_eq!(StreamSocket::try_read(&reader, &mut big).unwrap(), 0, "end of file");
    }
}
