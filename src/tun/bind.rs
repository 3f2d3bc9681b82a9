//! [`BindDefault`]: a binder for a desktop tunnel whose routes capture the default route.
//!
//! The manager's rule is to protect the default interface and not bind it (binding it breaks
//! some Android devices, where `VpnService.protect` keeps sockets out of the VPN). A desktop
//! Linux tunnel has no `protect`: an unbound socket follows the routing table, which sends it
//! back into the tunnel. This binder binds the default interface as well, so that every
//! outbound socket leaves through a physical interface.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::Socket;

use crate::network::NetworkInterface;
use crate::platform::{BindError, SocketBinder};

/// Wraps a binder so that "protect" binds too (see the module docs).
#[derive(Debug, Clone)]
pub struct BindDefault(pub Arc<dyn SocketBinder>);

impl SocketBinder for BindDefault {
    fn protect(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        self.0.protect(socket, interface, destination)?;
        self.0.bind_to_interface(socket, interface, destination)
    }

    fn bind_to_interface(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        self.0.bind_to_interface(socket, interface, destination)
    }

    fn networks_on_loopback(&self) -> bool {
        self.0.networks_on_loopback()
    }
}
