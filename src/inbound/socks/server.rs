//! The SOCKS5 accept loop and the per-client handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::Context;
use super::slots::{IdleFlag, Slots};
use super::FIRST_BYTE_TIMEOUT;
use crate::client::{Inbound, InboundHandshake};
use crate::dial::{BoxFuture, DialError};
use crate::metadata::{Destination, Metadata};
use crate::relay::ClosedConnection;
use crate::socket::io::write_all;
use crate::socks5::{self, Command, Parsed, ProtocolError, ReplyCode};

/// How many bytes one handshake read asks for. Bytes past the request end up as early data.
const READ_CHUNK: usize = 512;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accepts clients forever, one task per client, at most `max_pending_handshakes` of them in
/// their handshake at once (see [`super::slots`]). The client tasks live in a `JoinSet`, so
/// aborting this loop also abandons every handshake still in progress.
pub(super) async fn accept_loop(listener: TcpListener, context: Arc<Context>) {
    let mut handshakes = JoinSet::new();
    let mut slots = Slots::new(context.max_pending_handshakes);
    loop {
        while handshakes.try_join_next().is_some() {}
        let admission = slots.admission(handshakes.len(), Instant::now());
        tokio::select! {
            accepted = listener.accept(), if admission.may_accept() => match accepted {
                Ok((stream, peer)) => {
                    while handshakes.try_join_next().is_some() {}
                    slots.make_room(handshakes.len(), peer);
                    let idle = IdleFlag::default();
                    let handle = handshakes.spawn(serve_client(stream, peer, context.clone(), idle.clone()));
                    slots.admitted(handle, idle, Instant::now());
                }
                Err(error) => {
                    tracing::warn!(%error, "SOCKS accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            // Finished handshakes are reaped at the top of the loop; waiting on them is needed
            // only while they hold every slot. Waking this loop for each one would move the new
            // connection's task to another worker (the wakeup takes the spawning worker's next
            // slot): a thread wakeup more per connection.
            Some(_) = handshakes.join_next(), if !admission.may_accept() && !handshakes.is_empty() => {}
            () = sleep_until_some(admission.recheck_at()) => {}
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// Serves one client: waits for its first byte (marked `idle` meanwhile, so that a newcomer may
/// take its slot), then runs the handshake and hands the request over.
async fn serve_client(mut stream: TcpStream, peer: SocketAddr, context: Arc<Context>, idle: IdleFlag) {
    let now = Instant::now();
    let deadline = crate::deadline::after(now, context.handshake_timeout);
    let mut reader = Reader { buf: Vec::new() };
    // Well-behaved clients send their greeting with the connection: read it now, in the same
    // call that finds out whether anything is there.
    let waiting = match reader.read_now(&stream) {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => true,
        Err(error) => {
            tracing::debug!(client = %peer, %error, "SOCKS client failed before its greeting");
            return;
        }
        // Bytes, or the end of the stream (the handshake reads it again and reports it).
        Ok(_) => false,
    };
    if waiting {
        // An idle client gives its slot back early: well-behaved clients send their greeting at once.
        let first_byte = crate::deadline::after(now, context.handshake_timeout.min(FIRST_BYTE_TIMEOUT));
        idle.set(true);
        let waited = tokio::time::timeout_at(first_byte, wait_for_input(&stream)).await;
        idle.set(false);
        if waited.is_err() {
            tracing::debug!(client = %peer, "SOCKS client sent nothing; closing");
            return;
        }
    }
    let outcome =
        tokio::time::timeout_at(deadline, handshake(&mut stream, &mut reader, peer, &context)).await;
    let accepted = match outcome {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            tracing::debug!(client = %peer, %error, "SOCKS handshake rejected");
            crate::socket::io::close_gracefully(&stream).await;
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
    let stream = crate::socket::ClientStream::accepted_with_nodelay(stream);
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
    let greeting = reader.next(stream, socks5::parse_greeting).await?;
    let method = greeting.select_method(!context.users.is_empty());
    stream.write_all(&socks5::encode_method_choice(method)).await?;
    if method == socks5::METHOD_NONE_ACCEPTABLE {
        return Err(HandshakeError::NoAcceptableMethod(greeting.methods));
    }
    if method == socks5::METHOD_USER_PASS {
        let credentials = reader.next(stream, socks5::parse_credentials).await?;
        if !context.users.check(&credentials) {
            // The username is not logged: a password typed into it would end up in the log.
            tracing::warn!(client = %peer, "SOCKS authentication failed (wrong username or password)");
            stream.write_all(&socks5::encode_auth_status(socks5::AUTH_FAILURE)).await?;
            return Err(HandshakeError::AuthFailed);
        }
        stream.write_all(&socks5::encode_auth_status(socks5::AUTH_SUCCESS)).await?;
    }
    let request = match reader.next(stream, socks5::parse_request).await {
        Ok(request) => request,
        Err(HandshakeError::Protocol(error)) => {
            if let Some(code) = error.reply() {
                stream.write_all(&socks5::encode_reply(code, socks5::UNSPECIFIED_BOUND)).await?;
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
        stream.write_all(&socks5::encode_reply(code, socks5::UNSPECIFIED_BOUND)).await?;
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
    /// Reads what the client has already sent into `buf` without waiting (straight from the
    /// socket, whatever tokio believes about its readiness). `WouldBlock` when nothing is there.
    fn read_now(&mut self, stream: &TcpStream) -> io::Result<usize> {
        use std::io::Read;
        let mut chunk = [0u8; READ_CHUNK];
        let read = (&*socket2::SockRef::from(stream)).read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..read]);
        Ok(read)
    }

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

/// Waits until the client sent something, closed, or the socket failed: anything for the
/// handshake to read (readiness alone is not enough: tokio reports a new socket readable).
async fn wait_for_input(stream: &TcpStream) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        // Through `try_io`, so that "nothing there" clears the readiness before waiting again.
        match stream.try_io(Interest::READABLE, || peek(stream)) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            _ => return,
        }
    }
}

/// Peeks at one byte without consuming it (the socket is non-blocking).
fn peek(stream: &TcpStream) -> io::Result<usize> {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    socket2::SockRef::from(stream).peek(&mut byte)
}

/// Tells the client the outcome of its CONNECT (called by the manager after the dial).
struct SocksReply {
    client: SocketAddr,
    destination: Destination,
}

impl InboundHandshake for SocksReply {
    fn succeed<'a>(
        &'a mut self,
        client: &'a crate::client::ClientStream,
        bound: SocketAddr,
    ) -> BoxFuture<'a, io::Result<()>> {
        let reply = socks5::encode_reply(ReplyCode::Succeeded, bound);
        Box::pin(async move { write_all(client, &reply).await })
    }

    fn fail<'a>(
        &'a mut self,
        client: &'a crate::client::ClientStream,
        error: &'a DialError,
    ) -> BoxFuture<'a, io::Result<()>> {
        let code = error.reply_code();
        tracing::debug!(
            client = %self.client, destination = %self.destination, reply = u8::from(code), %error,
            "SOCKS CONNECT failed"
        );
        let reply = socks5::encode_reply(code, socks5::UNSPECIFIED_BOUND);
        Box::pin(async move {
            write_all(client, &reply).await?;
            crate::socket::io::close_gracefully(client).await;
            Ok(())
        })
    }
}
