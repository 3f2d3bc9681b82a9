//! The UDP session table of an ingress: client datagrams in, one manager session per key.
//!
//! - Key: the client's address and, with [`SessionKeying::PerDestination`] (the default), the
//!   destination — so each destination gets its own routing and protocol timeout. With
//!   [`SessionKeying::PerClient`] one session carries every destination of a client (full cone).
//! - Capacity: at most [`UdpSettings::session_capacity`] sessions (default 1024). A new key at
//!   capacity evicts the least recently used *idle* session (nothing queued), or the least
//!   recently used one when every session has datagrams queued; the evicted session ends with
//!   [`crate::ConnectionError::Closed`]. "Used" means a datagram either way: a session whose
//!   destination keeps sending (a stream the client rarely answers) is in use.
//! - Queue: each session has a bounded queue ([`UdpSettings::queue_len`], default 1024), and all
//!   the sessions of a table together hold at most [`UdpSettings::queue_budget`] datagrams
//!   (default 4096). A datagram that finds its session's queue full, or the table's budget spent,
//!   is dropped and counted (the session's tracker `drops` and
//!   [`UdpSessionTable::overflow_drops`]), never silently. The budget is kept from what each
//!   session's queue held when the table last looked (at its last datagram); when it looks spent,
//!   every queue is looked at again (at most once per millisecond), so a session that drained its
//!   queue gives its share back.
//! - Global socket cap: a table given a shared [`Budget`] ([`UdpSessionTable::with_socket_budget`])
//!   starts a session (one outbound socket) only with a permit from it, held until the session
//!   ends; without one the datagram is dropped and counted as a refusal
//!   ([`Dispatched::Refused`], the budget's [`Budget::refused`] and a rate-limited warning).
//!   Existing sessions are not touched: with a budget no larger than the capacity (the defaults
//!   are both 1024), the budget refuses before the capacity would evict.
//! - Expiry is the sessions' own exact idle timer; the table does no sweeping. A session that
//!   ends removes itself; one that was asked to close (the manager's `close`, a network change)
//!   takes no more datagrams: the next one starts a new session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::budget::Budget;
use crate::client::{Datagram, PacketInbound, PacketSink, UdpTimeouts};
use crate::dial::{BoxFuture, Outbound};
use crate::manager::ConnectionManager;
use crate::metadata::{Destination, Metadata};
use crate::tracker::{ConnectionId, Entry};

/// Default maximum number of sessions in one table.
pub const DEFAULT_SESSION_CAPACITY: usize = 1024;
/// Default length of one session's queue of client datagrams: about 20 ms of a 500 Mbit/s flow
/// of 1,200-byte datagrams, so a session whose task waits for a CPU does not drop.
pub const DEFAULT_QUEUE_LEN: usize = 1024;
/// Default number of client datagrams queued across all the sessions of one table.
pub const DEFAULT_QUEUE_BUDGET: usize = 4096;
/// How often, at most, a table whose queue budget looks spent looks at every session's queue.
const RECOUNT_EVERY: std::time::Duration = std::time::Duration::from_millis(1);
/// Default maximum number of SOCKS5 UDP associations of one server at once.
pub const DEFAULT_MAX_ASSOCIATIONS: usize = 256;
/// Default maximum number of UDP sessions (each one outbound socket) of one ingress at once,
/// across all its tables.
pub const DEFAULT_MAX_SOCKETS: usize = 1024;

/// Which datagrams of a client share a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SessionKeying {
    /// One session per (client, destination). Default.
    #[default]
    PerDestination,
    /// One session per client, whatever the destination (routed by its first datagram).
    PerClient,
}

