//! [`ConnectionManager`]: takes client connections, dials, relays and tracks them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::client::Inbound;
use crate::dial::Outbound;
use crate::metadata::Metadata;
use crate::network::state::{CloseReason, NetworkState, SnapshotChange};
use crate::network::InterfaceSnapshot;
use crate::relay::ClosedConnection;
use crate::tls_fragment::FragmentSettings;
use crate::tracker::{ConnectionId, ConnectionInfo, Tracker};

mod close_report;
mod observers;
mod tasks;

use close_report::CloseReport;
use observers::ReportOpen;
pub use observers::{NetworkObserver, NetworkUpdate, OpenObserver};

/// Sees every connection that ends; see [`ConnectionManager::with_close_observer`].
pub type CloseObserver = Arc<dyn Fn(&ClosedConnection) + Send + Sync>;

/// Default time a half-closed connection may stay silent before it is closed.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the relay engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelaySettings {
    /// How long a connection with one direction ended may stay silent in the other before it is
    /// closed. `None` = never. Default 60 s.
    pub half_close_timeout: Option<Duration>,
    /// TLS ClientHello fragmentation applied to every connection (a connection's own options
    /// can turn a mode on too). Default off.
    pub tls_fragment: FragmentSettings,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            half_close_timeout: Some(DEFAULT_HALF_CLOSE_TIMEOUT),
            tls_fragment: FragmentSettings::default(),
        }
    }
}

/// The connection manager: give it client connections with their metadata and an outbound; it
/// dials, reports the outcome to the client, relays both ways with half-close, and tracks every
/// live connection until it ends.
///
/// Dropping the manager (or calling [`ConnectionManager::shutdown`]) closes every connection.
pub struct ConnectionManager {
    tracker: Arc<Tracker>,
    close_observer: Option<CloseObserver>,
    open_observer: Option<OpenObserver>,
    network_observer: Option<NetworkObserver>,
    networks: Arc<NetworkState>,
    dns: Option<Arc<crate::dns::Resolvers>>,
    settings: RelaySettings,
    runtime: Handle,
    shut_down: Arc<AtomicBool>,
    /// Wakes [`ConnectionManager::wait_shut_down`] callers.
    shut_down_signal: tokio::sync::Notify,
}

impl ConnectionManager {
    /// A manager whose connections run on the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime; use [`ConnectionManager::with_runtime`] there.
    pub fn new(settings: RelaySettings) -> ConnectionManager {
        ConnectionManager::with_runtime(settings, Handle::current())
    }

    /// A manager whose connections run on the given runtime; usable from any thread.
    pub fn with_runtime(settings: RelaySettings, runtime: Handle) -> ConnectionManager {
        let networks = Arc::new(NetworkState::default());
        ConnectionManager {
            tracker: Arc::new(Tracker::watching(networks.clone())),
            close_observer: None,
            open_observer: None,
            network_observer: None,
            networks,
            dns: None,
            settings,
            runtime,
            shut_down: Arc::new(AtomicBool::new(false)),
            shut_down_signal: tokio::sync::Notify::new(),
        }
    }

    /// Makes `observer` see every connection that ends (TCP and UDP, whoever handed it over),
    /// just before that connection's own `on_close`: the place for app-wide accounting such as
    /// traffic per network or close events to a host.
    pub fn with_close_observer(mut self, observer: CloseObserver) -> ConnectionManager {
        self.close_observer = Some(observer);
        self
    }

    /// Makes `observer` see every connection (TCP and UDP, whoever handed it over) once its
    /// destination is reached: right after the outbound connected (TCP) or opened its socket
    /// (UDP), before any byte is relayed, on the connection's task. The snapshot it gets is
    /// [`Relaying`](crate::tracker::ConnectionState::Relaying) with the egress the outbound
    /// reported. A connection whose dial fails is never seen here (only by the close observer);
    /// one that is seen here is always seen by the close observer afterwards.
    pub fn with_open_observer(mut self, observer: OpenObserver) -> ConnectionManager {
        self.open_observer = Some(observer);
        self
    }

    /// Makes `observer` see every [`ConnectionManager::update_interfaces`] call that changed
    /// something (not an identical snapshot), after the connections it closes were asked to
    /// close, on the caller's thread.
    pub fn with_network_observer(mut self, observer: NetworkObserver) -> ConnectionManager {
        self.network_observer = Some(observer);
        self
    }

    /// Makes every [`ConnectionManager::update_interfaces`] flush `dns`'s cached answers of the
    /// interfaces that went away or whose DNS servers changed (give it the resolvers of the
    /// outbounds that use [`ConnectionManager::networks`], see
    /// [`crate::DirectOutbound::with_dns`]).
    pub fn with_dns(mut self, dns: Arc<crate::dns::Resolvers>) -> ConnectionManager {
        self.dns = Some(dns);
        self
    }

