//! The `dns` section, `interface_dns` and `connection_attempt_delay`: how names are resolved
//! over each network.
//!
//! ```json
//! { "dns": { "resolver": "auto", "timeout": "2s", "rounds": 2,
//!            "ttl_floor": "5s", "ttl_cap": "1h", "negative_ttl_cap": "30s",
//!            "cache_capacity": 1024, "max_concurrent": 64, "system_max_lookups": 16 },
//!   "interface_dns": { "wlan0": ["192.168.1.1", "[fd00::1]:53"] },
//!   "connection_attempt_delay": "250ms" }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::limits::MAX_DURATION;
use super::{duration_field, Config, ConfigError};
use crate::dns::cache::TtlPolicy;
use crate::dns::settings::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_MAX_CONCURRENT, DEFAULT_QUERY_TIMEOUT, DEFAULT_ROUNDS,
    DEFAULT_SYSTEM_MAX_LOOKUPS,
};
use crate::dns::{DnsSettings, ResolverChoice};
use crate::network::interface::parse_dns_server;

/// The `dns` section (see [`DnsSettings`] for what each value does).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// `auto` (interface servers, else the host's resolver, else the system's), `interface`,
    /// `host` or `system`. Default `auto`.
    pub resolver: ResolverChoice,
    /// Time one DNS server gets for one question. Must be > 0. Default 2 s.
    #[serde(deserialize_with = "dns_timeout")]
    pub timeout: Duration,
    /// Walks through an interface's server list within a lookup. Must be > 0. Default 2.
    pub rounds: usize,
    /// Shortest time an answer is cached. Default 5 s.
    #[serde(deserialize_with = "ttl_floor")]
    pub ttl_floor: Duration,
    /// Longest time an answer is cached; at least `ttl_floor`. Default 1 h.
    #[serde(deserialize_with = "ttl_cap")]
    pub ttl_cap: Duration,
    /// Longest time an NXDOMAIN / NODATA answer is cached. Default 30 s.
    #[serde(deserialize_with = "negative_ttl_cap")]
    pub negative_ttl_cap: Duration,
    /// Cached answers, all interfaces together; 0 turns the cache off. Default 1024.
    pub cache_capacity: usize,
    /// Queries in flight at once per interface. Must be > 0. Default 64.
    pub max_concurrent: usize,
    /// `getaddrinfo` calls (threads) the system resolver runs at once. Must be > 0. Default 16.
    pub system_max_lookups: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let ttl = TtlPolicy::default();
        DnsConfig {
            resolver: ResolverChoice::Auto,
            timeout: DEFAULT_QUERY_TIMEOUT,
            rounds: DEFAULT_ROUNDS,
            ttl_floor: ttl.floor,
            ttl_cap: ttl.cap,
            negative_ttl_cap: ttl.negative_cap,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            system_max_lookups: DEFAULT_SYSTEM_MAX_LOOKUPS,
        }
    }
}

fn dns_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    duration_field(deserializer, "dns.timeout")
}

fn ttl_floor<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    duration_field(deserializer, "dns.ttl_floor")
}

fn ttl_cap<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    duration_field(deserializer, "dns.ttl_cap")
}

fn negative_ttl_cap<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    duration_field(deserializer, "dns.negative_ttl_cap")
}

/// `interface_dns`: DNS servers by interface name, each `IP`, `IP:PORT` or `[IPv6]:PORT`.
pub(super) fn interface_dns<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Vec<SocketAddr>>, D::Error> {
    let text = BTreeMap::<String, Vec<String>>::deserialize(deserializer)
        .map_err(|error| serde::de::Error::custom(format!("`interface_dns`: {error}")))?;
    let mut servers = BTreeMap::new();
    for (interface, list) in text {
        let parsed =
            list.iter().map(|s| parse_dns_server(s)).collect::<Result<Vec<_>, _>>().map_err(|reason| {
                serde::de::Error::custom(format!("`interface_dns` for {interface:?}: {reason}"))
            })?;
        servers.insert(interface, parsed);
    }
    Ok(servers)
}

impl DnsConfig {
    /// Checks what parsing cannot: positive timeouts and bounds, `ttl_floor <= ttl_cap`,
    /// durations at most 365 days.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, reason: &'static str| ConfigError::Invalid { file: None, field, reason };
        let positive = "must be greater than 0";
        if self.timeout.is_zero() {
            return Err(invalid("dns.timeout", positive));
        }
        if self.rounds == 0 {
            return Err(invalid("dns.rounds", positive));
        }
        if self.max_concurrent == 0 {
            return Err(invalid("dns.max_concurrent", positive));
        }
        if self.system_max_lookups == 0 {
            return Err(invalid("dns.system_max_lookups", positive));
        }
        let durations = [
            ("dns.timeout", self.timeout),
            ("dns.ttl_floor", self.ttl_floor),
            ("dns.ttl_cap", self.ttl_cap),
            ("dns.negative_ttl_cap", self.negative_ttl_cap),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, value)| *value > MAX_DURATION) {
            return Err(invalid(field, "must be at most 365d"));
        }
        if self.ttl_cap < self.ttl_floor {
            return Err(invalid("dns.ttl_cap", "must be at least dns.ttl_floor"));
        }
        Ok(())
    }
}

impl Config {
    /// The resolver settings (`dns` section).
    pub fn dns_settings(&self) -> DnsSettings {
        let d = &self.dns;
        DnsSettings {
            resolver: d.resolver,
            query_timeout: d.timeout,
            rounds: d.rounds,
            ttl: TtlPolicy { floor: d.ttl_floor, cap: d.ttl_cap, negative_cap: d.negative_ttl_cap },
            cache_capacity: d.cache_capacity,
            max_concurrent: d.max_concurrent,
            system_max_lookups: d.system_max_lookups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dns_section_and_interface_servers() {
        let config = Config::from_json(
            r#"{"dns": {"resolver": "host", "timeout": "500ms", "ttl_floor": "0s", "cache_capacity": 0},
                "interface_dns": {"wlan0": ["192.168.1.1", "[fd00::1]:5353"]},
                "connection_attempt_delay": "100ms"}"#,
        )
        .unwrap();
        let settings = config.dns_settings();
        assert_eq!(settings.resolver, ResolverChoice::Host);
        assert_eq!(settings.query_timeout, Duration::from_millis(500));
        assert_eq!(settings.ttl.floor, Duration::ZERO);
        assert_eq!(settings.cache_capacity, 0);
        assert_eq!(
            config.interface_dns["wlan0"],
            vec!["192.168.1.1:53".parse::<SocketAddr>().unwrap(), "[fd00::1]:5353".parse().unwrap()]
        );
        assert_eq!(config.dial_settings().connection_attempt_delay, Duration::from_millis(100));
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        for (json, key) in [
            (r#"{"dns": {"timeout": "0s"}}"#, "dns.timeout"),
            (r#"{"dns": {"rounds": 0}}"#, "dns.rounds"),
            (r#"{"dns": {"ttl_floor": "2h", "ttl_cap": "1h"}}"#, "dns.ttl_cap"),
            (r#"{"dns": {"negative_ttl_cap": "400d"}}"#, "dns.negative_ttl_cap"),
            (r#"{"dns": {"resolver": "magic"}}"#, "unknown variant `magic`"),
            (r#"{"interface_dns": {"wlan0": ["dns.example"]}}"#, "interface_dns"),
            (r#"{"connection_attempt_delay": "soon"}"#, "connection_attempt_delay"),
        ] {
            let error = Config::from_json(json).unwrap_err().to_string();
            assert!(error.contains(key), "{json}: {error}");
        }
    }
}
