//! The decision hook for UDP: the first datagram of an app source with no session asks the
//! decider; the source's datagrams wait in a bounded queue meanwhile (the packet reader never
//! waits); then they go to a new session with the decided options, or, blocked, are dropped —
//! and so are the source's next datagrams until it has been silent for the idle timeout its
//! session would have had.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Asker, TunFlow};
use crate::client::{Datagram, UdpTimeouts};
use crate::inbound::udp_sessions::{UdpSessionTable, UdpSettings};
use crate::metadata::Metadata;
use crate::tracker::TransportProtocol;
use crate::tun::counters::bump;
use crate::tun::udp::{count, sink};
use crate::tun::Io;

/// What is known about an app source that has no session.
enum Flow {
    /// The decider is being asked; the source's datagrams so far.
    Deciding(Vec<Datagram>),
    /// Blocked: its datagrams are dropped until it was silent for `idle` since `last`.
    Blocked { idle: Duration, last: Instant },
}

#[derive(Default)]
struct Flows {
    by_source: HashMap<SocketAddr, Flow>,
    stopped: bool,
}

/// The UDP side of a tunnel's decision hook (see the module docs).
pub(crate) struct UdpDecisions {
    asker: Arc<Asker>,
    flows: Mutex<Flows>,
    /// Most sources deciding or blocked at once (the sessions' capacity); a new one past it is
    /// dropped and counted.
    capacity: usize,
    /// Most datagrams of one source waiting for its decision (the sessions' queue length).
    queue_len: usize,
    timeouts: UdpTimeouts,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for UdpDecisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpDecisions").field("sources", &self.sources()).finish_non_exhaustive()
    }
}

impl UdpDecisions {
    /// The UDP decisions of a tunnel whose sessions have `settings`; decisions run on `runtime`.
    pub fn new(asker: Arc<Asker>, settings: &UdpSettings, runtime: tokio::runtime::Handle) -> UdpDecisions {
        UdpDecisions {
            asker,
            flows: Mutex::default(),
            capacity: settings.session_capacity.max(1),
            queue_len: settings.queue_len.max(1),
            timeouts: settings.timeouts,
            runtime,
        }
    }

    /// Hands a datagram of `client` (to `destination`) to its session, or holds it while its
    /// source is being decided, or drops it when the source is blocked. Never waits.
    pub fn dispatch(
        self: &Arc<Self>,
        client: SocketAddr,
        destination: SocketAddr,
        datagram: Datagram,
        table: &Arc<UdpSessionTable>,
        io: &Arc<Io>,
    ) {
        let counters = &io.counters;
        let now = Instant::now();
        // Held while the table is asked, so a decision cannot finish in between unseen.
        let mut flows = lock(&self.flows);
        if flows.stopped {
            bump(&counters.dropped_udp);
            return;
        }
        match flows.by_source.get_mut(&client) {
            Some(Flow::Deciding(queue)) if queue.len() < self.queue_len => return queue.push(datagram),
            Some(Flow::Deciding(_)) => return bump(&counters.dropped_udp),
            Some(Flow::Blocked { idle, last }) if now.duration_since(*last) < *idle => {
                *last = now;
                return bump(&counters.dropped_blocked);
            }
            Some(Flow::Blocked { .. }) => {
                flows.by_source.remove(&client);
            }
            None => {}
        }
        let datagram = match table.dispatch_existing(client, datagram) {
            Ok(dispatched) => return count(io, dispatched),
            Err(datagram) => datagram,
        };
        if flows.by_source.len() >= self.capacity {
            flows.by_source.retain(|_, flow| match flow {
                Flow::Deciding(_) => true,
                Flow::Blocked { idle, last } => now.duration_since(*last) < *idle,
            });
            if flows.by_source.len() >= self.capacity {
                tracing::debug!(%client, "TUN decisions full: UDP datagram dropped");
                return bump(&counters.dropped_udp);
            }
        }
        flows.by_source.insert(client, Flow::Deciding(vec![datagram]));
        drop(flows);
        let flow = TunFlow::new(TransportProtocol::Udp, client, destination);
        self.runtime.spawn(self.clone().decide(flow, table.clone(), io.clone()));
    }

    /// Asks about `flow` and hands its source's waiting datagrams on, or blocks the source.
    async fn decide(self: Arc<Self>, flow: TunFlow, table: Arc<UdpSessionTable>, io: Arc<Io>) {
        let decided = self.asker.ask(flow).await;
        let client = flow.source;
        let mut flows = lock(&self.flows);
        let Some(Flow::Deciding(queue)) = flows.by_source.remove(&client) else { return };
        if decided.blocks() {
            let first = queue.first().map_or(&[][..], |datagram| &datagram.payload[..]);
            let (idle, _) = self.timeouts.choose(None, first, flow.destination.port());
            io.counters.dropped_blocked.fetch_add(queue.len() as u64, std::sync::atomic::Ordering::Relaxed);
            flows.by_source.insert(client, Flow::Blocked { idle, last: Instant::now() });
            return;
        }
        for datagram in queue {
            let metadata = |destination: &crate::metadata::Destination| {
                let mut metadata = Metadata::new(destination.clone()).with_source(client);
                decided.apply(&mut metadata);
                metadata
            };
            count(&io, table.dispatch(client, datagram, metadata, || sink(&io, client)));
        }
    }

    /// Drops every waiting datagram (counted) and every datagram from now on: the tunnel stops.
    pub fn stop(&self) {
        let mut flows = lock(&self.flows);
        flows.stopped = true;
        let waiting: usize = flows
            .by_source
            .drain()
            .map(|(_, flow)| match flow {
                Flow::Deciding(queue) => queue.len(),
                Flow::Blocked { .. } => 0,
            })
            .sum();
        drop(flows);
        let counters = &self.asker.counters();
        counters.dropped_udp.fetch_add(waiting as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many app sources are being decided or blocked.
    pub fn sources(&self) -> usize {
        lock(&self.flows).by_source.len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