/// Settings of an ingress's UDP sessions.
///
/// **Memory under a flood.** However many sources send and however fast, a table holds at most
/// `S = min(session_capacity, max_sockets)` sessions (`max_sockets` with a socket budget, as a
/// tunnel has; each one outbound socket) and at most `queue_budget + S` queued client datagrams
/// (the budget, plus the first datagram of each session, which starts it), each no larger than
/// the ingress's largest datagram `D` (a tunnel's MTU minus 28 bytes of IPv4 and UDP headers;
/// 65,507 bytes for SOCKS). So the resident memory a flood can add to one table is bounded by
/// `(queue_budget + S) x (D + 64)` bytes for the queued datagrams (64: a queue slot) plus
/// `S x` the memory of one session: its task, tracker entry, queue blocks and table slot, which
/// is a few KiB (`tests/tun/udp_flood.rs` allows 16 KiB); the socket buffers are kernel memory,
/// not the process's. With the defaults and a 1,500-byte MTU: (4096 + 1024) x 1,536 B = 7.5 MiB
/// plus 1024 x 16 KiB = 16 MiB, 23.5 MiB in all (a 9,000-byte MTU: 61 MiB in all).
/// `tests/tun/udp_flood.rs` checks it with small settings. A tunnel's decision hook holds at most
/// `session_capacity + queue_budget` more datagrams while their sources are being decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpSettings {
    /// Idle timeouts (default 5 min; DNS/NTP/STUN 10 s; QUIC/DTLS 30 s).
    pub timeouts: UdpTimeouts,
    /// Maximum number of sessions (config `udp_session_capacity`). Default 1024; at least 1.
    pub session_capacity: usize,
    /// Client datagrams queued per session before drops. Default 1024; at least 1.
    pub queue_len: usize,
    /// Client datagrams queued across all sessions of one table before drops (see the memory
    /// bound above). Default 4096; at least 1.
    pub queue_budget: usize,
    /// How datagrams are grouped into sessions. Default per destination.
    pub keying: SessionKeying,
    /// SOCKS5 ingress: UDP associations open at once (config `udp_max_associations`); a request
    /// past it is refused with reply 0x01. Default 256; at least 1.
    pub max_associations: usize,
    /// UDP sessions, each one outbound socket, open at once across every table of the ingress
    /// (config `udp_max_sockets`); a datagram that would start one more is dropped and counted.
    /// Default 1024; at least 1.
    pub max_sockets: usize,
}

impl Default for UdpSettings {
    fn default() -> Self {
        UdpSettings {
            timeouts: UdpTimeouts::default(),
            session_capacity: DEFAULT_SESSION_CAPACITY,
            queue_len: DEFAULT_QUEUE_LEN,
            queue_budget: DEFAULT_QUEUE_BUDGET,
            keying: SessionKeying::default(),
            max_associations: DEFAULT_MAX_ASSOCIATIONS,
            max_sockets: DEFAULT_MAX_SOCKETS,
        }
    }
}

/// What identifies a session in the table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The client's address.
    pub client: SocketAddr,
    /// The destination (per-destination keying) or `None` (per-client keying).
    pub destination: Option<Destination>,
}

/// What happened to one dispatched datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatched {
    /// Queued to session `id`; `created` when this datagram started it; `evicted` names the
    /// session closed to make room.
    Queued {
        /// The session.
        id: ConnectionId,
        /// True when the session was created for this datagram.
        created: bool,
        /// The session evicted to make room, if any.
        evicted: Option<ConnectionId>,
    },
    /// Session `id`'s queue was full: the datagram was dropped and counted.
    Dropped {
        /// The session.
        id: ConnectionId,
    },
    /// The datagram needed a new session but the shared socket budget was spent: dropped and
    /// counted as a refusal of the budget.
    Refused,
}

struct Slot {
    id: ConnectionId,
    sender: mpsc::Sender<Datagram>,
    entry: Option<Arc<Entry>>,
    /// When a datagram last went either way (see [`Used`]).
    used: Arc<Used>,
    /// How many datagrams its queue held when the table last looked (counted in `queued`).
    queued: usize,
}

impl Slot {
    /// How many datagrams its queue holds now.
    fn queue_len(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

/// When a session was last used, in nanoseconds since its table was made: stamped by the table
/// for each client datagram and by the session's sink for each reply.
struct Used {
    epoch: Instant,
    at: AtomicU64,
}

impl Used {
    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.at.store(now, Ordering::Relaxed);
    }

    fn at(&self) -> u64 {
        self.at.load(Ordering::Relaxed)
    }
}

/// A session's sink as the table hands it over: every reply marks the session used.
struct TouchingSink {
    inner: Arc<dyn PacketSink>,
    used: Arc<Used>,
}

impl PacketSink for TouchingSink {
    fn send_to_client<'a>(
        &'a self,
        payload: &'a [u8],
        source: &'a Destination,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        self.used.touch();
        self.inner.send_to_client(payload, source)
    }

    fn try_send_to_client(&self, payload: &[u8], source: &Destination) -> Option<std::io::Result<()>> {
        self.used.touch();
        self.inner.try_send_to_client(payload, source)
    }
}

