//! Dialing: the [`Outbound`] trait and the errors a dial can end with.

pub mod direct;
pub mod eyeballs;
pub mod icmp;
pub mod lookup;
pub mod race;
mod route;
pub mod socks5;
mod udp;
pub use udp::UDP_RECV_BUFFER;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::metadata::Metadata;
use crate::network::Egress;
use crate::socks5::ReplyCode;

/// A boxed, sendable future: what trait methods that must stay object-safe return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connected outbound TCP stream and the network it left through.
pub struct DialedStream {
    /// The connected socket.
    pub stream: TcpStream,
    /// Which interface / network the socket uses.
    pub egress: Egress,
    /// Set by outbounds whose protocol handshake is lazy (e.g. an upstream SOCKS5 server): the
    /// handshake is completed together with the first payload. `None` for a plain connection.
    pub handshake: Option<Box<dyn LazyHandshake>>,
}

impl DialedStream {
    /// A plain connected stream with nothing left to negotiate.
    pub fn plain(stream: TcpStream, egress: Egress) -> DialedStream {
        DialedStream { stream, egress, handshake: None }
    }
}

impl fmt::Debug for DialedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialedStream")
            .field("stream", &self.stream)
            .field("egress", &self.egress)
            .field("lazy_handshake", &self.handshake.is_some())
            .finish()
    }
}

/// The rest of an outbound's protocol handshake, completed with the first payload so that it
/// reaches the destination one round trip earlier (the manager's "kick").
pub trait LazyHandshake: Send + 'static {
    /// Writes the pending handshake together with `early_data` (which may be empty) in one write,
    /// then reads and checks the server's replies. After `Ok`, `stream` carries plain payload.
    fn complete<'a>(
        self: Box<Self>,
        stream: &'a TcpStream,
        early_data: &'a [u8],
    ) -> BoxFuture<'a, Result<(), DialError>>;
}

/// An outbound UDP socket and the network it uses.
#[derive(Debug)]
pub struct DialedUdp {
    /// The socket; connected to `connected_to` when that is set.
    pub socket: tokio::net::UdpSocket,
    /// The address the socket is connected to (connected mode), `None` in unconnected mode.
    pub connected_to: Option<SocketAddr>,
    /// Which interface / network the socket uses.
    pub egress: Egress,
    /// Unconnected mode, domain destination: the address the domain resolved to (over the
    /// socket's network, of a family the socket can reach). `None` otherwise.
    pub resolved: Option<SocketAddr>,
    /// The resolver of the socket's network, for the other domains an unconnected session sends
    /// to. `None`: the outbound has none (the session then uses the system resolver).
    pub resolver: Option<std::sync::Arc<dyn crate::dns::Resolve>>,
}

/// Something that can open connections to destinations: the direct outbound, later an upstream
/// proxy. Implementations must be cheap to share between connections.
pub trait Outbound: Send + Sync + 'static {
    /// Opens a TCP connection to `metadata.destination`, honouring `metadata.options`.
    ///
    /// Guarantees: on success the stream is connected; on failure the error lists every address
    /// that was tried and why it failed. Cancel-safe: dropping the future closes any socket it
    /// opened.
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>>;

    /// Opens a UDP socket for `metadata.destination`: connected to one resolved address when
    /// `metadata.options.udp_connect` is set, otherwise unconnected (it may send anywhere).
    /// The default implementation refuses: outbounds without UDP support say so.
    fn open_udp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedUdp, DialError>> {
        Box::pin(async move {
            Err(DialError::Unsupported { what: "UDP", destination: metadata.destination.to_string() })
        })
    }

    /// Opens an ICMP echo socket to `metadata.destination` (an IP address; the port is
    /// ignored), over the network the strategy chooses (see [`icmp`]). The default
    /// implementation refuses: outbounds that cannot carry ICMP say so.
    fn open_icmp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<icmp::DialedIcmp, DialError>> {
        Box::pin(async move {
            Err(DialError::Unsupported { what: "ICMP echo", destination: metadata.destination.to_string() })
        })
    }
}

