//! The configuration record the host builds (or parses from the CLI's JSON) and the
//! per-connection options record.

use std::time::Duration;

use super::error::NetswitchError;
use super::network::NetworkType;
use super::types::LogLevel;
use crate::config::Config;
use crate::metadata::ConnectionOptions as CoreOptions;
use crate::network::strategy::NetworkStrategy as CoreStrategy;
use crate::network::DomainStrategy as CoreDomainStrategy;

/// How a connection chooses among the available networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum NetworkStrategy {
    /// The default interface (or the interfaces of `network_type`), all raced together.
    Default,
    /// Every interface (or every one of `network_type`), all raced together.
    Hybrid,
    /// The preferred interfaces first, the fallback ones after `fallback_delay_ms` or as soon
    /// as every preferred one failed.
    Fallback,
}

/// Which address families a connection may use and which it tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DomainStrategy {
    /// IPv6 first, IPv4 after the fallback delay (RFC 8305).
    PreferIpv6,
    /// IPv4 first, IPv6 after the fallback delay.
    PreferIpv4,
    /// IPv4 only.
    Ipv4Only,
    /// IPv6 only.
    Ipv6Only,
}

/// The manager's configuration. Every field has a default, so `NetswitchConfig()` in Kotlin
/// (Swift: `NetswitchConfig()`) is a working configuration; `config_from_json` parses the CLI's
/// JSON file format into it. Durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NetswitchConfig {
    /// Level the process-wide logger starts at when this is the process's first manager and
    /// `set_log_level` was not called before; otherwise ignored (`set_log_level` changes the
    /// level at any time). `None` = info.
    #[uniffi(default = None)]
    pub log_level: Option<LogLevel>,
    /// Timeout of one connect attempt (one address on one network). Must be > 0. Default 5000.
    #[uniffi(default = 5000)]
    pub connect_timeout_ms: u64,
    /// How long a half-closed connection may stay silent before it is closed; 0 = never.
    /// Default 60000.
    #[uniffi(default = 60000)]
    pub half_close_timeout_ms: u64,
    /// Network strategy. `None` = `Default` (the default interface).
    #[uniffi(default = None)]
    pub network_strategy: Option<NetworkStrategy>,
    /// Preferred network types; empty = no preference. Default empty.
    #[uniffi(default = [])]
    pub network_type: Vec<NetworkType>,
    /// Fallback network types of the `Fallback` strategy; empty = every other interface.
    /// Default empty.
    #[uniffi(default = [])]
    pub fallback_network_type: Vec<NetworkType>,
    /// Delay before fallback networks join the race. Default 300.
    #[uniffi(default = 300)]
    pub fallback_delay_ms: u64,
    /// Delay between two connection attempts on one network (RFC 8305: the next address, of the
    /// other family first, starts after it, or at once when an attempt fails). Default 250.
    #[uniffi(default = 250)]
    pub connection_attempt_delay_ms: u64,
    /// Which resolver answers for an interface. `None` = `Auto` (the interface's DNS servers,
    /// else `PlatformInterface.resolve`, else the system resolver).
    #[uniffi(default = None)]
    pub dns_resolver: Option<super::dns::DnsResolver>,
    /// Time one DNS server gets for one question before the next one is asked. Must be > 0.
    /// Default 2000.
    #[uniffi(default = 2000)]
    pub dns_timeout_ms: u64,
    /// Shortest time a DNS answer is cached (also how long the host resolver's answers are
    /// kept). Default 5000.
    #[uniffi(default = 5000)]
    pub dns_ttl_floor_ms: u64,
    /// Longest time a DNS answer is cached; at least `dns_ttl_floor_ms`. Default 3600000 (1 h).
    #[uniffi(default = 3600000)]
    pub dns_ttl_cap_ms: u64,
    /// Address-family policy. `None` = `PreferIpv6`.
    #[uniffi(default = None)]
    pub domain_strategy: Option<DomainStrategy>,
    /// Idle time before the first TCP keepalive probe. Must be > 0 unless keepalive is off.
    /// Default 300000 (5 min).
    #[uniffi(default = 300000)]
    pub tcp_keep_alive_ms: u64,
    /// Time between TCP keepalive probes. Must be > 0 unless keepalive is off. Default 75000.
    #[uniffi(default = 75000)]
    pub tcp_keep_alive_interval_ms: u64,
    /// Turn TCP keepalive off. Default false.
    #[uniffi(default = false)]
    pub disable_tcp_keep_alive: bool,
    /// How long unacknowledged data may wait before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`, `TCP_RXT_CONNDROPTIME` on Apple); 0 = system default. Default 60000.
    #[uniffi(default = 60000)]
    pub tcp_user_timeout_ms: u64,
    /// Idle timeout of UDP sessions of no recognised protocol. Must be > 0. Default 300000.
    #[uniffi(default = 300000)]
    pub udp_timeout_ms: u64,
    /// Maximum number of UDP sessions of one ingress. Must be > 0. Default 1024.
    #[uniffi(default = 1024)]
    pub udp_session_capacity: u32,
    /// TLS segment fragmentation of every connection's first ClientHello. Default false.
    #[uniffi(default = false)]
    pub tls_fragment: bool,
    /// TLS record fragmentation of every connection's first ClientHello. Default false.
    #[uniffi(default = false)]
    pub tls_record_fragment: bool,
    /// Bound of the wait for an acknowledgement between TLS fragments. Must be > 0. Default 500.
    #[uniffi(default = 500)]
    pub tls_fragment_fallback_delay_ms: u64,
    /// Time a SOCKS client has to finish its handshake. Must be > 0. Default 10000.
    #[uniffi(default = 10000)]
    pub socks_handshake_timeout_ms: u64,
    /// Let `start_socks` listen on an address that is not loopback. Default false.
    #[uniffi(default = false)]
    pub socks_allow_non_loopback: bool,
    /// Build the process-wide runtime small (2 worker threads, 256 KiB stacks) for memory-capped
    /// processes such as an iOS Network Extension (50 MiB). Only the first manager of the process
    /// decides. Default false (one worker per CPU core).
    #[uniffi(default = false)]
    pub lightweight_runtime: bool,
    /// Also offer sockets to loopback destinations to the platform (normally loopback is never
    /// protected or bound). For tests and hosts whose "networks" live on loopback. Default false.
    #[uniffi(default = false)]
    pub offer_loopback_sockets: bool,
}

