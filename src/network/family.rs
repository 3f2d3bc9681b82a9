//! Which address families a connection may use and which it tries first (`domain_strategy`).

use std::net::SocketAddr;

/// Address-family policy for a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainStrategy {
    /// IPv6 first, IPv4 after the fallback delay (RFC 8305). The default.
    #[default]
    PreferIpv6,
    /// IPv4 first, IPv6 after the fallback delay.
    PreferIpv4,
    /// IPv4 addresses only.
    Ipv4Only,
    /// IPv6 addresses only.
    Ipv6Only,
}

impl std::fmt::Display for DomainStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DomainStrategy::PreferIpv6 => "prefer_ipv6",
            DomainStrategy::PreferIpv4 => "prefer_ipv4",
            DomainStrategy::Ipv4Only => "ipv4_only",
            DomainStrategy::Ipv6Only => "ipv6_only",
        })
    }
}

impl DomainStrategy {
    /// Filters `addresses` to the allowed families and puts the preferred family first, keeping
    /// the resolver's order within each family. May return an empty list (e.g. `ipv6_only` for an
    /// IPv4-only host).
    pub fn order(self, addresses: &[SocketAddr]) -> Vec<SocketAddr> {
        let v6 = addresses.iter().filter(|a| a.is_ipv6());
        let v4 = addresses.iter().filter(|a| a.is_ipv4());
        match self {
            DomainStrategy::PreferIpv6 => v6.chain(v4).copied().collect(),
            DomainStrategy::PreferIpv4 => v4.chain(v6).copied().collect(),
            DomainStrategy::Ipv4Only => v4.copied().collect(),
            DomainStrategy::Ipv6Only => v6.copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_filters() {
        let list: Vec<SocketAddr> =
            ["1.1.1.1:1", "[::1]:1", "2.2.2.2:1", "[::2]:1"].iter().map(|a| a.parse().unwrap()).collect();
        let show = |v: Vec<SocketAddr>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
        assert_eq!(show(DomainStrategy::PreferIpv6.order(&list)), "[::1]:1 [::2]:1 1.1.1.1:1 2.2.2.2:1");
        assert_eq!(show(DomainStrategy::PreferIpv4.order(&list)), "1.1.1.1:1 2.2.2.2:1 [::1]:1 [::2]:1");
        assert_eq!(show(DomainStrategy::Ipv4Only.order(&list)), "1.1.1.1:1 2.2.2.2:1");
        assert_eq!(show(DomainStrategy::Ipv6Only.order(&list)), "[::1]:1 [::2]:1");
    }
}