/// The broad reason a dial failed; what a SOCKS reply code (and a host app) can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The destination actively refused (TCP RST).
    Refused,
    /// No route to the destination's network.
    NetworkUnreachable,
    /// The destination host did not answer at the link or IP level, or its name did not resolve.
    HostUnreachable,
    /// No answer within the connect timeout.
    TimedOut,
    /// A local rule forbids the connection: `EACCES` or `EPERM` from `connect` (a `prohibit`
    /// route, a firewall rule).
    Prohibited,
    /// Anything else (a local error, an unsupported request…).
    Other,
}

impl FailureKind {
    /// Classifies an I/O error from `connect`.
    pub fn of_io(error: &io::Error) -> FailureKind {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            io::ErrorKind::NetworkUnreachable => FailureKind::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => FailureKind::HostUnreachable,
            io::ErrorKind::TimedOut => FailureKind::TimedOut,
            io::ErrorKind::PermissionDenied => FailureKind::Prohibited,
            _ => FailureKind::Other,
        }
    }

    /// Classifies a failed lookup: a name that does not exist or has no address (of the
    /// families allowed) is `HostUnreachable` (SOCKS reply 0x04), a lookup out of time
    /// `TimedOut`, a query socket that could not reach its server by its OS error, anything else
    /// (a server error, a garbage answer) `HostUnreachable`.
    pub fn of_dns(error: &crate::dns::DnsError) -> FailureKind {
        if error.is_timeout() {
            return FailureKind::TimedOut;
        }
        match error.os_error().map(FailureKind::of_io) {
            Some(kind @ (FailureKind::NetworkUnreachable | FailureKind::HostUnreachable)) => kind,
            Some(FailureKind::TimedOut) => FailureKind::TimedOut,
            _ => FailureKind::HostUnreachable,
        }
    }
}

/// What a SOCKS5 server's refusal means for the dial (an upstream's reply code). The mapping
/// lives here, with the dialer, because the SOCKS5 codec sits below it and knows no dial.
impl From<ReplyCode> for FailureKind {
    fn from(code: ReplyCode) -> FailureKind {
        match code {
            ReplyCode::ConnectionRefused => FailureKind::Refused,
            ReplyCode::NetworkUnreachable => FailureKind::NetworkUnreachable,
            ReplyCode::HostUnreachable => FailureKind::HostUnreachable,
            ReplyCode::TtlExpired => FailureKind::TimedOut,
            ReplyCode::NotAllowed => FailureKind::Prohibited,
            // Not a refusal at all, a server failure, or a code without a kind of its own.
            ReplyCode::Succeeded
            | ReplyCode::GeneralFailure
            | ReplyCode::CommandNotSupported
            | ReplyCode::AddressTypeNotSupported
            | ReplyCode::Unassigned(_) => FailureKind::Other,
        }
    }
}

/// What a SOCKS5 ingress answers for a failed dial of this kind: the inverse of the mapping
/// above for every kind (`FailureKind::from(ReplyCode::from(kind)) == kind`).
impl From<FailureKind> for ReplyCode {
    fn from(kind: FailureKind) -> ReplyCode {
        match kind {
            FailureKind::Refused => ReplyCode::ConnectionRefused,
            FailureKind::NetworkUnreachable => ReplyCode::NetworkUnreachable,
            FailureKind::HostUnreachable => ReplyCode::HostUnreachable,
            FailureKind::TimedOut => ReplyCode::TtlExpired,
            FailureKind::Prohibited => ReplyCode::NotAllowed,
            FailureKind::Other => ReplyCode::GeneralFailure,
        }
    }
}

/// Why one connect attempt (one address, possibly one interface) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// No answer within the connect timeout.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The operating system reported an error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The socket could not be bound to (or protected for) its interface.
    #[error(transparent)]
    Bind(#[from] crate::platform::BindError),
    /// A socket option could not be set.
    #[error(transparent)]
    Options(#[from] crate::platform::SocketOptionError),
    /// The name could not be resolved over this attempt's network (the error names the DNS
    /// server and the interface).
    #[error(transparent)]
    Resolve(Box<crate::dns::DnsError>),
}

impl AttemptError {
    /// The broad reason of this attempt's failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            AttemptError::TimedOut(_) => FailureKind::TimedOut,
            AttemptError::Io(e) => FailureKind::of_io(e),
            // A socket the platform refused to bind (e.g. EPERM without the privilege) is a local
            // problem, not a rule about the destination.
            AttemptError::Bind(e) => match e.os_error().map(FailureKind::of_io) {
                None => FailureKind::NetworkUnreachable,
                Some(FailureKind::Prohibited) => FailureKind::Other,
                Some(kind) => kind,
            },
            AttemptError::Options(e) => FailureKind::of_io(&e.source),
            AttemptError::Resolve(e) => FailureKind::of_dns(e),
        }
    }
}

