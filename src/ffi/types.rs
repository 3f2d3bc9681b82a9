//! Records and enums shared by the façade's calls: network types, the interface snapshot,
//! connection snapshots, close events, log records and traffic totals.

use std::net::IpAddr;
use std::time::SystemTime;

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
    /// Operating-system interface index; never 0.
    pub index: u32,
    /// Kind of network; decides which interfaces a strategy picks.
    pub network_type: NetworkType,
    /// Addresses with prefix length (`"10.0.0.2/24"`, `"fe80::1/64"`). Default none.
    #[uniffi(default = [])]
    pub addresses: Vec<String>,
    /// DNS servers of this network (`"192.168.1.1"`), in the host's order. Default none.
    #[uniffi(default = [])]
    pub dns_servers: Vec<String>,
    /// Metered / expensive (cellular, a phone hotspot). Default false.
    #[uniffi(default = false)]
    pub expensive: bool,
    /// Constrained (Low Data Mode, data saver). Default false.
    #[uniffi(default = false)]
    pub constrained: bool,
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
            let mut interface = core::NetworkInterface::new(i.name.clone(), i.index, i.network_type.into());
            for text in &i.addresses {
                let (ip, prefix) = parse_prefixed(text).ok_or_else(|| {
                    invalid(format!("interface {}: bad address {text:?} (want ip/prefix)", i.name))
                })?;
                interface = interface.with_address(ip, prefix);
            }
            for text in &i.dns_servers {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| invalid(format!("interface {}: bad DNS server {text:?}", i.name)))?;
                interface.dns_servers.push(ip);
            }
            interface.expensive = i.expensive;
            interface.constrained = i.constrained;
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

/// What the platform should do with a socket offered to `PlatformInterface.bind_socket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum BindAction {
    /// The socket goes out through the default interface: only keep it out of the VPN
    /// (Android `VpnService.protect(fd)`); do not bind it.
    Protect,
    /// Bind the socket to this interface's network (Android `Network.bindSocket(fd)`).
    Bind,
}

/// The platform's answer for an offered socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum BindDecision {
    /// The platform protected or bound the socket itself.
    Bound,
    /// The platform leaves it to netswitch: `IP_BOUND_IF` on Apple, `SO_BINDTOIFINDEX` on Linux.
    BindYourself,
}

/// The transport of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TransportProtocol {
    /// A TCP stream.
    Tcp,
    /// A UDP session.
    Udp,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Still dialing the destination.
    Dialing,
    /// Relaying bytes.
    Relaying,
}

/// A snapshot of one live connection.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ConnectionInfo {
    /// The connection's id (never reused by its manager).
    pub id: u64,
    /// Where it goes (`example.com:443`, `93.184.216.34:443`).
    pub destination: String,
    /// Kind of network it left through; `None` while dialing or on the system route.
    pub network_type: Option<NetworkType>,
    /// Interface it left through; `None` while dialing or on the system route.
    pub interface: Option<String>,
    /// Dialing or relaying.
    pub state: ConnectionState,
    /// Wall-clock time it was handed to netswitch.
    pub started_at: SystemTime,
    /// Bytes relayed client → destination so far.
    pub bytes_up: u64,
    /// Bytes relayed destination → client so far.
    pub bytes_down: u64,
    /// TCP or UDP.
    pub protocol: TransportProtocol,
}

impl From<&crate::tracker::ConnectionInfo> for ConnectionInfo {
    fn from(info: &crate::tracker::ConnectionInfo) -> Self {
        ConnectionInfo {
            id: info.id,
            destination: info.metadata.destination.to_string(),
            network_type: info.egress.network_type.map(Into::into),
            interface: info.egress.interface.clone(),
            state: match info.state {
                crate::tracker::ConnectionState::Dialing => ConnectionState::Dialing,
                crate::tracker::ConnectionState::Relaying => ConnectionState::Relaying,
            },
            started_at: info.started_at,
            bytes_up: info.bytes_up,
            bytes_down: info.bytes_down,
            protocol: match info.protocol {
                crate::tracker::TransportProtocol::Tcp => TransportProtocol::Tcp,
                crate::tracker::TransportProtocol::Udp => TransportProtocol::Udp,
            },
        }
    }
}

