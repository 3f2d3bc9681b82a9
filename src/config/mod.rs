//! The JSON configuration shared by the `netswitch` CLI and the host API.
//!
//! ```json
//! { "log": { "level": "info" },
//!   "socks": { "listen": "127.0.0.1:1080", "users": [{"username": "u", "password": "p"}],
//!              "handshake_timeout": "10s", "allow_non_loopback": false,
//!              "allow_unauthenticated_non_loopback": false },
//!   "connect_timeout": "5s",
//!   "half_close_timeout": "60s",
//!   "network_strategy": "default", "network_type": [], "fallback_network_type": [],
//!   "fallback_delay": "300ms", "domain_strategy": "prefer_ipv6",
//!   "tcp_keep_alive": "5m", "tcp_keep_alive_interval": "75s", "disable_tcp_keep_alive": false,
//!   "tcp_user_timeout": "60s", "interface_types": {}, "interface_dns": {},
//!   "connection_attempt_delay": "250ms", "dns": { "resolver": "auto" } }
//! ```
//!
//! Every key is optional (defaults as shown); an unknown key at any level is an error naming it.
//! Durations are strings such as `"5s"`, `"300ms"`, `"1m30s"`; `"0s"` (or `"0"`) is zero. Every
//! duration is at most 365 days, and the TCP socket options stay within what every platform's
//! kernel accepts (see [`limits`]); a value out of range is an error naming its key.
//! New top-level options are added as new fields of [`Config`] with a serde default. The `dns`
//! section: [`dns`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::dial::direct::{DialSettings, DirectOutbound, DEFAULT_CONNECT_TIMEOUT};
use crate::dial::race::DEFAULT_FALLBACK_DELAY;
use crate::inbound::socks::{SocksSettings, SocksUser};
use crate::logging::LogLevel;
use crate::manager::{RelaySettings, DEFAULT_HALF_CLOSE_TIMEOUT};
use crate::network::strategy::NetworkStrategy;
use crate::network::DomainStrategy;
use crate::network::NetworkType;
use crate::platform::sockopts::{DEFAULT_KEEPALIVE_IDLE, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_USER_TIMEOUT};
use crate::platform::{KeepaliveOptions, TcpSocketOptions};
use crate::tls_fragment::FragmentSettings;

pub mod dns;
pub mod limits;

