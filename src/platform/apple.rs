//! Apple platforms (iOS, macOS, tvOS, visionOS, watchOS): `IP_BOUND_IF` for IPv4 sockets and
//! `IPV6_BOUND_IF` for IPv6 sockets, by interface index (socket2's `bind_device_by_index_v4/_v6`).
//!
//! The option must match the socket's family; netswitch creates every socket in its
//! destination's family, so the destination decides. Protect is a no-op: a Network Extension
//! provider's own sockets stay out of its tunnel without help.
//!
//! Not compiled on the Linux development machine; keep it small and keep to socket2's API.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use socket2::Socket;

use super::{BindError, SocketBinder};
use crate::network::NetworkInterface;

/// Binds sockets with `IP_BOUND_IF` / `IPV6_BOUND_IF`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppleBinder;

impl SocketBinder for AppleBinder {
    fn protect(&self, _: &Socket, _: &NetworkInterface, _: SocketAddr) -> Result<(), BindError> {
        Ok(())
    }

    fn bind_to_interface(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        let option = if destination.is_ipv4() { "IP_BOUND_IF" } else { "IPV6_BOUND_IF" };
        // Index 0 would remove the binding: refuse it rather than leave the socket unbound.
        let Some(index) = NonZeroU32::new(interface.index) else {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "invalid interface index 0");
            return Err(BindError::os(interface, option, error));
        };
        let result = if destination.is_ipv4() {
            socket.bind_device_by_index_v4(Some(index))
        } else {
            socket.bind_device_by_index_v6(Some(index))
        };
        result.map_err(|error| BindError::os(interface, option, error))
    }
}
