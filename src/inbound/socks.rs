//! SOCKS5 ingress (RFC 1928 CONNECT, RFC 1929 username/password) feeding a [`ConnectionManager`].
//!
//! STUB: the public API is fixed; the implementation is being written.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dial::Outbound;
use crate::manager::ConnectionManager;

/// Default time a client has to complete its SOCKS handshake (greeting, auth, request).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A username/password pair accepted by the server (RFC 1929).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocksUser {
    /// The username, 1-255 bytes.
    pub username: String,
    /// The password, 1-255 bytes. Never logged.
    pub password: String,
}

impl std::fmt::Debug for SocksUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksUser").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Settings of a SOCKS5 server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksSettings {
    /// Address to listen on. Default 127.0.0.1:1080.
    pub listen: SocketAddr,
    /// Accepted users. Empty: no authentication.
    pub users: Vec<SocksUser>,
    /// Time a client has to finish its handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Allow a listen address that is not loopback. Default false.
    pub allow_non_loopback: bool,
}

impl Default for SocksSettings {
    fn default() -> Self {
        SocksSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 1080)),
            users: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            allow_non_loopback: false,
        }
    }
}

/// Why a SOCKS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    /// The listen address is not loopback and `allow_non_loopback` is off.
    #[error("refusing to listen on non-loopback address {0} (set allow_non_loopback to allow it)")]
    NotLoopback(SocketAddr),
    /// A user has an empty or over-long username or password.
    #[error("SOCKS user {0:?}: username and password must be 1-255 bytes")]
    BadUser(String),
    /// Binding the listener failed.
    #[error("listen on {address}: {source}")]
    Bind {
        /// The address that could not be bound.
        address: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// A running SOCKS5 server. Stops accepting when dropped or on [`SocksServer::stop`]; the
/// connections it handed to the manager stay with the manager.
#[derive(Debug)]
pub struct SocksServer {
    local_addr: SocketAddr,
}

impl SocksServer {
    /// Binds the listener and starts serving on the manager's runtime (call inside a tokio runtime).
    pub async fn start(
        settings: SocksSettings,
        manager: Arc<ConnectionManager>,
        outbound: Arc<dyn Outbound>,
    ) -> Result<SocksServer, SocksError> {
        let _ = (settings, manager, outbound);
        todo!("SOCKS5 server")
    }

    /// The address the listener is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting new clients. Idempotent.
    pub fn stop(&self) {}
}
