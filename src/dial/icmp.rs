//! Opening an ICMP echo socket (the direct outbound's `open_icmp`): an unprivileged ICMP
//! datagram socket — `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` or `IPPROTO_ICMPV6`, a "ping
//! socket" — bound to the route the strategy chooses and connected to the destination.
//!
//! Where the operating system allows such sockets: Linux when the process's group is in
//! `net.ipv4.ping_group_range` (for both families; the range is per network namespace),
//! Android (its range admits every app), Apple platforms. Elsewhere `socket` fails with
//! `EACCES` (Linux) or `EPERM`, the same on every route, so the first such failure ends the
//! attempt ([`is_denied`] recognises it in the dial error).
//!
//! The routes are tried in strategy order and the first socket that binds and connects is
//! kept: an echo cannot tell a silent host from a broken network, so there is no race.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use socket2::{Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::route::{nonblocking_socket, Route};
use super::{AttemptError, DialAttempt, DialError};
use crate::dial::eyeballs::RaceNetwork;
use crate::dns::Family;
use crate::network::Egress;
use crate::platform::{bind_socket, SocketBinder};

/// An ICMP echo socket connected to one destination, and the network it uses.
#[derive(Debug)]
pub struct DialedIcmp {
    /// The non-blocking ping socket, connected to the destination: `send` takes an ICMP echo
    /// request message (header and data, no IP header); `recv` yields the replies (on Apple
    /// platforms an IPv4 reply still has its IP header in front).
    pub socket: AsyncFd<Socket>,
    /// Which interface / network the socket uses.
    pub egress: Egress,
}

/// Opens the echo socket to `destination` over the first of `routes` (strategy order,
/// primaries first) that takes it, every socket passing `binder`. Fails with every attempt.
pub(crate) fn open_icmp(
    routes: &[Route],
    binder: Option<&dyn SocketBinder>,
    destination: IpAddr,
) -> Result<DialedIcmp, Vec<DialAttempt>> {
    let address = SocketAddr::new(destination, 0);
    let mut attempts = Vec::new();
    for route in routes.iter().filter(|route| route.supports(Family::of(destination))) {
        let started = Instant::now();
        let opened = open_on(binder, route, address);
        match opened {
            Ok(socket) => return Ok(DialedIcmp { socket, egress: route.egress() }),
            Err(error) => {
                tracing::debug!(interface = route.name().unwrap_or("system route"), %destination, %error, "ICMP echo socket not usable");
                let denied = matches!(&error, AttemptError::Io(e) if is_denied_io(e));
                attempts.push(DialAttempt {
                    address: Some(address),
                    interface: route.name().map(str::to_string),
                    elapsed: started.elapsed(),
                    error,
                });
                if denied {
                    break;
                }
            }
        }
    }
    if attempts.is_empty() {
        let error = io::Error::new(
            io::ErrorKind::NetworkUnreachable,
            format!("no chosen network has an address of {destination}'s family"),
        );
        attempts.push(DialAttempt {
            address: Some(address),
            interface: None,
            elapsed: std::time::Duration::ZERO,
            error: AttemptError::Io(error),
        });
    }
    Err(attempts)
}

/// Creates the ping socket for `address`'s family, binds it to the route and connects it.
fn open_on(
    binder: Option<&dyn SocketBinder>,
    route: &Route,
    address: SocketAddr,
) -> Result<AsyncFd<Socket>, AttemptError> {
    let protocol = if address.is_ipv4() { Protocol::ICMPV4 } else { Protocol::ICMPV6 };
    let socket = nonblocking_socket(address, Type::DGRAM, protocol)?;
    if let (Some(binder), Some(interface)) = (binder, &route.interface) {
        bind_socket(binder, &socket, interface, address, route.is_default)?;
    }
    // Connected: `send` needs no address, and the routing table answers now (ENETUNREACH).
    socket.connect(&address.into())?;
    // `register` panics outside a runtime: fail instead.
    tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    // SAFETY: the AsyncFd owns the socket, which stays open, and is the same descriptor, until
    // the AsyncFd is dropped.
    Ok(unsafe { AsyncFd::register(socket) }.map_err(|error| error.into_parts().1)?)
}

/// True when `socket()` refused a ping socket for lack of permission (Linux: the group is not
/// in `net.ipv4.ping_group_range`).
fn is_denied_io(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// True when a failed [`Outbound::open_icmp`](super::Outbound::open_icmp) means that no echo
/// socket can be had at all (the operating system denies ping sockets, or the outbound carries
/// no ICMP), rather than that this destination's networks failed.
pub fn is_denied(error: &DialError) -> bool {
    match error {
        DialError::Unsupported { .. } => true,
        DialError::Connect { attempts, .. } => {
            attempts.iter().any(|a| matches!(&a.error, AttemptError::Io(e) if is_denied_io(e)))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: io::Error) -> DialError {
        let attempt = DialAttempt {
            address: Some("10.0.0.1:0".parse().unwrap()),
            interface: Some("wlan0".into()),
            elapsed: std::time::Duration::ZERO,
            error: AttemptError::Io(error),
        };
        DialError::Connect { destination: "10.0.0.1:0".into(), attempts: vec![attempt] }
    }

    #[test]
    fn only_a_refused_socket_or_an_outbound_without_icmp_is_a_denial() {
        assert!(is_denied(&failed(io::Error::from_raw_os_error(libc::EACCES))));
        assert!(is_denied(&failed(io::Error::from_raw_os_error(libc::EPERM))));
        assert!(!is_denied(&failed(io::Error::from_raw_os_error(libc::ENETUNREACH))));
        let unsupported = DialError::Unsupported { what: "ICMP echo", destination: "10.0.0.1".into() };
        assert!(is_denied(&unsupported));
    }
}