/// The whole configuration. Build it with [`Config::from_json`], [`Config::from_file`] or
/// `Config::default()`; the constructors validate it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// The SOCKS5 ingress.
    pub socks: SocksConfig,
    /// Timeout of one connect attempt. Must be > 0. Default 5 s.
    #[serde(deserialize_with = "connect_timeout")]
    pub connect_timeout: Duration,
    /// How long a half-closed connection may stay silent before it is closed. Zero = never.
    /// Default 60 s.
    #[serde(deserialize_with = "half_close_timeout")]
    pub half_close_timeout: Duration,
    /// Network strategy: `default`, `hybrid` or `fallback`. Default `default`.
    pub network_strategy: NetworkStrategy,
    /// Preferred network types (`wifi`, `cellular`, `ethernet`, `other`), one or a list.
    /// Default none (no preference).
    #[serde(deserialize_with = "one_or_many")]
    pub network_type: Vec<NetworkType>,
    /// Fallback network types for `fallback`, one or a list. Default none (every other interface).
    #[serde(deserialize_with = "one_or_many")]
    pub fallback_network_type: Vec<NetworkType>,
    /// Delay before fallback networks join the race. Default 300 ms.
    #[serde(deserialize_with = "fallback_delay")]
    pub fallback_delay: Duration,
    /// `prefer_ipv6` (default, RFC 8305), `prefer_ipv4`, `ipv4_only` or `ipv6_only`.
    pub domain_strategy: DomainStrategy,
    /// Idle time before the first TCP keepalive probe. Default 5 min.
    #[serde(deserialize_with = "tcp_keep_alive")]
    pub tcp_keep_alive: Duration,
    /// Time between TCP keepalive probes. Default 75 s.
    #[serde(deserialize_with = "tcp_keep_alive_interval")]
    pub tcp_keep_alive_interval: Duration,
    /// Turn TCP keepalive off. Default false.
    pub disable_tcp_keep_alive: bool,
    /// How long unacknowledged data may wait before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`; `TCP_RXT_CONNDROPTIME` on Apple). `"0s"` keeps the system default.
    /// Default 60 s.
    #[serde(deserialize_with = "tcp_user_timeout")]
    pub tcp_user_timeout: Duration,
    /// Desktop only: network type of host interfaces by name, overriding the type inferred from
    /// the name (`{"enp3s0": "wifi"}`). Default none.
    pub interface_types: BTreeMap<String, NetworkType>,
    /// Desktop only: DNS servers of host interfaces by name (`{"wlan0": ["192.168.1.1"]}`; each
    /// `IP`, `IP:PORT` or `[IPv6]:PORT`), used instead of what the system reports. Default none.
    #[serde(deserialize_with = "dns::interface_dns")]
    pub interface_dns: BTreeMap<String, Vec<SocketAddr>>,
    /// Delay between two connection attempts on one network (RFC 8305: the next address, of
    /// the other family first, starts after it, or at once when an attempt fails). Default 250 ms.
    #[serde(deserialize_with = "connection_attempt_delay")]
    pub connection_attempt_delay: Duration,
    /// Name resolution: which resolver, timeouts, cache TTL bounds ([`dns::DnsConfig`]).
    pub dns: dns::DnsConfig,
    /// Idle timeout of UDP sessions of no recognised protocol (DNS/NTP/STUN get 10 s, QUIC/DTLS
    /// 30 s; a connection's own `udp_timeout` beats both). Must be > 0. Default 5 min.
    #[serde(deserialize_with = "udp_timeout")]
    pub udp_timeout: Duration,
    /// Maximum number of UDP sessions of one ingress session table (the least recently used
    /// idle one is evicted beyond it). Must be > 0. Default 1024.
    pub udp_session_capacity: usize,
    /// Maximum number of SOCKS5 UDP associations open at once; a request past it is refused with
    /// reply 0x01 (counted, warned about). Must be > 0. Default 256.
    pub udp_max_associations: usize,
    /// Maximum number of UDP sessions (each one outbound socket) open at once across every
    /// association of the SOCKS5 server; a datagram that needs one more is dropped (counted,
    /// warned about). Must be > 0. Default 1024.
    pub udp_max_sockets: usize,
    /// TLS segment fragmentation for every connection (a connection's own option can also turn
    /// it on). Default false.
    pub tls_fragment: bool,
    /// TLS record fragmentation for every connection (a connection's own option can also turn it
    /// on). Default false.
    pub tls_record_fragment: bool,
    /// Bound of the wait for an acknowledgement between TLS fragments, unless a connection sets
    /// its own. Must be > 0. Default 500 ms.
    #[serde(deserialize_with = "tls_fragment_fallback_delay")]
    pub tls_fragment_fallback_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: LogConfig::default(),
            socks: SocksConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            half_close_timeout: DEFAULT_HALF_CLOSE_TIMEOUT,
            network_strategy: NetworkStrategy::Default,
            network_type: Vec::new(),
            fallback_network_type: Vec::new(),
            fallback_delay: DEFAULT_FALLBACK_DELAY,
            domain_strategy: DomainStrategy::default(),
            tcp_keep_alive: DEFAULT_KEEPALIVE_IDLE,
            tcp_keep_alive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            disable_tcp_keep_alive: false,
            tcp_user_timeout: DEFAULT_USER_TIMEOUT,
            interface_types: BTreeMap::new(),
            interface_dns: BTreeMap::new(),
            connection_attempt_delay: crate::dial::race::DEFAULT_CONNECTION_ATTEMPT_DELAY,
            dns: dns::DnsConfig::default(),
            udp_timeout: crate::client::udp_timeout::DEFAULT_UDP_TIMEOUT,
            udp_session_capacity: crate::inbound::udp_sessions::DEFAULT_SESSION_CAPACITY,
            udp_max_associations: crate::inbound::udp_sessions::DEFAULT_MAX_ASSOCIATIONS,
            udp_max_sockets: crate::inbound::udp_sessions::DEFAULT_MAX_SOCKETS,
            tls_fragment: false,
            tls_record_fragment: false,
            tls_fragment_fallback_delay: crate::tls_fragment::DEFAULT_FALLBACK_DELAY,
        }
    }
}

/// The `log` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LogConfig {
    /// One of trace, debug, info, warn, error. Default info.
    pub level: LogLevel,
}

/// The `socks` section: the SOCKS5 server's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SocksConfig {
    /// Address to listen on. Default 127.0.0.1:1080.
    pub listen: SocketAddr,
    /// Accepted users; empty = no authentication. Default empty.
    pub users: Vec<SocksUser>,
    /// Time a client has to finish its handshake. Must be > 0. Default 10 s.
    #[serde(deserialize_with = "handshake_timeout")]
    pub handshake_timeout: Duration,
    /// Allow a listen address that is not loopback. Default false.
    pub allow_non_loopback: bool,
    /// Allow a non-loopback listen address without `users` (an open proxy for everyone who can
    /// reach it; logged as a warning). Without it such a server refuses to start. Default false.
    pub allow_unauthenticated_non_loopback: bool,
}

