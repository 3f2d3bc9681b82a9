//! How one socket is made to leave through one network interface.
//!
//! A [`SocketBinder`] knows two operations: *protect* (keep the socket out of the VPN; it leaves
//! through the system's default route) and *bind to an interface*. Callers never call them
//! directly: [`bind_socket`] applies the rules every dial path shares, once:
//!
//! 1. loopback and multicast destinations are never bound, nor protected (they cannot loop
//!    through the VPN); the binder is not called ([`Binding::Skipped`]);
//! 2. the default interface is protected but not bound (binding it breaks some Android devices):
//!    [`SocketBinder::protect`] runs — the host callback still sees it ([`Binding::Protected`]);
//! 3. any other interface is bound with [`SocketBinder::bind_to_interface`] ([`Binding::Bound`]);
//! 4. a failure is a [`BindError`] naming the interface; the caller must fail that attempt and
//!    drop the socket — never connect an unbound socket.
//!
//! Binders: `linux::LinuxBinder` (`SO_BINDTOIFINDEX`, falling back to `SO_BINDTODEVICE`),
//! `apple::AppleBinder` (`IP_BOUND_IF` / `IPV6_BOUND_IF`), [`callback::HostBinder`] (a host
//! callback: Android `VpnService.protect` / `Network.bindSocket`), and
//! [`simulated::SimulatedBinder`] (source-address binding on loopback for unprivileged tests).
//! [`os_binder`] returns the one for the platform being compiled. [`sockopts`] holds the TCP
//! socket options every outbound socket gets.

pub mod callback;
pub mod simulated;
pub mod sockopts;

#[cfg(target_vendor = "apple")]
pub mod apple;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub mod linux;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use socket2::Socket;

use crate::network::NetworkInterface;

pub use callback::{BindDecision, HostBinder, HostSocketBinder};
pub use simulated::SimulatedBinder;
pub use sockopts::{KeepaliveOptions, SocketOptionError, TcpSocketOptions};

/// Makes sockets leave through a chosen interface. Implementations are cheap to share
/// (`Arc<dyn SocketBinder>`) and must not block for long: they run on the dialing task, before
/// `connect`. Call them only through [`bind_socket`], which applies the rules in the module doc.
pub trait SocketBinder: Send + Sync + fmt::Debug {
    /// Keeps `socket` out of the VPN without binding it: it leaves through the system's default
    /// route, which is `interface` (the default interface). A no-op where the OS needs nothing.
    fn protect(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError>;

    /// Makes `socket` (not yet connected, created for `destination`'s address family) leave
    /// through `interface`. On failure the socket must be dropped by the caller.
    fn bind_to_interface(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError>;

    /// True only for a binder whose networks are themselves loopback addresses (the simulated
    /// binder): loopback destinations are then bound like any other. Default: false.
    fn networks_on_loopback(&self) -> bool {
        false
    }
}

/// What [`bind_socket`] did to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Binding {
    /// Bound to a non-default interface.
    Bound,
    /// The default interface: protected, not bound.
    Protected,
    /// A loopback or multicast destination: left alone.
    Skipped,
}

/// Why a socket could not be bound or protected. Every variant names the interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The operating system refused a socket option.
    #[error("bind socket to interface {interface} (index {index}) with {option}: {source}")]
    Os {
        /// Interface name.
        interface: String,
        /// Interface index.
        index: u32,
        /// The socket option or call that failed (`SO_BINDTOIFINDEX`, `IP_BOUND_IF`…).
        option: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The host callback reported a failure (for example `VpnService.protect` returned false).
    #[error("host could not {action} socket for interface {interface} (index {index}): {reason}")]
    Host {
        /// Interface name.
        interface: String,
        /// Interface index.
        index: u32,
        /// `"protect"` or `"bind"`.
        action: &'static str,
        /// The host's explanation.
        reason: String,
    },
    /// The simulated interface has no address of the destination's family.
    #[error("simulated interface {interface} (index {index}) has no {family} address to bind to")]
    NoSourceAddress {
        /// Interface name.
        interface: String,
        /// Interface index.
        index: u32,
        /// `"IPv4"` or `"IPv6"`.
        family: &'static str,
    },
    /// The interface is not on this system, or its name now has another index (stale snapshot).
    #[error("interface {interface} (index {index}) does not exist on this system{}", found_index(.found))]
    NoSuchInterface {
        /// Interface name.
        interface: String,
        /// Interface index from the snapshot.
        index: u32,
        /// The index the system has for that name, if it has the name at all.
        found: Option<u32>,
    },
    /// This platform has no way to bind a socket to an interface.
    #[error("cannot bind socket to interface {interface} (index {index}): not supported on this platform")]
    Unsupported {
        /// Interface name.
        interface: String,
        /// Interface index.
        index: u32,
    },
}

impl BindError {
    /// Name of the interface the socket was to be bound to.
    pub fn interface(&self) -> &str {
        match self {
            BindError::Os { interface, .. }
            | BindError::Host { interface, .. }
            | BindError::NoSourceAddress { interface, .. }
            | BindError::NoSuchInterface { interface, .. }
            | BindError::Unsupported { interface, .. } => interface,
        }
    }

