//! The desktop host's own interfaces as a snapshot: what the CLI uses where a mobile host would
//! call `update_interfaces` itself. The network type is inferred from the name (`wl*` Wi-Fi,
//! `wwan*`/`rmnet*`/`ccmni*` cellular, `en*`/`eth*` ethernet, anything else other) unless the
//! caller overrides it; the default interface is the one holding the IPv4 (else IPv6) default
//! route (Linux `/proc/net/route`; elsewhere unknown).

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{if_nametoindex, InterfaceFlags};

use super::interface::{InterfaceSnapshot, NetworkInterface, SnapshotError};
use super::NetworkType;

/// Why the host's interfaces could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostInterfacesError {
    /// `getifaddrs` failed.
    #[error("list the host's network interfaces: {0}")]
    List(#[source] io::Error),
    /// What the system reported does not form a valid snapshot.
    #[error("host interfaces: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// The network type an interface name suggests.
pub fn type_from_name(name: &str) -> NetworkType {
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    if starts(&["wl"]) {
        NetworkType::Wifi
    } else if starts(&["wwan", "rmnet", "ccmni"]) {
        NetworkType::Cellular
    } else if starts(&["en", "eth"]) {
        NetworkType::Ethernet
    } else {
        NetworkType::Other
    }
}

/// Reads the host's interfaces that are up, running and not loopback, with their addresses,
/// index and type (`types` overrides the inferred type by name), plus the default interface.
/// Blocking but quick (one `getifaddrs` call and a small `/proc` read).
pub fn host_snapshot(
    types: &BTreeMap<String, NetworkType>,
) -> Result<InterfaceSnapshot, HostInterfacesError> {
    let mut by_name: BTreeMap<String, NetworkInterface> = BTreeMap::new();
    for entry in getifaddrs().map_err(|e| HostInterfacesError::List(e.into()))? {
        let usable = entry.flags.contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING)
            && !entry.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        if !usable {
            continue;
        }
        let name = entry.interface_name.clone();
        if !by_name.contains_key(&name) {
            let Ok(index) = if_nametoindex(name.as_str()) else { continue };
            let kind = types.get(&name).copied().unwrap_or_else(|| type_from_name(&name));
            by_name.insert(name.clone(), NetworkInterface::new(name.clone(), index, kind));
        }
        let (Some(address), Some(interface)) = (entry.address.as_ref(), by_name.get_mut(&name)) else {
            continue;
        };
        if let Some(ip) = ip_of(address) {
            let prefix = entry.netmask.as_ref().and_then(ip_of).map_or(0, prefix_len);
            *interface = interface.clone().with_address(ip, prefix);
        }
    }
    let interfaces: Vec<NetworkInterface> = by_name.into_values().collect();
    let default = default_route_interface()
        .and_then(|name| interfaces.iter().find(|i| i.name == name))
        .map(|i| i.index);
    Ok(InterfaceSnapshot::new(interfaces, default)?)
}

fn ip_of(address: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

fn prefix_len(mask: IpAddr) -> u8 {
    match mask {
        IpAddr::V4(m) => u32::from(m).count_ones() as u8,
        IpAddr::V6(m) => u128::from(m).count_ones() as u8,
    }
}

/// The interface of the IPv4 default route, else of the IPv6 one (Linux); `None` elsewhere.
fn default_route_interface() -> Option<String> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let v4 = std::fs::read_to_string("/proc/net/route").ok().and_then(|text| {
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // Iface Destination Gateway Flags RefCnt Use Metric Mask …: destination and mask 0.
                let default = fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000");
                default.then(|| fields[0].to_string())
            })
        });
        v4.or_else(|| {
            let text = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let default = fields.first() == Some(&"00000000000000000000000000000000")
                    && fields.get(1) == Some(&"00");
                (default && fields.len() >= 10 && fields[9] != "lo").then(|| fields[9].to_string())
            })
        })
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_types_from_names() {
        assert_eq!(type_from_name("wlan0"), NetworkType::Wifi);
        assert_eq!(type_from_name("wlp2s0"), NetworkType::Wifi);
        assert_eq!(type_from_name("rmnet_data0"), NetworkType::Cellular);
        assert_eq!(type_from_name("wwan0"), NetworkType::Cellular);
        assert_eq!(type_from_name("ccmni1"), NetworkType::Cellular);
        assert_eq!(type_from_name("eth0"), NetworkType::Ethernet);
        assert_eq!(type_from_name("enp3s0"), NetworkType::Ethernet);
        assert_eq!(type_from_name("tun0"), NetworkType::Other);
    }

    #[test]
    fn reads_this_host_and_applies_overrides() {
        let snapshot = host_snapshot(&BTreeMap::new()).expect("getifaddrs works here");
        for interface in snapshot.interfaces() {
            assert_ne!(interface.name, "lo", "loopback is never a network");
            assert!(interface.index > 0);
        }
        if let Some(first) = snapshot.interfaces().first() {
            let overrides = BTreeMap::from([(first.name.clone(), NetworkType::Cellular)]);
            let again = host_snapshot(&overrides).unwrap();
            assert_eq!(again.by_name(&first.name).map(|i| i.network_type), Some(NetworkType::Cellular));
        }
    }
}
