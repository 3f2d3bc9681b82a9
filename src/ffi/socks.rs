//! The `SocksServer` object: a running SOCKS5 ingress, stopped on `stop()` or when destroyed.

use std::net::SocketAddr;

use super::error::NetswitchError;
use crate::inbound::socks::{self, SocksError};

/// A running SOCKS5 server started by `ConnectionManager.start_socks`. Stops accepting on
/// `stop()` or when the object is destroyed (Kotlin: `close()`); connections it already handed
/// to the manager keep running.
#[derive(uniffi::Object)]
pub struct SocksServer {
    inner: socks::SocksServer,
}

impl SocksServer {
    pub(crate) fn new(inner: socks::SocksServer) -> SocksServer {
        SocksServer { inner }
    }
}

#[uniffi::export]
impl SocksServer {
    /// The address the server listens on, with the real port (`"127.0.0.1:40123"`).
    pub fn local_address(&self) -> String {
        self.inner.local_addr().to_string()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.inner.local_addr().port()
    }

    /// Stops accepting clients. Idempotent.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

/// Maps a start failure to the public error, naming the address.
pub(crate) fn start_error(address: SocketAddr, error: SocksError) -> NetswitchError {
    match error {
        SocksError::NotLoopback(_) => NetswitchError::InvalidArgument {
            argument: "listen".into(),
            reason: format!("{address} is not loopback (set socks_allow_non_loopback to allow it)"),
        },
        SocksError::Unauthenticated(_) => NetswitchError::InvalidArgument {
            argument: "credentials".into(),
            reason: format!("{address} is not loopback: credentials are required there"),
        },
        SocksError::BadUser(username) => NetswitchError::InvalidArgument {
            argument: "credentials".into(),
            reason: format!("user {username:?}: username and password must be 1-255 bytes"),
        },
        SocksError::Bind { source, .. } => {
            NetswitchError::Io { context: format!("listen on {address}"), reason: source.to_string() }
        }
    }
}
