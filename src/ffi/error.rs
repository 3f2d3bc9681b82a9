//! The one error type the host sees, and how internal errors map onto it.

use crate::config::ConfigError;
use crate::dial::{AttemptError, DialAttempt, DialError, FailureKind as CoreFailureKind};
use crate::platform::BindError;
use crate::relay::ConnectionError;

/// Everything a netswitch call (or a finished connection) can fail with. Kotlin sees it as
/// `sealed class NetswitchException`, Swift as `enum NetswitchError: Error`. Every variant says
/// what failed and names the field, address or interface involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum NetswitchError {
    /// A configuration value is not allowed. `field` is the config key (`connect_timeout`,
    /// `socks.handshake_timeout`, or the JSON key a parse error points at).
    #[error("invalid config: `{field}` {reason}")]
    InvalidConfig {
        /// The config key.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument of a call is not allowed (a bad address, a snapshot with duplicate interfaces,
    /// an fd that is not a stream socket). `argument` names it.
    #[error("invalid {argument}: {reason}")]
    InvalidArgument {
        /// The argument (`listen`, `destination`, `fd`, `snapshot`…).
        argument: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No usable network for this destination: no interface at all, or none matching the
    /// strategy. Retry after the next `update_interfaces`.
    #[error("no network for {destination}: {reason}")]
    NoNetwork {
        /// The destination as the client gave it.
        destination: String,
        /// Why no interface was chosen.
        reason: String,
    },
    /// The destination could not be reached; `attempts` lists every connect attempt.
    #[error("dial {destination} failed: {reason}")]
    DialFailed {
        /// The destination as the client gave it.
        destination: String,
        /// Summary of the failure.
        reason: String,
        /// Every connect attempt (address, interface, kind, reason), in start order.
        attempts: Vec<DialAttemptInfo>,
    },
    /// The name does not exist (NXDOMAIN), has no address of the families allowed, or is not a
    /// valid host name. `reason` names who said so ("DNS 10.0.0.1 on wlan0: … (NXDOMAIN)").
    /// A host resolver throws it for NXDOMAIN.
    #[error("{name} not found: {reason}")]
    NameNotFound {
        /// The name.
        name: String,
        /// Who answered what.
        reason: String,
    },
    /// The name could not be resolved: no answer by the deadline, a server error, a garbage
    /// answer, a socket that could not be bound. `reason` names the DNS server and interface.
    #[error("resolve {name}: {reason}")]
    ResolveFailed {
        /// The name.
        name: String,
        /// What failed, naming the resolver and the interface.
        reason: String,
    },
    /// The platform (`PlatformInterface.bind_socket`) refused or failed to protect/bind the socket
    /// for `interface`, so nothing was sent.
    #[error("platform refused socket for interface {interface}: {reason}")]
    PlatformRefused {
        /// The interface the socket was offered for.
        interface: String,
        /// The platform's reason (or the exception it threw).
        reason: String,
    },
    /// An I/O error on a socket; `context` says which one (`client read`, `listen on 127.0.0.1:1080`).
    #[error("{context}: {reason}")]
    Io {
        /// What was being done, naming the side or address.
        context: String,
        /// The operating system's error.
        reason: String,
    },
    /// A connection ended because a timeout expired (half-close silence, UDP idle).
    #[error("timed out: {reason}")]
    TimedOut {
        /// Which timeout and how long.
        reason: String,
    },
    /// The connection was closed on request (`close_connection`, `close_all`, a network change).
    #[error("closed by request")]
    Closed,
    /// The manager was shut down; it accepts no more calls that start work.
    #[error("connection manager is shut down")]
    ShutDown,
    /// A host callback threw an exception netswitch did not expect.
    #[error("host callback failed: {reason}")]
    Callback {
        /// The exception's text.
        reason: String,
    },
    /// A bug inside netswitch (a caught panic); the call had no effect.
    #[error("internal error: {reason}")]
    Internal {
        /// What went wrong.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for NetswitchError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        // Kotlin puts the whole stack trace in the reason: keep its first line (the exception).
        let reason = error.reason.lines().next().unwrap_or_default().to_string();
        NetswitchError::Callback { reason }
    }
}

/// The broad reason one connect attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FailureKind {
    /// The destination actively refused (TCP RST).
    Refused,
    /// No route to the destination's network.
    NetworkUnreachable,
    /// The destination host did not answer at the link or IP level.
    HostUnreachable,
    /// No answer within the connect timeout.
    TimedOut,
    /// Anything else.
    Other,
}

impl From<CoreFailureKind> for FailureKind {
    fn from(kind: CoreFailureKind) -> Self {
        match kind {
            CoreFailureKind::Refused => FailureKind::Refused,
            CoreFailureKind::NetworkUnreachable => FailureKind::NetworkUnreachable,
            CoreFailureKind::HostUnreachable => FailureKind::HostUnreachable,
            CoreFailureKind::TimedOut => FailureKind::TimedOut,
            CoreFailureKind::Prohibited | CoreFailureKind::Other => FailureKind::Other,
        }
    }
}

