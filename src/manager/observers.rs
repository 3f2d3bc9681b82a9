//! What a [`ConnectionManager`](crate::ConnectionManager) tells its open and network observers,
//! and the outbound wrapper that reports a connection's open.

use std::sync::Arc;

use crate::dial::{BoxFuture, DialError, DialedStream, DialedUdp, Outbound};
use crate::metadata::Metadata;
use crate::network::state::SnapshotChange;
use crate::network::{Egress, InterfaceSnapshot};
use crate::tracker::{ConnectionId, ConnectionInfo, ConnectionState, Tracker};

/// Sees every connection whose destination was reached; see
/// [`ConnectionManager::with_open_observer`](crate::ConnectionManager::with_open_observer).
pub type OpenObserver = Arc<dyn Fn(&ConnectionInfo) + Send + Sync>;

/// Sees every interface update that changed something; see
/// [`ConnectionManager::with_network_observer`](crate::ConnectionManager::with_network_observer).
pub type NetworkObserver = Arc<dyn Fn(&NetworkUpdate) + Send + Sync>;

/// What one [`update_interfaces`](crate::ConnectionManager::update_interfaces) call did, as a
/// [`NetworkObserver`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NetworkUpdate {
    /// The snapshot the update put in force.
    pub snapshot: Arc<InterfaceSnapshot>,
    /// What changed relative to the previous snapshot (never `identical`).
    pub change: SnapshotChange,
    /// Connections closed because the interface they left through is gone.
    pub closed_interface_gone: usize,
    /// Connections closed because they left through the old default interface (or the system
    /// route) and the default changed.
    pub closed_default_changed: usize,
    /// Connections closed because their local address is on no interface any more.
    pub closed_local_address_gone: usize,
}

/// The outbound of one connection while an open observer is set: reports the connection to the
/// observer as soon as the inner outbound reached its destination.
pub(super) struct ReportOpen {
    pub(super) inner: Arc<dyn Outbound>,
    pub(super) tracker: Arc<Tracker>,
    pub(super) id: ConnectionId,
    pub(super) observer: OpenObserver,
}

impl ReportOpen {
    fn report(&self, egress: &Egress) {
        // The relay records the egress only after the dial returns: show it already.
        if let Some(mut info) = self.tracker.get(self.id) {
            info.egress = egress.clone();
            info.state = ConnectionState::Relaying;
            (self.observer)(&info);
        }
    }
}

impl Outbound for ReportOpen {
    fn dial_tcp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
        Box::pin(async move {
            let dialed = self.inner.dial_tcp(metadata).await?;
            self.report(&dialed.egress);
            Ok(dialed)
        })
    }

    fn open_udp<'a>(&'a self, metadata: &'a Metadata) -> BoxFuture<'a, Result<DialedUdp, DialError>> {
        Box::pin(async move {
            let dialed = self.inner.open_udp(metadata).await?;
            self.report(&dialed.egress);
            Ok(dialed)
        })
    }
}