struct Sessions {
    slots: HashMap<SessionKey, Slot>,
    /// What [`Used`] counts from.
    epoch: Instant,
    /// The sum of the slots' `queued`: at least what their queues hold (they only drain).
    queued: usize,
    /// When every queue was last looked at.
    recounted: Option<std::time::Instant>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { slots: HashMap::new(), epoch: Instant::now(), queued: 0, recounted: None }
    }
}

impl Sessions {
    fn insert(&mut self, key: SessionKey, slot: Slot) -> Option<Slot> {
        self.queued += slot.queued;
        let old = self.slots.insert(key, slot)?;
        self.queued -= old.queued;
        Some(old)
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        self.queued -= slot.queued;
        Some(slot)
    }

    /// Whether one more datagram fits the table's `budget`, looking at every queue again (at
    /// most every [`RECOUNT_EVERY`]) when the last counts say it does not.
    fn has_room(&mut self, budget: usize) -> bool {
        if self.queued < budget {
            return true;
        }
        let now = std::time::Instant::now();
        if self.recounted.is_some_and(|at| now.duration_since(at) < RECOUNT_EVERY) {
            return false;
        }
        self.recounted = Some(now);
        let mut total = 0;
        for slot in self.slots.values_mut() {
            slot.queued = slot.queue_len();
            total += slot.queued;
        }
        self.queued = total;
        total < budget
    }
}

/// A bounded table of UDP sessions feeding a [`ConnectionManager`] (see the module docs).
pub struct UdpSessionTable {
    manager: Arc<ConnectionManager>,
    outbound: Arc<dyn Outbound>,
    settings: UdpSettings,
    sessions: Arc<Mutex<Sessions>>,
    overflow_drops: AtomicU64,
    sockets: Option<Arc<Budget>>,
}

impl std::fmt::Debug for UdpSessionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSessionTable")
            .field("sessions", &self.len())
            .field("settings", &self.settings)
            .finish()
    }
}

impl UdpSessionTable {
    /// An empty table whose sessions go through `outbound`.
    pub fn new(manager: Arc<ConnectionManager>, outbound: Arc<dyn Outbound>, settings: UdpSettings) -> Self {
        UdpSessionTable {
            manager,
            outbound,
            settings,
            sessions: Arc::default(),
            overflow_drops: AtomicU64::new(0),
            sockets: None,
        }
    }

    /// Makes every new session of the table draw a permit from `sockets`, a budget shared with
    /// other tables (see the module docs).
    pub fn with_socket_budget(mut self, sockets: Arc<Budget>) -> Self {
        self.sockets = Some(sockets);
        self
    }

    /// The table's settings.
    pub fn settings(&self) -> &UdpSettings {
        &self.settings
    }

    /// The key of a datagram from `client` to `destination` under this table's keying.
    pub fn key(&self, client: SocketAddr, destination: &Destination) -> SessionKey {
        let destination = match self.settings.keying {
            SessionKeying::PerDestination => Some(destination.clone()),
            SessionKeying::PerClient => None,
        };
        SessionKey { client, destination }
    }

    /// Queues a datagram of `client` to its session, creating the session when there is none
    /// (with `metadata` for its destination and `sink` for its replies, both called only then)
    /// and evicting one at capacity; refuses it when a new session finds the socket budget spent.
    /// Never blocks.
    pub fn dispatch(
        &self,
        client: SocketAddr,
        datagram: Datagram,
        metadata: impl FnOnce(&Destination) -> Metadata,
        sink: impl FnOnce() -> Arc<dyn PacketSink>,
    ) -> Dispatched {
        let key = self.key(client, &datagram.destination);
        let (datagram, permit, evicted, epoch) = {
            let mut sessions = lock(&self.sessions);
            let datagram = match self.queue_existing(&mut sessions, &key, datagram) {
                Ok(dispatched) => return dispatched,
                Err(datagram) => datagram,
            };
            // Held by the new session until it ends (dropped with its `on_close`).
            let permit = match &self.sockets {
                None => None,
                Some(budget) => match budget.try_acquire() {
                    Some(permit) => Some(permit),
                    None => {
                        tracing::debug!(client = %client, "UDP socket budget spent: datagram dropped");
                        return Dispatched::Refused;
                    }
                },
            };
            let full = sessions.slots.len() >= self.settings.session_capacity.max(1);
            let evicted = if full { evict_one(&mut sessions, &self.manager) } else { None };
            (datagram, permit, evicted, sessions.epoch)
        };
        let used = Arc::new(Used { epoch, at: AtomicU64::new(0) });
        used.touch();
        // Created without the lock held: `on_close` takes it.
        let sink = Arc::new(TouchingSink { inner: sink(), used: used.clone() });
        let (sender, inbound) = PacketInbound::channel(sink, self.settings.timeouts, self.settings.queue_len);
        let metadata = metadata(&datagram.destination);
        // The new queue has room for at least one datagram: this cannot fail.
        let _ = sender.try_send(datagram);
        let table = Arc::downgrade(&self.sessions);
        let removal_key = key.clone();
        let id =
            self.manager.new_packet_connection(inbound, metadata, self.outbound.clone(), move |closed| {
                drop(permit);
                if let Some(table) = table.upgrade() {
                    let mut sessions = lock(&table);
                    if sessions.slots.get(&removal_key).is_some_and(|slot| slot.id == closed.id) {
                        sessions.remove(&removal_key);
                    }
                }
            });
        let entry = self.manager.tracker().entry(id);
        let slot = Slot { id, sender, entry, used, queued: 1 };
        let replaced = lock(&self.sessions).insert(key, slot);
        if let Some(old) = replaced {
            // A concurrent dispatch created the same key: keep the newest, end the other.
            self.manager.close(old.id);
        }
        Dispatched::Queued { id, created: true, evicted }
    }

