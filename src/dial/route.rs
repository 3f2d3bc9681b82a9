//! Where a dial goes and over what: a [`Route`] (an interface of the snapshot or the unbound
//! system route) and a [`Plan`] (fixed addresses, or a name each route resolves), shared by the
//! TCP race and the UDP socket opener; and the one way both create their sockets.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::eyeballs::RaceNetwork;
use crate::dns::Family;
use crate::network::{DomainStrategy, Egress, NetworkInterface};

/// One route an attempt can take: an interface of the snapshot, or the unbound system route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The interface, `None` for the system route.
    pub interface: Option<NetworkInterface>,
    /// True for the snapshot's default interface (protected, not bound).
    pub is_default: bool,
}

impl RaceNetwork for Route {
    fn name(&self) -> Option<&str> {
        self.interface.as_ref().map(|i| i.name.as_str())
    }

    /// False when the host reported the interface's addresses and none is of `family` (on an
    /// IPv6-only network an A record is of no use: a socket bound to it does not even get
    /// `ENETUNREACH` on Linux, its packets just vanish). True when addresses are not reported.
    fn supports(&self, family: Family) -> bool {
        match &self.interface {
            Some(interface) if !interface.addresses.is_empty() => {
                interface.addresses.iter().any(|a| Family::of(a.ip) == family)
            }
            _ => true,
        }
    }
}

impl Route {
    /// The egress a socket on this route reports: bound to its interface unless that is the
    /// default (protected, not bound).
    pub fn egress(&self) -> Egress {
        match &self.interface {
            Some(i) if self.is_default => Egress::through(i),
            Some(i) => Egress::through(i).as_bound(),
            None => Egress::default(),
        }
    }
}

/// What a dial goes to: addresses known before it starts, or a name each network resolves.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// An IP destination or pre-resolved addresses, filtered and ordered by the domain strategy.
    Addresses(Vec<SocketAddr>),
    /// A domain: resolved over each network, for these families (preferred first).
    Name {
        /// The domain.
        name: String,
        /// The port.
        port: u16,
        /// The families the domain strategy allows, preferred first.
        families: &'static [Family],
    },
}

/// The families a domain strategy looks up, preferred first.
pub fn families_of(strategy: DomainStrategy) -> &'static [Family] {
    match strategy {
        DomainStrategy::PreferIpv6 => &[Family::V6, Family::V4],
        DomainStrategy::PreferIpv4 => &[Family::V4, Family::V6],
        DomainStrategy::Ipv4Only => &[Family::V4],
        DomainStrategy::Ipv6Only => &[Family::V6],
    }
}

/// A non-blocking, close-on-exec socket for `address`'s family (one syscall where the platform
/// takes `SOCK_NONBLOCK`; socket2 always sets close-on-exec).
pub(crate) fn nonblocking_socket(
    address: SocketAddr,
    kind: Type,
    protocol: Protocol,
) -> std::io::Result<Socket> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return Socket::new(Domain::for_address(address), kind.nonblocking(), Some(protocol));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }
}
