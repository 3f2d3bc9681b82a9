//! The host's side: the foreign traits the app implements, and the bridges that adapt them to
//! the core's traits (core code never sees uniffi types).

use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::error::NetswitchError;
use super::network::{NetworkChange, NetworkInterface};
use super::types::{BindAction, BindDecision, ClosedConnection, ConnectionInfo, HostResolution, LogRecord};
use crate::platform::{self, HostSocketBinder};

/// Platform services netswitch calls back into. Android implements `bind_socket` with
/// `VpnService.protect(fd)` (action `Protect`) and `Network.bindSocket(fd)` (action `Bind`);
/// Apple apps usually answer `BindYourself` and netswitch uses `IP_BOUND_IF`. `resolve` is
/// optional in effect: a host that does not resolve for netswitch answers `ResolveYourself`.
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait PlatformInterface: Send + Sync {
    /// Called for every outbound socket before it connects, on a netswitch worker thread.
    /// `fd` is borrowed: do not close or keep it. Return `Bound` when done, `BindYourself` to let
    /// netswitch bind it, or throw (`PlatformRefused`) to fail this connect attempt: nothing is
    /// then sent on the socket. Should return quickly (the connect attempt waits for it); it may
    /// call the manager, and wait for its async calls, without stalling netswitch.
    fn bind_socket(
        &self,
        fd: i32,
        interface: NetworkInterface,
        action: BindAction,
    ) -> Result<BindDecision, NetswitchError>;

    /// Resolves `name` on `interface`'s network for the families asked (`want_ipv4`: A,
    /// `want_ipv6`: AAAA; netswitch asks once per family), e.g. Android `DnsResolver.query` on
    /// that `Network` or `Network.getAllByName`, Apple the Network Extension's resolver. Called
    /// when the config's `dns_resolver` is `Host`, or `Auto` and the interface has no DNS
    /// servers. Suspend (Kotlin) / async (Swift) freely: netswitch stops waiting at the dial's
    /// deadline (`connect_timeout_ms`). Answer `ResolveYourself` to let netswitch resolve (the
    /// interface's DNS servers, else the system resolver); throw `NameNotFound` for a name that
    /// does not exist (NXDOMAIN); any other exception fails this lookup, naming the interface.
    async fn resolve(
        &self,
        name: String,
        interface: NetworkInterface,
        want_ipv4: bool,
        want_ipv6: bool,
    ) -> Result<HostResolution, NetswitchError>;
}

/// What a host hears through `ConnectionManager.subscribe`: connections that opened and closed,
/// network changes, and log records. Every method runs on the subscription's own
/// `netswitch-events` thread, one call at a time, in the order the events happened (log batches
/// may arrive between any two events): a slow or blocked listener delays only its own
/// subscription, never traffic or other subscriptions, and loses events (counted by
/// `Subscription.dropped_events`) once 4096 are waiting. An exception thrown by a method loses
/// that one call, nothing else.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// A connection reached its destination (TCP connected, UDP socket opened) and starts
    /// relaying; `info` says over which network. A connection whose dial fails gets only
    /// `on_connection_closed`.
    fn on_connection_opened(&self, info: ConnectionInfo) -> Result<(), NetswitchError>;

    /// A connection ended; `closed.error` is `None` for a clean end, else the root cause.
    fn on_connection_closed(&self, closed: ClosedConnection) -> Result<(), NetswitchError>;

    /// `update_interfaces` changed something: the interfaces and default now, and how many
    /// connections it closed and why.
    fn on_network_changed(&self, change: NetworkChange) -> Result<(), NetswitchError>;

    /// A batch of log records at or above the current level (`set_log_level`), oldest first;
    /// `dropped` counts records lost since the previous batch because the listener was too slow
    /// (at most 4096 wait).
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
        let record = NetworkInterface::from(interface);
        let action = if is_default { BindAction::Protect } else { BindAction::Bind };
        let call = || catch_unwind(AssertUnwindSafe(|| self.platform.bind_socket(fd, record, action)));
        let answer = outside_the_runtime(call);
        match answer {
            Ok(Ok(BindDecision::Bound)) => Ok(platform::BindDecision::Bound),
            Ok(Ok(BindDecision::BindYourself)) => Ok(platform::BindDecision::BindYourself),
            Ok(Err(NetswitchError::PlatformRefused { reason, .. })) => Err(reason),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the platform callback panicked".to_string()),
        }
    }
}

/// Runs a synchronous host callback so that it may wait for netswitch: on a worker of the
/// multi-threaded runtime the worker's queue is handed to another thread for the call's
/// duration (`block_in_place`). Without it, a host that waits inside the callback for one of the
/// manager's async calls (Kotlin `runBlocking { manager.resolve(…) }`) waits forever: the call's
/// task sits in the blocked worker's own queue, and a slow host stalls every task queued there.
fn outside_the_runtime<T>(call: impl FnOnce() -> T) -> T {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(call)
    } else {
        call()
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
