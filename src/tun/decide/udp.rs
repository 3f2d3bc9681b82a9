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
    /// Datagrams waiting across every source, not counting each source's first one.
    waiting: usize,
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
    /// Most datagrams waiting across every source besides each one's first (the sessions'
    /// queue budget): what waits is at most `capacity + budget` datagrams, the bound the
    /// sessions' table states for its own queues ([`UdpSettings`]).
    budget: usize,
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
            budget: settings.queue_budget.max(1),
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
        let state = &mut *flows; // the fields borrowed apart
        match state.by_source.get_mut(&client) {
            Some(Flow::Deciding(queue)) if queue.len() < self.queue_len && state.waiting < self.budget => {
                state.waiting += 1;
                return queue.push(datagram);
            }
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
        flows.waiting -= queue.len() - 1;
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
        flows.waiting = 0;
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

#[cfg(test)]
mod tests {
    use super::super::{DecisionHook, TunDecider, TunDecision};
    use super::*;
    use crate::dial::direct::DirectOutbound;
    use crate::dial::BoxFuture;
    use crate::inbound::udp_sessions::SessionKeying;
    use crate::manager::{ConnectionManager, RelaySettings};
    use crate::network::strategy::NetworkStrategy;
    use crate::tun::counters::Counters;
    use crate::tun::device::{Framing, TunDevice};
    use crate::tun::packet::{parse, Packet};
    use crate::tun::test_support::eventually;
    use std::os::fd::OwnedFd;
    use tokio::sync::Notify;

    /// By source port: 1001 blocked; 1002 and 1003 answered (hybrid, "two") once their gate
    /// opens; the default otherwise.
    struct Gated {
        gates: [Arc<Notify>; 2],
        /// Gated decisions answered so far.
        answered: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl TunDecider for Gated {
        fn decide(&self, flow: TunFlow) -> BoxFuture<'static, TunDecision> {
            let gate = match flow.source.port() {
                1002 => Some(self.gates[0].clone()),
                1003 => Some(self.gates[1].clone()),
                _ => None,
            };
            let answered = self.answered.clone();
            Box::pin(async move {
                match gate {
                    Some(gate) => {
                        gate.notified().await;
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        TunDecision::allow().with_network_strategy(NetworkStrategy::Hybrid).with_label("two")
                    }
                    None if flow.source.port() == 1001 => TunDecision::block(),
                    None => TunDecision::allow(),
                }
            })
        }
    }

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([172, 19, 0, 1], port))
    }

    /// Datagrams wait for their source's decision and then reach a session with the decided
    /// options (shown in the tracker); a blocked source's datagrams are dropped and counted
    /// without asking again until it was silent for its idle timeout; stopping drops the
    /// waiting ones, counted, and starts no session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sources_wait_for_their_decision_and_blocked_ones_are_dropped_counted() {
        let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let (device, app) = std::os::unix::net::UnixDatagram::pair().unwrap();
        app.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let counters = Arc::new(Counters::default());
        let io =
            Arc::new(Io::on_device(TunDevice::new(OwnedFd::from(device), Framing::Raw).unwrap(), counters));
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let mut settings = UdpSettings { keying: SessionKeying::PerClient, ..UdpSettings::default() };
        settings.timeouts.default = Duration::from_millis(200);
        let table =
            Arc::new(UdpSessionTable::new(manager.clone(), Arc::new(DirectOutbound::default()), settings));
        let gates = [Arc::new(Notify::new()), Arc::new(Notify::new())];
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let decider = Gated { gates: gates.clone(), answered: answered.clone() };
        let hook = DecisionHook::new(Arc::new(decider)).with_deadline(Duration::from_secs(30));
        let asker = Arc::new(Asker::new(hook, io.counters.clone()));
        let decisions =
            Arc::new(UdpDecisions::new(asker, table.settings(), tokio::runtime::Handle::current()));
        let send = |port: u16, payload: &[u8]| {
            let datagram = Datagram { destination: server.into(), payload: payload.to_vec() };
            decisions.dispatch(client(port), server, datagram, &table, &io);
        };

        // Three datagrams wait for the decision; none reaches a session before it.
        for payload in [b"one", b"two", b"six"] {
            send(1002, payload);
        }
        assert_eq!((decisions.sources(), table.len()), (1, 0));
        gates[0].notify_one();
        let mut echoed = Vec::new();
        for _ in 0..3 {
            let app = app.try_clone().unwrap();
            let packet = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; 2048];
                let n = app.recv(&mut buf).expect("an echoed datagram within 10 s");
                buf.truncate(n);
                buf
            })
            .await
            .unwrap();
            let Packet::Udp(udp) = parse(&packet) else { panic!("not a UDP packet: {packet:?}") };
            assert_eq!((udp.source, udp.destination), (server, client(1002)));
            echoed.push(udp.payload.to_vec());
        }
        assert_eq!(echoed, [b"one".to_vec(), b"two".to_vec(), b"six".to_vec()], "all of them, in order");
        let sessions = manager.list();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].metadata.decision.as_deref(), Some("two: strategy=hybrid"));
        assert_eq!(sessions[0].metadata.options.network_strategy, Some(NetworkStrategy::Hybrid));
        assert_eq!(sessions[0].metadata.source, Some(client(1002)));
        assert_eq!(decisions.sources(), 0, "decided: nothing held for the source any more");

        // Blocked: dropped and counted, not asked again while the source keeps sending.
        send(1001, b"a");
        send(1001, b"b");
        eventually("two blocked datagrams counted", || io.counters.snapshot().dropped_blocked == 2).await;
        send(1001, b"c");
        let counters = io.counters.snapshot();
        assert_eq!((counters.dropped_blocked, counters.decisions), (3, 2), "{counters:?}");
        assert_eq!((table.len(), decisions.sources()), (1, 1), "no session for the blocked source");
        // Silent for longer than its idle timeout (200 ms): asked again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        send(1001, b"d");
        eventually("asked again", || io.counters.snapshot().decisions == 3).await;
        eventually("dropped again", || io.counters.snapshot().dropped_blocked == 4).await;

        // Stopped while deciding: the waiting datagrams are dropped, counted; no session starts.
        send(1003, b"late");
        send(1003, b"later");
        let dropped_udp = io.counters.snapshot().dropped_udp;
        decisions.stop();
        gates[1].notify_one();
        send(1003, b"after the stop");
        eventually("the decider answered", || answered.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
        // (Its answer is handled right after: give that a moment to start a session if it would.)
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(io.counters.snapshot().dropped_udp, dropped_udp + 3);
        let started = manager.list().iter().filter(|c| c.metadata.source == Some(client(1003))).count();
        assert_eq!((started, decisions.sources()), (0, 0));
        assert_eq!(io.counters.snapshot().udp_datagrams, 3);
    }

    /// What waits for decisions is bounded across sources by the sessions' queue budget (each
    /// source's first datagram aside), and a decision gives its share back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_datagrams_share_the_queue_budget() {
        let (device, _app) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let io = Arc::new(Io::on_device(
            TunDevice::new(OwnedFd::from(device), Framing::Raw).unwrap(),
            Arc::new(Counters::default()),
        ));
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let settings =
            UdpSettings { keying: SessionKeying::PerClient, queue_budget: 3, ..UdpSettings::default() };
        let table =
            Arc::new(UdpSessionTable::new(manager.clone(), Arc::new(DirectOutbound::default()), settings));
        let gates = [Arc::new(Notify::new()), Arc::new(Notify::new())];
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let decider = Gated { gates: gates.clone(), answered: answered.clone() };
        let hook = DecisionHook::new(Arc::new(decider)).with_deadline(Duration::from_secs(30));
        let asker = Arc::new(Asker::new(hook, io.counters.clone()));
        let decisions =
            Arc::new(UdpDecisions::new(asker, table.settings(), tokio::runtime::Handle::current()));
        // Nobody listens there: the datagrams that get a session are sent and lost, which is fine.
        let server = SocketAddr::from(([127, 0, 0, 1], 9));
        let send = |port: u16| {
            let datagram = Datagram { destination: server.into(), payload: b"x".to_vec() };
            decisions.dispatch(client(port), server, datagram, &table, &io);
        };
        for _ in 0..5 {
            send(1002); // the first, then three within the budget, then one dropped
        }
        assert_eq!(io.counters.snapshot().dropped_udp, 1);
        send(1003); // another source's first datagram still waits
        send(1003); // but no more than the budget
        assert_eq!((io.counters.snapshot().dropped_udp, decisions.sources()), (2, 2));
        gates[0].notify_one();
        eventually("1002 decided", || answered.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
        eventually("1002 handed on", || decisions.sources() == 1).await;
        // (What the table then did with 1002's datagrams is the table's business and counted.)
        let dropped = io.counters.snapshot().dropped_udp;
        send(1003); // the budget is free again
        send(1003);
        assert_eq!(io.counters.snapshot().dropped_udp, dropped, "{:?}", io.counters.snapshot());
        decisions.stop();
        gates[1].notify_one();
    }
}
