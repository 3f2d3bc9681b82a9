//! The client's socket as an ingress hands it to the manager: opaque, so that the kind of stream
//! behind it (a kernel TCP socket today, a userspace TCP stack's socket next) can grow without
//! changing the public API or the relay's per-connection state.

use std::io;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use super::stream::StreamSocket;

/// The client's side of a TCP connection: build it from a `tokio::net::TcpStream` (`From`), read
/// it back with [`ClientStream::as_tcp`]. An [`crate::InboundHandshake`] writes its replies with
/// [`ClientStream::write_all`] and ends after a final one with [`ClientStream::close_gracefully`].
///
/// Dropping it closes the socket.
pub struct ClientStream {
    kind: Kind,
    /// True when `TCP_NODELAY` is known to be on already (inherited from the listener that
    /// accepted the socket): [`ClientStream::set_nodelay`] then has nothing to do.
    nodelay_on: bool,
}

/// Whether a socket accepted by a listener that has `TCP_NODELAY` has it too (Linux copies the
/// listener's TCP options to the sockets it accepts).
const ACCEPTED_INHERIT_NODELAY: bool = cfg!(any(target_os = "linux", target_os = "android"));

enum Kind {
    /// A kernel TCP socket (or any stream socket registered with tokio, e.g. a Unix socketpair
    /// handed over by the host as a `TcpStream`).
    Tcp(TcpStream),
    /// A connection terminated by a userspace TCP stack (the packet tunnel's): boxed, so that
    /// this layer does not name the stack above it.
    Userspace(Box<dyn UserspaceSocket>),
    /// An in-memory pipe end (tests of the relay over a stream that is not a kernel socket).
    #[cfg(test)]
    Pipe(super::pipe::PipeEnd),
}

/// A userspace TCP stack's socket as a client stream holds it.
pub(crate) trait UserspaceSocket: StreamSocket + std::fmt::Debug + Send + Sync {}

impl<T: StreamSocket + std::fmt::Debug + Send + Sync> UserspaceSocket for T {}

impl From<TcpStream> for ClientStream {
    fn from(stream: TcpStream) -> ClientStream {
        ClientStream { kind: Kind::Tcp(stream), nodelay_on: false }
    }
}

#[cfg(test)]
impl From<super::pipe::PipeEnd> for ClientStream {
    fn from(end: super::pipe::PipeEnd) -> ClientStream {
        ClientStream { kind: Kind::Pipe(end), nodelay_on: false }
    }
}

impl ClientStream {
    /// The app's side of a connection of a userspace TCP stack.
    pub(crate) fn userspace(stream: impl UserspaceSocket + 'static) -> ClientStream {
        ClientStream { kind: Kind::Userspace(Box::new(stream)), nodelay_on: false }
    }

    /// A socket accepted by a listener of netswitch's own that has `TCP_NODELAY` on
    /// ([`set_listener_nodelay`]): where accepted sockets inherit it, no system call per
    /// connection sets it again.
    pub(crate) fn accepted_with_nodelay(stream: TcpStream) -> ClientStream {
        ClientStream { kind: Kind::Tcp(stream), nodelay_on: ACCEPTED_INHERIT_NODELAY }
    }

    /// The kernel TCP socket, when the client is one.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.kind {
            Kind::Tcp(stream) => Some(stream),
            Kind::Userspace(_) => None,
            #[cfg(test)]
            Kind::Pipe(_) => None,
        }
    }

    /// Writes all of `bytes` to the client, waiting for room as needed (a zero-length write from
    /// the socket is `WriteZero`).
    pub async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        super::io::write_all(self, bytes).await
    }

    /// Ends the connection after a final reply without losing it: sends FIN, then reads and
    /// discards what the client still sends, at most 64 KiB for 1 s (a close with unread bytes
    /// would be a reset, which can destroy the reply).
    pub async fn close_gracefully(&self) {
        super::io::close_gracefully(self).await
    }

    /// Turns Nagle's algorithm off on a TCP client (a relayed answer written in two pieces must
    /// not wait for the client's delayed ACK). Other streams have no such option: `Ok`.
    pub(crate) fn set_nodelay(&self) -> io::Result<()> {
        if self.nodelay_on {
            return Ok(());
        }
        match &self.kind {
            Kind::Tcp(stream) => stream.set_nodelay(true),
            Kind::Userspace(_) => Ok(()),
            #[cfg(test)]
            Kind::Pipe(_) => Ok(()),
        }
    }
}

/// Turns `TCP_NODELAY` on for a listener, so that the sockets it accepts have it from the start
/// (see [`ClientStream::accepted_with_nodelay`]).
pub(crate) fn set_listener_nodelay(listener: &socket2::Socket) -> io::Result<()> {
    listener.set_tcp_nodelay(true)
}

/// Forwards every call to the stream behind it.
macro_rules! each_kind {
    ($self:ident, $stream:ident => $call:expr) => {
        match &$self.kind {
            Kind::Tcp($stream) => $call,
            Kind::Userspace(boxed) => {
                let $stream = &**boxed;
                $call
            }
            #[cfg(test)]
            Kind::Pipe($stream) => $call,
        }
    };
}

impl StreamSocket for ClientStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_kind!(self, s => StreamSocket::poll_read_ready(s, cx))
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_kind!(self, s => StreamSocket::poll_write_ready(s, cx))
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        each_kind!(self, s => StreamSocket::try_read(s, buf))
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each_kind!(self, s => StreamSocket::try_write(s, buf))
    }

    fn shutdown_write(&self) -> io::Result<()> {
        each_kind!(self, s => StreamSocket::shutdown_write(s))
    }

    fn reset(&self) {
        each_kind!(self, s => StreamSocket::reset(s))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn splice_fd(&self) -> Option<std::os::fd::RawFd> {
        each_kind!(self, s => StreamSocket::splice_fd(s))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn try_splice(
        &self,
        interest: tokio::io::Interest,
        op: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        each_kind!(self, s => StreamSocket::try_splice(s, interest, op))
    }
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Tcp(stream) => f.debug_tuple("ClientStream").field(stream).finish(),
            Kind::Userspace(stream) => f.debug_tuple("ClientStream").field(stream).finish(),
            #[cfg(test)]
            Kind::Pipe(end) => f.debug_tuple("ClientStream").field(end).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`ClientStream::accepted_with_nodelay`] relies on: a socket accepted by a listener
    /// with `TCP_NODELAY` has it too, without a call of its own.
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_nodelay() {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_listener_nodelay(&listener).unwrap();
        listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        listener.listen(8).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener.into()).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let client = ClientStream::accepted_with_nodelay(accepted);
        assert_eq!(client.nodelay_on, ACCEPTED_INHERIT_NODELAY);
        client.set_nodelay().unwrap();
        assert!(client.as_tcp().unwrap().nodelay().unwrap(), "TCP_NODELAY on the accepted socket");
    }
}