impl Default for SocksConfig {
    fn default() -> Self {
        let defaults = SocksSettings::default();
        SocksConfig {
            listen: defaults.listen,
            users: defaults.users,
            handshake_timeout: defaults.handshake_timeout,
            allow_non_loopback: defaults.allow_non_loopback,
            allow_unauthenticated_non_loopback: defaults.allow_unauthenticated_non_loopback,
        }
    }
}

/// Why a configuration was rejected. Messages name the file (when there is one) and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid JSON, has an unknown key, or a value of the wrong type or format.
    #[error("invalid config{}: {source}", in_file(.file))]
    Syntax {
        /// The file, if the config came from one.
        file: Option<PathBuf>,
        /// The parser's error (names the unknown key or bad value, with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A value parsed but is not allowed.
    #[error("invalid config{}: `{field}` {reason}", in_file(.file))]
    Invalid {
        /// The file, if the config came from one.
        file: Option<PathBuf>,
        /// The key, as a dotted path (`socks.handshake_timeout`).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn in_file(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => format!(" in {}", path.display()),
        None => String::new(),
    }
}

impl Config {
    /// Parses and validates a configuration from JSON text.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            serde_json::from_str(text).map_err(|source| ConfigError::Syntax { file: None, source })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file. Blocking file I/O: call it before
    /// starting the runtime or from a blocking task.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let with_file = |error| match error {
            ConfigError::Syntax { source, .. } => {
                ConfigError::Syntax { file: Some(path.to_path_buf()), source }
            }
            ConfigError::Invalid { field, reason, .. } => {
                ConfigError::Invalid { file: Some(path.to_path_buf()), field, reason }
            }
            other => other,
        };
        Config::from_json(&text).map_err(with_file)
    }

    /// Checks the rules parsing cannot express: timeouts that must be positive, durations within
    /// what the platforms accept ([`limits`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "must be greater than 0";
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::Invalid { file: None, field: "connect_timeout", reason: positive });
        }
        if self.tcp_keep_alive.is_zero() && !self.disable_tcp_keep_alive {
            return Err(ConfigError::Invalid { file: None, field: "tcp_keep_alive", reason: positive });
        }
        if self.tcp_keep_alive_interval.is_zero() && !self.disable_tcp_keep_alive {
            return Err(ConfigError::Invalid {
                file: None,
                field: "tcp_keep_alive_interval",
                reason: positive,
            });
        }
        if self.tls_fragment_fallback_delay.is_zero() {
            return Err(ConfigError::Invalid {
                file: None,
                field: "tls_fragment_fallback_delay",
                reason: positive,
            });
        }
        if self.udp_timeout.is_zero() {
            return Err(ConfigError::Invalid { file: None, field: "udp_timeout", reason: positive });
        }
        if self.udp_session_capacity == 0 {
            return Err(ConfigError::Invalid { file: None, field: "udp_session_capacity", reason: positive });
        }
        if self.udp_max_associations == 0 {
            return Err(ConfigError::Invalid { file: None, field: "udp_max_associations", reason: positive });
        }
        if self.udp_max_sockets == 0 {
            return Err(ConfigError::Invalid { file: None, field: "udp_max_sockets", reason: positive });
        }
        if self.socks.handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                file: None,
                field: "socks.handshake_timeout",
                reason: positive,
            });
        }
        self.check_duration_limits()?;
        if self.connection_attempt_delay > limits::MAX_DURATION {
            return Err(ConfigError::Invalid {
                file: None,
                field: "connection_attempt_delay",
                reason: "must be at most 365d",
            });
        }
        self.dns.validate()?;
        Ok(())
    }

    /// The relay engine's settings (`half_close_timeout` zero becomes "never").
    pub fn relay_settings(&self) -> RelaySettings {
        let timeout = self.half_close_timeout;
        RelaySettings {
            half_close_timeout: (!timeout.is_zero()).then_some(timeout),
            tls_fragment: self.tls_fragment_settings(),
        }
    }

    /// The SOCKS5 server's settings.
    pub fn socks_settings(&self) -> SocksSettings {
        SocksSettings {
            listen: self.socks.listen,
            users: self.socks.users.clone(),
            handshake_timeout: self.socks.handshake_timeout,
            allow_non_loopback: self.socks.allow_non_loopback,
            allow_unauthenticated_non_loopback: self.socks.allow_unauthenticated_non_loopback,
            udp: self.udp_settings(),
            ..SocksSettings::default()
        }
    }

    /// The dial settings: connect timeout, strategy, address families, TCP socket options.
    pub fn dial_settings(&self) -> DialSettings {
        let keepalive = (!self.disable_tcp_keep_alive).then_some(KeepaliveOptions {
            idle: self.tcp_keep_alive,
            interval: self.tcp_keep_alive_interval,
        });
        DialSettings {
            connect_timeout: self.connect_timeout,
            network_strategy: self.network_strategy,
            network_type: self.network_type.clone(),
            fallback_network_type: self.fallback_network_type.clone(),
            fallback_delay: self.fallback_delay,
            connection_attempt_delay: self.connection_attempt_delay,
            domain_strategy: self.domain_strategy,
            tcp: TcpSocketOptions {
                nodelay: true,
                keepalive,
                user_timeout: (!self.tcp_user_timeout.is_zero()).then_some(self.tcp_user_timeout),
            },
        }
    }

    /// The TLS fragmentation defaults for every connection; the manager merges them with each
    /// connection's own options ([`FragmentSettings::for_connection`]).
    pub fn tls_fragment_settings(&self) -> FragmentSettings {
        FragmentSettings {
            segment: self.tls_fragment,
            record: self.tls_record_fragment,
            fallback_delay: self.tls_fragment_fallback_delay,
        }
    }

    /// The UDP session settings of ingresses: `udp_timeout` as the default idle timeout (protocol
    /// timeouts and a connection's own `udp_timeout` still take precedence, see
    /// [`crate::client::udp_timeout`]), `udp_session_capacity`, `udp_max_associations` and
    /// `udp_max_sockets`.
    pub fn udp_settings(&self) -> crate::inbound::udp_sessions::UdpSettings {
        let mut settings = crate::inbound::udp_sessions::UdpSettings::default();
        settings.timeouts.default = self.udp_timeout;
        settings.session_capacity = self.udp_session_capacity;
        settings.max_associations = self.udp_max_associations;
        settings.max_sockets = self.udp_max_sockets;
        settings
    }

    /// A direct outbound with the configured dial and resolver settings, using the system route
    /// (call [`DirectOutbound::with_networks`] to make it choose interfaces, and give its
    /// [`DirectOutbound::dns`] to [`crate::ConnectionManager::with_dns`]).
    pub fn direct_outbound(&self) -> DirectOutbound {
        let dns = std::sync::Arc::new(crate::dns::Resolvers::new(self.dns_settings()));
        DirectOutbound::with_settings(self.dial_settings()).with_dns(dns)
    }
}

