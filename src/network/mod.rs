//! The network model: which kinds of network a connection can leave through.
//!
//! - [`interface`]: [`NetworkInterface`] and the validated [`InterfaceSnapshot`] the host pushes;
//! - [`state`]: [`NetworkState`], the current snapshot, and the [`SnapshotChange`] an update makes;
//! - [`strategy`]: [`NetworkStrategy`] and [`select_interfaces`], the primary / fallback sets;
//! - [`family`]: [`DomainStrategy`], which address families a connection uses and in which order;
//! - [`host`]: the desktop host's own interfaces as a snapshot; on Linux `host_changes` says when
//!   to read them again (rtnetlink notifications, no timer).

pub mod family;
pub mod host;
#[cfg(target_os = "linux")]
pub mod host_changes;
pub mod interface;
pub mod state;
pub mod strategy;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use family::DomainStrategy;
pub use interface::{InterfaceAddress, InterfaceId, InterfaceSnapshot, NetworkInterface, SnapshotError};
pub use state::{CloseReason, DefaultChange, NetworkState, SnapshotChange};
pub use strategy::{select_interfaces, NetworkStrategy, SelectError, Selection};

/// The kind of network an interface belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NetworkType {
    /// Wi-Fi.
    Wifi,
    /// Cellular (mobile data).
    Cellular,
    /// Wired ethernet.
    Ethernet,
    /// Anything else (a VPN utun, a USB tether…).
    Other,
}

impl fmt::Display for NetworkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkType::Wifi => "wifi",
            NetworkType::Cellular => "cellular",
            NetworkType::Ethernet => "ethernet",
            NetworkType::Other => "other",
        })
    }
}

/// The network a connection left through, as recorded by the tracker.
///
/// `interface == None` means the socket was not bound to an interface: the operating system's
/// routing table chose (the plain direct outbound always does this).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Egress {
    /// Name of the interface the socket was bound to, if any.
    pub interface: Option<String>,
    /// Index of that interface, if known.
    pub interface_index: Option<u32>,
    /// Kind of network, if known.
    pub network_type: Option<NetworkType>,
    /// The local (source) address of the outbound socket, recorded by the relay once the dial
    /// succeeded; `None` before that, and for a socket with no specific local address (an
    /// unconnected UDP socket on `0.0.0.0`). When an interface update takes this address away
    /// from every interface, the connection is closed
    /// ([`CloseReason::LocalAddressGone`]).
    pub local_address: Option<IpAddr>,
    /// True when the socket was bound to `interface`, so it keeps leaving through it whatever
    /// the default interface is; false for the default interface (protected, not bound: it
    /// follows the default route) and the system route. A default change closes only
    /// connections that are not bound ([`CloseReason::DefaultChanged`]).
    pub bound: bool,
}

impl Egress {
    /// An egress through `interface` (name, index and type), not bound to it; no local address
    /// yet.
    pub fn through(interface: &NetworkInterface) -> Egress {
        Egress {
            interface: Some(interface.name.clone()),
            interface_index: Some(interface.index),
            network_type: Some(interface.network_type),
            local_address: None,
            bound: false,
        }
    }

    /// This egress marked as bound to its interface (see [`Egress::bound`]).
    pub fn as_bound(mut self) -> Egress {
        self.bound = true;
        self
    }

    /// This egress with `local_address` set from the outbound socket's local address. An
    /// unknown (`None`) or unspecified (`0.0.0.0`, `::`) address keeps what was there; an
    /// IPv4-mapped IPv6 address is recorded as the IPv4 address it carries.
    pub fn with_local_address(mut self, local: Option<SocketAddr>) -> Egress {
        if let Some(ip) = local.map(|a| a.ip().to_canonical()).filter(|ip| !ip.is_unspecified()) {
            self.local_address = Some(ip);
        }
        self
    }
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.interface, self.network_type) {
            (Some(name), Some(kind)) => write!(f, "{name} ({kind})"),
            (Some(name), None) => f.write_str(name),
            (None, Some(kind)) => write!(f, "{kind}"),
            (None, None) => f.write_str("system route"),
        }
    }
}