    /// `outbound` as connection `id` uses it: wrapped to report the open when an open observer
    /// is set.
    fn outbound_for(&self, id: ConnectionId, outbound: Arc<dyn Outbound>) -> Arc<dyn Outbound> {
        match &self.open_observer {
            None => outbound,
            Some(observer) => Arc::new(ReportOpen {
                inner: outbound,
                tracker: self.tracker.clone(),
                id,
                observer: observer.clone(),
            }),
        }
    }

    /// Hands a client connection to the manager and returns its id at once; the work happens on
    /// a task. In order: dial through `outbound`; on failure tell the client (SOCKS reply code or a
    /// reset) and call `on_close` with the error; on success report success to the client (with
    /// the outbound socket's real local address), then relay both ways until the connection ends.
    ///
    /// Guarantees: `on_close` runs exactly once, after the connection left the tracker, with the
    /// first (root-cause) error or `None` for a clean end — also when the runtime drops the task
    /// ([`ConnectionError::ShutDown`]) and when the outbound or the ingress's handshake panics
    /// ([`ConnectionError::Panicked`]). After shutdown the connection is reset at once and
    /// `on_close` gets [`ConnectionError::ShutDown`].
    ///
    /// [`ConnectionError::Panicked`]: crate::ConnectionError::Panicked
    /// [`ConnectionError::ShutDown`]: crate::ConnectionError::ShutDown
    pub fn new_connection<F>(
        &self,
        inbound: Inbound,
        metadata: Metadata,
        outbound: Arc<dyn Outbound>,
        on_close: F,
    ) -> ConnectionId
    where
        F: FnOnce(ClosedConnection) + Send + 'static,
    {
        let (entry, guard) = self.tracker.insert(metadata);
        let id = entry.id;
        let outbound = self.outbound_for(id, outbound);
        let half_close_timeout = self.settings.half_close_timeout;
        let fragment_defaults = self.settings.tls_fragment;
        if self.is_shut_down() {
            entry.request_close();
        }
        let observer = self.close_observer.clone();
        let report = CloseReport::new(entry, guard, observer, on_close, self.shut_down.clone());
        self.runtime.spawn(tasks::tcp(report, inbound, outbound, half_close_timeout, fragment_defaults));
        id
    }

