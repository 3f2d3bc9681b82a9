//! TCP socket options every outbound TCP socket gets, as one struct with documented defaults.
//!
//! | field          | default  | effect |
//! |----------------|----------|--------|
//! | `nodelay`      | `true`   | `TCP_NODELAY`: no Nagle delay (latency over bulk throughput) |
//! | `keepalive`    | 5 min idle, 75 s interval | `SO_KEEPALIVE` + `TCP_KEEPIDLE` (`TCP_KEEPALIVE` on Apple) + `TCP_KEEPINTVL`; `None` turns keepalive off |
//! | `user_timeout` | 60 s     | `TCP_USER_TIMEOUT` (Linux/Android) / `TCP_RXT_CONNDROPTIME` (Apple, whole seconds): a connection whose data stays unacknowledged that long (its network vanished) is dropped instead of retransmitting for ~15 min; `None` keeps the system default |
//!
//! The keepalive values are the reference's (`TCPKeepAliveInitial` / `TCPKeepAliveInterval`).

use std::io;
use std::time::Duration;

use socket2::{Socket, TcpKeepalive};

/// Default idle time before the first keepalive probe.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(5 * 60);
/// Default time between keepalive probes.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(75);
/// Default limit for unacknowledged data before the kernel drops the connection.
pub const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// TCP keepalive timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeepaliveOptions {
    /// Idle time before the first probe. Default 5 min.
    pub idle: Duration,
    /// Time between probes. Default 75 s.
    pub interval: Duration,
}

impl Default for KeepaliveOptions {
    fn default() -> Self {
        KeepaliveOptions { idle: DEFAULT_KEEPALIVE_IDLE, interval: DEFAULT_KEEPALIVE_INTERVAL }
    }
}

/// Options applied to each outbound TCP socket before `connect` (see the module doc for the
/// defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpSocketOptions {
    /// `TCP_NODELAY`. Default `true`.
    pub nodelay: bool,
    /// Keepalive timing; `None` disables keepalive. Default 5 min / 75 s.
    pub keepalive: Option<KeepaliveOptions>,
    /// `TCP_USER_TIMEOUT` / `TCP_RXT_CONNDROPTIME`; `None` keeps the system default. Default 60 s.
    /// Ignored on platforms that have neither option.
    pub user_timeout: Option<Duration>,
}

impl Default for TcpSocketOptions {
    fn default() -> Self {
        TcpSocketOptions {
            nodelay: true,
            keepalive: Some(KeepaliveOptions::default()),
            user_timeout: Some(DEFAULT_USER_TIMEOUT),
        }
    }
}

/// A socket option the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("set {option} on TCP socket: {source}")]
#[non_exhaustive]
pub struct SocketOptionError {
    /// The option's name (`TCP_NODELAY`, `TCP_USER_TIMEOUT`…).
    pub option: &'static str,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl From<SocketOptionError> for io::Error {
    fn from(error: SocketOptionError) -> io::Error {
        io::Error::new(error.source.kind(), error.to_string())
    }
}

fn named(option: &'static str) -> impl FnOnce(io::Error) -> SocketOptionError {
    move |source| SocketOptionError { option, source }
}

impl TcpSocketOptions {
    /// Applies every option to `socket` (a TCP socket, connected or not). Stops at the first
    /// option the kernel refuses and names it.
    pub fn apply(&self, socket: &Socket) -> Result<(), SocketOptionError> {
        socket.set_tcp_nodelay(self.nodelay).map_err(named("TCP_NODELAY"))?;
        match self.keepalive {
            Some(keepalive) => {
                let params = TcpKeepalive::new().with_time(keepalive.idle).with_interval(keepalive.interval);
                socket
                    .set_tcp_keepalive(&params)
                    .map_err(named("TCP keepalive (SO_KEEPALIVE/idle/interval)"))?;
            }
            None => socket.set_keepalive(false).map_err(named("SO_KEEPALIVE"))?,
        }
        if let Some(timeout) = self.user_timeout {
            set_user_timeout(socket, timeout)?;
        }
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_user_timeout(socket: &Socket, timeout: Duration) -> Result<(), SocketOptionError> {
    socket.set_tcp_user_timeout(Some(timeout)).map_err(named("TCP_USER_TIMEOUT"))
}

#[cfg(target_vendor = "apple")]
fn set_user_timeout(socket: &Socket, timeout: Duration) -> Result<(), SocketOptionError> {
    use std::os::fd::AsRawFd;

    use nix::libc;

    /// `TCP_RXT_CONNDROPTIME` from `<netinet/tcp.h>` (not exported by libc): seconds of
    /// retransmission after which the connection is dropped.
    const TCP_RXT_CONNDROPTIME: libc::c_int = 0x80;
    // Whole seconds, at least 1 (0 would mean "no limit").
    let seconds = timeout.as_secs().max(1).min(libc::c_int::MAX as u64) as libc::c_int;
    // SAFETY: the fd is owned by `socket` and valid for the call; the value is a c_int whose
    // address and size are passed together.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RXT_CONNDROPTIME,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SocketOptionError { option: "TCP_RXT_CONNDROPTIME", source: io::Error::last_os_error() })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn set_user_timeout(_: &Socket, _: Duration) -> Result<(), SocketOptionError> {
    Ok(())
}