impl Default for NetswitchConfig {
    fn default() -> Self {
        NetswitchConfig::from_core(&Config::default())
    }
}

/// Parses the CLI's JSON config format (see the README) into a [`NetswitchConfig`].
/// `socks.listen`, `socks.users`, `interface_types`, `interface_dns`, the `dns` keys without a
/// field here and `log` other than the level are CLI-only and ignored here (pass listen address
/// and credentials to `start_socks`, DNS servers in the interface snapshot).
///
/// Errors: `InvalidConfig` naming the key (unknown key, bad duration, a zero timeout).
#[uniffi::export]
pub fn config_from_json(json: String) -> Result<NetswitchConfig, NetswitchError> {
    let config = Config::from_json(&json)?;
    Ok(NetswitchConfig::from_core(&config))
}

/// The configuration with every field at its default (same as `NetswitchConfig()`).
#[uniffi::export]
pub fn default_config() -> NetswitchConfig {
    NetswitchConfig::default()
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl NetswitchConfig {
    fn from_core(c: &Config) -> NetswitchConfig {
        NetswitchConfig {
            log_level: Some(c.log.level.into()),
            connect_timeout_ms: ms(c.connect_timeout),
            half_close_timeout_ms: ms(c.half_close_timeout),
            network_strategy: Some(strategy_from_core(c.network_strategy)),
            network_type: c.network_type.iter().map(|&t| t.into()).collect(),
            fallback_network_type: c.fallback_network_type.iter().map(|&t| t.into()).collect(),
            fallback_delay_ms: ms(c.fallback_delay),
            connection_attempt_delay_ms: ms(c.connection_attempt_delay),
            dns_resolver: Some(c.dns.resolver.into()),
            dns_timeout_ms: ms(c.dns.timeout),
            dns_ttl_floor_ms: ms(c.dns.ttl_floor),
            dns_ttl_cap_ms: ms(c.dns.ttl_cap),
            domain_strategy: Some(domain_from_core(c.domain_strategy)),
            tcp_keep_alive_ms: ms(c.tcp_keep_alive),
            tcp_keep_alive_interval_ms: ms(c.tcp_keep_alive_interval),
            disable_tcp_keep_alive: c.disable_tcp_keep_alive,
            tcp_user_timeout_ms: ms(c.tcp_user_timeout),
            udp_timeout_ms: ms(c.udp_timeout),
            udp_session_capacity: u32::try_from(c.udp_session_capacity).unwrap_or(u32::MAX),
            tls_fragment: c.tls_fragment,
            tls_record_fragment: c.tls_record_fragment,
            tls_fragment_fallback_delay_ms: ms(c.tls_fragment_fallback_delay),
            socks_handshake_timeout_ms: ms(c.socks.handshake_timeout),
            socks_allow_non_loopback: c.socks.allow_non_loopback,
            lightweight_runtime: false,
            offer_loopback_sockets: false,
        }
    }

    /// The validated core configuration; `InvalidConfig` names the first bad field.
    pub(crate) fn to_core(&self) -> Result<Config, NetswitchError> {
        let d = Duration::from_millis;
        let mut c = Config::default();
        c.log.level = self.log_level.map_or(c.log.level, Into::into);
        c.connect_timeout = d(self.connect_timeout_ms);
        c.half_close_timeout = d(self.half_close_timeout_ms);
        c.network_strategy = self.network_strategy.map_or(c.network_strategy, strategy_to_core);
        c.network_type = self.network_type.iter().map(|&t| t.into()).collect();
        c.fallback_network_type = self.fallback_network_type.iter().map(|&t| t.into()).collect();
        c.fallback_delay = d(self.fallback_delay_ms);
        c.connection_attempt_delay = d(self.connection_attempt_delay_ms);
        c.dns.resolver = self.dns_resolver.map_or(c.dns.resolver, Into::into);
        c.dns.timeout = d(self.dns_timeout_ms);
        c.dns.ttl_floor = d(self.dns_ttl_floor_ms);
        c.dns.ttl_cap = d(self.dns_ttl_cap_ms);
        c.domain_strategy = self.domain_strategy.map_or(c.domain_strategy, domain_to_core);
        c.tcp_keep_alive = d(self.tcp_keep_alive_ms);
        c.tcp_keep_alive_interval = d(self.tcp_keep_alive_interval_ms);
        c.disable_tcp_keep_alive = self.disable_tcp_keep_alive;
        c.tcp_user_timeout = d(self.tcp_user_timeout_ms);
        c.udp_timeout = d(self.udp_timeout_ms);
        c.udp_session_capacity = self.udp_session_capacity as usize;
        c.tls_fragment = self.tls_fragment;
        c.tls_record_fragment = self.tls_record_fragment;
        c.tls_fragment_fallback_delay = d(self.tls_fragment_fallback_delay_ms);
        c.socks.handshake_timeout = d(self.socks_handshake_timeout_ms);
        c.socks.allow_non_loopback = self.socks_allow_non_loopback;
        c.validate()?;
        Ok(c)
    }
}

pub(crate) fn strategy_to_core(s: NetworkStrategy) -> CoreStrategy {
    match s {
        NetworkStrategy::Default => CoreStrategy::Default,
        NetworkStrategy::Hybrid => CoreStrategy::Hybrid,
        NetworkStrategy::Fallback => CoreStrategy::Fallback,
    }
}

fn strategy_from_core(s: CoreStrategy) -> NetworkStrategy {
    match s {
        CoreStrategy::Default => NetworkStrategy::Default,
        CoreStrategy::Hybrid => NetworkStrategy::Hybrid,
        CoreStrategy::Fallback => NetworkStrategy::Fallback,
    }
}

fn domain_to_core(s: DomainStrategy) -> CoreDomainStrategy {
    match s {
        DomainStrategy::PreferIpv6 => CoreDomainStrategy::PreferIpv6,
        DomainStrategy::PreferIpv4 => CoreDomainStrategy::PreferIpv4,
        DomainStrategy::Ipv4Only => CoreDomainStrategy::Ipv4Only,
        DomainStrategy::Ipv6Only => CoreDomainStrategy::Ipv6Only,
    }
}

fn domain_from_core(s: CoreDomainStrategy) -> DomainStrategy {
    match s {
        CoreDomainStrategy::PreferIpv6 => DomainStrategy::PreferIpv6,
        CoreDomainStrategy::PreferIpv4 => DomainStrategy::PreferIpv4,
        CoreDomainStrategy::Ipv4Only => DomainStrategy::Ipv4Only,
        CoreDomainStrategy::Ipv6Only => DomainStrategy::Ipv6Only,
    }
}

/// Per-connection overrides for `relay_tcp_fd`; every `None` (or false) takes the config's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct ConnectionOptions {
    /// Timeout of each connect attempt, ms: 1 to 31536000000 (365 days). `None` = the config's
    /// `connect_timeout_ms`.
    #[uniffi(default = None)]
    pub connect_timeout_ms: Option<u64>,
    /// Network strategy. `None` = the config's.
    #[uniffi(default = None)]
    pub network_strategy: Option<NetworkStrategy>,
    /// Preferred network types. `None` = the config's; an empty list = no preference.
    #[uniffi(default = None)]
    pub network_type: Option<Vec<NetworkType>>,
    /// Fallback network types. `None` = the config's.
    #[uniffi(default = None)]
    pub fallback_network_type: Option<Vec<NetworkType>>,
    /// Fallback delay (before fallback networks join), ms: at most 31536000000 (365 days).
    /// `None` = the config's.
    #[uniffi(default = None)]
    pub fallback_delay_ms: Option<u64>,
    /// Address-family policy. `None` = the config's.
    #[uniffi(default = None)]
    pub domain_strategy: Option<DomainStrategy>,
    /// TLS segment fragmentation for this connection (on when this or the config says so).
    /// Default false.
    #[uniffi(default = false)]
    pub tls_fragment: bool,
    /// TLS record fragmentation for this connection (on when this or the config says so).
    /// Default false.
    #[uniffi(default = false)]
    pub tls_record_fragment: bool,
}

