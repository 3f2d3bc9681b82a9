//! The network records: network types, one interface, the snapshot the host pushes, what an
//! update changed (`update_interfaces`' answer) and the network-change event subscribers get.

use std::net::IpAddr;

use super::error::NetswitchError;
use crate::network as core;

/// The kind of network an interface belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, uniffi::Enum)]
pub enum NetworkType {
    /// Wi-Fi.
    Wifi,
    /// Cellular (mobile data).
    Cellular,
    /// Wired ethernet.
    Ethernet,
    /// Anything else (a VPN, a USB tether…).
    Other,
}

impl From<NetworkType> for core::NetworkType {
    fn from(kind: NetworkType) -> Self {
        match kind {
            NetworkType::Wifi => core::NetworkType::Wifi,
            NetworkType::Cellular => core::NetworkType::Cellular,
            NetworkType::Ethernet => core::NetworkType::Ethernet,
            NetworkType::Other => core::NetworkType::Other,
        }
    }
}

impl From<core::NetworkType> for NetworkType {
    fn from(kind: core::NetworkType) -> Self {
        match kind {
            core::NetworkType::Wifi => NetworkType::Wifi,
            core::NetworkType::Cellular => NetworkType::Cellular,
            core::NetworkType::Ethernet => NetworkType::Ethernet,
            core::NetworkType::Other => NetworkType::Other,
        }
    }
}

/// One usable network interface, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NetworkInterface {
    /// Operating-system name (`wlan0`, `rmnet_data0`, `en0`, `pdp_ip0`), 1 to 15 bytes.
    pub name: String,
    /// Operating-system interface index: 1 to 2147483647 (a positive C `int`).
    pub index: u32,
    /// Kind of network; decides which interfaces a strategy picks.
    pub network_type: NetworkType,
    /// Addresses with prefix length (`"10.0.0.2/24"`, `"fe80::1/64"`). Default none.
    #[uniffi(default = [])]
    pub addresses: Vec<String>,
    /// DNS servers of this network, in the host's order: `"192.168.1.1"` (port 53),
    /// `"192.168.1.1:5353"` or `"[fd00::1]:5353"`. netswitch resolves names for this interface
    /// with them, over sockets bound to it (config `dns.resolver`). Default none.
    #[uniffi(default = [])]
    pub dns_servers: Vec<String>,
    /// Metered / expensive (cellular, a phone hotspot). Default false.
    #[uniffi(default = false)]
    pub expensive: bool,
    /// Constrained (Low Data Mode, data saver). Default false.
    #[uniffi(default = false)]
    pub constrained: bool,
    /// The system confirmed this network reaches the internet (Android
    /// `NET_CAPABILITY_VALIDATED`); false for a captive portal or a network still being checked.
    /// While a validated network the strategy allows exists, a non-validated default is not used
    /// and other non-validated networks only join the race after the fallback delay (the rules:
    /// `netswitch::network::strategy`). Default true.
    #[uniffi(default = true)]
    pub validated: bool,
}

impl From<&core::NetworkInterface> for NetworkInterface {
    fn from(interface: &core::NetworkInterface) -> Self {
        NetworkInterface {
            name: interface.name.clone(),
            index: interface.index,
            network_type: interface.network_type.into(),
            addresses: interface.addresses.iter().map(ToString::to_string).collect(),
            dns_servers: interface.dns_servers.iter().map(|s| core::interface::dns_server_text(*s)).collect(),
            expensive: interface.expensive,
            constrained: interface.constrained,
            validated: interface.validated,
        }
    }
}

/// Every usable interface at one moment and which one the system routes through. Pass it to
/// `update_interfaces` on every change; an empty list means "no network" (dialing pauses).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InterfaceSnapshot {
    /// The interfaces, in the host's preference order.
    pub interfaces: Vec<NetworkInterface>,
    /// Index of the default interface, `None` when the host does not know one.
    #[uniffi(default = None)]
    pub default_index: Option<u32>,
}

