//! The userspace stack: TCP from the tunnel's packets terminated by smoltcp inside netswitch,
//! for hosts where netswitch cannot listen on the tunnel's address (iOS with
//! `includeAllNetworks`), chosen with [`super::Stack::Userspace`].
//!
//! A SYN of a new flow `A:a -> D:d` gets its own `Connection`: a smoltcp interface whose
//! address is `D` with one socket listening on `D:d`, fed the SYN at once (the app's handshake
//! completes before netswitch dials, like the system stack). Once the app acknowledged the
//! SYN-ACK, its stream (`UserspaceStream`) goes to the manager as a plain inbound with `D:d` as
//! the destination and `A:a` as the source; a failed dial resets it (the app sees a RST), a FIN
//! either way is carried through. Later packets of the flow go to its connection; packets of no
//! flow are dropped and counted.
//!
//! Costs: each connection reserves [`RECEIVE_BUFFER`] + [`SEND_BUFFER`] bytes of address space
//! for smoltcp's rings, resident only while traffic uses them (given back after
//! [`IDLE_RELEASE`] idle with both rings empty), plus an interface and a timer task. At most
//! [`MAX_CONNECTIONS`] at once: a SYN past that is dropped and counted. Of those, at most
//! [`MAX_HANDSHAKES`] in their handshake, so that SYNs never acknowledged (a flood) cannot hold
//! the table for the two minutes of their timeout (see `handshakes.rs`).
//! See docs/userspace-stack.md for the choice of smoltcp and the measurements.

#[cfg(test)]
mod adversarial_tests;
mod connection;
#[cfg(test)]
mod flow_tests;
mod handshakes;
mod link;
mod offload;
mod reorder;
mod rings;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use connection::{Connection, Refused};
pub use connection::{IDLE_RELEASE, OFFLOAD_BUFFER, RECEIVE_BUFFER, SEND_BUFFER};
use handshakes::{Handshakes, Room};
pub use handshakes::{GRACE as HANDSHAKE_GRACE, MAX_HANDSHAKES};
pub(crate) use link::PacketSink;
pub(crate) use stream::UserspaceStream;

use super::counters::{bump, Counters};
use super::decide::TunFlow;
use super::packet::Tcp;
use super::system::AcceptHooks;
use crate::client::{ClientStream, Inbound};
use crate::dial::Outbound;
use crate::manager::ConnectionManager;
use crate::metadata::{Destination, Metadata};
use crate::tracker::ConnectionId;
use crate::tracker::TransportProtocol;

/// Connections the userspace stack holds at most at once. Fewer on iOS, where the whole Network
/// Extension must stay under 50 MiB: 4,096 idle connections take about 14 MiB there (3.4 KiB
/// each), 16,384 would take 56.
#[cfg(target_os = "ios")]
pub const MAX_CONNECTIONS: usize = 4 * 1024;
/// Connections the userspace stack holds at most at once (4,096 on iOS, for its memory limit).
#[cfg(not(target_os = "ios"))]
pub const MAX_CONNECTIONS: usize = 16 * 1024;

/// A flow: the app's address and the destination it asked for.
type Key = (SocketAddr, SocketAddr);

struct Flow {
    connection: Arc<Connection>,
    /// The sequence number of the SYN that opened it (a SYN with another one opens a new
    /// connection on the same ports).
    syn: u32,
    /// The manager's connection, once handed over.
    id: Option<ConnectionId>,
}

/// The userspace TCP stack of one tunnel (see the module docs).
pub(crate) struct Userspace {
    flows: Mutex<HashMap<Key, Flow>>,
    sink: Arc<dyn PacketSink>,
    mtu: usize,
    /// The device offloads (virtio-net framing): 64 KiB segments both ways (`offload.rs`).
    offload: bool,
    manager: Arc<ConnectionManager>,
    outbound: Arc<dyn Outbound>,
    counters: Arc<Counters>,
    /// The DNS hijack (DNS over TCP to its address is served, not dialed) and the decision hook.
    hooks: AcceptHooks,
    /// [`Userspace::stop`] was called: no new connection.
    stopped: AtomicBool,
    /// The connections in their handshake (see `handshakes.rs`).
    handshakes: Handshakes<Key>,
}

