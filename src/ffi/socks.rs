//! SOCKS5 servers started over the FFI: the `SocksServer` handle, the per-manager table that
//! keeps each server running until `stop()` or the manager's shutdown (never until the handle
//! is garbage-collected), and the random credentials a server gets by default.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::error::NetswitchError;
use super::types::SocksUser;
use crate::inbound::socks::{self, SocksError};

/// Random bytes in a generated username (shown as hex after `netswitch-`).
const USERNAME_RANDOM_BYTES: usize = 6;
/// Random bytes in a generated password (shown as hex: 32 characters, 128 bits).
const PASSWORD_RANDOM_BYTES: usize = 16;

/// The running SOCKS servers of one manager.
#[derive(Debug, Default)]
pub(crate) struct SocksServers {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    shut_down: bool,
    next_id: u64,
    running: HashMap<u64, socks::SocksServer>,
}

impl SocksServers {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `server` running until [`SocksServers::stop`] or [`SocksServers::stop_all`] and
    /// returns its handle. After `stop_all` the server is stopped at once and `ShutDown` returned.
    pub fn adopt(
        self: &Arc<Self>,
        server: socks::SocksServer,
        credentials: Option<SocksUser>,
    ) -> Result<Arc<SocksServer>, NetswitchError> {
        let local_addr = server.local_addr();
        let mut table = self.lock();
        if table.shut_down {
            drop(table);
            server.stop();
            return Err(NetswitchError::ShutDown);
        }
        let id = table.next_id;
        table.next_id += 1;
        table.running.insert(id, server);
        Ok(Arc::new(SocksServer { id, local_addr, credentials, servers: self.clone() }))
    }

    fn stop(&self, id: u64) {
        let server = self.lock().running.remove(&id);
        if let Some(server) = server {
            server.stop();
        }
    }

    fn is_running(&self, id: u64) -> bool {
        self.lock().running.contains_key(&id)
    }

    /// Stops every server and refuses new ones. Idempotent.
    pub fn stop_all(&self) {
        let running = {
            let mut table = self.lock();
            table.shut_down = true;
            std::mem::take(&mut table.running)
        };
        for server in running.into_values() {
            server.stop();
        }
    }
}

/// A running SOCKS5 server started by `ConnectionManager.start_socks`. The manager owns it: it
/// keeps accepting clients until `stop()` or the manager's `shutdown()` / `close()`, whether or
/// not the host keeps this handle (releasing it — Kotlin `close()`, garbage collection, Swift's
/// last reference — stops nothing).
/// Connections it already handed to the manager outlive `stop()`.
#[derive(Debug, uniffi::Object)]
pub struct SocksServer {
    id: u64,
    local_addr: SocketAddr,
    credentials: Option<SocksUser>,
    servers: Arc<SocksServers>,
}

#[uniffi::export]
impl SocksServer {
    /// The address the server listens on, with the real port (`"127.0.0.1:40123"`).
    pub fn local_address(&self) -> String {
        self.local_addr.to_string()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The username and password a client must send: the generated user when `start_socks` got
    /// no `users`, else the first of `users`; `None` when the server requires no authentication
    /// (started with an empty list).
    pub fn credentials(&self) -> Option<SocksUser> {
        self.credentials.clone()
    }

    /// True until `stop()` or the manager's shutdown.
    pub fn is_running(&self) -> bool {
        self.servers.is_running(self.id)
    }

    /// Stops accepting clients and abandons handshakes in progress; connections already handed
    /// to the manager keep running. Idempotent.
    pub fn stop(&self) {
        self.servers.stop(self.id);
    }
}

impl Drop for SocksServer {
    fn drop(&mut self) {
        if self.is_running() {
            tracing::debug!(
                address = %self.local_addr,
                "SOCKS server handle released; the server keeps running until stop() or shutdown"
            );
        }
    }
}

/// A fresh user from the operating system's random generator: `netswitch-` and 12 hex digits,
/// and a 32-hex-digit (128-bit) password.
pub(crate) fn generate_user() -> Result<SocksUser, NetswitchError> {
    let mut random = [0u8; USERNAME_RANDOM_BYTES + PASSWORD_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|e| NetswitchError::Internal {
        reason: format!("the operating system's random generator failed: {e}"),
    })?;
    let (name, password) = random.split_at(USERNAME_RANDOM_BYTES);
    Ok(SocksUser { username: format!("netswitch-{}", hex(name)), password: hex(password) })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// Maps a start failure to the public error, naming the address.
pub(crate) fn start_error(address: SocketAddr, error: SocksError) -> NetswitchError {
    match error {
        SocksError::NotLoopback(_) => NetswitchError::InvalidArgument {
            argument: "listen".into(),
            reason: format!("{address} is not loopback (set socks_allow_non_loopback to allow it)"),
        },
        SocksError::Unauthenticated(_) => NetswitchError::InvalidArgument {
            argument: "users".into(),
            reason: format!("{address} is not loopback: an empty list (no authentication) is refused there"),
        },
        SocksError::BadUser(username) => NetswitchError::InvalidArgument {
            argument: "users".into(),
            reason: format!("user {username:?}: username and password must be 1-255 bytes"),
        },
        SocksError::Bind { source, .. } => {
            NetswitchError::Io { context: format!("listen on {address}"), reason: source.to_string() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_users_are_distinct_and_well_formed() {
        let a = generate_user().unwrap();
        let b = generate_user().unwrap();
        assert_ne!(a.password, b.password);
        assert_ne!(a.username, b.username);
        for user in [&a, &b] {
            assert_eq!(user.username.len(), "netswitch-".len() + 2 * USERNAME_RANDOM_BYTES);
            assert!(user.username.starts_with("netswitch-"));
            assert_eq!(user.password.len(), 2 * PASSWORD_RANDOM_BYTES);
            assert!(user.password.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
