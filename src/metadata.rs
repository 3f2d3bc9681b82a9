//! What a connection is for: its [`Destination`] and the per-connection [`Metadata`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::network::strategy::NetworkStrategy;
use crate::network::DomainStrategy;
use crate::network::NetworkType;

/// The host part of a destination: an IP address or a domain name still to be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address; no resolution needed.
    Ip(IpAddr),
    /// A domain name (never an IP literal; [`Host::parse`] turns literals into [`Host::Ip`]).
    Domain(String),
}

impl Host {
    /// Parses a host: an IPv4 or IPv6 literal (with or without brackets) becomes [`Host::Ip`],
    /// anything else a [`Host::Domain`]. Fails on an empty name, one longer than 255 bytes, or one
    /// with a control character (CR, LF, ESC, DEL, C1) or a Unicode line/paragraph separator:
    /// never part of a host name, and a domain is logged, so they could forge log lines.
    pub fn parse(text: &str) -> Result<Host, DestinationError> {
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let unprintable = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
        if text.is_empty() || text.len() > 255 || text.contains(unprintable) {
            return Err(DestinationError::BadHost(text.to_string()));
        }
        Ok(Host::Domain(text.to_string()))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Domain(name) => f.write_str(name),
        }
    }
}

/// Where a connection goes: a host and a port.
///
/// ```
/// use netswitch::{Destination, Host};
///
/// let web: Destination = "example.com:443".parse().unwrap();
/// assert_eq!(web, Destination::domain("example.com", 443));
/// let v6: Destination = "[::1]:8080".parse().unwrap();
/// assert_eq!(v6.socket_addr(), Some("[::1]:8080".parse().unwrap()));
/// assert!(matches!("10.0.0.1:53".parse::<Destination>().unwrap().host, Host::Ip(_)));
/// assert!("example.com".parse::<Destination>().is_err(), "a port is required");
/// assert!("example.com:0".parse::<Destination>().is_err(), "port 0 is refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The host: IP address or domain.
    pub host: Host,
    /// The TCP or UDP port.
    pub port: u16,
}

impl Destination {
    /// A destination for a domain name and port.
    pub fn domain(name: impl Into<String>, port: u16) -> Destination {
        Destination { host: Host::Domain(name.into()), port }
    }

    /// The socket address when the host is an IP address, `None` for a domain.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Domain(_) => None,
        }
    }
}

impl From<SocketAddr> for Destination {
    fn from(addr: SocketAddr) -> Destination {
        Destination { host: Host::Ip(addr.ip()), port: addr.port() }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a destination string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// The text has no `:port` part.
    #[error("destination {0:?} has no port (expected host:port or [ipv6]:port)")]
    MissingPort(String),
    /// The port is not a number in 1..=65535.
    #[error("destination {0:?} has an invalid port (expected 1-65535)")]
    BadPort(String),
    /// The host is empty, longer than 255 bytes, or has a control character.
    #[error("destination host {0:?} is empty, longer than 255 bytes, or has a control character")]
    BadHost(String),
}

impl FromStr for Destination {
    type Err = DestinationError;

    /// Parses `host:port`, `1.2.3.4:port` or `[v6]:port`.
    fn from_str(text: &str) -> Result<Destination, DestinationError> {
        let (host, port) =
            text.rsplit_once(':').ok_or_else(|| DestinationError::MissingPort(text.to_string()))?;
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            // A bare IPv6 literal without brackets: the last colon is not a port separator.
            return Err(DestinationError::MissingPort(text.to_string()));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| DestinationError::BadPort(text.to_string()))?;
        Ok(Destination { host: Host::parse(host)?, port })
    }
}

/// Per-connection options. Every field left `None` takes the manager's configured value.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// Deadline of the whole dial (name resolution and every connect attempt). Default: the
    /// config's `connect_timeout` (5 s).
    pub connect_timeout: Option<Duration>,
    /// Network strategy (`network_strategy`): default / hybrid / fallback.
    pub network_strategy: Option<NetworkStrategy>,
    /// Preferred network types (`network_type`); empty list = no preference.
    pub network_type: Option<Vec<NetworkType>>,
    /// Fallback network types (`fallback_network_type`), used by the `fallback` strategy.
    pub fallback_network_type: Option<Vec<NetworkType>>,
    /// Delay before fallback networks and the second address family join the race
    /// (`fallback_delay`). Default 300 ms.
    pub fallback_delay: Option<Duration>,
    /// Address-family policy (`domain_strategy`). Default `prefer_ipv6`.
    pub domain_strategy: Option<DomainStrategy>,
    /// UDP: connect the remote socket to one resolved address (`udp_connect`). Default false:
    /// one unconnected socket that may send to many destinations.
    pub udp_connect: bool,
    /// TLS segment fragmentation (`tls_fragment`): the first ClientHello goes out cut inside every
    /// server-name label, one TCP segment per piece. On when this or the config turns it on.
    /// Default off.
    pub tls_fragment: bool,
    /// TLS record fragmentation (`tls_record_fragment`): the first ClientHello is re-framed as
    /// several TLS records, cut inside every server-name label. On when this or the config turns
    /// it on. Default off.
    pub tls_record_fragment: bool,
    /// Turns TLS fragmentation off for this connection, both modes, even where the config or
    /// `tls_fragment` / `tls_record_fragment` turn it on. Default false.
    pub disable_tls_fragment: bool,
    /// Bound of the wait for the peer's acknowledgement between TLS fragments
    /// (`tls_fragment_fallback_delay`). Default: the config's value (500 ms).
    pub tls_fragment_fallback_delay: Option<Duration>,
    /// UDP: idle timeout of this session (`udp_timeout`). Beats the protocol timeout (DNS, QUIC…)
    /// and the ingress default. `None` or zero: protocol timeout, else the default (5 min).
    pub udp_timeout: Option<Duration>,
    /// UDP: replies from a resolved domain reach the client from the real IP instead of the domain
    /// (`udp_disable_domain_unmapping`). Default false: replies carry the domain.
    pub udp_disable_domain_unmapping: bool,
    /// Send this connection to another address instead of its destination (`override_address` +
    /// `override_port`): TCP dials it; UDP sends there and shows replies from it as coming from
    /// the original destination (exact address:port translation both ways). Default none.
    pub override_destination: Option<SocketAddr>,
}

