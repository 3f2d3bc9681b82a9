//! The host's side: the foreign traits the app implements, and the bridges that adapt them to
//! the core's traits (core code never sees uniffi types).

use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;

use super::error::NetswitchError;
use super::types::{BindAction, BindDecision, ClosedConnection, LogRecord, NetworkInterface};
use crate::logging::{LogLine, LogSink};
use crate::platform::{self, HostSocketBinder};

/// Platform services netswitch calls back into. Android implements `bind_socket` with
/// `VpnService.protect(fd)` (action `Protect`) and `Network.bindSocket(fd)` (action `Bind`);
/// Apple apps usually answer `BindYourself` and netswitch uses `IP_BOUND_IF`.
#[uniffi::export(with_foreign)]
pub trait PlatformInterface: Send + Sync {
    /// Called for every outbound socket before it connects, on a netswitch worker thread.
    /// `fd` is borrowed: do not close or keep it. Return `Bound` when done, `BindYourself` to let
    /// netswitch bind it, or throw (`PlatformRefused`) to fail this connect attempt: nothing is
    /// then sent on the socket. Must return quickly.
    fn bind_socket(
        &self,
        fd: i32,
        interface: NetworkInterface,
        action: BindAction,
    ) -> Result<BindDecision, NetswitchError>;
}

/// Receives connection-closed events and log records, on netswitch's own event threads (never
/// on a relay): a slow listener delays events, never traffic.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// A connection ended; `closed.error` is `None` for a clean end, else the root cause.
    fn on_connection_closed(&self, closed: ClosedConnection) -> Result<(), NetswitchError>;

    /// A batch of log records, oldest first; `dropped` counts records lost since the previous
    /// batch because the listener was too slow (the queue holds 4096).
    fn on_log(&self, records: Vec<LogRecord>, dropped: u64) -> Result<(), NetswitchError>;
}

/// Adapts a [`PlatformInterface`] to the core's [`HostSocketBinder`].
pub(crate) struct PlatformBinder {
    pub platform: Arc<dyn PlatformInterface>,
}

impl HostSocketBinder for PlatformBinder {
    fn bind_socket(
        &self,
        fd: RawFd,
        interface: &crate::network::NetworkInterface,
        is_default: bool,
    ) -> Result<platform::BindDecision, String> {
        let record = NetworkInterface {
            name: interface.name.clone(),
            index: interface.index,
            network_type: interface.network_type.into(),
            addresses: interface.addresses.iter().map(|a| format!("{}/{}", a.ip, a.prefix_len)).collect(),
            dns_servers: interface.dns_servers.iter().map(ToString::to_string).collect(),
            expensive: interface.expensive,
            constrained: interface.constrained,
        };
        let action = if is_default { BindAction::Protect } else { BindAction::Bind };
        let answer = catch_unwind(AssertUnwindSafe(|| self.platform.bind_socket(fd, record, action)));
        match answer {
            Ok(Ok(BindDecision::Bound)) => Ok(platform::BindDecision::Bound),
            Ok(Ok(BindDecision::BindYourself)) => Ok(platform::BindDecision::BindYourself),
            Ok(Err(NetswitchError::PlatformRefused { reason, .. })) => Err(reason),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the platform callback panicked".to_string()),
        }
    }
}

/// Wraps the OS binder so loopback destinations are offered to the platform too
/// (`offer_loopback_sockets`).
#[derive(Debug)]
pub(crate) struct LoopbackOffering(pub Arc<dyn platform::SocketBinder>);

impl platform::SocketBinder for LoopbackOffering {
    fn protect(
        &self,
        socket: &socket2::Socket,
        interface: &crate::network::NetworkInterface,
        destination: std::net::SocketAddr,
    ) -> Result<(), platform::BindError> {
        self.0.protect(socket, interface, destination)
    }

    fn bind_to_interface(
        &self,
        socket: &socket2::Socket,
        interface: &crate::network::NetworkInterface,
        destination: std::net::SocketAddr,
    ) -> Result<(), platform::BindError> {
        self.0.bind_to_interface(socket, interface, destination)
    }

    fn networks_on_loopback(&self) -> bool {
        true
    }
}

/// Delivers connection-closed events to one [`EventListener`] from a dedicated thread, in
/// order. Sending never blocks; the thread ends when every sender is gone.
#[derive(Clone)]
pub(crate) struct CloseEvents(mpsc::Sender<ClosedConnection>);

impl CloseEvents {
    /// Starts the `netswitch-events` thread for `listener`.
    pub fn start(listener: Arc<dyn EventListener>) -> Result<CloseEvents, NetswitchError> {
        let (sender, receiver) = mpsc::channel::<ClosedConnection>();
        std::thread::Builder::new()
            .name("netswitch-events".into())
            .spawn(move || {
                for closed in receiver {
                    // A throwing or panicking listener loses that event, nothing else.
                    let _ = catch_unwind(AssertUnwindSafe(|| listener.on_connection_closed(closed)));
                }
            })
            .map_err(|e| NetswitchError::Io {
                context: "start the event thread".into(),
                reason: e.to_string(),
            })?;
        Ok(CloseEvents(sender))
    }

    /// Queues an event; ignored once the thread is gone.
    pub fn send(&self, closed: ClosedConnection) {
        let _ = self.0.send(closed);
    }
}

/// Hands log batches to an [`EventListener`]; runs on the `netswitch-log` thread, whose bounded
/// queue drops and counts records while the listener is slow.
pub(crate) struct ListenerLogs(pub Arc<dyn EventListener>);

impl LogSink for ListenerLogs {
    fn deliver(&self, records: Vec<LogLine>, dropped: u64) {
        let records = records
            .into_iter()
            .map(|line| LogRecord {
                level: line.level.into(),
                target: line.target,
                message: line.message,
                timestamp: line.timestamp,
            })
            .collect();
        let _ = catch_unwind(AssertUnwindSafe(|| self.0.on_log(records, dropped)));
    }
}
