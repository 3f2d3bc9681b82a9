//! The app's connection as the relay drives it: a [`StreamSocket`] over a userspace
//! [`Connection`]. Readiness comes from smoltcp's wakers; every read and write polls the
//! connection's interface so that window updates and data leave at once.
//!
//! Errors map to what a kernel socket would say: end of file after the app's FIN, a reset
//! (`ConnectionReset`) after the app's RST or smoltcp's timeout, `BrokenPipe` for a write after
//! our own `shutdown_write`. Until the app acknowledged the SYN-ACK (SYN-RECEIVED) the stream is
//! simply not ready yet; an app that reset before that leaves the socket listening again, which
//! the stream reports as a reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use smoltcp::socket::tcp::{self, RecvError, State};

use super::connection::Connection;
use crate::socket::stream::StreamSocket;

/// The app's side of a connection terminated by the userspace stack. Dropping it closes the
/// connection (FIN), or resets it after [`StreamSocket::reset`] or with the app's bytes unread.
pub(crate) struct UserspaceStream(Arc<Connection>);

impl UserspaceStream {
    /// The stream of `connection` (one per connection).
    pub fn new(connection: Arc<Connection>) -> UserspaceStream {
        UserspaceStream(connection)
    }

    /// Waits until the app's handshake is over: true once it acknowledged the SYN-ACK, false
    /// when it reset the connection or never answered (smoltcp's timeout closed it).
    pub async fn handshake(&self) -> bool {
        std::future::poll_fn(|cx| {
            let mut inner = self.0.lock();
            let socket = inner.socket();
            match socket.state() {
                State::SynReceived => {
                    // smoltcp wakes it on every change of state.
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                }
                State::Closed | State::Listen => Poll::Ready(false),
                _ => Poll::Ready(true),
            }
        })
        .await
    }
}

/// What a socket in `state` with nothing to read or no room to write can still expect.
enum Stalled {
    /// The handshake is not complete yet, or there is simply nothing yet: wait.
    Wait,
    /// The connection was reset or timed out.
    Reset,
}

fn stalled(state: State) -> Stalled {
    match state {
        State::SynReceived => Stalled::Wait,
        State::Closed | State::Listen => Stalled::Reset,
        _ => Stalled::Wait,
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "the app reset the tunnel connection")
}

impl StreamSocket for UserspaceStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.0.lock();
        let socket = inner.socket();
        let state = socket.state();
        let at_end = !socket.may_recv() && !matches!(state, State::SynReceived);
        if socket.can_recv() || at_end {
            return Poll::Ready(Ok(()));
        }
        socket.register_recv_waker(cx.waker());
        Poll::Pending
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.0.lock();
        let socket = inner.socket();
        let state = socket.state();
        let cannot = !socket.may_send() && !matches!(state, State::SynReceived);
        if socket.can_send() || cannot {
            return Poll::Ready(Ok(()));
        }
        socket.register_send_waker(cx.waker());
        Poll::Pending
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.0.with(
            |inner| {
                let socket = inner.socket();
                match socket.recv_slice(buf) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    Ok(read) => Ok(read),
                    Err(RecvError::Finished) => Ok(0),
                    Err(RecvError::InvalidState) => match stalled(socket.state()) {
                        Stalled::Wait => Err(io::ErrorKind::WouldBlock.into()),
                        Stalled::Reset => Err(reset_error()),
                    },
                }
            },
            None,
        )
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.0.with(
            |inner| {
                let socket = inner.socket();
                match socket.send_slice(buf) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    Ok(written) => Ok(written),
                    Err(tcp::SendError::InvalidState) => match socket.state() {
                        State::SynReceived => Err(io::ErrorKind::WouldBlock.into()),
                        State::Closed | State::Listen => Err(reset_error()),
                        _ => Err(io::ErrorKind::BrokenPipe.into()),
                    },
                }
            },
            None,
        )
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.0.with(
            |inner| match inner.socket().state() {
                State::Closed | State::Listen => Err(reset_error()),
                _ => {
                    inner.close();
                    Ok(())
                }
            },
            None,
        )
    }

    fn reset(&self) {
        self.0.lock().reset_on_close = true;
    }
}

/// For code that reads and writes with tokio's traits (the DNS hijack's DNS-over-TCP server).
impl tokio::io::AsyncRead for UserspaceStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            match self.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                // Not readable after all (a handshake under way): poll again, which registers.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

/// See the `AsyncRead` implementation; shutdown is [`StreamSocket::shutdown_write`] (a FIN).
impl tokio::io::AsyncWrite for UserspaceStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

impl Drop for UserspaceStream {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl std::fmt::Debug for UserspaceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.lock().socket().state();
        f.debug_tuple("UserspaceStream").field(&format_args!("{state}")).finish()
    }
}
