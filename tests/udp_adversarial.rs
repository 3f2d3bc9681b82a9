//! Adversarial review of the UDP relay path, over loopback: eviction of a session busy with
//! replies, a zero-length datagram in a batch, and a SOCKS UDP association when the manager
//! shuts down or closes every connection.

mod common;

use common::{udp_echo_server, ChannelSink};

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netswitch::client::{Datagram, PacketInbound};
use netswitch::inbound::socks::{SocksServer, SocksSettings};
use netswitch::inbound::udp_sessions::{Dispatched, SessionKeying, UdpSessionTable, UdpSettings};
use netswitch::socks5::{encode_udp_header, parse_udp_header};
use netswitch::{ConnectionManager, Destination, DirectOutbound, Metadata, RelaySettings, UdpTimeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn table(manager: &Arc<ConnectionManager>, capacity: usize) -> UdpSessionTable {
    let mut settings = UdpSettings::default();
    settings.session_capacity = capacity;
    settings.keying = SessionKeying::PerDestination;
    UdpSessionTable::new(manager.clone(), Arc::new(DirectOutbound::default()), settings)
}

/// Dispatches `payload` from `client` to `to` in `table`, replies into `replies`.
fn dispatch(
    table: &UdpSessionTable,
    client: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
    replies: &mpsc::UnboundedSender<(Vec<u8>, Destination)>,
) -> Dispatched {
    let tx = replies.clone();
    let datagram = Datagram { destination: to.into(), payload: payload.to_vec() };
    table.dispatch(client, datagram, |d| Metadata::new(d.clone()), move || Arc::new(ChannelSink(tx)))
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session whose destination keeps sending (a download, a stream) while its client only sent
/// once is in use; at capacity the session nobody used since must go first.
#[tokio::test]
async fn a_session_busy_with_replies_is_not_evicted_before_an_idle_one() {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let table = table(&manager, 2);
    // A streamer: after the first datagram, sends to its sender every 10 ms.
    let streamer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let streamer_address = streamer.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let (_, from) = streamer.recv_from(&mut buf).await.unwrap();
        loop {
            if streamer.send_to(b"stream", from).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let quiet = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let newcomer = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client: SocketAddr = "127.0.0.1:40101".parse().unwrap();
    let (tx, mut replies) = mpsc::unbounded_channel();
    let Dispatched::Queued { id: streaming, .. } = dispatch(&table, client, streamer_address, b"go", &tx)
    else {
        panic!("streaming flow not queued")
    };
    timeout(WAIT, replies.recv()).await.unwrap().unwrap();
    let Dispatched::Queued { id: idle, .. } = dispatch(&table, client, quiet, b"once", &tx) else {
        panic!("quiet flow not queued")
    };
    // The quiet flow answers once, then nothing moves on it; the stream goes on.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        let _ = timeout(Duration::from_millis(50), replies.recv()).await;
    }
    match dispatch(&table, client, newcomer, b"new", &tx) {
        Dispatched::Queued { created: true, evicted: Some(evicted), .. } => {
            assert_eq!(evicted, idle, "the streaming session {streaming} was evicted, not the idle one")
        }
        other => panic!("{other:?}"),
    }
    assert!(manager.get(streaming).is_some());
    table.close_all();
}

/// A zero-length datagram is a datagram (keepalives): sent in a batch after datagrams of one
/// size to the same destination, it must still arrive.
#[tokio::test]
async fn a_zero_length_datagram_in_a_batch_is_sent() {
    let manager = ConnectionManager::new(RelaySettings::default());
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = receiver.local_addr().unwrap();
    let (tx, _replies) = mpsc::unbounded_channel();
    let (uplink, inbound) = PacketInbound::channel(Arc::new(ChannelSink(tx)), UdpTimeouts::default(), 64);
    let sizes = [100, 100, 100, 0, 100, 0];
    // Queued before the session runs: the first goes alone, the rest in one batch.
    for (i, size) in sizes.iter().enumerate() {
        let datagram = Datagram { destination: to.into(), payload: vec![i as u8; *size] };
        uplink.try_send(datagram).unwrap();
    }
    manager.new_packet_connection(
        inbound,
        Metadata::new(to.into()),
        Arc::new(DirectOutbound::default()),
        |_| {},
    );
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while let Ok(Ok((n, _))) = timeout(Duration::from_millis(500), receiver.recv_from(&mut buf)).await {
        got.push(n);
    }
    assert_eq!(got, sizes, "sizes of the datagrams received, in order");
}

// SOCKS UDP ASSOCIATE.

struct Proxy {
    _server: SocksServer,
    manager: Arc<ConnectionManager>,
}

async fn proxy() -> Proxy {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    Proxy { _server: server, manager }
}

/// Opens a UDP association for `client` (its address announced); returns the control
/// connection and the relay address.
async fn associate(proxy: &Proxy, client: &UdpSocket) -> (TcpStream, SocketAddr) {
    let mut control = TcpStream::connect(proxy._server.local_addr()).await.unwrap();
    let SocketAddr::V4(announced) = client.local_addr().unwrap() else { panic!("IPv4 only here") };
    let mut request = vec![5, 1, 0, 5, 3, 0, 1];
    request.extend_from_slice(&announced.ip().octets());
    request.extend_from_slice(&announced.port().to_be_bytes());
    control.write_all(&request).await.unwrap();
    let mut reply = [0u8; 12];
    timeout(WAIT, control.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply[..6], [5, 0, 5, 0, 0, 1], "method chosen, association open");
    let relay = SocketAddr::from((
        [reply[6], reply[7], reply[8], reply[9]],
        u16::from_be_bytes([reply[10], reply[11]]),
    ));
    (control, relay)
}

/// Sends `payload` to `destination` through the association; true when its echo comes back.
async fn echoed(client: &UdpSocket, relay: SocketAddr, destination: SocketAddr, payload: &[u8]) -> bool {
    let mut datagram = Vec::new();
    encode_udp_header(&destination.into(), &mut datagram).unwrap();
    datagram.extend_from_slice(payload);
    client.send_to(&datagram, relay).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let Ok(Ok((n, _))) = timeout(Duration::from_secs(2), client.recv_from(&mut buf)).await else {
        return false;
    };
    let (source, at) = parse_udp_header(&buf[..n]).unwrap();
    (source, &buf[at..n]) == (Destination::from(destination), payload)
}

/// When the manager shuts down (the host stops netswitch), an association can relay nothing
/// any more: it must end, and its client learn it from the control connection closing.
#[tokio::test]
async fn a_manager_shutdown_ends_the_association_and_closes_its_control_connection() {
    let proxy = proxy().await;
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut control, relay) = associate(&proxy, &client).await;
    assert!(echoed(&client, relay, server, b"before").await);
    proxy.manager.shutdown();
    let mut rest = Vec::new();
    let closed = timeout(Duration::from_secs(2), control.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the control connection stayed open after the manager shut down");
}

/// A network change closes every session (`close_all`); the association is not a session and
/// goes on: the client's next datagram opens a new session.
#[tokio::test]
async fn after_close_all_the_association_opens_new_sessions() {
    let proxy = proxy().await;
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, &client).await;
    assert!(echoed(&client, relay, server, b"before").await);
    let first = proxy.manager.list()[0].id;
    assert_eq!(proxy.manager.close_all(), 1);
    wait_until("the session to end", || proxy.manager.is_empty()).await;
    assert!(echoed(&client, relay, server, b"after").await);
    let sessions = proxy.manager.list();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].id, first);
}