/// A connection that ended, with its final counters; sent to `EventListener.on_connection_closed`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ClosedConnection {
    /// The connection's id.
    pub id: u64,
    /// Where it went.
    pub destination: String,
    /// Kind of network it left through; `None` if the dial failed or on the system route.
    pub network_type: Option<NetworkType>,
    /// Interface it left through; `None` if the dial failed or on the system route.
    pub interface: Option<String>,
    /// Bytes relayed client → destination.
    pub bytes_up: u64,
    /// Bytes relayed destination → client.
    pub bytes_down: u64,
    /// How long it lived, dial included, in milliseconds.
    pub duration_ms: u64,
    /// `None` for a clean end (both directions finished); otherwise the root cause
    /// (`DialFailed`, `PlatformRefused`, `Closed`, …).
    pub error: Option<NetswitchError>,
}

impl From<&crate::relay::ClosedConnection> for ClosedConnection {
    fn from(closed: &crate::relay::ClosedConnection) -> Self {
        ClosedConnection {
            id: closed.id,
            destination: closed.destination.to_string(),
            network_type: closed.egress.network_type.map(Into::into),
            interface: closed.egress.interface.clone(),
            bytes_up: closed.bytes_up,
            bytes_down: closed.bytes_down,
            duration_ms: u64::try_from(closed.duration.as_millis()).unwrap_or(u64::MAX),
            error: closed.error.as_ref().map(NetswitchError::from),
        }
    }
}

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    /// Everything, including per-read details.
    Trace,
    /// Per-connection events.
    Debug,
    /// Service events and connection errors.
    Info,
    /// Problems that do not stop the service.
    Warn,
    /// Only failures.
    Error,
}

impl From<LogLevel> for crate::logging::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => crate::logging::LogLevel::Trace,
            LogLevel::Debug => crate::logging::LogLevel::Debug,
            LogLevel::Info => crate::logging::LogLevel::Info,
            LogLevel::Warn => crate::logging::LogLevel::Warn,
            LogLevel::Error => crate::logging::LogLevel::Error,
        }
    }
}

impl From<crate::logging::LogLevel> for LogLevel {
    fn from(level: crate::logging::LogLevel) -> Self {
        match level {
            crate::logging::LogLevel::Trace => LogLevel::Trace,
            crate::logging::LogLevel::Debug => LogLevel::Debug,
            crate::logging::LogLevel::Info => LogLevel::Info,
            crate::logging::LogLevel::Warn => LogLevel::Warn,
            crate::logging::LogLevel::Error => LogLevel::Error,
        }
    }
}

/// One log line delivered to `EventListener.on_log`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// The Rust module that logged it (`netswitch::manager`).
    pub target: String,
    /// The message followed by its fields (`connection closed id=3 destination=…`).
    pub message: String,
    /// When it was logged.
    pub timestamp: SystemTime,
}

/// Bytes relayed over one kind of network since the manager was created (live and closed
/// connections together).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NetworkTraffic {
    /// The kind of network; `None` for connections on the system route (no interface chosen).
    pub network_type: Option<NetworkType>,
    /// Bytes client → destination.
    pub bytes_up: u64,
    /// Bytes destination → client.
    pub bytes_down: u64,
}

/// A SOCKS5 username/password pair (RFC 1929); both 1-255 bytes.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct SocksCredentials {
    /// The username.
    pub username: String,
    /// The password; never logged.
    pub password: String,
}

impl std::fmt::Debug for SocksCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksCredentials").field("username", &self.username).finish_non_exhaustive()
    }
}