impl Userspace {
    /// A stack writing its packets to `sink`, of at most `mtu` bytes, and handing connections
    /// to `manager` — after the decision hook, if any, allowed them; connections to the DNS
    /// hijack's address on port 53 are served as DNS over TCP instead (as the system stack does).
    /// With `offload` the sink is an offloading device (see `offload.rs`).
    pub fn new(
        sink: Arc<dyn PacketSink>,
        mtu: usize,
        offload: bool,
        manager: Arc<ConnectionManager>,
        outbound: Arc<dyn Outbound>,
        counters: Arc<Counters>,
        hooks: AcceptHooks,
    ) -> Userspace {
        Userspace {
            flows: Mutex::default(),
            sink,
            mtu,
            offload,
            manager,
            outbound,
            counters,
            hooks,
            stopped: AtomicBool::new(false),
            handshakes: Handshakes::new(),
        }
    }

    /// Handles one TCP packet from the app (`packet` holds the IP packet, `tcp` its parse).
    /// Must run inside the tokio runtime (a new connection spawns its timer task). On an
    /// offloading device a SYN's MSS option is raised in `packet` (see `offload.rs`).
    pub fn input(self: &Arc<Self>, packet: &mut [u8], tcp: &Tcp) {
        let len = tcp.len.min(packet.len());
        let packet = &mut packet[..len];
        let key = (tcp.source, tcp.destination);
        let seq = sequence(packet, tcp);
        let known = self.lock().get(&key).map(|flow| (flow.connection.clone(), flow.syn));
        if let Some((connection, syn)) = known {
            if !tcp.opens || seq == syn {
                return connection.input(packet, tcp.offset);
            }
            // A SYN with a new sequence number: the app opens a new connection on these ports
            // (it forgot the old one, its reset lost on the way). Where a kernel's challenge ACK
            // would make the app reset the old one, it is reset here at once.
            connection.abort();
            let mut flows = self.lock();
            if flows.get(&key).is_some_and(|flow| Arc::ptr_eq(&flow.connection, &connection)) {
                flows.remove(&key);
            }
        }
        if !tcp.opens || self.stopped.load(Ordering::Acquire) {
            bump(&self.counters.dropped_no_flow);
            return;
        }
        if self.lock().len() >= MAX_CONNECTIONS {
            bump(&self.counters.dropped_nat_full);
            return;
        }
        match self.handshakes.room(|flow| self.in_handshake(flow).is_some()) {
            Room::Free => {}
            Room::Oldest(flow) => {
                if let Some(oldest) = self.in_handshake(&flow) {
                    oldest.abort();
                }
            }
            Room::Full => return bump(&self.counters.dropped_nat_full),
        }
        let segment = self.offload.then(|| offload::raise_mss(packet, tcp));
        let connection = match Connection::accept(
            packet,
            tcp.offset,
            tcp.destination,
            self.mtu,
            segment,
            self.sink.clone(),
        ) {
            Ok(connection) => connection,
            Err(Refused::NotSyn) => return bump(&self.counters.dropped_unsupported),
            // No memory for the connection: like a full table (the app retries its SYN).
            Err(Refused::Memory(error)) => {
                tracing::debug!(%error, destination = %tcp.destination, "userspace TCP: no memory for a connection");
                return bump(&self.counters.dropped_nat_full);
            }
        };
        self.lock().insert(key, Flow { connection: connection.clone(), syn: seq, id: None });
        self.handshakes.started(key, |flow| self.in_handshake(flow).is_some());
        let stack = Arc::downgrade(self);
        let driven = connection.clone();
        tokio::spawn(async move {
            connection::drive(driven.clone()).await;
            if let Some(stack) = stack.upgrade() {
                let mut flows = stack.lock();
                if flows.get(&key).is_some_and(|flow| Arc::ptr_eq(&flow.connection, &driven)) {
                    flows.remove(&key);
                }
            }
        });
        let stream = UserspaceStream::new(connection.clone());
        let stack = self.clone();
        let (app, original) = (tcp.source, tcp.destination);
        tokio::spawn(async move {
            // Nothing is dialed, asked or served before the app's handshake completed (the
            // system stack's kernel accepts only then too): SYNs from many ports that are never
            // acknowledged cost their slots in the table until they time out, and nothing else.
            let established = stream.handshake().await;
            stack.handshakes.ended();
            if established {
                stack.admit(key, &connection, stream, app, original).await;
            }
        });
    }