/// Runs `body` on a thread of its own, in a new network namespace with only `lo` (up, with an
/// MTU of `mtu`), so nothing it binds is reachable from elsewhere; skips with the reason when the
/// namespace cannot be made.
fn in_namespace<F: std::future::Future<Output = ()>>(
    test: &str,
    mtu: u16,
    body: impl FnOnce() -> F + Send + 'static,
) {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only changes the calling thread's namespace (a thread of its own here).
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare(CLONE_NEWNET): {} (needs root)", std::io::Error::last_os_error()));
        }
        let mtu = mtu.to_string();
        let ip = std::process::Command::new("ip").args(["link", "set", "lo", "mtu", &mtu, "up"]).status();
        if !ip.is_ok_and(|status| status.success()) {
            return Err(format!("`ip link set lo mtu {mtu} up` failed"));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(body());
        Ok(())
    });
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => println!("skipped {test}: {reason}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Datagrams larger than the outgoing link's MTU are fragmented by the kernel when sent one by
/// one; several of one size queued together must be too, not dropped because a segmented (GSO)
/// send of them cannot be (EMSGSIZE).
#[test]
fn datagrams_over_the_link_mtu_queued_together_all_arrive() {
    // (As a tunnel or a cellular link may have.)
    in_namespace("datagrams_over_the_link_mtu_queued_together_all_arrive", 1280, || async {
        let manager = ConnectionManager::new(RelaySettings::default());
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let (tx, _replies) = mpsc::unbounded_channel();
        let (uplink, inbound) = PacketInbound::channel(Arc::new(ChannelSink(tx)), UdpTimeouts::default(), 64);
        // Queued before the session runs: the first goes alone, the other three in one batch.
        for i in 0..4u8 {
            uplink.try_send(Datagram { destination: to.into(), payload: vec![i; 1400] }).unwrap();
        }
        let id = manager.new_packet_connection(
            inbound,
            Metadata::new(to.into()),
            Arc::new(DirectOutbound::default()),
            |_| {},
        );
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Ok(Ok((n, _))) = timeout(Duration::from_millis(500), receiver.recv_from(&mut buf)).await {
            got.push((n, buf[0]));
        }
        let drops = manager.get(id).map(|c| c.drops);
        assert_eq!(got, [(1400, 0), (1400, 1), (1400, 2), (1400, 3)], "received; session drops {drops:?}");
    });
}

/// A connected session whose destination was closed for a while (ICMP port unreachable, then
/// ECONNREFUSED on the socket) goes on: the refusal costs at most one datagram, counted, and
/// the rest of a batch sent after it arrives.
#[tokio::test]
async fn a_refused_destination_neither_ends_a_connected_session_nor_loses_the_rest_of_a_batch() {
    let manager = ConnectionManager::new(RelaySettings::default());
    let to = UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (tx, _replies) = mpsc::unbounded_channel();
    let (uplink, inbound) = PacketInbound::channel(Arc::new(ChannelSink(tx)), UdpTimeouts::default(), 64);
    let mut metadata = Metadata::new(to.into());
    metadata.options.udp_connect = true;
    uplink.try_send(Datagram { destination: to.into(), payload: b"nobody".to_vec() }).unwrap();
    let id = manager.new_packet_connection(inbound, metadata, Arc::new(DirectOutbound::default()), |_| {});
    wait_until("the first datagram to go", || manager.get(id).is_some_and(|c| c.packets_up == 1)).await;
    // The port unreachable arrives; only then does the destination come back.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let receiver = UdpSocket::bind(to).await.unwrap();
    for i in 0..6u8 {
        uplink.try_send(Datagram { destination: to.into(), payload: vec![i; 100] }).unwrap();
    }
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while let Ok(Ok((n, _))) = timeout(Duration::from_millis(500), receiver.recv_from(&mut buf)).await {
        got.push(buf[..n].to_vec());
    }
    let info = manager.get(id).expect("the session goes on");
    println!("after the refusal: {} of 6 received, {} dropped", got.len(), info.drops);
    assert!(got.len() >= 5, "received {} of 6", got.len());
    assert_eq!(got.len() as u64 + info.drops, 6, "every datagram arrived or was counted");
    uplink.try_send(Datagram { destination: to.into(), payload: b"later".to_vec() }).unwrap();
    let (n, _) = timeout(WAIT, receiver.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"later");
}

/// A reply as large as UDP allows cannot carry the SOCKS header on top: it is dropped and
/// counted, and the association goes on. The largest request whose reply fits is relayed whole.
#[tokio::test]
async fn a_reply_too_large_for_the_socks_header_is_dropped_counted_and_the_association_goes_on() {
    let proxy = proxy().await;
    let echo = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    // Answers every datagram with one of 65,507 bytes (the IPv4 UDP maximum).
    let large = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let large_address = large.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = large.recv_from(&mut buf).await {
            let _ = large.send_to(&vec![9u8; 65_507], from).await;
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, &client).await;
    assert!(echoed(&client, relay, echo, &vec![1u8; 65_507 - 10]).await, "the largest IPv4 request");
    assert!(!echoed(&client, relay, large_address, b"give me 64 KiB").await);
    let session =
        proxy.manager.list().into_iter().find(|c| c.metadata.destination == large_address.into()).unwrap();
    assert_eq!((session.packets_down, session.drops), (0, 1));
    assert!(echoed(&client, relay, echo, b"still here").await);
}

/// The client half-closes its control connection (FIN, still reading): that ends the
/// association (RFC 1928: it lives as long as the TCP connection; netswitch reads the FIN as the
/// end), and the server closes its side so the client learns it.
#[tokio::test]
async fn a_half_closed_control_connection_ends_the_association() {
    let proxy = proxy().await;
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut control, relay) = associate(&proxy, &client).await;
    assert!(echoed(&client, relay, server, b"before").await);
    control.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, control.read_to_end(&mut rest)).await.expect("the server closes its side").unwrap();
    wait_until("the session to end", || proxy.manager.is_empty()).await;
    assert!(!echoed(&client, relay, server, b"after").await);
}