    /// Snapshots of every live connection.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        self.tracker.list()
    }

    /// A snapshot of one live connection.
    pub fn get(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        self.tracker.get(id)
    }

    /// Closes one connection (idle or busy). Returns false if no live connection has this id.
    pub fn close(&self, id: ConnectionId) -> bool {
        self.tracker.close(id)
    }

    /// Closes every live connection and returns how many were asked to close. Prompt: each
    /// connection's task is woken at once, idle ones included.
    pub fn close_all(&self) -> usize {
        self.tracker.close_all()
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Closes every connection and refuses new ones (they are reset and reported as
    /// [`ConnectionError::ShutDown`]). Idempotent.
    ///
    /// [`ConnectionError::ShutDown`]: crate::ConnectionError::ShutDown
    pub fn shutdown(&self) {
        if !self.shut_down.swap(true, Ordering::AcqRel) {
            let count = self.tracker.close_all();
            self.shut_down_signal.notify_waiters();
            tracing::info!(connections = count, "connection manager shut down");
        }
    }

    /// Returns once [`ConnectionManager::shutdown`] was called (at once if it was): for what an
    /// ingress keeps outside the manager, such as a SOCKS UDP association, to end with it.
    pub async fn wait_shut_down(&self) {
        let notified = self.shut_down_signal.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a shutdown in between still wakes this.
        notified.as_mut().enable();
        if !self.is_shut_down() {
            notified.await;
        }
    }

    /// True after [`ConnectionManager::shutdown`] (or drop).
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// The interface snapshot the host keeps up to date; share it with outbounds that choose
    /// networks ([`crate::DirectOutbound::with_networks`]).
    pub fn networks(&self) -> &Arc<NetworkState> {
        &self.networks
    }

    /// Replaces the interface snapshot (the host calls this on every network change) and closes,
    /// at once, every connection that left through an interface that is gone, whose local address
    /// is on no interface any more, or that left through the old default interface when the
    /// default changed. A connection still dialing when the update comes is checked the same way
    /// the moment its dial succeeds (a dial that connects over an interface removed meanwhile is
    /// closed at once). A "no network" snapshot pauses dialing (dials fail fast) and closes
    /// nothing; an identical snapshot does nothing. Returns what changed.
    pub fn update_interfaces(&self, snapshot: InterfaceSnapshot) -> SnapshotChange {
        let summary = snapshot_summary(&snapshot);
        let observed = self.network_observer.as_ref().map(|_| Arc::new(snapshot.clone()));
        let change = self.networks.update(snapshot);
        if let Some(dns) = &self.dns {
            dns.on_update(&self.networks.snapshot(), &change);
        }
        if change.identical {
            tracing::debug!(interfaces = %summary, "interface snapshot unchanged");
            return change;
        }
        let (mut interface_gone, mut default_changed, mut address_gone) = (0, 0, 0);
        if change.no_network {
            tracing::warn!("no usable network: dialing paused, existing connections kept");
        } else {
            if !change.is_noop() {
                self.tracker.close_matching(|info| match change.close_reason(&info.egress) {
                    Some(CloseReason::InterfaceGone) => {
                        interface_gone += 1;
                        true
                    }
                    Some(CloseReason::DefaultChanged) => {
                        default_changed += 1;
                        true
                    }
                    Some(CloseReason::LocalAddressGone) => {
                        address_gone += 1;
                        true
                    }
                    None => false,
                });
            }
            let removed = change.removed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let default = match &change.default_change {
                None => "unchanged".to_string(),
                Some(c) => {
                    let name =
                        |side: &Option<_>| side.as_ref().map_or("none".to_string(), ToString::to_string);
                    format!("{} -> {}", name(&c.old), name(&c.new))
                }
            };
            tracing::info!(
                interfaces = %summary,
                removed = %if removed.is_empty() { "none" } else { &removed },
                default = %default,
                lost_addresses = ?change.lost_addresses,
                closed = interface_gone + default_changed + address_gone,
                closed_local_address_gone = address_gone,
                "network changed"
            );
        }
        if let (Some(observer), Some(snapshot)) = (&self.network_observer, observed) {
            observer(&NetworkUpdate {
                snapshot,
                change: change.clone(),
                closed_interface_gone: interface_gone,
                closed_default_changed: default_changed,
                closed_local_address_gone: address_gone,
            });
        }
        change
    }

    /// The live connection table, shared with the relay tasks.
    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("connections", &self.tracker.len())
            .field("settings", &self.settings)
            .field("close_observer", &self.close_observer.is_some())
            .field("open_observer", &self.open_observer.is_some())
            .field("network_observer", &self.network_observer.is_some())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl Drop for ConnectionManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// "wlan0 (wifi, index 3, default, not validated), rmnet0 (cellular, index 5)" for logs.
fn snapshot_summary(snapshot: &InterfaceSnapshot) -> String {
    let parts: Vec<String> = snapshot
        .interfaces()
        .iter()
        .map(|i| {
            let default = if snapshot.is_default(i) { ", default" } else { "" };
            let validated = if i.validated { "" } else { ", not validated" };
            format!("{} ({}, index {}{default}{validated})", i.name, i.network_type, i.index)
        })
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// UDP sessions.
impl ConnectionManager {
    /// Hands a UDP session to the manager and returns its id at once; the work happens on a task.
    /// The session waits for the client's first datagram, chooses its idle timeout (the
    /// connection's `udp_timeout` > the protocol recognised from that datagram or guessed from the
    /// port > the ingress default), opens the remote socket through `outbound` (connected to one
    /// address with `udp_connect`, else unconnected), translates a resolved domain both ways
    /// (one way with `udp_disable_domain_unmapping`), and relays datagrams until the session is
    /// idle for its timeout ([`ConnectionError::UdpIdle`]), the client side goes away (`None`),
    /// a hard I/O error, or a close request. See [`crate::relay::udp`].
    ///
    /// Guarantees: tracked like a TCP connection (`list`/`get`/`close`/`close_all`, network
    /// changes), with packet counters, drops and the timeout in force; `on_close` runs exactly
    /// once, after the session left the tracker, with the root-cause error — also when the
    /// runtime drops the task ([`ConnectionError::ShutDown`]) and when the outbound or the
    /// ingress's packet sink panics ([`ConnectionError::Panicked`]). After shutdown the session ends at once with
    /// [`ConnectionError::ShutDown`].
    ///
    /// [`ConnectionError::Panicked`]: crate::ConnectionError::Panicked
    /// [`ConnectionError::ShutDown`]: crate::ConnectionError::ShutDown
    /// [`ConnectionError::UdpIdle`]: crate::ConnectionError::UdpIdle
    pub fn new_packet_connection<F>(
        &self,
        inbound: crate::client::PacketInbound,
        metadata: Metadata,
        outbound: Arc<dyn Outbound>,
        on_close: F,
    ) -> ConnectionId
    where
        F: FnOnce(ClosedConnection) + Send + 'static,
    {
        let (entry, guard) = self.tracker.insert_as(metadata, crate::tracker::TransportProtocol::Udp);
        let id = entry.id;
        let outbound = self.outbound_for(id, outbound);
        if self.is_shut_down() {
            entry.request_close();
        }
        let observer = self.close_observer.clone();
        let report = CloseReport::new(entry.clone(), guard, observer, on_close, self.shut_down.clone());
        self.runtime.spawn(tasks::udp(report, entry, inbound, outbound));
        id
    }
}
