//! A client connection (TCP): the client's socket, the bytes its ingress already read, and how
//! the client is told whether its destination could be reached.

use std::io;
use std::net::SocketAddr;

use crate::dial::{BoxFuture, DialError};
use crate::socket::ClientStream;

/// A protocol step that tells the client the outcome of the dial (e.g. the SOCKS5 reply).
///
/// The manager calls exactly one of the two methods, after the dial finished. Replies go to the
/// client with [`ClientStream::write_all`].
pub trait InboundHandshake: Send + 'static {
    /// The destination is connected; `bound` is the local address of the outbound socket.
    fn succeed<'a>(
        &'a mut self,
        client: &'a ClientStream,
        bound: SocketAddr,
    ) -> BoxFuture<'a, io::Result<()>>;

    /// The dial failed; tell the client why (best effort: errors are ignored by the caller). The
    /// socket is closed right after: an implementation that sends a final reply also ends its
    /// side gracefully ([`ClientStream::close_gracefully`]: FIN, then discards what the client
    /// still sends, bounded in bytes and time), so that unread client bytes cannot turn the close
    /// into a reset that loses the reply.
    fn fail<'a>(
        &'a mut self,
        client: &'a ClientStream,
        error: &'a DialError,
    ) -> BoxFuture<'a, io::Result<()>>;
}

/// A client connection handed to [`crate::ConnectionManager::new_connection`].
pub struct Inbound {
    /// The client's socket (`tokio::net::TcpStream::into()`).
    pub stream: ClientStream,
    /// Bytes the ingress already read from the client past its own protocol (sent first).
    pub early_data: Vec<u8>,
    /// How to tell the client the dial's outcome. `None`: on failure the client socket is reset
    /// (RST), on success relaying simply starts.
    pub handshake: Option<Box<dyn InboundHandshake>>,
}

impl Inbound {
    /// A plain client socket with no protocol of its own (e.g. a socket handed over by the host):
    /// a `tokio::net::TcpStream` or a [`ClientStream`].
    pub fn plain(stream: impl Into<ClientStream>) -> Inbound {
        Inbound { stream: stream.into(), early_data: Vec::new(), handshake: None }
    }
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("stream", &self.stream)
            .field("early_data", &self.early_data.len())
            .field("handshake", &self.handshake.is_some())
            .finish()
    }
}
