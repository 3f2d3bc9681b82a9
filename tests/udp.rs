//! UDP sessions through `ConnectionManager::new_packet_connection` and the session table, over
//! loopback: exact idle timeouts, NAT, capacity eviction, a socket budget shared by tables.

mod common;

use common::{dns_query, udp_echo_server, ChannelSink};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netswitch::client::udp_timeout::UdpTimeouts;
use netswitch::client::{Datagram, PacketInbound, PacketSink};
use netswitch::dial::BoxFuture;
use netswitch::inbound::budget::Budget;
use netswitch::inbound::udp_sessions::{Dispatched, SessionKeying, UdpSessionTable, UdpSettings};
use netswitch::tracker::TransportProtocol;
use netswitch::{
    ClosedConnection, ConnectionError, ConnectionManager, Destination, DirectOutbound, Metadata,
    RelaySettings,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn quic_initial() -> Vec<u8> {
    let mut p = vec![0xC3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
    p.resize(1200, 0);
    p
}

struct Session {
    id: u64,
    uplink: mpsc::Sender<Datagram>,
    replies: mpsc::UnboundedReceiver<(Vec<u8>, Destination)>,
    closed: mpsc::UnboundedReceiver<ClosedConnection>,
}

fn start(manager: &ConnectionManager, metadata: Metadata, timeouts: UdpTimeouts) -> Session {
    let (tx, replies) = mpsc::unbounded_channel();
    let (uplink, inbound) = PacketInbound::channel(Arc::new(ChannelSink(tx)), timeouts, 64);
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let id =
        manager.new_packet_connection(inbound, metadata, Arc::new(DirectOutbound::default()), move |c| {
            let _ = closed_tx.send(c);
        });
    Session { id, uplink, replies, closed }
}

impl Session {
    async fn send(&self, destination: &Destination, payload: &[u8]) {
        let datagram = Datagram { destination: destination.clone(), payload: payload.to_vec() };
        self.uplink.send(datagram).await.unwrap();
    }

    async fn reply(&mut self) -> (Vec<u8>, Destination) {
        timeout(WAIT, self.replies.recv()).await.expect("no reply in time").unwrap()
    }

    async fn closed(&mut self) -> ClosedConnection {
        timeout(WAIT, self.closed.recv()).await.expect("on_close not called in time").unwrap()
    }
}

fn short_timeouts() -> UdpTimeouts {
    let mut timeouts = UdpTimeouts::default();
    timeouts.default = Duration::from_secs(3);
    timeouts.short = Duration::from_millis(300);
    timeouts.long = Duration::from_millis(800);
    timeouts
}

/// Sends `payload` once, waits for its echo, and returns how long after the echo the session
/// closed and why.
async fn idle_close_after(
    metadata: Metadata,
    payload: &[u8],
) -> (Duration, ConnectionError, Option<Duration>) {
    let manager = ConnectionManager::new(RelaySettings::default());
    let destination = metadata.destination.clone();
    let mut session = start(&manager, metadata, short_timeouts());
    session.send(&destination, payload).await;
    assert_eq!(session.reply().await.0, payload);
    let last_traffic = Instant::now();
    let info = manager.get(session.id).expect("session is live");
    assert_eq!(info.protocol, TransportProtocol::Udp);
    assert_eq!((info.packets_up, info.packets_down), (1, 1));
    let closed = session.closed().await;
    assert!(manager.get(session.id).is_none());
    (last_traffic.elapsed(), closed.error.expect("an idle end is reported"), info.udp_timeout)
}

#[tokio::test]
async fn dns_flow_closes_after_the_dns_timeout() {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let (elapsed, error, in_force) =
        idle_close_after(Metadata::new(server.into()), &dns_query(1, "a.test")).await;
    assert!(matches!(error, ConnectionError::UdpIdle(t) if t == Duration::from_millis(300)), "{error}");
    assert_eq!(in_force, Some(Duration::from_millis(300)));
    assert!(elapsed >= Duration::from_millis(290) && elapsed < Duration::from_millis(800), "{elapsed:?}");
}

#[tokio::test]
async fn quic_flow_closes_after_the_quic_timeout() {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let (elapsed, error, _) = idle_close_after(Metadata::new(server.into()), &quic_initial()).await;
    assert!(matches!(error, ConnectionError::UdpIdle(t) if t == Duration::from_millis(800)), "{error}");
    assert!(elapsed >= Duration::from_millis(790) && elapsed < Duration::from_millis(1600), "{elapsed:?}");
}

#[tokio::test]
async fn per_connection_timeout_beats_the_protocol() {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    for payload in [dns_query(2, "b.test"), quic_initial()] {
        let mut metadata = Metadata::new(server.into());
        metadata.options.udp_timeout = Some(Duration::from_millis(1500));
        let (elapsed, error, _) = idle_close_after(metadata, &payload).await;
        assert!(matches!(error, ConnectionError::UdpIdle(t) if t == Duration::from_millis(1500)), "{error}");
        assert!(elapsed >= Duration::from_millis(1490), "{elapsed:?}");
    }
}

#[tokio::test]
async fn unknown_protocol_gets_the_default_timeout() {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let (elapsed, error, _) = idle_close_after(Metadata::new(server.into()), b"plain bytes").await;
    assert!(matches!(error, ConnectionError::UdpIdle(t) if t == Duration::from_secs(3)), "{error}");
    assert!(elapsed >= Duration::from_millis(2990), "{elapsed:?}");
}

#[tokio::test]
async fn a_flow_where_only_the_server_sends_stays_open() {
    // The server answers the first datagram with a stream of replies every 100 ms for 1.2 s.
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (_, client) = server.recv_from(&mut buf).await.unwrap();
        for i in 0u8..12 {
            server.send_to(&[i], client).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let manager = ConnectionManager::new(RelaySettings::default());
    let mut session = start(&manager, Metadata::new(address.into()), short_timeouts());
    session.send(&address.into(), &dns_query(3, "c.test")).await;
    for i in 0u8..12 {
        assert_eq!(session.reply().await.0, [i], "reply {i} arrives although the client is silent");
    }
    let last = Instant::now();
    let closed = session.closed().await;
    assert!(matches!(closed.error, Some(ConnectionError::UdpIdle(_))), "{:?}", closed.error);
    assert!(last.elapsed() >= Duration::from_millis(250), "{:?}", last.elapsed());
    assert_eq!(closed.bytes_down, 12);
}

#[tokio::test]
async fn domain_replies_show_the_domain_or_the_ip() {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    for (disable, connect) in [(false, false), (true, false), (false, true), (true, true)] {
        let manager = ConnectionManager::new(RelaySettings::default());
        let destination = Destination::domain("dns.test", server.port());
        let mut metadata = Metadata::new(destination.clone());
        metadata.resolved_addresses = vec![Ipv4Addr::LOCALHOST.into()];
        metadata.options.udp_disable_domain_unmapping = disable;
        metadata.options.udp_connect = connect;
        let mut session = start(&manager, metadata, short_timeouts());
        session.send(&destination, b"hello").await;
        let (payload, source) = session.reply().await;
        assert_eq!(payload, b"hello");
        let expected = if disable { Destination::from(server) } else { destination.clone() };
        assert_eq!(source, expected, "disable_unmapping={disable} udp_connect={connect}");
        assert!(manager.close(session.id));
        assert!(matches!(session.closed().await.error, Some(ConnectionError::Closed)));
    }
}

#[tokio::test]
async fn close_all_and_shutdown_end_udp_sessions_once() {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let manager = ConnectionManager::new(RelaySettings::default());
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut s = start(&manager, Metadata::new(server.into()), UdpTimeouts::default());
        s.send(&server.into(), b"x").await;
        s.reply().await;
        sessions.push(s);
    }
    assert_eq!(manager.close_all(), 3);
    for s in &mut sessions {
        assert!(matches!(s.closed().await.error, Some(ConnectionError::Closed)));
        assert!(timeout(Duration::from_millis(200), s.closed.recv()).await.ok().flatten().is_none());
    }
    manager.shutdown();
    let mut late = start(&manager, Metadata::new(server.into()), UdpTimeouts::default());
    assert!(matches!(late.closed().await.error, Some(ConnectionError::ShutDown)));
}

/// A host may hand any duration as a connection's `udp_timeout`: one too large for the clock
/// means "a year", never a panic of the session (its traffic keeps flowing, close reports once).
#[tokio::test]
async fn an_absurd_per_connection_timeout_neither_panics_nor_stops_the_session() {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let manager = ConnectionManager::new(RelaySettings::default());
    let mut metadata = Metadata::new(server.into());
    metadata.options.udp_timeout = Some(Duration::MAX);
    let mut session = start(&manager, metadata, UdpTimeouts::default());
    for payload in [&b"first"[..], b"second"] {
        session.send(&server.into(), payload).await;
        assert_eq!(session.reply().await.0, payload);
    }
    assert!(manager.close(session.id), "the session was live");
    assert!(matches!(session.closed().await.error, Some(ConnectionError::Closed)));
}

/// A sink for the table test: replies from every session into one channel.
fn table_with(manager: &Arc<ConnectionManager>, capacity: usize) -> UdpSessionTable {
    let mut settings = UdpSettings::default();
    settings.session_capacity = capacity;
    settings.keying = SessionKeying::PerDestination;
    UdpSessionTable::new(manager.clone(), Arc::new(DirectOutbound::default()), settings)
}

#[tokio::test]
async fn at_capacity_the_least_recently_used_idle_session_is_evicted() {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let table = table_with(&manager, 16);
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let (tx, mut replies) = mpsc::unbounded_channel();
    let mut servers = Vec::new();
    for _ in 0..17 {
        servers.push(udp_echo_server(Ipv4Addr::LOCALHOST.into()).await);
    }
    let dispatch = |i: usize| {
        let tx = tx.clone();
        let datagram = Datagram { destination: servers[i].into(), payload: vec![i as u8] };
        table.dispatch(
            client,
            datagram,
            |d| Metadata::new(d.clone()),
            move || Arc::new(ChannelSink(tx)) as Arc<dyn PacketSink>,
        )
    };
    let mut ids = Vec::new();
    for i in 0..16 {
        match dispatch(i) {
            Dispatched::Queued { id, created: true, evicted: None } => ids.push(id),
            other => panic!("flow {i}: {other:?}"),
        }
        timeout(WAIT, replies.recv()).await.unwrap().unwrap();
    }
    // Touch every flow but the second: flow 1 becomes the least recently used.
    for i in (0..16).filter(|i| *i != 1) {
        assert!(matches!(dispatch(i), Dispatched::Queued { created: false, .. }));
        timeout(WAIT, replies.recv()).await.unwrap().unwrap();
    }
    match dispatch(16) {
        Dispatched::Queued { created: true, evicted: Some(evicted), .. } => assert_eq!(evicted, ids[1]),
        other => panic!("flow 17: {other:?}"),
    }
    timeout(WAIT, replies.recv()).await.unwrap().unwrap();
    assert_eq!(table.len(), 16);
    assert_eq!(table.session(&table.key(client, &servers[1].into())), None);
    let deadline = Instant::now() + WAIT;
    while manager.get(ids[1]).is_some() {
        assert!(Instant::now() < deadline, "the evicted session did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(manager.len(), 16);
    assert_eq!(table.close_all(), 16);
}

#[tokio::test]
async fn tables_sharing_a_socket_budget_refuse_new_sessions_past_it() {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let budget = Budget::new("test sockets", 2);
    let tables = [
        table_with(&manager, 16).with_socket_budget(budget.clone()),
        table_with(&manager, 16).with_socket_budget(budget.clone()),
    ];
    let servers = [
        udp_echo_server(Ipv4Addr::LOCALHOST.into()).await,
        udp_echo_server(Ipv4Addr::LOCALHOST.into()).await,
    ];
    let client: SocketAddr = "127.0.0.1:40002".parse().unwrap();
    let (tx, mut replies) = mpsc::unbounded_channel();
    let dispatch = |table: usize, server: usize| {
        let tx = tx.clone();
        let datagram = Datagram { destination: servers[server].into(), payload: vec![server as u8] };
        tables[table].dispatch(
            client,
            datagram,
            |d| Metadata::new(d.clone()),
            move || Arc::new(ChannelSink(tx)) as Arc<dyn PacketSink>,
        )
    };
    assert!(matches!(dispatch(0, 0), Dispatched::Queued { created: true, .. }));
    assert!(matches!(dispatch(1, 0), Dispatched::Queued { created: true, .. }));
    for _ in 0..2 {
        timeout(WAIT, replies.recv()).await.unwrap().unwrap();
    }
    assert_eq!(dispatch(0, 1), Dispatched::Refused, "a third socket, in either table");
    assert_eq!(dispatch(1, 1), Dispatched::Refused);
    assert_eq!((budget.in_use(), budget.refused(), manager.len()), (2, 2, 2));
    // Existing sessions go on.
    assert!(matches!(dispatch(1, 0), Dispatched::Queued { created: false, .. }));
    timeout(WAIT, replies.recv()).await.unwrap().unwrap();
    // A session that ends gives its socket back.
    assert_eq!(tables[0].close_all(), 1);
    let deadline = Instant::now() + WAIT;
    while budget.in_use() != 1 {
        assert!(Instant::now() < deadline, "the closed session kept its socket permit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(dispatch(1, 1), Dispatched::Queued { created: true, .. }));
    assert_eq!(timeout(WAIT, replies.recv()).await.unwrap().unwrap().0, vec![1]);
    assert_eq!((budget.in_use(), budget.refused()), (2, 2));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let mut settings = UdpSettings::default();
    settings.queue_len = 1;
    // An outbound that never finishes opening: the queue cannot drain.
    struct Stuck;
    impl netswitch::Outbound for Stuck {
        fn dial_tcp<'a>(
            &'a self,
            _: &'a Metadata,
        ) -> BoxFuture<'a, Result<netswitch::DialedStream, netswitch::DialError>> {
            Box::pin(std::future::pending())
        }
        fn open_udp<'a>(
            &'a self,
            _: &'a Metadata,
        ) -> BoxFuture<'a, Result<netswitch::dial::DialedUdp, netswitch::DialError>> {
            Box::pin(std::future::pending())
        }
    }
    let table = UdpSessionTable::new(manager.clone(), Arc::new(Stuck), settings);
    let client: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let (tx, _replies) = mpsc::unbounded_channel();
    let mut dropped = 0;
    for i in 0..10u8 {
        let datagram = Datagram { destination: "127.0.0.1:9".parse().unwrap(), payload: vec![i] };
        let sink = tx.clone();
        if let Dispatched::Dropped { .. } = table.dispatch(
            client,
            datagram,
            |d| Metadata::new(d.clone()),
            move || Arc::new(ChannelSink(sink)) as Arc<dyn PacketSink>,
        ) {
            dropped += 1;
        }
    }
    // The first datagram is taken by the session (waiting to open), one more fits the queue.
    assert!(dropped >= 8, "{dropped}");
    assert_eq!(table.overflow_drops(), dropped);
    let info = manager.list().into_iter().next().unwrap();
    assert_eq!(info.drops, dropped);
}

#[tokio::test]
async fn destination_override_translates_the_exact_address_both_ways() {
    let manager = ConnectionManager::new(RelaySettings::default());
    let real = udp_echo_server(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    // The client talks to 127.0.0.1:9 (nobody listens there); the override sends it to `real`.
    let shown: Destination = "127.0.0.1:9".parse().unwrap();
    for connected in [false, true] {
        let mut metadata = Metadata::new(shown.clone());
        metadata.options.override_destination = Some(real);
        metadata.options.udp_connect = connected;
        let mut session = start(&manager, metadata, UdpTimeouts::default());
        session.send(&shown, b"overridden").await;
        let (payload, source) = session.reply().await;
        assert_eq!(payload, b"overridden");
        assert_eq!(source, shown, "the reply shows the address the client used (connected: {connected})");
        drop(session.uplink);
        assert!(session.closed.recv().await.is_some());
    }
}