/// Everything netswitch knows about one connection before dialing it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metadata {
    /// Where the client wants to go.
    pub destination: Destination,
    /// Addresses already resolved for a domain destination, tried in order instead of asking the
    /// resolver. Empty: resolve the domain (or use the IP) at dial time.
    pub resolved_addresses: Vec<IpAddr>,
    /// Per-connection overrides.
    pub options: ConnectionOptions,
    /// The client's own address when the ingress knows it (the app's socket address for a
    /// connection from the packet tunnel). `None` when unknown. Informational: it is not dialed.
    pub source: Option<SocketAddr>,
    /// What an ingress's decision hook decided for this connection, for display (the packet
    /// tunnel's [`TunDecider`](crate::tun::decide::TunDecider): e.g. `"app 10123: network=cellular"`,
    /// `"default (decider timed out)"`). `None` when no hook was asked. Informational.
    pub decision: Option<String>,
}

impl Metadata {
    /// Metadata for a destination with no pre-resolved addresses and default options.
    pub fn new(destination: Destination) -> Metadata {
        Metadata {
            destination,
            resolved_addresses: Vec::new(),
            options: ConnectionOptions::default(),
            source: None,
            decision: None,
        }
    }

    /// These metadata with the client's address `source` (see [`Metadata::source`]).
    pub fn with_source(mut self, source: SocketAddr) -> Metadata {
        self.source = Some(source);
        self
    }

    /// What to dial: these metadata, or, with `override_destination`, the same options aimed at
    /// the override address (pre-resolved addresses dropped).
    pub fn dial_target(&self) -> std::borrow::Cow<'_, Metadata> {
        match self.options.override_destination {
            None => std::borrow::Cow::Borrowed(self),
            Some(address) => std::borrow::Cow::Owned(Metadata {
                destination: address.into(),
                resolved_addresses: Vec::new(),
                options: self.options.clone(),
                source: self.source,
                decision: self.decision.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations() {
        let d: Destination = "example.com:443".parse().unwrap();
        assert_eq!(d, Destination::domain("example.com", 443));
        let d: Destination = "[::1]:80".parse().unwrap();
        assert_eq!(d.socket_addr(), Some("[::1]:80".parse().unwrap()));
        assert_eq!(d.to_string(), "[::1]:80");
        let d: Destination = "10.0.0.1:53".parse().unwrap();
        assert_eq!(d.to_string(), "10.0.0.1:53");
    }

    #[test]
    fn rejects_bad_destinations() {
        assert!(matches!("example.com".parse::<Destination>(), Err(DestinationError::MissingPort(_))));
        assert!(matches!("::1:80".parse::<Destination>(), Err(DestinationError::MissingPort(_))));
        assert!(matches!("a:0".parse::<Destination>(), Err(DestinationError::BadPort(_))));
        assert!(matches!("a:70000".parse::<Destination>(), Err(DestinationError::BadPort(_))));
        assert!(matches!(":80".parse::<Destination>(), Err(DestinationError::BadHost(_))));
    }

    #[test]
    fn control_characters_are_never_part_of_a_host() {
        for name in ["a\nb", "a\rb", "a\u{1b}[2Jb", "a\tb", "a\0b", "a\u{7f}b", "a\u{85}b", "a\u{2028}b"] {
            assert!(matches!(Host::parse(name), Err(DestinationError::BadHost(_))), "{name:?}");
            let error = format!("{name}:443").parse::<Destination>().unwrap_err().to_string();
            assert!(!error.contains(name), "the error repeats the raw name: {error:?}");
        }
        assert_eq!(
            Host::parse("xn--bcher-kva.example").unwrap(),
            Host::Domain("xn--bcher-kva.example".into())
        );
        assert_eq!(Host::parse("bücher.example").unwrap(), Host::Domain("bücher.example".into()));
    }
}
