//! Opening the outbound UDP socket of a session (the direct outbound's `open_udp`).
//!
//! Routes are tried in strategy order (primaries, then fallbacks). On each, a domain is resolved
//! with that route's resolver; the addresses are tried interleaved by family (preferred family
//! first, RFC 8305 §4). A socket is kept on the first address whose family the route can reach:
//! in connected mode `connect` says so (`ENETUNREACH` / `EHOSTUNREACH` at once: the next address,
//! of the other family, is tried); in unconnected mode, when both families are candidates, a
//! throwaway socket prepared the same way is connected first to ask the routing table, so a
//! session to a dual-stack name on an IPv4-only network gets an IPv4 socket instead of dropping
//! every datagram. The route's resolver goes with the socket, for the other names an
//! unconnected session sends to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Protocol, Type};
use tokio::net::UdpSocket;

use super::eyeballs::RaceNetwork;
use super::route::{nonblocking_socket, Plan, Route};
use super::{AttemptError, DialAttempt, DialedUdp};
use crate::dns::{Family, Resolve};
use crate::platform::{bind_socket, SocketBinder};

/// Opens the UDP socket for `plan` over `routes` (in strategy order, primaries first), each
/// route resolving a name with `resolver_for(route)`, every socket passing `binder`, connected
/// when `connect`; every lookup ends by `deadline`. Fails with every attempt (lookups and
/// sockets) when no route gave a usable socket.
pub(crate) async fn open_udp(
    plan: &Plan,
    routes: &[Route],
    resolver_for: &(dyn Fn(&Route) -> Arc<dyn Resolve> + Sync),
    binder: Option<&dyn SocketBinder>,
    connect: bool,
    deadline: tokio::time::Instant,
) -> Result<DialedUdp, Vec<DialAttempt>> {
    let mut attempts = Vec::new();
    for route in routes {
        let resolver = resolver_for(route);
        let (candidates, is_name) = match plan {
            Plan::Addresses(addresses) => (addresses.clone(), false),
            Plan::Name { name, port, families } => {
                let started = Instant::now();
                let usable: Vec<Family> = families.iter().copied().filter(|f| route.supports(*f)).collect();
                let families: &[Family] = if usable.is_empty() { families } else { &usable };
                match resolver.lookup(name, families, deadline).all().await {
                    Ok(answer) => {
                        let found = answer.addresses.iter().map(|ip| SocketAddr::new(*ip, *port)).collect();
                        (interleaved(found, families.first().copied()), true)
                    }
                    Err(error) => {
                        attempts.push(DialAttempt {
                            address: None,
                            interface: route.name().map(str::to_string),
                            elapsed: started.elapsed(),
                            error: AttemptError::Resolve(Box::new(error)),
                        });
                        continue;
                    }
                }
            }
        };
        let mixed = candidates.iter().any(|a| a.is_ipv4()) && candidates.iter().any(|a| a.is_ipv6());
        for (position, &address) in candidates.iter().enumerate() {
            let started = Instant::now();
            let last = position + 1 == candidates.len();
            // Unconnected: ask the routing table first, unless this is the last chance.
            let probe = !connect && mixed && !last;
            let opened = if probe {
                open_on(binder, route, address, true).and_then(|_| open_on(binder, route, address, false))
            } else {
                open_on(binder, route, address, connect)
            };
            match opened {
                Ok(socket) => {
                    return Ok(DialedUdp {
                        socket,
                        connected_to: connect.then_some(address),
                        egress: route.egress(),
                        resolved: (!connect && is_name).then_some(address),
                        resolver: Some(resolver),
                    })
                }
                Err(error) => {
                    tracing::debug!(interface = route.name().unwrap_or("system route"), %address, %error, "UDP socket not usable");
                    attempts.push(DialAttempt {
                        address: Some(address),
                        interface: route.name().map(str::to_string),
                        elapsed: started.elapsed(),
                        error,
                    });
                }
            }
        }
    }
    Err(attempts)
}

/// `addresses` with the families alternating, `preferred` first (RFC 8305 §4), each family in
/// its own order.
pub(crate) fn interleaved(addresses: Vec<SocketAddr>, preferred: Option<Family>) -> Vec<SocketAddr> {
    let preferred = preferred.or_else(|| addresses.first().map(|a| Family::of(a.ip())));
    let (mut first, mut second): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addresses.into_iter().partition(|a| Some(Family::of(a.ip())) == preferred);
    let mut out = Vec::with_capacity(first.len() + second.len());
    let (mut first, mut second) = (first.drain(..), second.drain(..));
    loop {
        match (first.next(), second.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// The receive buffer a session's socket asks for (`SO_RCVBUF`): 2 MiB, which the kernel
/// doubles for its bookkeeping, so about 1,700 datagrams of 1,200 bytes (35 ms at 500 Mbit/s)
/// wait while the session's task waits for a CPU, where the usual default (208 KiB) holds about
/// 3 ms. No privilege is needed: the kernel caps the request at `net.core.rmem_max` (an
/// unprivileged app, such as an Android `VpnService`, cannot pass that cap; `SO_RCVBUFFORCE`
/// needs `CAP_NET_ADMIN` and is not used). The buffer is kernel memory used only while
/// datagrams wait in it.
pub const UDP_RECV_BUFFER: usize = 2 << 20;

/// Creates a UDP socket for `address`'s family, binds it to the route, and connects it when asked.
fn open_on(
    binder: Option<&dyn SocketBinder>,
    route: &Route,
    address: SocketAddr,
    connect: bool,
) -> Result<UdpSocket, AttemptError> {
    let socket = nonblocking_socket(address, Type::DGRAM, Protocol::UDP)?;
    // Best effort: a smaller buffer (capped by the system) only means drops sooner.
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!(%address, %error, "UDP socket receive buffer not raised");
    }
    if let (Some(binder), Some(interface)) = (binder, &route.interface) {
        bind_socket(binder, &socket, interface, address, route.is_default)?;
    }
    if connect {
        socket.connect(&address.into())?;
    }
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(socket))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate_preferred_first() {
        let list: Vec<SocketAddr> = ["1.1.1.1:1", "2.2.2.2:1", "3.3.3.3:1", "[::1]:1", "[::2]:1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let show = |v: Vec<SocketAddr>| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        assert_eq!(
            show(interleaved(list.clone(), Some(Family::V6))),
            "[::1]:1 1.1.1.1:1 [::2]:1 2.2.2.2:1 3.3.3.3:1"
        );
        assert_eq!(
            show(interleaved(list.clone(), Some(Family::V4))),
            "1.1.1.1:1 [::1]:1 2.2.2.2:1 [::2]:1 3.3.3.3:1"
        );
        assert_eq!(show(interleaved(list[..2].to_vec(), Some(Family::V6))), "1.1.1.1:1 2.2.2.2:1");
    }
}