impl ConnectionOptions {
    /// Checks the durations against the config's limits: `InvalidArgument` naming the option
    /// (`options.connect_timeout_ms` must be 1 ms to 365 days, `options.fallback_delay_ms` at
    /// most 365 days).
    pub(crate) fn validate(&self) -> Result<(), NetswitchError> {
        let max = crate::config::limits::MAX_DURATION;
        let invalid = |argument: &str, reason: String| NetswitchError::InvalidArgument {
            argument: argument.into(),
            reason,
        };
        if let Some(ms) = self.connect_timeout_ms {
            if ms == 0 || Duration::from_millis(ms) > max {
                let reason = format!("{ms} is not between 1 and {} (365 days)", max.as_millis());
                return Err(invalid("options.connect_timeout_ms", reason));
            }
        }
        if let Some(ms) = self.fallback_delay_ms {
            if Duration::from_millis(ms) > max {
                let reason = format!("{ms} is above {} (365 days)", max.as_millis());
                return Err(invalid("options.fallback_delay_ms", reason));
            }
        }
        Ok(())
    }

    /// The core options.
    pub(crate) fn to_core(&self) -> CoreOptions {
        CoreOptions {
            connect_timeout: self.connect_timeout_ms.map(Duration::from_millis),
            network_strategy: self.network_strategy.map(strategy_to_core),
            network_type: self.network_type.as_ref().map(|v| v.iter().map(|&t| t.into()).collect()),
            fallback_network_type: self
                .fallback_network_type
                .as_ref()
                .map(|v| v.iter().map(|&t| t.into()).collect()),
            fallback_delay: self.fallback_delay_ms.map(Duration::from_millis),
            domain_strategy: self.domain_strategy.map(domain_to_core),
            tls_fragment: self.tls_fragment,
            tls_record_fragment: self.tls_record_fragment,
            ..CoreOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_defaults_match_the_core_defaults_and_round_trip() {
        let config = NetswitchConfig::default();
        assert_eq!(config.connect_timeout_ms, 5000);
        assert_eq!(config.fallback_delay_ms, 300);
        assert_eq!(config.udp_session_capacity, 1024);
        assert_eq!(config.to_core().unwrap(), Config::default());
    }

    #[test]
    fn zero_timeout_names_the_field() {
        let config = NetswitchConfig { socks_handshake_timeout_ms: 0, ..NetswitchConfig::default() };
        let error = config.to_core().unwrap_err();
        assert!(
            matches!(&error, NetswitchError::InvalidConfig { field, .. } if field == "socks.handshake_timeout"),
            "{error:?}"
        );
    }

    #[test]
    fn json_is_the_cli_format() {
        let config = config_from_json(
            r#"{"connect_timeout": "2s", "network_strategy": "fallback", "network_type": "wifi"}"#.into(),
        )
        .unwrap();
        assert_eq!(config.connect_timeout_ms, 2000);
        assert_eq!(config.network_strategy, Some(NetworkStrategy::Fallback));
        assert_eq!(config.network_type, vec![NetworkType::Wifi]);
    }
}
