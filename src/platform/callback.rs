//! Binding through the host app: Android's `VpnService.protect(fd)` for the default network and
//! `Network.bindSocket(fd)` for another one. The FFI layer implements [`HostSocketBinder`] over a
//! foreign callback; core code only sees this trait.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::Socket;

use super::{BindError, SocketBinder};
use crate::network::NetworkInterface;

/// What the host did with a socket it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindDecision {
    /// The host protected (default) or bound (other interface) the socket itself.
    Bound,
    /// The host leaves it to netswitch: the platform's own binder (see [`super::os_binder`]) runs.
    BindYourself,
}

/// The host side of binding, implemented by the FFI layer.
pub trait HostSocketBinder: Send + Sync {
    /// Called for every socket before `connect`, with the socket's file descriptor (borrowed:
    /// the host must not close it or keep it).
    ///
    /// `is_default == true`: protect only (`VpnService.protect(fd)`), do not bind — binding the
    /// default network breaks some Android devices. `is_default == false`: bind the socket to
    /// `interface`'s network (`Network.bindSocket(fd)`).
    ///
    /// Return `Err(reason)` when it failed (for example `protect` returned false): the dial
    /// attempt fails naming the interface. Must return quickly (it runs on the dialing task).
    fn bind_socket(
        &self,
        fd: RawFd,
        interface: &NetworkInterface,
        is_default: bool,
    ) -> Result<BindDecision, String>;
}

/// A [`SocketBinder`] that asks the host first and falls back to `os` when the host answers
/// [`BindDecision::BindYourself`].
#[derive(Clone)]
pub struct HostBinder {
    host: Arc<dyn HostSocketBinder>,
    os: Arc<dyn SocketBinder>,
}

impl fmt::Debug for HostBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBinder").field("os", &self.os).finish_non_exhaustive()
    }
}

impl HostBinder {
    /// Asks `host` for every socket; `os` binds when the host says [`BindDecision::BindYourself`].
    pub fn new(host: Arc<dyn HostSocketBinder>, os: Arc<dyn SocketBinder>) -> HostBinder {
        HostBinder { host, os }
    }

    fn ask(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        is_default: bool,
    ) -> Result<BindDecision, BindError> {
        let action = if is_default { "protect" } else { "bind" };
        self.host.bind_socket(socket.as_raw_fd(), interface, is_default).map_err(|reason| BindError::Host {
            interface: interface.name.clone(),
            index: interface.index,
            action,
            reason,
        })
    }
}

impl SocketBinder for HostBinder {
    fn protect(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        match self.ask(socket, interface, true)? {
            BindDecision::Bound => Ok(()),
            BindDecision::BindYourself => self.os.protect(socket, interface, destination),
        }
    }

    fn bind_to_interface(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        match self.ask(socket, interface, false)? {
            BindDecision::Bound => Ok(()),
            BindDecision::BindYourself => self.os.bind_to_interface(socket, interface, destination),
        }
    }

    fn networks_on_loopback(&self) -> bool {
        self.os.networks_on_loopback()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use socket2::{Domain, Type};

    use super::*;
    use crate::network::NetworkType;
    use crate::platform::{bind_socket, Binding, UnsupportedBinder};

    /// A host that records each call and answers with a fixed decision.
    struct Host {
        answer: Result<BindDecision, String>,
        calls: Mutex<Vec<(RawFd, String, bool)>>,
    }

    impl HostSocketBinder for Host {
        fn bind_socket(
            &self,
            fd: RawFd,
            i: &NetworkInterface,
            is_default: bool,
        ) -> Result<BindDecision, String> {
            self.calls.lock().unwrap().push((fd, i.name.clone(), is_default));
            self.answer.clone()
        }
    }

    fn host(answer: Result<BindDecision, String>) -> Arc<Host> {
        Arc::new(Host { answer, calls: Mutex::new(Vec::new()) })
    }

    const REMOTE: &str = "192.0.2.1:443";

    #[test]
    fn host_sees_default_and_other_interfaces_with_the_socket_fd() {
        let h = host(Ok(BindDecision::Bound));
        let binder = HostBinder::new(h.clone(), Arc::new(UnsupportedBinder));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let cell = NetworkInterface::new("rmnet0", 7, NetworkType::Cellular);
        let wifi = NetworkInterface::new("wlan0", 3, NetworkType::Wifi);
        assert_eq!(
            bind_socket(&binder, &socket, &wifi, REMOTE.parse().unwrap(), true).unwrap(),
            Binding::Protected
        );
        assert_eq!(
            bind_socket(&binder, &socket, &cell, REMOTE.parse().unwrap(), false).unwrap(),
            Binding::Bound
        );
        // Loopback never reaches the host.
        assert_eq!(
            bind_socket(&binder, &socket, &cell, "127.0.0.1:1".parse().unwrap(), false).unwrap(),
            Binding::Skipped
        );
        let fd = socket.as_raw_fd();
        assert_eq!(*h.calls.lock().unwrap(), vec![(fd, "wlan0".into(), true), (fd, "rmnet0".into(), false)]);
    }

    #[test]
    fn host_failure_fails_the_bind_naming_the_interface() {
        let binder = HostBinder::new(host(Err("protect returned false".into())), Arc::new(UnsupportedBinder));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let wifi = NetworkInterface::new("wlan0", 3, NetworkType::Wifi);
        let err = bind_socket(&binder, &socket, &wifi, REMOTE.parse().unwrap(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host could not protect socket for interface wlan0 (index 3): protect returned false"
        );
    }

    #[test]
    fn bind_yourself_falls_back_to_the_os_binder() {
        let binder = HostBinder::new(host(Ok(BindDecision::BindYourself)), Arc::new(UnsupportedBinder));
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let cell = NetworkInterface::new("rmnet0", 7, NetworkType::Cellular);
        // The OS binder here cannot bind: the error comes from it, not a silent success.
        let err = bind_socket(&binder, &socket, &cell, REMOTE.parse().unwrap(), false).unwrap_err();
        assert!(matches!(err, BindError::Unsupported { .. }), "{err}");
        // Its protect is a no-op.
        assert_eq!(
            bind_socket(&binder, &socket, &cell, REMOTE.parse().unwrap(), true).unwrap(),
            Binding::Protected
        );
    }
}
