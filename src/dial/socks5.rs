//! An upstream SOCKS5 outbound (RFC 1928 CONNECT, RFC 1929 username/password) that reaches its
//! server through another outbound, with a lazy handshake.
//!
//! [`Socks5Outbound::dial_tcp`] only dials the SOCKS server, and it does so through its inner
//! outbound (DESIGN decision 12; normally the strategy-aware direct outbound with the platform's
//! binder): the socket to the server is protected or bound like any other, the dial follows the
//! connection's strategy overrides, and the connection shows the inner egress (interface,
//! network type) in the tracker. The greeting, the credentials, the CONNECT request and the
//! client's first payload then go out together in one write ([`LazyHandshake::complete`], called
//! by the manager's kick), behind the inner outbound's own pending handshake if it has one (a
//! chain of proxies still costs one write), and the replies are read afterwards. The first
//! payload thus reaches the destination one round trip earlier.
//!
//! Replies are read exactly (never past the CONNECT reply: what follows is payload). A refusal
//! by the server is a [`DialError::ProxyRefused`] carrying its reply code, whose
//! [`DialError::kind`] and [`DialError::reply_code`] follow the code, so a SOCKS ingress in front
//! answers its client with the same code. A reply that breaks the protocol, or credentials turned
//! down, is a [`DialError::ProxyProtocol`]; an I/O failure during the handshake a
//! [`DialError::Connect`] naming the server and the interface.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use super::{
    AttemptError, BoxFuture, DialAttempt, DialError, DialedStream, FailureKind, LazyHandshake, Outbound,
};
use crate::metadata::{ConnectionOptions, Destination, Metadata};
use crate::socket::io::{self as socket_io, write_all};
use crate::socks5::{self, Command, EncodeError, Parsed, ProtocolError, ReplyCode};

/// The longest message the server sends: a reply with a 255-byte domain.
const LONGEST_MESSAGE: usize = 3 + 1 + 1 + 255 + 2;

/// Dials destinations through an upstream SOCKS5 server, reached through an inner outbound, with
/// a lazy handshake (module docs).
#[derive(Clone)]
pub struct Socks5Outbound {
    server: SocketAddr,
    credentials: Option<(String, String)>,
    inner: Arc<dyn Outbound>,
}

impl std::fmt::Debug for Socks5Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socks5Outbound")
            .field("server", &self.server)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

impl Socks5Outbound {
    /// An outbound through the SOCKS5 server at `server`, authenticating with
    /// `(username, password)` when given (each 1-255 bytes, else the handshake fails), that
    /// reaches the server through `inner`: pass the direct outbound that has the platform's
    /// binder, so that the socket is protected or bound and counted per network (its connect
    /// timeout bounds the connect to the server).
    pub fn new(server: SocketAddr, credentials: Option<(String, String)>, inner: Arc<dyn Outbound>) -> Self {
        Socks5Outbound { server, credentials, inner }
    }

    /// The dial to the server: the connection's own options (strategy, network types, timeouts)
    /// aimed at the server. An override address was already applied to `metadata` by the relay.
    fn server_metadata(&self, metadata: &Metadata) -> Metadata {
        Metadata {
            destination: self.server.into(),
            resolved_addresses: Vec::new(),
            options: ConnectionOptions { override_destination: None, ..metadata.options.clone() },
            source: metadata.source,
            decision: None,
        }
    }

    async fn dial(&self, metadata: &Metadata) -> Result<DialedStream, DialError> {
        let DialedStream { stream, egress, handshake } =
            self.inner.dial_tcp(&self.server_metadata(metadata)).await?;
        tracing::debug!(
            server = %self.server, destination = %metadata.destination, via = %egress,
            "connected to upstream SOCKS5 server; handshake deferred to the first write"
        );
        let handshake = Socks5Handshake {
            server: self.server,
            destination: metadata.destination.clone(),
            credentials: self.credentials.clone(),
            interface: egress.interface.clone(),
            inner: handshake,
        };
        Ok(DialedStream { stream, egress, handshake: Some(Box::new(handshake)) })
    }
}

impl Outbound for Socks5Outbound {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(self.dial(metadata))
    }
}