    /// The OS error behind this failure, if any.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            BindError::Os { source, .. } => Some(source),
            _ => None,
        }
    }

    pub(crate) fn os(interface: &NetworkInterface, option: &'static str, source: io::Error) -> BindError {
        BindError::Os { interface: interface.name.clone(), index: interface.index, option, source }
    }
}

fn found_index(found: &Option<u32>) -> String {
    found.map(|index| format!(" (that name has index {index} now)")).unwrap_or_default()
}

impl From<BindError> for io::Error {
    /// Keeps the OS error kind (so `FailureKind::of_io` still classifies it; a missing interface
    /// is `NetworkUnreachable`) and the full message.
    fn from(error: BindError) -> io::Error {
        let kind = match &error {
            BindError::NoSuchInterface { .. } => io::ErrorKind::NetworkUnreachable,
            other => other.os_error().map_or(io::ErrorKind::Other, io::Error::kind),
        };
        io::Error::new(kind, error.to_string())
    }
}

/// True for destinations that never leave through a network: loopback, and multicast (which
/// includes IPv6 interface-local and link-local multicast). IPv4-mapped IPv6 addresses are
/// judged by their IPv4 address.
pub fn is_virtual_destination(ip: IpAddr) -> bool {
    let ip = unmapped(ip);
    ip.is_loopback() || ip.is_multicast()
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Prepares `socket` (created for `destination`'s family, not yet connected) to leave through
/// `interface`, applying the rules in the module doc. `is_default` says whether `interface` is
/// the snapshot's default interface (see `Selection::is_default`).
///
/// Guarantees: `Ok` means the socket may be connected; `Err` names the interface and the socket
/// must not be used. Logs each outcome at trace level and failures at debug level.
pub fn bind_socket(
    binder: &dyn SocketBinder,
    socket: &Socket,
    interface: &NetworkInterface,
    destination: SocketAddr,
    is_default: bool,
) -> Result<Binding, BindError> {
    let ip = destination.ip();
    let virtual_destination =
        if binder.networks_on_loopback() { unmapped(ip).is_multicast() } else { is_virtual_destination(ip) };
    let result = if virtual_destination {
        Ok(Binding::Skipped)
    } else if is_default {
        binder.protect(socket, interface, destination).map(|()| Binding::Protected)
    } else {
        binder.bind_to_interface(socket, interface, destination).map(|()| Binding::Bound)
    };
    match &result {
        Ok(binding) => {
            tracing::trace!(%destination, interface = %interface.name, ?binding, "socket prepared");
        }
        Err(error) => tracing::debug!(%destination, %error, "socket bind failed"),
    }
    result
}

/// The binder that uses this platform's own socket options: `linux::LinuxBinder` on Linux and
/// Android, `apple::AppleBinder` on Apple platforms, and elsewhere one that fails every bind
/// with [`BindError::Unsupported`] (protect is a no-op there).
pub fn os_binder() -> Arc<dyn SocketBinder> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return Arc::new(linux::LinuxBinder);
    #[cfg(target_vendor = "apple")]
    return Arc::new(apple::AppleBinder);
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    return Arc::new(UnsupportedBinder);
}

/// A binder for platforms without interface binding: protect is a no-op, binding fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnsupportedBinder;

impl SocketBinder for UnsupportedBinder {
    fn protect(&self, _: &Socket, _: &NetworkInterface, _: SocketAddr) -> Result<(), BindError> {
        Ok(())
    }

    fn bind_to_interface(
        &self,
        _: &Socket,
        interface: &NetworkInterface,
        _: SocketAddr,
    ) -> Result<(), BindError> {
        Err(BindError::Unsupported { interface: interface.name.clone(), index: interface.index })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use socket2::{Domain, Type};

    use super::*;
    use crate::network::NetworkType;

    /// Records which operation ran; fails when told to.
    #[derive(Debug, Default)]
    struct Recorder {
        calls: Mutex<Vec<&'static str>>,
        fail: bool,
        on_loopback: bool,
    }

    impl SocketBinder for Recorder {
        fn protect(&self, _: &Socket, i: &NetworkInterface, _: SocketAddr) -> Result<(), BindError> {
            self.calls.lock().unwrap().push("protect");
            if self.fail {
                return Err(BindError::Host {
                    interface: i.name.clone(),
                    index: i.index,
                    action: "protect",
                    reason: "protect returned false".into(),
                });
            }
            Ok(())
        }

        fn bind_to_interface(
            &self,
            _: &Socket,
            i: &NetworkInterface,
            _: SocketAddr,
        ) -> Result<(), BindError> {
            self.calls.lock().unwrap().push("bind");
            if self.fail {
                return Err(BindError::Unsupported { interface: i.name.clone(), index: i.index });
            }
            Ok(())
        }

        fn networks_on_loopback(&self) -> bool {
            self.on_loopback
        }
    }

    fn socket() -> Socket {
        Socket::new(Domain::IPV4, Type::STREAM, None).unwrap()
    }

    #[test]
    fn applies_the_rules() {
        let cell = NetworkInterface::new("rmnet0", 7, NetworkType::Cellular);
        let cases: [(&str, bool, Binding, &[&str]); 6] = [
            ("192.0.2.1:443", false, Binding::Bound, &["bind"]),
            ("192.0.2.1:443", true, Binding::Protected, &["protect"]),
            ("127.0.0.1:80", false, Binding::Skipped, &[]),
            ("[::1]:80", true, Binding::Skipped, &[]),
            ("224.0.0.251:5353", false, Binding::Skipped, &[]),
            ("[ff02::fb]:5353", false, Binding::Skipped, &[]),
        ];
        for (destination, is_default, expected, calls) in cases {
            let binder = Recorder::default();
            let got = bind_socket(&binder, &socket(), &cell, destination.parse().unwrap(), is_default);
            assert_eq!(got.unwrap(), expected, "{destination} default={is_default}");
            assert_eq!(*binder.calls.lock().unwrap(), calls, "{destination}");
        }
    }

    #[test]
    fn loopback_is_bound_when_networks_live_on_loopback() {
        let wifi = NetworkInterface::new("sim-wifi", 1, NetworkType::Wifi);
        let binder = Recorder { on_loopback: true, ..Default::default() };
        let got = bind_socket(&binder, &socket(), &wifi, "127.0.0.1:80".parse().unwrap(), false);
        assert_eq!(got.unwrap(), Binding::Bound);
        // Multicast stays unbound even then.
        let got = bind_socket(&binder, &socket(), &wifi, "239.1.1.1:80".parse().unwrap(), false);
        assert_eq!(got.unwrap(), Binding::Skipped);
    }

    #[test]
    fn failures_name_the_interface() {
        let cell = NetworkInterface::new("rmnet0", 7, NetworkType::Cellular);
        let binder = Recorder { fail: true, ..Default::default() };
        for is_default in [false, true] {
            let err = bind_socket(&binder, &socket(), &cell, "192.0.2.1:443".parse().unwrap(), is_default)
                .unwrap_err();
            assert_eq!(err.interface(), "rmnet0");
            assert!(err.to_string().contains("rmnet0 (index 7)"), "{err}");
        }
        let io: io::Error = BindError::os(&cell, "SO_BINDTOIFINDEX", io::Error::from_raw_os_error(19)).into();
        assert_eq!(io.kind(), io::Error::from_raw_os_error(19).kind());
        assert!(io.to_string().contains("rmnet0"), "{io}");
    }

    #[test]
    fn virtual_destinations() {
        for ip in ["127.0.0.1", "127.9.9.9", "::1", "224.0.0.1", "ff01::1", "ff02::1", "::ffff:127.0.0.1"] {
            assert!(is_virtual_destination(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.0.2.1", "2001:db8::1", "0.0.0.0", "::ffff:192.0.2.1"] {
            assert!(!is_virtual_destination(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn unsupported_binder_refuses_to_bind() {
        let eth = NetworkInterface::new("eth0", 2, NetworkType::Ethernet);
        let remote: SocketAddr = "192.0.2.1:443".parse().unwrap();
        assert_eq!(
            bind_socket(&UnsupportedBinder, &socket(), &eth, remote, true).unwrap(),
            Binding::Protected
        );
        let err = bind_socket(&UnsupportedBinder, &socket(), &eth, remote, false).unwrap_err();
        assert!(matches!(err, BindError::Unsupported { .. }), "{err}");
    }
}
