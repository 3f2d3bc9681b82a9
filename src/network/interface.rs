//! One network interface as the host reports it, and a validated snapshot of all of them.
//!
//! The host (Android `ConnectivityManager`, Apple `NWPathMonitor`, the desktop CLI, a test) builds
//! an [`InterfaceSnapshot`] on every change; [`InterfaceSnapshot::new`] checks it once, so the rest
//! of netswitch can rely on unique names, unique non-zero indexes and a default that is listed.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::NetworkType;

/// Longest interface name the kernels we target accept (`IFNAMSIZ` 16 minus the NUL).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// One address of an interface: an IP address and its prefix length (`10.0.0.2/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct InterfaceAddress {
    /// The address.
    pub ip: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6 (checked by [`InterfaceSnapshot::new`]).
    pub prefix_len: u8,
}

impl InterfaceAddress {
    /// An address with its prefix length (not validated here; see [`InterfaceSnapshot::new`]).
    pub fn new(ip: IpAddr, prefix_len: u8) -> InterfaceAddress {
        InterfaceAddress { ip, prefix_len }
    }

    fn max_prefix_len(&self) -> u8 {
        match self.ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

/// A usable network interface: what a socket can be bound to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct NetworkInterface {
    /// Operating-system name (`wlan0`, `rmnet_data0`, `en0`, `pdp_ip0`), 1 to 15 bytes.
    pub name: String,
    /// Operating-system interface index; never 0 (0 means "unbind" to the kernel).
    pub index: u32,
    /// Kind of network (decides strategy selection).
    pub network_type: NetworkType,
    /// The interface's addresses (may be empty when the host does not report them).
    pub addresses: Vec<InterfaceAddress>,
    /// DNS servers of this network, in the host's order, with their port (53 unless the host
    /// said otherwise: [`parse_dns_server`]).
    pub dns_servers: Vec<SocketAddr>,
    /// Metered / expensive (cellular, a phone hotspot).
    pub expensive: bool,
    /// Constrained (Low Data Mode on Apple, data saver).
    pub constrained: bool,
    /// The system checked that this network reaches the internet (Android
    /// `NET_CAPABILITY_VALIDATED`). False for a captive portal, a network still being checked, or
    /// one whose check failed. Default true (hosts that do not report validation are unaffected);
    /// how the strategy uses it: [`crate::network::strategy`].
    #[serde(default = "validated_by_default")]
    pub validated: bool,
}

fn validated_by_default() -> bool {
    true
}

impl NetworkInterface {
    /// An interface with a name, index and type, no addresses or DNS servers, not expensive, not
    /// constrained, and validated.
    pub fn new(name: impl Into<String>, index: u32, network_type: NetworkType) -> NetworkInterface {
        NetworkInterface {
            name: name.into(),
            index,
            network_type,
            addresses: Vec::new(),
            dns_servers: Vec::new(),
            expensive: false,
            constrained: false,
            validated: true,
        }
    }

    /// This interface with one more address (builder style, for hosts and tests).
    pub fn with_address(mut self, ip: IpAddr, prefix_len: u8) -> NetworkInterface {
        self.addresses.push(InterfaceAddress::new(ip, prefix_len));
        self
    }

    /// The name and index that identify this interface.
    pub fn id(&self) -> InterfaceId {
        InterfaceId { name: self.name.clone(), index: self.index }
    }

    /// The first address of the same family as `family_of` (IPv4 or IPv6), if any.
    pub fn first_address_like(&self, family_of: IpAddr) -> Option<IpAddr> {
        self.addresses.iter().map(|a| a.ip).find(|ip| ip.is_ipv4() == family_of.is_ipv4())
    }
}

impl fmt::Display for NetworkInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, index {})", self.name, self.network_type, self.index)
    }
}

/// The port of a DNS server given without one.
pub const DNS_PORT: u16 = 53;

/// Parses a DNS server as hosts and the CLI give it: `IP` (port 53), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    match text.parse::<SocketAddr>() {
        Ok(address) if address.port() != 0 => Ok(address),
        Ok(_) => Err(format!("DNS server {text:?} has port 0")),
        Err(_) => Err(format!("DNS server {text:?} is not IP, IP:PORT or [IPv6]:PORT")),
    }
}

/// A DNS server as [`parse_dns_server`] reads it: the bare IP for port 53, else `IP:PORT`.
pub fn dns_server_text(server: SocketAddr) -> String {
    if server.port() == DNS_PORT {
        server.ip().to_string()
    } else {
        server.to_string()
    }
}

/// What identifies an interface across snapshots: its name and index together. An interface
/// that comes back under the same name with a new index is a different interface (sockets bound
/// to the old index are dead).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceId {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
}

impl fmt::Display for InterfaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (index {})", self.name, self.index)
    }
}