/// Why an upstream SOCKS5 server's handshake failed (the reason of a
/// [`DialError::ProxyProtocol`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Socks5Error {
    /// A message from the server breaks the protocol (wrong version, unknown address type, a bad
    /// bound domain).
    #[error("malformed answer: {0}")]
    Malformed(#[from] ProtocolError),
    /// The server chose another authentication method than the one offered (0xff: none of them).
    #[error("answered method {got:#04x}, expected {expected:#04x}")]
    UnexpectedMethod {
        /// The method the server chose.
        got: u8,
        /// The method offered.
        expected: u8,
    },
    /// The server turned the username and password down.
    #[error("rejected the credentials (status {0:#04x})")]
    CredentialsRejected(u8),
    /// The handshake cannot be encoded: a username, password or domain longer than 255 bytes.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Socks5Error {
    /// The broad reason: credentials turned down mean "not allowed" (SOCKS 0x02), anything else
    /// is "other".
    pub fn kind(&self) -> FailureKind {
        match self {
            Socks5Error::CredentialsRejected(_) => FailureKind::Prohibited,
            _ => FailureKind::Other,
        }
    }
}

/// The pending SOCKS5 handshake of one connection.
struct Socks5Handshake {
    server: SocketAddr,
    destination: Destination,
    credentials: Option<(String, String)>,
    /// The interface the connection to the server left through (named by I/O failures).
    interface: Option<String>,
    /// The inner outbound's own pending handshake: completed first, in the same write.
    inner: Option<Box<dyn LazyHandshake>>,
}

/// How a handshake failed, before it is told as a [`DialError`].
enum Failure {
    Io(io::Error),
    Refused(ReplyCode),
    Protocol(Socks5Error),
    /// The inner outbound's handshake failed: its error is passed on as it is.
    Inner(DialError),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure::Io(error)
    }
}

impl<E: Into<Socks5Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Protocol(error.into())
    }
}

impl LazyHandshake for Socks5Handshake {
    fn complete<'a>(
        mut self: Box<Self>,
        stream: &'a TcpStream,
        early_data: &'a [u8],
    ) -> BoxFuture<'a, Result<(), DialError>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.run(stream, early_data).await;
            result.map_err(|failure| self.dial_error(failure, started))
        })
    }
}

impl Socks5Handshake {
    async fn run(&mut self, stream: &TcpStream, early_data: &[u8]) -> Result<(), Failure> {
        let message = self.first_write(early_data)?;
        match self.inner.take() {
            // Ours rides as the inner handshake's early data: one write for the whole chain.
            Some(inner) => inner.complete(stream, &message).await.map_err(Failure::Inner)?,
            None => write_all(stream, &message).await?,
        }
        let expected =
            if self.credentials.is_some() { socks5::METHOD_USER_PASS } else { socks5::METHOD_NO_AUTH };
        let method = read_message(stream, socks5::parse_method_choice).await?;
        if method != expected {
            return Err(Socks5Error::UnexpectedMethod { got: method, expected }.into());
        }
        if self.credentials.is_some() {
            let status = read_message(stream, socks5::parse_auth_status).await?;
            if status != socks5::AUTH_SUCCESS {
                return Err(Socks5Error::CredentialsRejected(status).into());
            }
        }
        match read_message(stream, socks5::parse_reply).await?.code {
            ReplyCode::Succeeded => Ok(()),
            code => Err(Failure::Refused(code)),
        }
    }

    /// Greeting, credentials, CONNECT request and early data, concatenated.
    fn first_write(&self, early_data: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let mut message = Vec::with_capacity(64 + early_data.len());
        match &self.credentials {
            None => socks5::encode_greeting(&[socks5::METHOD_NO_AUTH], &mut message)?,
            Some((username, password)) => {
                socks5::encode_greeting(&[socks5::METHOD_USER_PASS], &mut message)?;
                socks5::encode_credentials(username.as_bytes(), password.as_bytes(), &mut message)?;
            }
        }
        socks5::encode_request(Command::Connect, &self.destination, &mut message)?;
        message.extend_from_slice(early_data);
        Ok(message)
    }

    /// The dial error for a failure, naming the server and the destination.
    fn dial_error(&self, failure: Failure, started: Instant) -> DialError {
        let destination = self.destination.to_string();
        match failure {
            Failure::Io(error) => DialError::Connect {
                destination,
                attempts: vec![DialAttempt {
                    address: Some(self.server),
                    interface: self.interface.clone(),
                    elapsed: started.elapsed(),
                    error: AttemptError::Io(error),
                }],
            },
            Failure::Refused(code) => DialError::ProxyRefused { proxy: self.server, destination, code },
            Failure::Protocol(reason) => DialError::ProxyProtocol { proxy: self.server, destination, reason },
            Failure::Inner(error) => error,
        }
    }
}

