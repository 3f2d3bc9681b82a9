//! The SOCKS5 accept loop and the per-client handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::auth::UserTable;
use super::protocol::{self, Command, Parsed, ProtocolError, ReplyCode};
use crate::dial::{BoxFuture, DialError, Outbound};
use crate::inbound::{Inbound, InboundHandshake};
use crate::manager::ConnectionManager;
use crate::metadata::{Destination, Metadata};
use crate::relay::socket_io::write_all;
use crate::relay::ClosedConnection;

/// How many bytes one handshake read asks for. Bytes past the request end up as early data.
const READ_CHUNK: usize = 512;
/// At most this many bytes are read and discarded while closing a rejected client gracefully.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What every client task needs.
pub(super) struct Context {
    pub(super) users: UserTable,
    pub(super) handshake_timeout: Duration,
    pub(super) udp: crate::relay::udp_sessions::UdpSettings,
    pub(super) udp_limits: Arc<super::udp::UdpLimits>,
    pub(super) max_pending_handshakes: usize,
    pub(super) manager: Arc<ConnectionManager>,
    pub(super) outbound: Arc<dyn Outbound>,
}

/// Accepts clients forever, one task per client. The client tasks live in a `JoinSet`, so
/// aborting this loop also abandons every handshake still in progress.
pub(super) async fn accept_loop(listener: TcpListener, context: Arc<Context>) {
    let mut handshakes = JoinSet::new();
    let mut refusing = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if handshakes.len() >= context.max_pending_handshakes => {
                    if !refusing {
                        tracing::warn!(
                            limit = context.max_pending_handshakes, %peer,
                            "too many SOCKS clients in their handshake: resetting new clients until some finish"
                        );
                        refusing = true;
                    }
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
                Ok((stream, peer)) => {
                    refusing = false;
                    handshakes.spawn(serve_client(stream, peer, context.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "SOCKS accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

/// Why a client's handshake ended without a CONNECT being handed to the manager.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("client closed the connection in the middle of a message ({0} bytes pending)")]
    Truncated(usize),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("no acceptable authentication method among {0:02x?}")]
    NoAcceptableMethod(Vec<u8>),
    #[error("wrong username or password")]
    AuthFailed,
    #[error("{0:?} is not supported")]
    UnsupportedCommand(Command),
    #[error("destination {0} has port 0")]
    PortZero(Destination),
}

/// A request ready for the manager (CONNECT) or the UDP association (UDP ASSOCIATE).
struct Accepted {
    command: Command,
    destination: Destination,
    early_data: Vec<u8>,
}

async fn serve_client(mut stream: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    // A timeout too large to add to the clock (e.g. from a config of "1000000y") means "a year".
    let deadline = Instant::now()
        .checked_add(context.handshake_timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
    let mut reader = Reader { buf: Vec::new() };
    let outcome =
        tokio::time::timeout_at(deadline, handshake(&mut stream, &mut reader, peer, &context)).await;
    let accepted = match outcome {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            tracing::debug!(client = %peer, %error, "SOCKS handshake rejected");
            let _ = tokio::time::timeout_at(deadline, close_gracefully(&mut stream)).await;
            return;
        }
        Err(_) => {
            tracing::debug!(
                client = %peer, timeout_ms = context.handshake_timeout.as_millis() as u64,
                "SOCKS handshake timed out; closing"
            );
            return;
        }
    };
    let Accepted { command, destination, early_data } = accepted;
    if command == Command::UdpAssociate {
        // Its own task, like a CONNECT handed to the manager: stopping the server leaves it alone.
        tokio::spawn(super::udp::associate(stream, peer, destination, context));
        return;
    }
    let reply = SocksReply { client: peer, destination: destination.clone() };
    let inbound = Inbound { stream, early_data, handshake: Some(Box::new(reply)) };
    let id = context.manager.new_connection(
        inbound,
        Metadata::new(destination.clone()),
        context.outbound.clone(),
        move |closed: ClosedConnection| {
            tracing::debug!(
                id = closed.id, client = %peer, destination = %closed.destination,
                error = closed.error.as_ref().map(tracing::field::display),
                "SOCKS connection closed"
            );
        },
    );
    tracing::debug!(id, client = %peer, %destination, "SOCKS CONNECT");
}

/// Greeting, optional username/password, request. Writes the replies of the successful steps and
/// of a rejection that deserves one; the caller closes the connection on error.
async fn handshake(
    stream: &mut TcpStream,
    reader: &mut Reader,
    peer: SocketAddr,
    context: &Context,
) -> Result<Accepted, HandshakeError> {
    let greeting = reader.next(stream, protocol::parse_greeting).await?;
    let method = greeting.select_method(!context.users.is_empty());
    stream.write_all(&[protocol::VERSION, method]).await?;
    if method == protocol::METHOD_NONE_ACCEPTABLE {
        return Err(HandshakeError::NoAcceptableMethod(greeting.methods));
    }
    if method == protocol::METHOD_USER_PASS {
        let credentials = reader.next(stream, protocol::parse_credentials).await?;
        if !context.users.check(&credentials) {
            tracing::warn!(
                client = %peer, username = ?String::from_utf8_lossy(&credentials.username),
                "SOCKS authentication failed"
            );
            stream.write_all(&[protocol::AUTH_VERSION, protocol::AUTH_FAILURE]).await?;
            return Err(HandshakeError::AuthFailed);
        }
        stream.write_all(&[protocol::AUTH_VERSION, protocol::AUTH_SUCCESS]).await?;
    }
    let request = match reader.next(stream, protocol::parse_request).await {
        Ok(request) => request,
        Err(HandshakeError::Protocol(error)) => {
            if let Some(code) = error.reply() {
                stream.write_all(&protocol::encode_reply(code, protocol::UNSPECIFIED_BOUND)).await?;
            }
            return Err(error.into());
        }
        Err(other) => return Err(other),
    };
    let rejected = match request.command {
        Command::Connect if request.destination.port == 0 => {
            Some((ReplyCode::GeneralFailure, HandshakeError::PortZero(request.destination.clone())))
        }
        Command::Connect | Command::UdpAssociate => None,
        command @ Command::Bind => {
            Some((ReplyCode::CommandNotSupported, HandshakeError::UnsupportedCommand(command)))
        }
    };
    if let Some((code, error)) = rejected {
        stream.write_all(&protocol::encode_reply(code, protocol::UNSPECIFIED_BOUND)).await?;
        return Err(error);
    }
    Ok(Accepted {
        command: request.command,
        destination: request.destination,
        early_data: std::mem::take(&mut reader.buf),
    })
}

/// The bytes received but not yet parsed.
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Parses the next message, reading more only while it is incomplete. Bytes past the message
    /// stay in `buf`.
    async fn next<T>(
        &mut self,
        stream: &mut TcpStream,
        parse: fn(&[u8]) -> Result<Parsed<T>, ProtocolError>,
    ) -> Result<T, HandshakeError> {
        loop {
            if let Parsed::Complete(value, length) = parse(&self.buf)? {
                self.buf.drain(..length);
                return Ok(value);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(HandshakeError::Truncated(self.buf.len()));
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Sends FIN, then reads and discards what the client still sends until it closes (bounded by
/// the caller's deadline and [`DRAIN_LIMIT`]), so that unread bytes do not turn the close into a
/// reset that could destroy the reply before the client reads it.
pub(super) async fn close_gracefully(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 1024];
    let mut drained = 0;
    while drained < DRAIN_LIMIT {
        match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(read) => drained += read,
        }
    }
}

/// Tells the client the outcome of its CONNECT (called by the manager after the dial).
struct SocksReply {
    client: SocketAddr,
    destination: Destination,
}

impl InboundHandshake for SocksReply {
    fn succeed<'a>(&'a mut self, client: &'a TcpStream, bound: SocketAddr) -> BoxFuture<'a, io::Result<()>> {
        let reply = protocol::encode_reply(ReplyCode::Succeeded, bound);
        Box::pin(async move { write_all(client, &reply).await })
    }

    fn fail<'a>(&'a mut self, client: &'a TcpStream, error: &'a DialError) -> BoxFuture<'a, io::Result<()>> {
        let code = ReplyCode::from(error.kind());
        tracing::debug!(
            client = %self.client, destination = %self.destination, reply = code as u8, %error,
            "SOCKS CONNECT failed"
        );
        let reply = protocol::encode_reply(code, protocol::UNSPECIFIED_BOUND);
        Box::pin(async move { write_all(client, &reply).await })
    }
}
