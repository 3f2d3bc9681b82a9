//! Simulated networks for unprivileged tests: each simulated interface is a loopback source
//! address (`127.0.0.2` for "wifi", `127.0.0.3` for "cellular"…), taken from the interface's
//! `addresses` in the snapshot. Binding a socket to the interface binds that source address, so
//! a loopback server sees which "network" a connection came from.
//!
//! `IP_BIND_ADDRESS_NO_PORT` is set before the bind (Linux / Android) so no ephemeral port is
//! reserved until `connect` (DESIGN §6): connection churn cannot exhaust ports.
//!
//! Public on purpose, not behind a test-only feature: an embedder's own tests (a desktop
//! `cargo test`, no root, no network namespace) drive network switching with it exactly as
//! netswitch's tests do — pass it to [`NetswitchBuilder::binder`](crate::NetswitchBuilder::binder)
//! and push snapshots whose interfaces carry loopback addresses. It adds no dependency and does
//! nothing unless chosen.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use socket2::{SockAddr, Socket};

use super::{BindError, SocketBinder};
use crate::network::NetworkInterface;

/// Binds sockets to their simulated interface's source address. The default interface is bound
/// too (that is what the system route would do on a real device), and loopback destinations are
/// bound (these networks live on loopback). Interfaces can be made to fail their binds to
/// simulate a network that refuses sockets.
#[derive(Debug, Default)]
pub struct SimulatedBinder {
    failing: Mutex<HashSet<u32>>,
}

impl SimulatedBinder {
    /// A binder with no failing interfaces.
    pub fn new() -> SimulatedBinder {
        SimulatedBinder::default()
    }

    /// Makes every later bind to the interface with this index fail (`failing == true`) or work
    /// again (`false`).
    pub fn set_failing(&self, index: u32, failing: bool) {
        let mut set = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing {
            set.insert(index);
        } else {
            set.remove(&index);
        }
    }

    fn bind_source(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        if self.failing.lock().unwrap_or_else(PoisonError::into_inner).contains(&interface.index) {
            let error = io::Error::new(io::ErrorKind::NetworkUnreachable, "simulated bind failure");
            return Err(BindError::os(interface, "simulated bind", error));
        }
        let source = source_address(interface, destination.ip())?;
        set_bind_address_no_port(socket)
            .map_err(|e| BindError::os(interface, "IP_BIND_ADDRESS_NO_PORT", e))?;
        socket
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| BindError::os(interface, "bind to simulated source address", e))
    }
}

impl SocketBinder for SimulatedBinder {
    fn protect(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        self.bind_source(socket, interface, destination)
    }

    fn bind_to_interface(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        self.bind_source(socket, interface, destination)
    }

    fn networks_on_loopback(&self) -> bool {
        true
    }
}

/// The interface's first address of the destination's family.
fn source_address(interface: &NetworkInterface, destination: IpAddr) -> Result<IpAddr, BindError> {
    interface.first_address_like(destination).ok_or_else(|| BindError::NoSourceAddress {
        interface: interface.name.clone(),
        index: interface.index,
        family: if destination.is_ipv4() { "IPv4" } else { "IPv6" },
    })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
        .map_err(io::Error::from)
}

/// Other platforms have no such option; the bind reserves a port (acceptable for tests).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_bind_address_no_port(_: &Socket) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use socket2::{Domain, Type};

    use super::*;
    use crate::network::NetworkType;

    #[test]
    fn binds_the_source_address_without_a_port() {
        let wifi = NetworkInterface::new("sim-wifi", 1, NetworkType::Wifi)
            .with_address("127.0.0.2".parse().unwrap(), 8);
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        SimulatedBinder::new().bind_to_interface(&socket, &wifi, "127.0.0.1:9".parse().unwrap()).unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(local, "127.0.0.2:0".parse().unwrap(), "no port reserved before connect");
    }

    #[test]
    fn missing_family_and_failing_interfaces_are_errors() {
        let binder = SimulatedBinder::new();
        let wifi = NetworkInterface::new("sim-wifi", 1, NetworkType::Wifi)
            .with_address("127.0.0.2".parse().unwrap(), 8);
        let v6 = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        let err = binder.bind_to_interface(&v6, &wifi, "[::1]:9".parse().unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "simulated interface sim-wifi (index 1) has no IPv6 address to bind to");

        binder.set_failing(1, true);
        let v4 = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let err = binder.protect(&v4, &wifi, "127.0.0.1:9".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("sim-wifi (index 1)"), "{err}");
        binder.set_failing(1, false);
        binder.protect(&v4, &wifi, "127.0.0.1:9".parse().unwrap()).unwrap();
    }
}