/// Parses a duration string: humantime's syntax ("5s", "300ms", "1m30s", "1.5s", "2h 5min"),
/// plus a bare "0".
pub fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
}

pub(crate) fn duration_field<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &str,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)
        .map_err(|error| serde::de::Error::custom(format!("`{field}`: {error}")))?;
    parse_duration(&text)
        .map_err(|error| serde::de::Error::custom(format!("`{field}`: invalid duration {text:?}: {error}")))
}

/// One `deserialize_with` function per duration key, so that a bad value's error names its key.
macro_rules! duration_keys {
    ($($function:ident => $key:literal),* $(,)?) => {
        $(fn $function<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
            duration_field(deserializer, $key)
        })*
    };
}

duration_keys! {
    connect_timeout => "connect_timeout",
    half_close_timeout => "half_close_timeout",
    fallback_delay => "fallback_delay",
    tcp_keep_alive => "tcp_keep_alive",
    tcp_keep_alive_interval => "tcp_keep_alive_interval",
    tcp_user_timeout => "tcp_user_timeout",
    tls_fragment_fallback_delay => "tls_fragment_fallback_delay",
    udp_timeout => "udp_timeout",
    connection_attempt_delay => "connection_attempt_delay",
    handshake_timeout => "socks.handshake_timeout",
}

/// A network type or a list of them (the reference accepts both).
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<NetworkType>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(NetworkType),
        Many(Vec<NetworkType>),
    }
    match OneOrMany::deserialize(deserializer) {
        Ok(OneOrMany::One(kind)) => Ok(vec![kind]),
        Ok(OneOrMany::Many(kinds)) => Ok(kinds),
        Err(_) => Err(serde::de::Error::custom(
            "network types must be one of \"wifi\", \"cellular\", \"ethernet\", \"other\" or a list of them",
        )),
    }
}

#[cfg(test)]
mod tests;