    /// The connection of flow `key` if it is in its handshake.
    fn in_handshake(&self, key: &Key) -> Option<Arc<Connection>> {
        let connection = self.lock().get(key).map(|flow| flow.connection.clone())?;
        connection.in_handshake().then_some(connection)
    }

    /// Takes the connection of flow `key` (its handshake complete) from `app` to `original`: to
    /// the DNS hijack if it serves `original`, else to the manager, after the decision hook
    /// allowed it.
    async fn admit(
        &self,
        key: Key,
        connection: &Arc<Connection>,
        stream: UserspaceStream,
        app: SocketAddr,
        original: SocketAddr,
    ) {
        if self.hooks.dns.serves_tcp(original) {
            // DNS over TCP to the tunnel's DNS address: answered here, not dialed. The flow
            // leaves when the connection closes (its driver ends).
            self.hooks.dns.serve_tcp(stream, || {});
            return;
        }
        let mut metadata = Metadata::new(Destination::from(original)).with_source(app);
        let Some(decider) = self.hooks.decider.clone() else {
            return self.hand_over(key, connection, stream, metadata);
        };
        // The connection waits (its window fills) until the decider decided, then is dialed or
        // reset, as with the system stack.
        let decided = decider.ask(TunFlow::new(TransportProtocol::Tcp, app, original)).await;
        if decided.blocks() {
            bump(&self.counters.tcp_blocked);
            crate::socket::stream::StreamSocket::reset(&stream);
            drop(stream);
        } else {
            decided.apply(&mut metadata);
            self.hand_over(key, connection, stream, metadata);
        }
    }

    /// Hands the connection of flow `key` to the manager (a stopped stack resets it instead).
    fn hand_over(&self, key: Key, connection: &Arc<Connection>, stream: UserspaceStream, metadata: Metadata) {
        if self.stopped.load(Ordering::Acquire) {
            return crate::socket::stream::StreamSocket::reset(&stream);
        }
        bump(&self.counters.tcp_connections);
        let stream = ClientStream::userspace(stream);
        let id = self.manager.new_connection(Inbound::plain(stream), metadata, self.outbound.clone(), |_| {});
        if let Some(flow) = self.lock().get_mut(&key) {
            if Arc::ptr_eq(&flow.connection, connection) {
                flow.id = Some(id);
            }
        }
    }

    /// Stops the stack with its tunnel: resets every connection it holds — the manager's, and
    /// those still in their handshake or waiting for the decision hook, which the manager does
    /// not know — and takes no new one. The resets leave at once (the tunnel still writes during
    /// its grace period); each connection's task ends as its stream goes.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let connections: Vec<_> = self.lock().values().map(|flow| flow.connection.clone()).collect();
        for connection in connections {
            connection.abort();
        }
    }

    /// How many connections the stack holds (open ones, and closed ones finishing their close).
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// The manager's connections that came through this stack and are still held.
    pub fn connection_ids(&self) -> Vec<ConnectionId> {
        self.lock().values().filter_map(|flow| flow.id).collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Flow>> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sequence number of the TCP segment `tcp` in `packet` (0 if cut short: the parser checked it).
fn sequence(packet: &[u8], tcp: &Tcp) -> u32 {
    let field = packet.get(tcp.offset + 4..tcp.offset + 8).and_then(|bytes| bytes.try_into().ok());
    field.map_or(0, u32::from_be_bytes)
}

impl std::fmt::Debug for Userspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Userspace").field("connections", &self.connections()).field("mtu", &self.mtu).finish()
    }
}