impl InterfaceSnapshot {
    /// Validates the snapshot and converts it to the core type.
    pub(crate) fn to_core(&self) -> Result<core::InterfaceSnapshot, NetswitchError> {
        let invalid =
            |reason: String| NetswitchError::InvalidArgument { argument: "snapshot".into(), reason };
        let mut interfaces = Vec::with_capacity(self.interfaces.len());
        for i in &self.interfaces {
            // The kernels' interface index is a positive C int (Linux `SO_BINDTOIFINDEX`).
            if i.index > i32::MAX as u32 {
                return Err(invalid(format!(
                    "interface {}: index {} is above {}",
                    i.name,
                    i.index,
                    i32::MAX
                )));
            }
            let mut interface = core::NetworkInterface::new(i.name.clone(), i.index, i.network_type.into());
            for text in &i.addresses {
                let (ip, prefix) = parse_prefixed(text).ok_or_else(|| {
                    invalid(format!("interface {}: bad address {text:?} (want ip/prefix)", i.name))
                })?;
                interface = interface.with_address(ip, prefix);
            }
            for text in &i.dns_servers {
                let server = core::interface::parse_dns_server(text)
                    .map_err(|reason| invalid(format!("interface {}: {reason}", i.name)))?;
                interface.dns_servers.push(server);
            }
            interface.expensive = i.expensive;
            interface.constrained = i.constrained;
            interface.validated = i.validated;
            interfaces.push(interface);
        }
        core::InterfaceSnapshot::new(interfaces, self.default_index).map_err(|e| invalid(e.to_string()))
    }
}

/// `"10.0.0.2/24"` → (ip, 24); a bare address gets the full prefix (32 or 128).
fn parse_prefixed(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip.parse::<IpAddr>().ok()?, Some(prefix.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let full = if ip.is_ipv4() { 32 } else { 128 };
    Some((ip, prefix.unwrap_or(full)))
}

/// What an `update_interfaces` call changed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InterfaceChange {
    /// The snapshot equals the current one: nothing happened.
    pub identical: bool,
    /// The snapshot has no interfaces: dialing paused, nothing closed.
    pub no_network: bool,
    /// Names of interfaces that are gone.
    pub removed: Vec<String>,
    /// Names of interfaces that are new.
    pub added: Vec<String>,
    /// True when the default interface changed.
    pub default_changed: bool,
}

impl From<&core::SnapshotChange> for InterfaceChange {
    fn from(change: &core::SnapshotChange) -> Self {
        InterfaceChange {
            identical: change.identical,
            no_network: change.no_network,
            removed: change.removed.iter().map(|i| i.name.clone()).collect(),
            added: change.added.iter().map(|i| i.name.clone()).collect(),
            default_changed: change.default_change.is_some(),
        }
    }
}

/// A network change, sent to `EventListener.on_network_changed` after every `update_interfaces`
/// call that changed something (never for an identical snapshot).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NetworkChange {
    /// Every usable interface now, in the host's order; empty when `no_network`.
    pub interfaces: Vec<NetworkInterface>,
    /// Name of the default interface now; `None` when none is known (or `no_network`).
    pub default_interface: Option<String>,
    /// Name of the default interface before this change; equals `default_interface` unless
    /// `default_changed`.
    pub previous_default: Option<String>,
    /// True when the default interface changed (by name or index). False for `no_network`.
    pub default_changed: bool,
    /// True when the snapshot had no interfaces: dialing paused, nothing closed.
    pub no_network: bool,
    /// Names of interfaces that are gone.
    pub removed: Vec<String>,
    /// Names of interfaces that are new.
    pub added: Vec<String>,
    /// How many connections this change closed: `closed_interface_gone +
    /// closed_default_changed + closed_local_address_gone`. Each gets its close event with error
    /// `Closed`.
    pub closed: u64,
    /// Connections closed because the interface they left through is gone.
    pub closed_interface_gone: u64,
    /// Connections closed because they left through the old default interface (or the system
    /// route) while the default changed.
    pub closed_default_changed: u64,
    /// Connections closed because the local address their socket used is on no interface any
    /// more (an interface whose address changed under the same name and index).
    pub closed_local_address_gone: u64,
}

impl From<&crate::manager::NetworkUpdate> for NetworkChange {
    fn from(update: &crate::manager::NetworkUpdate) -> Self {
        let change = &update.change;
        let default_interface = update.snapshot.default_interface().map(|i| i.name.clone());
        let previous_default = match &change.default_change {
            Some(c) => c.old.as_ref().map(|id| id.name.clone()),
            None => default_interface.clone(),
        };
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        NetworkChange {
            interfaces: update.snapshot.interfaces().iter().map(NetworkInterface::from).collect(),
            default_interface,
            previous_default,
            default_changed: change.default_change.is_some(),
            no_network: change.no_network,
            removed: change.removed.iter().map(|i| i.name.clone()).collect(),
            added: change.added.iter().map(|i| i.name.clone()).collect(),
            closed: count(
                update.closed_interface_gone
                    + update.closed_default_changed
                    + update.closed_local_address_gone,
            ),
            closed_interface_gone: count(update.closed_interface_gone),
            closed_default_changed: count(update.closed_default_changed),
            closed_local_address_gone: count(update.closed_local_address_gone),
        }
    }
}