/// Why a snapshot was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Two interfaces have the same name.
    #[error("interface snapshot lists the name {name:?} twice (indexes {first} and {second})")]
    DuplicateName {
        /// The repeated name.
        name: String,
        /// Index of the first interface with that name.
        first: u32,
        /// Index of the second one.
        second: u32,
    },
    /// Two interfaces have the same index.
    #[error("interface snapshot lists index {index} twice ({first:?} and {second:?})")]
    DuplicateIndex {
        /// The repeated index.
        index: u32,
        /// Name of the first interface with that index.
        first: String,
        /// Name of the second one.
        second: String,
    },
    /// An interface has index 0 (which the kernel reads as "no interface").
    #[error("interface {name:?} has index 0; interface indexes start at 1")]
    ZeroIndex {
        /// The interface's name.
        name: String,
    },
    /// An interface name is empty, too long, or contains a NUL byte.
    #[error("interface name {name:?} is invalid (1 to {MAX_INTERFACE_NAME_LEN} bytes, no NUL)")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// An address has a prefix longer than its family allows.
    #[error("interface {interface:?} address {address} has prefix length {prefix_len}, above the family's maximum")]
    InvalidPrefix {
        /// The interface's name.
        interface: String,
        /// The address.
        address: IpAddr,
        /// The rejected prefix length.
        prefix_len: u8,
    },
    /// The default interface index is not among the listed interfaces.
    #[error("default interface index {index} is not in the snapshot (listed: {listed})")]
    UnknownDefault {
        /// The default index the host gave.
        index: u32,
        /// The listed interfaces, `name (index)` comma-separated.
        listed: String,
    },
}

/// All usable interfaces at one moment plus which one is the default (the one the system routes
/// through). Guarantees: names are unique, indexes unique and non-zero, prefix lengths valid,
/// and the default (if any) is listed. A snapshot with no interfaces means "no network".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceSnapshot {
    interfaces: Vec<NetworkInterface>,
    default_index: Option<u32>,
}

impl InterfaceSnapshot {
    /// Validates and builds a snapshot. `default_index` is the index of the default interface,
    /// `None` when the host does not know one.
    pub fn new(
        interfaces: Vec<NetworkInterface>,
        default_index: Option<u32>,
    ) -> Result<InterfaceSnapshot, SnapshotError> {
        let mut names: Vec<(&str, u32)> = Vec::new();
        let mut indexes: HashSet<u32> = HashSet::new();
        for interface in &interfaces {
            validate_interface(interface)?;
            if let Some((_, first)) = names.iter().find(|(name, _)| *name == interface.name) {
                return Err(SnapshotError::DuplicateName {
                    name: interface.name.clone(),
                    first: *first,
                    second: interface.index,
                });
            }
            if !indexes.insert(interface.index) {
                let first = names.iter().find(|(_, index)| *index == interface.index).map(|(n, _)| *n);
                return Err(SnapshotError::DuplicateIndex {
                    index: interface.index,
                    first: first.unwrap_or_default().to_string(),
                    second: interface.name.clone(),
                });
            }
            names.push((&interface.name, interface.index));
        }
        if let Some(index) = default_index {
            if !indexes.contains(&index) {
                let listed: Vec<String> = interfaces.iter().map(|i| i.id().to_string()).collect();
                return Err(SnapshotError::UnknownDefault { index, listed: listed.join(", ") });
            }
        }
        Ok(InterfaceSnapshot { interfaces, default_index })
    }

    /// The "no network" snapshot: no interfaces, no default.
    pub fn empty() -> InterfaceSnapshot {
        InterfaceSnapshot::default()
    }

    /// Every usable interface, in the host's order.
    pub fn interfaces(&self) -> &[NetworkInterface] {
        &self.interfaces
    }

    /// Index of the default interface, if the host named one.
    pub fn default_index(&self) -> Option<u32> {
        self.default_index
    }

    /// The default interface, if the host named one.
    pub fn default_interface(&self) -> Option<&NetworkInterface> {
        self.default_index.and_then(|index| self.by_index(index))
    }

    /// Whether `interface` is the default interface (compared by index).
    pub fn is_default(&self, interface: &NetworkInterface) -> bool {
        self.default_index == Some(interface.index)
    }

    /// The interface with this index.
    pub fn by_index(&self, index: u32) -> Option<&NetworkInterface> {
        self.interfaces.iter().find(|i| i.index == index)
    }

    /// The interface with this name.
    pub fn by_name(&self, name: &str) -> Option<&NetworkInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// True when there is no usable interface at all: dials must fail fast with "no network".
    pub fn is_no_network(&self) -> bool {
        self.interfaces.is_empty()
    }
}

