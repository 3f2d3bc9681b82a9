//! The live connection table: every relayed connection with its id, metadata, network, start
//! time, live byte counters and a close handle.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use crate::metadata::Metadata;
use crate::network::state::NetworkState;
use crate::network::{Egress, InterfaceSnapshot};

#[cfg(test)]
mod close_waker_tests;

/// Identifies one connection for the lifetime of its manager. Never reused.
pub type ConnectionId = u64;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// The outbound is still dialing the destination.
    Dialing,
    /// Bytes are being relayed.
    Relaying,
}

/// The transport a tracked connection carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportProtocol {
    /// A TCP stream ([`crate::ConnectionManager::new_connection`]).
    #[default]
    Tcp,
    /// A UDP session ([`crate::ConnectionManager::new_packet_connection`]).
    Udp,
}

/// A snapshot of one tracked connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// Destination and options the connection was made with.
    pub metadata: Metadata,
    /// The network the connection left through (default until the dial succeeded).
    pub egress: Egress,
    /// Dialing or relaying.
    pub state: ConnectionState,
    /// Wall-clock time the connection was handed to the manager.
    pub started_at: SystemTime,
    /// Bytes relayed from the client to the destination so far.
    pub bytes_up: u64,
    /// Bytes relayed from the destination to the client so far.
    pub bytes_down: u64,
    /// TCP or UDP.
    pub protocol: TransportProtocol,
    /// UDP: datagrams relayed client → destination so far (0 for TCP).
    pub packets_up: u64,
    /// UDP: datagrams relayed destination → client so far (0 for TCP).
    pub packets_down: u64,
    /// UDP: datagrams dropped and counted so far (full queue, transient send error…); 0 for TCP.
    pub drops: u64,
    /// UDP: the idle timeout in force, once chosen (`None` for TCP and before the first datagram).
    pub udp_timeout: Option<Duration>,
}

/// Where a connection left through: not known while it dials (with the network state to check
/// its egress against once known), then known.
#[derive(Debug)]
enum EgressSlot {
    /// Dialing; the networks of a manager, with their baseline when the connection started.
    Dialing(Option<(Arc<NetworkState>, Arc<InterfaceSnapshot>)>),
    /// Dialed.
    Known(Egress),
}

/// One connection's shared state: read by the tracker, written by its relay task.
#[derive(Debug)]
pub(crate) struct Entry {
    pub id: ConnectionId,
    pub metadata: Metadata,
    pub started_at: SystemTime,
    pub started: Instant,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub protocol: TransportProtocol,
    pub packets_up: AtomicU64,
    pub packets_down: AtomicU64,
    pub drops: AtomicU64,
    /// The UDP idle timeout in force, in nanoseconds (saturated); 0 = not chosen yet.
    udp_timeout_nanos: AtomicU64,
    egress: Mutex<EgressSlot>,
    close_requested: AtomicBool,
    /// The connection's task while it waits for a close request (24 bytes, where a `Notify` took
    /// 32 and each wait on it 64 more in the task).
    close_waker: Mutex<Option<Waker>>,
}

impl Entry {
    /// Records the network the connection left through; the connection is relaying from now on.
    ///
    /// A network update made while the connection dialed did not see this egress (the
    /// connection was still dialing): if it took the egress away (the interface is gone, the
    /// local address is gone, or the default changed under a connection that used it), the
    /// connection is asked to close here, as the update would have. The egress is stored before
    /// the network state is read, and an update stores its snapshot before it reads the
    /// egresses: an update racing with this call is seen by one side or the other.
    pub fn set_egress(&self, egress: Egress) {
        let previous = std::mem::replace(&mut *lock(&self.egress), EgressSlot::Known(egress.clone()));
        let EgressSlot::Dialing(Some((networks, since))) = previous else { return };
        if let Some(reason) = networks.close_reason_since(&since, &egress) {
            tracing::info!(
                id = self.id, via = %egress, ?reason,
                "the network changed while the connection dialed and took its egress away: closing"
            );
            self.request_close();
        }
    }

    /// The network the connection left through, if dialed.
    pub fn egress(&self) -> Option<Egress> {
        match &*lock(&self.egress) {
            EgressSlot::Known(egress) => Some(egress.clone()),
            EgressSlot::Dialing(_) => None,
        }
    }