/// One connect attempt that failed, or one lookup (`address: None`) that found no address.
#[derive(Debug)]
#[non_exhaustive]
pub struct DialAttempt {
    /// The address that was tried; `None` for a lookup (the error is an [`AttemptError::Resolve`]).
    pub address: Option<SocketAddr>,
    /// The interface the socket was bound to, if any.
    pub interface: Option<String>,
    /// How long the attempt took before failing.
    pub elapsed: Duration,
    /// Why it failed.
    pub error: AttemptError,
}

impl fmt::Display for DialAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Some(address) => write!(f, "{address}")?,
            None => f.write_str("lookup")?,
        }
        if let Some(name) = &self.interface {
            write!(f, " via {name}")?;
        }
        write!(f, ": {} ({} ms)", self.error, self.elapsed.as_millis())
    }
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The name could not be resolved on any network tried (no connect attempt was made). The
    /// error is the most telling of them (NXDOMAIN over a timeout) and names the resolver and
    /// the interface.
    #[error("resolve {host}: {source}")]
    Resolve {
        /// The domain that was looked up.
        host: String,
        /// The resolver's error (boxed: a dial error is carried by every connection's future).
        #[source]
        source: Box<crate::dns::DnsError>,
    },
    /// The resolver answered with no usable address.
    #[error("resolve {host}: no address found")]
    NoAddress {
        /// The domain that was looked up.
        host: String,
    },
    /// No interface could be chosen: no network at all, or none matching the strategy.
    #[error("dial {destination}: {source}")]
    Network {
        /// The destination as the client gave it.
        destination: String,
        /// Why no interface was chosen.
        #[source]
        source: crate::network::strategy::SelectError,
    },
    /// The domain strategy left no address to try (e.g. `ipv6_only` for an IPv4-only host).
    #[error("dial {destination}: no address allowed by domain_strategy {strategy}")]
    NoAllowedAddress {
        /// The destination as the client gave it.
        destination: String,
        /// The domain strategy in force.
        strategy: crate::network::DomainStrategy,
    },
    /// This outbound cannot carry this kind of traffic.
    #[error("{what} to {destination} is not supported by this outbound")]
    Unsupported {
        /// "UDP", …
        what: &'static str,
        /// The destination as the client gave it.
        destination: String,
    },
    /// Every connect attempt failed.
    #[error("connect to {destination} failed: {}", join_attempts(.attempts))]
    Connect {
        /// The destination as the client gave it.
        destination: String,
        /// Every attempt, in the order they were started.
        attempts: Vec<DialAttempt>,
    },
    /// An upstream SOCKS5 server refused to connect to the destination, with this reply code
    /// (never [`ReplyCode::Succeeded`]).
    #[error("upstream SOCKS5 server {proxy} refused {destination}: reply {code}")]
    ProxyRefused {
        /// The SOCKS5 server.
        proxy: SocketAddr,
        /// The destination as the client gave it.
        destination: String,
        /// The server's reply code.
        code: ReplyCode,
    },
    /// An upstream SOCKS5 server broke the protocol or turned the credentials down.
    #[error("upstream SOCKS5 server {proxy}, handshake for {destination}: {reason}")]
    ProxyProtocol {
        /// The SOCKS5 server.
        proxy: SocketAddr,
        /// The destination as the client gave it.
        destination: String,
        /// What went wrong.
        #[source]
        reason: socks5::Socks5Error,
    },
}