/// A server listening on `[::]` (dual-stack) reached over IPv4: the association's relay address
/// must be an IPv4 one, which an IPv4 client can send to, not `::ffff:a.b.c.d`.
#[test]
fn a_dual_stack_listener_gives_an_ipv4_client_an_ipv4_relay_address() {
    in_namespace("a_dual_stack_listener_gives_an_ipv4_client_an_ipv4_relay_address", 65_535, || async {
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let mut settings = SocksSettings::default();
        settings.listen = "[::]:0".parse().unwrap();
        settings.allow_non_loopback = true;
        settings.allow_unauthenticated_non_loopback = true;
        let server =
            SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
        let proxy = Proxy { _server: server, manager };
        let echo = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut control = TcpStream::connect(("127.0.0.1", proxy._server.local_addr().port())).await.unwrap();
        let SocketAddr::V4(announced) = client.local_addr().unwrap() else { unreachable!() };
        let mut request = vec![5, 1, 0, 5, 3, 0, 1];
        request.extend_from_slice(&announced.ip().octets());
        request.extend_from_slice(&announced.port().to_be_bytes());
        control.write_all(&request).await.unwrap();
        let mut head = [0u8; 6];
        timeout(WAIT, control.read_exact(&mut head)).await.unwrap().unwrap();
        assert_eq!(head[..5], [5, 0, 5, 0, 0], "method chosen, association open");
        assert_eq!(head[5], 1, "the relay address is IPv4 (ATYP 1), not {}", head[5]);
        let mut rest = [0u8; 6];
        control.read_exact(&mut rest).await.unwrap();
        let relay =
            SocketAddr::from(([rest[0], rest[1], rest[2], rest[3]], u16::from_be_bytes([rest[4], rest[5]])));
        assert!(echoed(&client, relay, echo, b"over IPv4").await);
    });
}