    /// Records the UDP idle timeout in force (shown by [`ConnectionInfo::udp_timeout`]).
    pub fn set_udp_timeout(&self, timeout: Duration) {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.udp_timeout_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Asks the connection's task to close it. Idempotent; works on idle connections.
    pub fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
        let waker = lock(&self.close_waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// True once a close was requested (the connection may still be ending).
    pub fn is_close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }

    /// Ready once a close was requested (also if it was requested before the first poll). One
    /// waiter: the connection's own task (the waker of the latest poll is the one woken).
    pub fn poll_close_requested(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.close_requested.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        {
            let mut waker = lock(&self.close_waker);
            match waker.as_ref() {
                Some(waiting) if waiting.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        // A request made before the waker was stored took no waker: it is seen here.
        if self.close_requested.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Completes when a close was requested; see [`Entry::poll_close_requested`].
    pub async fn close_requested(&self) {
        poll_fn(|cx| self.poll_close_requested(cx)).await
    }

    fn info(&self) -> ConnectionInfo {
        let egress = self.egress();
        ConnectionInfo {
            id: self.id,
            metadata: self.metadata.clone(),
            state: if egress.is_some() { ConnectionState::Relaying } else { ConnectionState::Dialing },
            egress: egress.unwrap_or_default(),
            started_at: self.started_at,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            protocol: self.protocol,
            packets_up: self.packets_up.load(Ordering::Relaxed),
            packets_down: self.packets_down.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            udp_timeout: match self.udp_timeout_nanos.load(Ordering::Relaxed) {
                0 => None,
                nanos => Some(Duration::from_nanos(nanos)),
            },
        }
    }
}

/// The table of live connections. Cheap to share; all methods take `&self`.
#[derive(Debug, Default)]
pub struct Tracker {
    entries: Mutex<HashMap<ConnectionId, Arc<Entry>>>,
    next_id: AtomicU64,
    /// The manager's networks: each connection's egress is checked against the updates made
    /// while it dialed (see [`Entry::set_egress`]). `None`: not checked.
    networks: Option<Arc<NetworkState>>,
}

impl Tracker {
    /// A tracker whose connections, once dialed, are checked against the updates `networks`
    /// got while they dialed (the manager's, which closes connections on network changes).
    pub(crate) fn watching(networks: Arc<NetworkState>) -> Tracker {
        Tracker { networks: Some(networks), ..Tracker::default() }
    }

    /// Adds a TCP connection and returns its entry together with a guard that removes it again.
    pub(crate) fn insert(self: &Arc<Self>, metadata: Metadata) -> (Arc<Entry>, EntryGuard) {
        self.insert_as(metadata, TransportProtocol::Tcp)
    }

    /// Adds a connection carrying `protocol`; see [`Tracker::insert`].
    pub(crate) fn insert_as(
        self: &Arc<Self>,
        metadata: Metadata,
        protocol: TransportProtocol,
    ) -> (Arc<Entry>, EntryGuard) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry {
            id,
            metadata,
            started_at: SystemTime::now(),
            started: Instant::now(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            protocol,
            packets_up: AtomicU64::new(0),
            packets_down: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            udp_timeout_nanos: AtomicU64::new(0),
            egress: Mutex::new(EgressSlot::Dialing(
                self.networks.as_ref().map(|networks| (networks.clone(), networks.baseline())),
            )),
            close_requested: AtomicBool::new(false),
            close_waker: Mutex::new(None),
        });
        lock(&self.entries).insert(id, entry.clone());
        crate::memory::connection_opened();
        (entry, EntryGuard { tracker: self.clone(), id })
    }

    /// The shared state of one live connection (for ingresses that count into it).
    pub(crate) fn entry(&self, id: ConnectionId) -> Option<Arc<Entry>> {
        lock(&self.entries).get(&id).cloned()
    }

    /// Snapshots of every live connection, in no particular order.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        entries.iter().map(|e| e.info()).collect()
    }

    /// A snapshot of one connection, if it is still live.
    pub fn get(&self, id: ConnectionId) -> Option<ConnectionInfo> {
        let entry = lock(&self.entries).get(&id).cloned();
        entry.map(|e| e.info())
    }

    /// Closes one connection. Returns false if no live connection has this id.
    /// The entry disappears once the connection's task has torn it down (promptly).
    pub fn close(&self, id: ConnectionId) -> bool {
        let entry = lock(&self.entries).get(&id).cloned();
        match entry {
            Some(entry) => {
                entry.request_close();
                true
            }
            None => false,
        }
    }

    /// Closes every live connection (idle ones included) and returns how many were asked to close.
    pub fn close_all(&self) -> usize {
        self.close_matching(|_| true)
    }

    /// Closes every live connection for which `predicate` holds; returns how many.
    pub(crate) fn close_matching(&self, mut predicate: impl FnMut(&ConnectionInfo) -> bool) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        let mut count = 0;
        for entry in entries {
            if predicate(&entry.info()) {
                entry.request_close();
                count += 1;
            }
        }
        count
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes its connection from the tracker when dropped, whatever way the task ends.
#[derive(Debug)]
pub(crate) struct EntryGuard {
    tracker: Arc<Tracker>,
    id: ConnectionId,
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        lock(&self.tracker.entries).remove(&self.id);
        crate::memory::connection_closed();
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the table stays usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