    /// Queues a datagram of `client` to its live session, like [`UdpSessionTable::dispatch`],
    /// but never creates one: without a live session the datagram comes back. Never blocks.
    pub fn dispatch_existing(&self, client: SocketAddr, datagram: Datagram) -> Result<Dispatched, Datagram> {
        let key = self.key(client, &datagram.destination);
        let mut sessions = lock(&self.sessions);
        self.queue_existing(&mut sessions, &key, datagram)
    }

    /// Queues `datagram` to the session of `key` (or drops it, counted, when its queue is full);
    /// gives it back when there is no live session (a session that ended leaves the table).
    fn queue_existing(
        &self,
        sessions: &mut Sessions,
        key: &SessionKey,
        datagram: Datagram,
    ) -> Result<Dispatched, Datagram> {
        let budget = self.settings.queue_budget.max(1);
        let Some(slot) = sessions.slots.get_mut(key) else { return Err(datagram) };
        if slot.entry.as_ref().is_some_and(|entry| entry.is_close_requested()) {
            // Closed (the manager's `close`, a network change) and still ending: its task takes
            // no more datagrams, so this one starts a new session.
            sessions.remove(key);
            return Err(datagram);
        }
        slot.used.touch();
        // What the session's queue holds now (it only drains between two looks).
        let queued = slot.queue_len();
        let drained = slot.queued - queued.min(slot.queued);
        slot.queued -= drained;
        sessions.queued -= drained;
        let room = sessions.has_room(budget);
        let Some(slot) = sessions.slots.get_mut(key) else { return Err(datagram) };
        let sent = if room { slot.sender.try_send(datagram) } else { Err(TrySendError::Full(datagram)) };
        match sent {
            Ok(()) => {
                slot.queued += 1;
                sessions.queued += 1;
                Ok(Dispatched::Queued { id: slot.id, created: false, evicted: None })
            }
            Err(TrySendError::Full(_)) => {
                let total = self.overflow_drops.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(entry) = &slot.entry {
                    entry.drops.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(
                    id = slot.id, client = %key.client, drops = total, table_full = !room,
                    "UDP session queue full: datagram dropped"
                );
                Ok(Dispatched::Dropped { id: slot.id })
            }
            // The session ended and has not removed itself yet: the caller may start a new one.
            Err(TrySendError::Closed(datagram)) => {
                sessions.remove(key);
                Err(datagram)
            }
        }
    }

    /// How many sessions are in the table.
    pub fn len(&self) -> usize {
        lock(&self.sessions).slots.len()
    }

    /// True when the table has no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session of a key, if there is one.
    pub fn session(&self, key: &SessionKey) -> Option<ConnectionId> {
        lock(&self.sessions).slots.get(key).map(|slot| slot.id)
    }

    /// Datagrams dropped so far because a session's queue was full.
    pub fn overflow_drops(&self) -> u64 {
        self.overflow_drops.load(Ordering::Relaxed)
    }

    /// Closes every session of the table (each ends with `Closed`) and empties it; returns how many.
    pub fn close_all(&self) -> usize {
        let slots: Vec<Slot> = {
            let mut sessions = lock(&self.sessions);
            sessions.queued = 0;
            sessions.slots.drain().map(|(_, slot)| slot).collect()
        };
        for slot in &slots {
            self.manager.close(slot.id);
        }
        slots.len()
    }
}

impl Drop for UdpSessionTable {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Removes and closes the least recently used idle session (or the least recently used one).
fn evict_one(sessions: &mut Sessions, manager: &ConnectionManager) -> Option<ConnectionId> {
    let idle = |slot: &Slot| slot.sender.capacity() == slot.sender.max_capacity();
    let victim = sessions
        .slots
        .iter()
        .filter(|(_, slot)| idle(slot))
        .min_by_key(|(_, slot)| slot.used.at())
        .or_else(|| sessions.slots.iter().min_by_key(|(_, slot)| slot.used.at()))
        .map(|(key, _)| key.clone())?;
    let slot = sessions.remove(&victim)?;
    tracing::debug!(id = slot.id, client = %victim.client, "UDP session table full: evicting least recently used session");
    manager.close(slot.id);
    Some(slot.id)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
/// The shared caps of one ingress's UDP associations (SOCKS5 UDP ASSOCIATE) and their outbound
/// sockets, with their refusal counters.
#[derive(Debug)]
pub struct UdpLimits {
    /// UDP associations open at once ([`UdpSettings::max_associations`]); a request past it is
    /// refused with reply 0x01 and counted here.
    pub associations: Arc<Budget>,
    /// Outbound UDP sockets (one per session) across every association
    /// ([`UdpSettings::max_sockets`]); a datagram that would open one more is dropped and counted.
    pub sockets: Arc<Budget>,
}

impl UdpLimits {
    /// Fresh budgets sized by `settings`.
    pub fn new(settings: &UdpSettings) -> UdpLimits {
        UdpLimits {
            associations: Budget::new("SOCKS UDP associations", settings.max_associations),
            sockets: Budget::new("outbound UDP sockets of SOCKS associations", settings.max_sockets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::{BoxFuture, DialError, DialedStream, DialedUdp};
    use crate::manager::RelaySettings;
    use std::time::Duration;

    /// An outbound that never finishes opening: a session's queue cannot drain (its task takes
    /// only the first datagram).
    struct Stuck;

    impl Outbound for Stuck {
        fn dial_tcp<'a>(&'a self, _: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
            Box::pin(std::future::pending())
        }
        fn open_udp<'a>(&'a self, _: &'a Metadata) -> BoxFuture<'a, Result<DialedUdp, DialError>> {
            Box::pin(std::future::pending())
        }
    }

    struct NoReplies;

    impl PacketSink for NoReplies {
        fn send_to_client<'a>(
            &'a self,
            _: &'a [u8],
            _: &'a Destination,
        ) -> crate::dial::BoxFuture<'a, std::io::Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// The sessions of a table share its queue budget: past it a datagram is dropped and counted
    /// even though its own session's queue has room, and a session whose queue drained gives its
    /// share back.
    #[tokio::test]
    async fn sessions_share_the_queue_budget() {
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let settings = UdpSettings { queue_len: 10, queue_budget: 5, ..UdpSettings::default() };
        let table = UdpSessionTable::new(manager.clone(), Arc::new(Stuck), settings);
        let send = |port: u16, byte: u8| {
            let datagram = Datagram { destination: "127.0.0.1:9".parse().unwrap(), payload: vec![byte] };
            let client = SocketAddr::from(([127, 0, 0, 1], port));
            table.dispatch(client, datagram, |d| Metadata::new(d.clone()), || Arc::new(NoReplies))
        };
        let queued = |d: Dispatched| matches!(d, Dispatched::Queued { .. });
        // (The sessions' tasks have not run yet: every datagram is still queued.)
        assert!(matches!(send(1, 0), Dispatched::Queued { created: true, .. }));
        for byte in 1..5 {
            assert!(queued(send(1, byte)), "datagram {byte} fits the budget of 5");
        }
        assert!(matches!(send(1, 5), Dispatched::Dropped { .. }), "the budget is spent");
        assert!(matches!(send(2, 0), Dispatched::Queued { created: true, .. }), "a session's first");
        assert!(matches!(send(2, 1), Dispatched::Dropped { .. }), "its own queue has room, the table not");
        // Each session's task takes its first datagram (then waits for its socket forever).
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(queued(send(1, 6)), "two datagrams left the queues: room again");
        assert!(matches!(send(1, 7), Dispatched::Dropped { .. }), "4 + 1 queued: spent again");
        assert_eq!(table.overflow_drops(), 3);
        let drops: u64 = manager.list().iter().map(|c| c.drops).sum();
        assert_eq!(drops, 3, "counted on the sessions too");
    }
}
