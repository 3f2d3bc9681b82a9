//! SOCKS5 ingress (RFC 1928 CONNECT, RFC 1929 username/password) feeding a [`ConnectionManager`].
//!
//! [`SocksServer::start`] binds a listener (loopback only unless explicitly allowed) and serves
//! each client on its own task, with `TCP_NODELAY` once it is handed to the manager. A client has
//! [`FIRST_BYTE_TIMEOUT`] to send its first byte and [`SocksSettings::handshake_timeout`] to send
//! its greeting, credentials and request; a CONNECT is then handed to
//! [`ConnectionManager::new_connection`], which dials and sends the reply: success (0x00) with the
//! outbound socket's real local address, or [`crate::DialError::reply_code`]: an upstream SOCKS5
//! server's own failure code, else the code matching [`crate::DialError::kind`] (refused 0x05,
//! network unreachable 0x03, host unreachable 0x04, timeout 0x06, forbidden by a local rule such
//! as a `prohibit` route 0x02, other 0x01).
//! Bytes the client sent after its request are kept and relayed first (early data).
//!
//! When [`SocksSettings::users`] is non-empty, username/password (0x02) is the only acceptable
//! method; otherwise only "no authentication" (0x00) is. Credentials are compared in constant
//! time and never logged (a failed attempt logs the client's address only: a password typed into
//! the username field must not reach the log). A listener that is not loopback needs users, or
//! [`SocksSettings::allow_unauthenticated_non_loopback`] on top of `allow_non_loopback`.
//!
//! # Handshake slots
//!
//! At most [`SocksSettings::max_pending_handshakes`] clients are in their handshake at once.
//! While every slot is taken the server stops accepting: new clients wait in the kernel's listen
//! backlog (up to [`LISTEN_BACKLOG`], capped by the system, e.g. `net.core.somaxconn`) and are
//! served as slots free up, never reset. A handshake older than 1 s gives its slot to a waiting
//! client (it is closed), so idle or trickling sockets cannot starve valid clients.
//!
//! UDP ASSOCIATE (RFC 1928 §7) opens an association that lives as long as its control
//! connection; see [`udp`] for how client datagrams are checked and relayed. BIND is not
//! supported: reply 0x07.
//!
//! # What the server does with bad input
//!
//! Every final reply (a rejection or a failed CONNECT) is followed by a graceful close: FIN, then
//! the client's remaining bytes are read and discarded until it closes (at most 64 KiB for 1 s),
//! so that unread bytes never turn the close into a reset that would destroy the reply. Nothing
//! panics, and no client affects another.
//!
//! | Input | Response |
//! |---|---|
//! | greeting or request version != 0x05 (e.g. an HTTP request) | close, no reply |
//! | no acceptable method offered (including NMETHODS = 0) | method reply 0xFF, close |
//! | username/password sub-negotiation version != 0x01 | close, no reply |
//! | wrong username or password (or an empty one) | status 0x01, close |
//! | command BIND (0x02) | reply 0x07, close |
//! | UDP ASSOCIATE (0x03) | success with the relay socket's address; see [`udp`] for datagrams |
//! | UDP ASSOCIATE announcing port 0 while users are configured | reply 0x02, close |
//! | UDP ASSOCIATE with [`UdpSettings::max_associations`] already open | reply 0x01, close (counted, see [`SocksServer::udp_limits`]) |
//! | unknown command | reply 0x07 as soon as the command byte arrives, close |
//! | unknown address type | reply 0x08 as soon as the type byte arrives, close |
//! | empty or non-UTF-8 domain, or one with a control character (CR, LF, ESC…) | reply 0x01, close |
//! | CONNECT to port 0 | reply 0x01, close |
//! | a message cut short by the client's EOF | close, no reply |
//! | nothing at all for [`FIRST_BYTE_TIMEOUT`] (or `handshake_timeout` if shorter) | close, no reply |
//! | a partial message for `handshake_timeout` | close, no reply |
//! | the reserved byte of a request is not 0x00 | ignored |
//! | a domain that is an IP literal | treated as that IP address |

mod auth;
mod context;
mod server;
mod slots;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::AbortHandle;

use crate::dial::Outbound;
use crate::inbound::udp_sessions::UdpSettings;
use crate::manager::ConnectionManager;

/// Default number of clients that may be in their handshake at once.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 512;

/// Default time a client has to complete its SOCKS handshake (greeting, auth, request).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that sends nothing at all for this long (or `handshake_timeout`, if shorter) is
/// closed, giving its handshake slot back: well-behaved clients send their greeting at once.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);

