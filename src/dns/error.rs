//! Why a lookup failed. Every error that involves a resolver names it: the DNS server and the
//! interface the query went over ("DNS 10.0.0.1 on wlan0"), the host's resolver for an
//! interface, or the system resolver.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::platform::BindError;

/// Who was asked: a DNS server over one interface, the host's resolver for one interface, or
/// the system resolver (`getaddrinfo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Via {
    /// A DNS server, queried over sockets bound to `interface` (`None`: the unbound system route).
    Server {
        /// The server's address (port 53 unless the host said otherwise).
        server: SocketAddr,
        /// The interface the query sockets were bound to.
        interface: Option<String>,
    },
    /// The host app's resolver for one network (Android `DnsResolver` on that `Network`…).
    Host {
        /// The interface whose network the host resolved on.
        interface: String,
    },
    /// The operating system's resolver (`getaddrinfo`), last resort.
    System,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Server { server, interface } => {
                // "DNS 10.0.0.1 on wlan0": the port only when it is not 53.
                if server.port() == 53 {
                    write!(f, "DNS {}", server.ip())?;
                } else {
                    write!(f, "DNS {server}")?;
                }
                match interface {
                    Some(name) => write!(f, " on {name}"),
                    None => f.write_str(" on the system route"),
                }
            }
            Via::Host { interface } => write!(f, "the host's resolver on {interface}"),
            Via::System => f.write_str("the system resolver"),
        }
    }
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name is not a valid host name (empty label, label over 63 bytes, over 253 bytes, not
    /// ASCII…). Nothing was sent.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The name does not exist (NXDOMAIN).
    #[error("{via}: {name} does not exist (NXDOMAIN)")]
    NxDomain {
        /// The name.
        name: String,
        /// Who said so.
        via: Via,
    },
    /// The name exists but has no address of the families asked for (NODATA).
    #[error("{via}: {name} has no {families} address")]
    NoAddress {
        /// The name.
        name: String,
        /// "IPv4", "IPv6" or "IPv4 or IPv6".
        families: &'static str,
        /// Who answered.
        via: Via,
    },
    /// No answer by the deadline (or no free slot for the query by then).
    #[error("{via}: timed out after {} ms", .after.as_millis())]
    TimedOut {
        /// The last resolver tried.
        via: Via,
        /// Time spent on the lookup.
        after: Duration,
    },
    /// The server answered with an error code (SERVFAIL, REFUSED…).
    #[error("{via}: server answered {rcode}")]
    ServerError {
        /// The server.
        via: Via,
        /// The response code, as text.
        rcode: String,
    },
    /// The answer could not be parsed, does not match the question, or was truncated over TCP.
    #[error("{via}: bad answer: {reason}")]
    BadAnswer {
        /// The server.
        via: Via,
        /// What is wrong.
        reason: String,
    },
    /// A query socket could not be created, connected or used.
    #[error("{via}: {operation}: {source}")]
    Io {
        /// The server.
        via: Via,
        /// "socket", "connect", "send", "receive"…
        operation: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A query socket could not be bound to (or protected for) its interface: nothing was sent.
    #[error("{via}: {source}")]
    Bind {
        /// The server.
        via: Via,
        /// The binder's error (names the interface; boxed: it is large).
        #[source]
        source: Box<BindError>,
    },
    /// The host's resolver failed (threw, or answered something that is not an IP address).
    #[error("{via}: {reason}")]
    Host {
        /// The host resolver and its interface.
        via: Via,
        /// The host's explanation.
        reason: String,
    },
    /// The system resolver failed (its own error text), or is saturated.
    #[error("{}: {reason}", Via::System)]
    System {
        /// What `getaddrinfo` said.
        reason: String,
    },
}

impl DnsError {
    /// True when the name does not exist (NXDOMAIN).
    pub fn is_nxdomain(&self) -> bool {
        matches!(self, DnsError::NxDomain { .. })
    }

    /// True when the answer was definite: the name does not exist, has no address of the
    /// families asked for, or is not a valid name. Asking again elsewhere on the same network
    /// would not help; a client is told "host unreachable" (SOCKS reply 0x04).
    pub fn is_definite(&self) -> bool {
        matches!(self, DnsError::NxDomain { .. } | DnsError::NoAddress { .. } | DnsError::InvalidName { .. })
    }

    /// True when the lookup ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, DnsError::TimedOut { .. })
    }

    /// The OS error behind a socket or bind failure, if any (to classify it like a connect error).
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            DnsError::Io { source, .. } => Some(source),
            DnsError::Bind { source, .. } => source.os_error(),
            _ => None,
        }
    }

    /// How telling this error is when several lookups failed (lower = more telling): a definite
    /// answer beats a server error, which beats a timeout.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            DnsError::NxDomain { .. } | DnsError::InvalidName { .. } => 0,
            DnsError::NoAddress { .. } => 1,
            DnsError::ServerError { .. } | DnsError::BadAnswer { .. } | DnsError::Host { .. } => 2,
            DnsError::Io { .. } | DnsError::Bind { .. } | DnsError::System { .. } => 3,
            DnsError::TimedOut { .. } => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_server_and_the_interface() {
        let via = Via::Server { server: "10.0.0.1:53".parse().unwrap(), interface: Some("wlan0".into()) };
        let error = DnsError::TimedOut { via, after: Duration::from_secs(2) };
        assert_eq!(error.to_string(), "DNS 10.0.0.1 on wlan0: timed out after 2000 ms");
        let via = Via::Server { server: "[fd00::1]:5353".parse().unwrap(), interface: None };
        let error = DnsError::NxDomain { name: "a.test".into(), via };
        assert_eq!(
            error.to_string(),
            "DNS [fd00::1]:5353 on the system route: a.test does not exist (NXDOMAIN)"
        );
        assert!(error.is_nxdomain() && error.is_definite());
        let error = DnsError::Host { via: Via::Host { interface: "rmnet0".into() }, reason: "boom".into() };
        assert_eq!(error.to_string(), "the host's resolver on rmnet0: boom");
        assert_eq!(DnsError::System { reason: "busy".into() }.to_string(), "the system resolver: busy");
    }
}