/// Reads one message of the server's exactly, never a byte past it (what follows is payload):
/// each read asks for what the parser says the message needs at least.
async fn read_message<T>(
    stream: &TcpStream,
    parse: fn(&[u8]) -> Result<Parsed<T>, ProtocolError>,
) -> Result<T, Failure> {
    let mut buf = [0u8; LONGEST_MESSAGE];
    let mut have = 0;
    loop {
        match parse(buf.get(..have).unwrap_or_default())? {
            Parsed::Complete(value, _) => return Ok(value),
            Parsed::Incomplete { needed } => {
                let Some(missing) = buf.get_mut(have..needed) else {
                    let error = format!("upstream SOCKS5 message longer than {LONGEST_MESSAGE} bytes");
                    return Err(Failure::Io(io::Error::new(io::ErrorKind::InvalidData, error)));
                };
                read_exact(stream, missing).await?;
                have = needed;
            }
        }
    }
}

/// Reads exactly `buf.len()` bytes of the server's replies.
async fn read_exact(stream: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    socket_io::read_exact(stream, buf).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upstream SOCKS5 server closed the connection during the handshake",
        ),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(credentials: Option<(String, String)>) -> Socks5Handshake {
        Socks5Handshake {
            server: "127.0.0.1:1080".parse().unwrap(),
            destination: Destination::domain("a.example", 443),
            credentials,
            interface: Some("wifi0".into()),
            inner: None,
        }
    }

    #[test]
    fn refusals_carry_the_reply_code_and_its_kind() {
        for (code, kind) in [
            (0x05, FailureKind::Refused),
            (0x03, FailureKind::NetworkUnreachable),
            (0x04, FailureKind::HostUnreachable),
            (0x06, FailureKind::TimedOut),
            (0x01, FailureKind::Other),
            (0x02, FailureKind::Prohibited),
            (0x07, FailureKind::Other),
        ] {
            let dial = handshake(None).dial_error(Failure::Refused(ReplyCode::from(code)), Instant::now());
            assert!(
                matches!(&dial, DialError::ProxyRefused { code: c, .. } if u8::from(*c) == code),
                "{dial:?}"
            );
            assert_eq!(dial.kind(), kind, "code {code:#04x}");
            assert_eq!(u8::from(dial.reply_code()), code, "the ingress in front answers the same code");
            assert!(dial.to_string().contains("127.0.0.1:1080"), "{dial}");
            assert!(dial.to_string().contains("a.example:443"), "{dial}");
        }
    }

    #[test]
    fn protocol_and_io_failures_are_typed() {
        let rejected = Failure::Protocol(Socks5Error::CredentialsRejected(1));
        let dial = handshake(None).dial_error(rejected, Instant::now());
        assert!(matches!(dial, DialError::ProxyProtocol { .. }), "{dial:?}");
        assert_eq!(dial.kind(), FailureKind::Prohibited);
        let malformed = Failure::from(ProtocolError::BadVersion(4));
        let dial = handshake(None).dial_error(malformed, Instant::now());
        assert_eq!(dial.kind(), FailureKind::Other);
        assert_eq!(
            dial.to_string(),
            "upstream SOCKS5 server 127.0.0.1:1080, handshake for a.example:443: malformed answer: bad SOCKS \
             version 0x04 (expected 0x05)"
        );
        let reset = Failure::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        let dial = handshake(None).dial_error(reset, Instant::now());
        assert!(
            matches!(&dial, DialError::Connect { attempts, .. }
                if attempts.len() == 1 && attempts[0].interface.as_deref() == Some("wifi0")),
            "{dial:?}"
        );
    }

    #[test]
    fn first_write_carries_everything() {
        let message = handshake(Some(("user".into(), "pw".into()))).first_write(b"hello").unwrap();
        let mut expected = vec![5, 1, 2, 1, 4];
        expected.extend_from_slice(b"user\x02pw\x05\x01\x00\x03\x09a.example\x01\xbbhello");
        assert_eq!(message, expected);
        let long = handshake(Some(("u".repeat(256), "pw".into())));
        assert_eq!(long.first_write(b"").unwrap_err(), EncodeError::TooLong("username"));
    }
}