/// One failed connect attempt of a dial.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DialAttemptInfo {
    /// The address tried (`93.184.216.34:443`); empty for a lookup that found no address (the
    /// reason names the DNS server and the interface).
    pub address: String,
    /// The interface the socket was bound to or protected for; `None` for the system route.
    pub interface: Option<String>,
    /// How long the attempt ran, in milliseconds.
    pub elapsed_ms: u64,
    /// The broad reason.
    pub kind: FailureKind,
    /// The full reason.
    pub reason: String,
}

impl From<&DialAttempt> for DialAttemptInfo {
    fn from(attempt: &DialAttempt) -> Self {
        DialAttemptInfo {
            address: attempt.address.map(|a| a.to_string()).unwrap_or_default(),
            interface: attempt.interface.clone(),
            elapsed_ms: u64::try_from(attempt.elapsed.as_millis()).unwrap_or(u64::MAX),
            kind: attempt.error.kind().into(),
            reason: attempt.error.to_string(),
        }
    }
}

impl From<&DialError> for NetswitchError {
    fn from(error: &DialError) -> Self {
        match error {
            DialError::Network { destination, source } => {
                NetswitchError::NoNetwork { destination: destination.clone(), reason: source.to_string() }
            }
            DialError::Connect { destination, attempts } => {
                // Every attempt stopped at the host's callback: nothing was sent anywhere.
                let refused: Vec<&BindError> = attempts
                    .iter()
                    .filter_map(|a| match &a.error {
                        AttemptError::Bind(bind @ BindError::Host { .. }) => Some(bind),
                        _ => None,
                    })
                    .collect();
                match refused.first() {
                    Some(first) if refused.len() == attempts.len() => NetswitchError::PlatformRefused {
                        interface: first.interface().to_string(),
                        reason: first.to_string(),
                    },
                    _ => NetswitchError::DialFailed {
                        destination: destination.clone(),
                        reason: error.to_string(),
                        attempts: attempts.iter().map(DialAttemptInfo::from).collect(),
                    },
                }
            }
            DialError::Resolve { host, source } if source.is_definite() => {
                NetswitchError::NameNotFound { name: host.clone(), reason: source.to_string() }
            }
            DialError::Resolve { host, source } => {
                NetswitchError::ResolveFailed { name: host.clone(), reason: source.to_string() }
            }
            other => NetswitchError::DialFailed {
                destination: dial_destination(other),
                reason: other.to_string(),
                attempts: Vec::new(),
            },
        }
    }
}

fn dial_destination(error: &DialError) -> String {
    match error {
        DialError::Resolve { host, .. } | DialError::NoAddress { host } => host.clone(),
        DialError::Network { destination, .. }
        | DialError::NoAllowedAddress { destination, .. }
        | DialError::Unsupported { destination, .. }
        | DialError::Connect { destination, .. }
        | DialError::ProxyRefused { destination, .. }
        | DialError::ProxyProtocol { destination, .. } => destination.clone(),
    }
}

impl From<&ConnectionError> for NetswitchError {
    fn from(error: &ConnectionError) -> Self {
        match error {
            ConnectionError::Dial(dial) => dial.into(),
            ConnectionError::Handshake(source) => NetswitchError::Io {
                context: "send success reply to client".into(),
                reason: source.to_string(),
            },
            ConnectionError::Io { side, operation, source } => {
                NetswitchError::Io { context: format!("{side} {operation}"), reason: source.to_string() }
            }
            ConnectionError::HalfCloseTimeout(_) | ConnectionError::UdpIdle(_) => {
                NetswitchError::TimedOut { reason: error.to_string() }
            }
            ConnectionError::Closed => NetswitchError::Closed,
            ConnectionError::ShutDown => NetswitchError::ShutDown,
            ConnectionError::Panicked(_) => NetswitchError::Internal { reason: error.to_string() },
        }
    }
}

impl From<ConfigError> for NetswitchError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::Invalid { field, reason, .. } => {
                NetswitchError::InvalidConfig { field: field.to_string(), reason: reason.to_string() }
            }
            ConfigError::Syntax { source, .. } => {
                let text = source.to_string();
                NetswitchError::InvalidConfig { field: json_key(&text), reason: text }
            }
            ConfigError::Read { path, source } => NetswitchError::Io {
                context: format!("read config file {}", path.display()),
                reason: source.to_string(),
            },
        }
    }
}

/// The key a serde_json message points at: the first `` `name` `` in it ("unknown field `x`",
/// "`connect_timeout`: invalid duration"), else "json".
fn json_key(message: &str) -> String {
    let mut parts = message.split('`');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(key), Some(_)) if !key.is_empty() => key.to_string(),
        _ => "json".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        let error: NetswitchError =
            crate::config::Config::from_json(r#"{"connect_timeout": "0s"}"#).unwrap_err().into();
        assert!(
            matches!(&error, NetswitchError::InvalidConfig { field, .. } if field == "connect_timeout"),
            "{error:?}"
        );
        let error: NetswitchError = crate::config::Config::from_json(r#"{"bogus": 1}"#).unwrap_err().into();
        assert!(
            matches!(&error, NetswitchError::InvalidConfig { field, .. } if field == "bogus"),
            "{error:?}"
        );
        let error: NetswitchError =
            crate::config::Config::from_json(r#"{"fallback_delay": "soon"}"#).unwrap_err().into();
        assert!(
            matches!(&error, NetswitchError::InvalidConfig { field, .. } if field == "fallback_delay"),
            "{error:?}"
        );
    }
}