/// An unconnected session's socket takes datagrams from any host (endpoint-independent
/// filtering, as a full-cone NAT): a host the client never addressed reaches it, shown with its
/// own address, never as the destination the session was opened for.
#[tokio::test]
async fn a_datagram_from_another_host_reaches_the_client_under_its_own_address() {
    let proxy = proxy().await;
    // An echo server that also says which address the session sends from.
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_address = server.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let _ = seen_tx.send(from);
            let _ = server.send_to(&buf[..n], from).await;
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, &client).await;
    assert!(echoed(&client, relay, server_address, b"hello").await);
    let session_socket = seen.recv().await.unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.send_to(b"unsolicited", session_socket).await.unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = timeout(WAIT, client.recv_from(&mut buf)).await.expect("forwarded").unwrap();
    let (source, at) = parse_udp_header(&buf[..n]).unwrap();
    assert_eq!((source, &buf[at..n]), (Destination::from(other.local_addr().unwrap()), &b"unsolicited"[..]));
}

/// A datagram that arrives after its session was closed (the manager's `close`, a network
/// change) but before the session's task ended goes to a new session, instead of into the queue
/// of the closing one, where it was lost uncounted.
#[tokio::test]
async fn a_datagram_right_after_its_session_was_closed_opens_a_new_one() {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let table = table(&manager, 16);
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client: SocketAddr = "127.0.0.1:40102".parse().unwrap();
    let (tx, mut replies) = mpsc::unbounded_channel();
    let Dispatched::Queued { id, .. } = dispatch(&table, client, server, b"one", &tx) else { panic!() };
    timeout(WAIT, replies.recv()).await.unwrap().unwrap();
    assert!(manager.close(id));
    // At once: the closed session's task has not run since.
    match dispatch(&table, client, server, b"two", &tx) {
        Dispatched::Queued { id: new, created: true, .. } => assert_ne!(new, id),
        other => panic!("queued to the closing session: {other:?}"),
    }
    let (echo, _) =
        timeout(Duration::from_secs(2), replies.recv()).await.expect("the datagram was lost").unwrap();
    assert_eq!(echo, b"two");
    table.close_all();
}