fn validate_interface(interface: &NetworkInterface) -> Result<(), SnapshotError> {
    let name = &interface.name;
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME_LEN || name.contains('\0') {
        return Err(SnapshotError::InvalidName { name: name.clone() });
    }
    if interface.index == 0 {
        return Err(SnapshotError::ZeroIndex { name: name.clone() });
    }
    if let Some(bad) = interface.addresses.iter().find(|a| a.prefix_len > a.max_prefix_len()) {
        return Err(SnapshotError::InvalidPrefix {
            interface: name.clone(),
            address: bad.ip,
            prefix_len: bad.prefix_len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use NetworkType::*;

    fn wifi() -> NetworkInterface {
        NetworkInterface::new("wlan0", 3, Wifi).with_address("192.168.1.20".parse().unwrap(), 24)
    }

    fn cell() -> NetworkInterface {
        NetworkInterface::new("rmnet0", 7, Cellular)
    }

    #[test]
    fn accepts_a_valid_snapshot() {
        let snapshot = InterfaceSnapshot::new(vec![wifi(), cell()], Some(7)).unwrap();
        assert_eq!(snapshot.default_interface().map(|i| i.name.as_str()), Some("rmnet0"));
        assert!(snapshot.is_default(&cell()));
        assert!(!snapshot.is_default(&wifi()));
        assert_eq!(snapshot.by_name("wlan0").map(|i| i.index), Some(3));
        assert!(!snapshot.is_no_network());
        assert!(InterfaceSnapshot::empty().is_no_network());
        assert!(InterfaceSnapshot::new(vec![wifi()], None).unwrap().default_interface().is_none());
    }

    #[test]
    fn rejects_duplicate_names_and_indexes() {
        let mut twin = cell();
        twin.name = "wlan0".into();
        let err = InterfaceSnapshot::new(vec![wifi(), twin], None).unwrap_err();
        assert_eq!(err, SnapshotError::DuplicateName { name: "wlan0".into(), first: 3, second: 7 });
        assert!(err.to_string().contains("\"wlan0\""), "{err}");

        let mut same_index = cell();
        same_index.index = 3;
        let err = InterfaceSnapshot::new(vec![wifi(), same_index], None).unwrap_err();
        assert_eq!(
            err,
            SnapshotError::DuplicateIndex { index: 3, first: "wlan0".into(), second: "rmnet0".into() }
        );
    }

    #[test]
    fn rejects_a_default_that_is_not_listed() {
        let err = InterfaceSnapshot::new(vec![wifi(), cell()], Some(9)).unwrap_err();
        assert!(matches!(err, SnapshotError::UnknownDefault { index: 9, .. }));
        assert!(err.to_string().contains("wlan0 (index 3), rmnet0 (index 7)"), "{err}");
        assert!(matches!(
            InterfaceSnapshot::new(vec![], Some(1)),
            Err(SnapshotError::UnknownDefault { index: 1, .. })
        ));
    }

    #[test]
    fn rejects_bad_names_indexes_and_prefixes() {
        let zero = NetworkInterface::new("eth0", 0, Ethernet);
        assert_eq!(
            InterfaceSnapshot::new(vec![zero], None),
            Err(SnapshotError::ZeroIndex { name: "eth0".into() })
        );
        for name in ["", "a-name-that-is-too-long", "nul\0"] {
            let bad = NetworkInterface::new(name, 1, Other);
            assert_eq!(
                InterfaceSnapshot::new(vec![bad], None),
                Err(SnapshotError::InvalidName { name: name.into() })
            );
        }
        let v4 = NetworkInterface::new("eth0", 1, Ethernet).with_address("10.0.0.1".parse().unwrap(), 33);
        assert!(matches!(InterfaceSnapshot::new(vec![v4], None), Err(SnapshotError::InvalidPrefix { .. })));
        let v6 = NetworkInterface::new("eth0", 1, Ethernet).with_address("::1".parse().unwrap(), 128);
        assert!(InterfaceSnapshot::new(vec![v6], None).is_ok());
    }

    #[test]
    fn dns_servers_default_to_port_53() {
        for (text, expected) in [
            ("10.0.0.1", "10.0.0.1:53"),
            ("10.0.0.1:5353", "10.0.0.1:5353"),
            ("fd00::1", "[fd00::1]:53"),
            ("[fd00::1]:5353", "[fd00::1]:5353"),
        ] {
            let parsed = parse_dns_server(text).unwrap();
            assert_eq!(parsed, expected.parse().unwrap(), "{text}");
            assert_eq!(dns_server_text(parsed), text);
        }
        for bad in ["", "dns.example", "10.0.0.1:0", "fd00::1:53x", "10.0.0.1:99999"] {
            assert!(parse_dns_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_an_address_of_the_destination_family() {
        let dual = wifi().with_address("fd00::20".parse().unwrap(), 64);
        assert_eq!(dual.first_address_like("10.0.0.1".parse().unwrap()), "192.168.1.20".parse().ok());
        assert_eq!(dual.first_address_like("::1".parse().unwrap()), "fd00::20".parse().ok());
        assert_eq!(cell().first_address_like("::1".parse().unwrap()), None);
    }
}
