//! Records and enums shared by the façade's calls: bind actions, connection snapshots, close
//! events, log records, traffic totals and SOCKS users. The network records live in
//! [`super::network`].

use std::time::SystemTime;

use super::error::NetswitchError;
use super::network::NetworkType;

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

/// A snapshot of one live connection (`connections()`, `EventListener.on_connection_opened`).
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
    /// What the packet tunnel's decision hook decided for it and why (`"app 10123:
    /// network=cellular"`, `"default (decider timed out)"`); absent when no hook was asked.
    pub decision: Option<String>,
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
            decision: info.metadata.decision.clone(),
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
pub struct SocksUser {
    /// The username.
    pub username: String,
    /// The password; never logged.
    pub password: String,
}

impl std::fmt::Debug for SocksUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksUser").field("username", &self.username).finish_non_exhaustive()
    }
}

/// What the host's resolver answered (`PlatformInterface.resolve`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum HostResolution {
    /// These addresses (`"192.0.2.1"`, `"2001:db8::1"`); those of a family not asked for are
    /// ignored; an empty list means the name has no address of the families asked for.
    Addresses {
        /// The addresses, in the host's order.
        addresses: Vec<String>,
    },
    /// The host does not resolve for netswitch: netswitch uses the interface's DNS servers, else
    /// the system resolver.
    ResolveYourself,
}