/// The listen backlog asked for: clients beyond the handshake slots wait there. The system caps
/// it (Linux: `net.core.somaxconn`, 4096 by default since 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

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
        f.debug_struct("SocksUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Settings of a SOCKS5 server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocksSettings {
    /// Address to listen on. Default 127.0.0.1:1080.
    pub listen: SocketAddr,
    /// Accepted users. Empty: no authentication.
    pub users: Vec<SocksUser>,
    /// Time a client has to finish its handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Allow a listen address that is not loopback. Default false.
    pub allow_non_loopback: bool,
    /// Allow a non-loopback listener without `users`: anyone who can reach the address may use
    /// the proxy. Needed on top of `allow_non_loopback` when `users` is empty; logged as a
    /// warning when used. Default false.
    pub allow_unauthenticated_non_loopback: bool,
    /// UDP ASSOCIATE sessions: idle timeouts, session cap, queue length.
    pub udp: UdpSettings,
    /// Clients allowed to be in their handshake at once. Further clients wait in the listen
    /// backlog; a handshake older than 1 s gives its slot to a waiting client. Default 512.
    pub max_pending_handshakes: usize,
}

impl Default for SocksSettings {
    fn default() -> Self {
        SocksSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 1080)),
            users: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            allow_non_loopback: false,
            allow_unauthenticated_non_loopback: false,
            udp: UdpSettings::default(),
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
        }
    }
}

/// Why a SOCKS server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    /// The listen address is not loopback and `allow_non_loopback` is off.
    #[error("refusing to listen on non-loopback address {0} (set allow_non_loopback to allow it)")]
    NotLoopback(SocketAddr),
    /// The listen address is not loopback, there are no users, and
    /// `allow_unauthenticated_non_loopback` is off.
    #[error(
        "refusing to listen on non-loopback address {0} without users: anyone who can reach it could \
         use the proxy (add users, or set allow_unauthenticated_non_loopback to allow it)"
    )]
    Unauthenticated(SocketAddr),
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
    udp_limits: Arc<crate::inbound::udp_sessions::UdpLimits>,
    accept_task: AbortHandle,
    stopped: AtomicBool,
}

impl SocksServer {
    /// Binds the listener and starts serving on the current tokio runtime (call inside one).
    ///
    /// Fails without binding when the address is not loopback and `allow_non_loopback` is off
    /// ([`SocksError::NotLoopback`]; an IPv4-mapped IPv6 address such as `[::ffff:127.0.0.1]` does
    /// not count as loopback), when it is not loopback and there are no users unless
    /// `allow_unauthenticated_non_loopback` is on ([`SocksError::Unauthenticated`]), or when a
    /// user's name or password is not 1-255 bytes ([`SocksError::BadUser`]).
    pub async fn start(
        settings: SocksSettings,
        manager: Arc<ConnectionManager>,
        outbound: Arc<dyn Outbound>,
    ) -> Result<SocksServer, SocksError> {
        let loopback = settings.listen.ip().is_loopback();
        if !loopback && !settings.allow_non_loopback {
            return Err(SocksError::NotLoopback(settings.listen));
        }
        let open_to_all = !loopback && settings.users.is_empty();
        if open_to_all && !settings.allow_unauthenticated_non_loopback {
            return Err(SocksError::Unauthenticated(settings.listen));
        }
        let valid = |field: &str| (1..=255).contains(&field.len());
        if let Some(bad) = settings.users.iter().find(|u| !valid(&u.username) || !valid(&u.password)) {
            return Err(SocksError::BadUser(bad.username.clone()));
        }
        let bind_error = |source| SocksError::Bind { address: settings.listen, source };
        let listener = listen(settings.listen).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let udp_limits = Arc::new(crate::inbound::udp_sessions::UdpLimits::new(&settings.udp));
        let context = Arc::new(context::Context {
            users: auth::UserTable::new(&settings.users),
            handshake_timeout: settings.handshake_timeout,
            udp: settings.udp.clone(),
            udp_limits: udp_limits.clone(),
            max_pending_handshakes: settings.max_pending_handshakes.max(1),
            manager,
            outbound,
        });
        let accept_task = tokio::spawn(server::accept_loop(listener, context)).abort_handle();
        tracing::info!(
            address = %local_addr, users = settings.users.len(),
            handshake_timeout_ms = settings.handshake_timeout.as_millis() as u64,
            "SOCKS5 server listening"
        );
        if open_to_all {
            tracing::warn!(
                address = %local_addr,
                "SOCKS5 server listens on a non-loopback address WITHOUT authentication: anyone who \
                 can reach it can use this proxy (allow_unauthenticated_non_loopback is set)"
            );
        }
        Ok(SocksServer { local_addr, udp_limits, accept_task, stopped: AtomicBool::new(false) })
    }

    /// The caps on UDP associations and their outbound sockets, with how many are in use and
    /// how many were refused so far.
    pub fn udp_limits(&self) -> &crate::inbound::udp_sessions::UdpLimits {
        &self.udp_limits
    }

    /// The address the listener is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting new clients and abandons handshakes still in progress; the listener is
    /// closed as soon as the runtime drops the accept task. Connections already handed to the
    /// manager are not touched. Idempotent.
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            self.accept_task.abort();
            tracing::info!(address = %self.local_addr, "SOCKS5 server stopped");
        }
    }
}

/// Binds a listener on `address` with [`LISTEN_BACKLOG`] (`SO_REUSEADDR` as `TcpListener::bind`)
/// and `TCP_NODELAY` (for the clients it accepts).
fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    // Every accepted client inherits it: not set again per connection.
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Drop for SocksServer {
    fn drop(&mut self) {
        self.stop();
    }
}
