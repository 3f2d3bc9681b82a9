//! UDP address translation between what the client names and what the remote socket uses.
//!
//! - A domain destination that was resolved maps **by address** (the port is the datagram's):
//!   datagrams to the domain go to the resolved IP, replies from that IP reach the client as
//!   coming from the domain — or from the real IP when `udp_disable_domain_unmapping` is set
//!   (one-way translation).
//! - An exact mapping (a destination override) swaps the whole `address:port` both ways.

use std::net::{IpAddr, SocketAddr};

use crate::metadata::{Destination, Host};

/// One translation rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `host:*` ↔ `ip:*`, ports kept from the datagram. `unmap` = replies show the host.
    Address { host: Host, ip: IpAddr, unmap: bool },
    /// `shown` ↔ `real`, ports included.
    Exact { shown: Destination, real: SocketAddr },
}

/// The translation table of one UDP session. Empty = addresses pass unchanged (IPs only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nat {
    rules: Vec<Rule>,
}

impl Nat {
    /// A table with no rules.
    pub fn new() -> Nat {
        Nat::default()
    }

    /// Adds a by-address mapping: datagrams to `host` go to `ip`; replies from `ip` are shown as
    /// from `host` unless `disable_unmapping`. Does nothing when `host` already is `ip`.
    pub fn map_address(&mut self, host: Host, ip: IpAddr, disable_unmapping: bool) {
        if host != Host::Ip(ip) {
            self.rules.push(Rule::Address { host, ip: ip.to_canonical(), unmap: !disable_unmapping });
        }
    }

    /// Adds an exact mapping: datagrams to `shown` go to `real`; replies from `real` are shown as
    /// from `shown`.
    pub fn map_exact(&mut self, shown: Destination, real: SocketAddr) {
        self.rules.push(Rule::Exact { shown, real });
    }

    /// The socket address a datagram for `destination` is sent to, or `None` when it is a domain
    /// no rule covers (the caller resolves it).
    pub fn outgoing(&self, destination: &Destination) -> Option<SocketAddr> {
        for rule in &self.rules {
            match rule {
                Rule::Exact { shown, real } if shown == destination => return Some(*real),
                Rule::Address { host, ip, .. } if *host == destination.host => {
                    return Some(SocketAddr::new(*ip, destination.port))
                }
                _ => {}
            }
        }
        destination.socket_addr()
    }

    /// The source a reply from `source` shows to the client.
    pub fn incoming(&self, source: SocketAddr) -> Destination {
        let source = SocketAddr::new(source.ip().to_canonical(), source.port());
        for rule in &self.rules {
            match rule {
                Rule::Exact { shown, real } if *real == source => return shown.clone(),
                Rule::Address { host, ip, unmap: true } if *ip == source.ip() => {
                    return Destination { host: host.clone(), port: source.port() }
                }
                _ => {}
            }
        }
        Destination::from(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn domain_maps_both_ways_by_address() {
        let mut nat = Nat::new();
        nat.map_address(Host::Domain("dns.test".into()), ip("127.0.0.1"), false);
        assert_eq!(nat.outgoing(&Destination::domain("dns.test", 53)), Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(nat.outgoing(&Destination::domain("dns.test", 54)), Some("127.0.0.1:54".parse().unwrap()));
        assert_eq!(nat.incoming("127.0.0.1:5353".parse().unwrap()), Destination::domain("dns.test", 5353));
        assert_eq!(nat.incoming("127.0.0.2:53".parse().unwrap()), "127.0.0.2:53".parse().unwrap());
        assert_eq!(nat.outgoing(&Destination::domain("other.test", 53)), None);
        // An IPv4-mapped source is the same address.
        assert_eq!(
            nat.incoming("[::ffff:127.0.0.1]:53".parse().unwrap()),
            Destination::domain("dns.test", 53)
        );
    }

    #[test]
    fn disabled_unmapping_shows_the_real_ip() {
        let mut nat = Nat::new();
        nat.map_address(Host::Domain("dns.test".into()), ip("::1"), true);
        assert_eq!(nat.outgoing(&Destination::domain("dns.test", 53)), Some("[::1]:53".parse().unwrap()));
        assert_eq!(nat.incoming("[::1]:53".parse().unwrap()), "[::1]:53".parse().unwrap());
    }

    #[test]
    fn exact_mapping_includes_the_port() {
        let mut nat = Nat::new();
        nat.map_exact("10.0.0.1:53".parse().unwrap(), "127.0.0.1:5300".parse().unwrap());
        assert_eq!(nat.outgoing(&"10.0.0.1:53".parse().unwrap()), Some("127.0.0.1:5300".parse().unwrap()));
        assert_eq!(nat.outgoing(&"10.0.0.1:54".parse().unwrap()), Some("10.0.0.1:54".parse().unwrap()));
        assert_eq!(nat.incoming("127.0.0.1:5300".parse().unwrap()), "10.0.0.1:53".parse().unwrap());
        assert_eq!(nat.incoming("127.0.0.1:5301".parse().unwrap()), "127.0.0.1:5301".parse().unwrap());
    }

    #[test]
    fn an_ip_destination_needs_no_rule() {
        let mut nat = Nat::new();
        nat.map_address(Host::Ip(ip("127.0.0.1")), ip("127.0.0.1"), false);
        assert_eq!(nat, Nat::new());
    }
}