fn join_attempts(attempts: &[DialAttempt]) -> String {
    let parts: Vec<String> = attempts.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl DialError {
    /// The broad reason of the failure: `Refused` if any attempt reached a host that refused
    /// (the most specific answer), otherwise the first connect attempt's kind; a name that did
    /// not resolve is `HostUnreachable` (SOCKS reply 0x04), or `TimedOut` when the lookup ran
    /// out of time.
    pub fn kind(&self) -> FailureKind {
        match self {
            DialError::Network { .. } => FailureKind::NetworkUnreachable,
            DialError::Resolve { source, .. } => FailureKind::of_dns(source),
            DialError::NoAddress { .. } | DialError::NoAllowedAddress { .. } => FailureKind::HostUnreachable,
            DialError::Unsupported { .. } => FailureKind::Other,
            DialError::Connect { attempts, .. } => {
                if attempts.iter().any(|a| a.error.kind() == FailureKind::Refused) {
                    return FailureKind::Refused;
                }
                let connects = attempts.iter().filter(|a| a.address.is_some());
                let first = connects.chain(attempts.iter()).next();
                first.map_or(FailureKind::Other, |a| a.error.kind())
            }
            DialError::ProxyRefused { code, .. } => FailureKind::from(*code),
            DialError::ProxyProtocol { reason, .. } => reason.kind(),
        }
    }

    /// The reply code a SOCKS5 ingress sends its client for this failure: an upstream server's
    /// own code when it refused with an assigned failure code (so the client learns exactly what
    /// the upstream said, 0x07 and 0x08 included), otherwise the code of [`DialError::kind`].
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            DialError::ProxyRefused { code: ReplyCode::Succeeded | ReplyCode::Unassigned(_), .. } => {
                ReplyCode::GeneralFailure
            }
            DialError::ProxyRefused { code, .. } => *code,
            other => ReplyCode::from(other.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_map_to_failure_kinds() {
        for (errno, kind) in [
            (libc::ECONNREFUSED, FailureKind::Refused),
            (libc::ENETUNREACH, FailureKind::NetworkUnreachable),
            (libc::EHOSTUNREACH, FailureKind::HostUnreachable),
            (libc::ETIMEDOUT, FailureKind::TimedOut),
            (libc::EACCES, FailureKind::Prohibited),
            (libc::EPERM, FailureKind::Prohibited),
            (libc::EINVAL, FailureKind::Other),
        ] {
            let error = io::Error::from_raw_os_error(errno);
            assert_eq!(FailureKind::of_io(&error), kind, "{error}");
            assert_eq!(AttemptError::Io(error).kind(), kind);
        }
    }

    #[test]
    fn reply_codes_and_failure_kinds_map_both_ways() {
        for kind in [
            FailureKind::Refused,
            FailureKind::NetworkUnreachable,
            FailureKind::HostUnreachable,
            FailureKind::TimedOut,
            FailureKind::Prohibited,
            FailureKind::Other,
        ] {
            assert_eq!(FailureKind::from(ReplyCode::from(kind)), kind);
        }
        for (kind, code) in [
            (FailureKind::Refused, 0x05),
            (FailureKind::NetworkUnreachable, 0x03),
            (FailureKind::HostUnreachable, 0x04),
            (FailureKind::TimedOut, 0x06),
            (FailureKind::Prohibited, 0x02),
            (FailureKind::Other, 0x01),
        ] {
            assert_eq!(u8::from(ReplyCode::from(kind)), code, "{kind:?}");
        }
        for code in [0x00, 0x01, 0x07, 0x08, 0x09, 0xff] {
            assert_eq!(FailureKind::from(ReplyCode::from(code)), FailureKind::Other, "{code:#04x}");
        }
    }

    #[test]
    fn an_upstream_refusal_is_answered_with_its_own_code() {
        let refused = |code: u8| DialError::ProxyRefused {
            proxy: "127.0.0.1:1080".parse().unwrap(),
            destination: "a.example:443".into(),
            code: ReplyCode::from(code),
        };
        for code in 0x01..=0x08 {
            assert_eq!(u8::from(refused(code).reply_code()), code);
        }
        assert_eq!(refused(0x02).kind(), FailureKind::Prohibited);
        assert_eq!(refused(0x42).reply_code(), ReplyCode::GeneralFailure);
        assert_eq!(refused(0x00).reply_code(), ReplyCode::GeneralFailure);
        let text = refused(0x05).to_string();
        assert_eq!(
            text,
            "upstream SOCKS5 server 127.0.0.1:1080 refused a.example:443: reply 0x05 (connection refused)"
        );
        let unsupported = DialError::Unsupported { what: "UDP", destination: "a.example:53".into() };
        assert_eq!(unsupported.reply_code(), ReplyCode::GeneralFailure);
    }
}
