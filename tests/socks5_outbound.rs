//! The lazy upstream SOCKS5 outbound and the kick, over loopback: chained to a second netswitch
//! SOCKS ingress (echo round trip, server-speaks-first banner after the kick's wait), early data
//! in the same write as the handshake (seen by a raw upstream), refusals reported with the
//! right SOCKS code and on_close exactly once, the upstream's reply code passed on to a SOCKS
//! client unchanged, and composition (DESIGN decision 12): the socket to the upstream goes
//! through the inner outbound, so the platform binder sees it and the tracker shows its network.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use netswitch::client::{ClientStream, InboundHandshake};
use netswitch::dial::socks5::Socks5Outbound;
use netswitch::dial::{AttemptError, BoxFuture, DialError, FailureKind};
use netswitch::inbound::socks::{SocksServer, SocksSettings};
use netswitch::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::platform::{BindError, SimulatedBinder, SocketBinder};
use netswitch::socks5::{self, Parsed};
use netswitch::{
    ConnectionError, ConnectionManager, Destination, DirectOutbound, Inbound, Metadata, Outbound,
    RelaySettings,
};
use socket2::Socket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A second netswitch acting as the upstream SOCKS5 server (direct outbound).
async fn upstream() -> (SocksServer, Arc<ConnectionManager>) {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    (server, manager)
}

/// An outbound through the SOCKS5 server at `server`, reaching it with a direct outbound on the
/// system route.
fn socks5(server: SocketAddr) -> Arc<Socks5Outbound> {
    Arc::new(Socks5Outbound::new(server, None, Arc::new(DirectOutbound::new(Duration::from_secs(5)))))
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_through_a_chained_netswitch() {
    let (up, _up_manager) = upstream().await;
    let echo = echo_server().await;
    let mut h = Harness::new(RelaySettings::default()).await;
    let (mut client, _) = h.connect_via(Metadata::new(echo.into()), socks5(up.local_addr())).await;
    client.write_all(b"ping through two hops").await.unwrap();
    let mut got = [0u8; 21];
    timeout(WAIT, client.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"ping through two hops");
    send_pattern(&mut client, 5, 1024 * 1024).await.unwrap();
    client.shutdown().await.unwrap();
    let n = timeout(WAIT, expect_pattern(&mut client, 5)).await.unwrap().unwrap();
    assert_eq!(n, 1024 * 1024);
    let closed = h.next_closed().await;
    assert!(closed.error.is_none(), "{:?}", closed.error);
    assert_eq!(closed.bytes_up, 21 + 1024 * 1024);
    h.assert_no_more_closed().await;
}

/// A raw upstream that records its first read, then answers like a SOCKS5 server and echoes.
async fn raw_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut first = vec![0u8; 4096];
        let n = s.read(&mut first).await.unwrap();
        first.truncate(n);
        let request_len = 3 + 10; // greeting (no auth) + IPv4 CONNECT request
        let payload = first[request_len.min(n)..].to_vec();
        let _ = tx.send(first);
        s.write_all(&[5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0, 9]).await.unwrap();
        s.write_all(&payload).await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    (address, rx)
}

fn expected_request(destination: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = destination else { panic!("IPv4 expected") };
    let mut request = vec![5, 1, 0, 5, 1, 0, 1];
    request.extend_from_slice(&v4.ip().octets());
    request.extend_from_slice(&v4.port().to_be_bytes());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_early_data_rides_in_the_handshake_write() {
    let (upstream_addr, mut first_reads) = raw_upstream().await;
    let destination: SocketAddr = "127.0.0.1:4242".parse().unwrap();
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
    let (accepted, _) = front.accept().await.unwrap();
    let manager = ConnectionManager::new(RelaySettings::default());
    let (tx, mut closed) = mpsc::unbounded_channel();
    let inbound = Inbound { stream: accepted.into(), early_data: b"EARLY".to_vec(), handshake: None };
    manager.new_connection(inbound, Metadata::new(destination.into()), socks5(upstream_addr), move |c| {
        let _ = tx.send(c);
    });
    let first = timeout(WAIT, first_reads.recv()).await.unwrap().unwrap();
    let mut expected = expected_request(destination);
    expected.extend_from_slice(b"EARLY");
    assert_eq!(first, expected, "greeting + request + early data in the upstream's first read");
    let mut echoed = [0u8; 5];
    timeout(WAIT, client.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"EARLY", "nothing of the reply leaked into the payload");
    client.write_all(b"more").await.unwrap();
    let mut more = [0u8; 4];
    timeout(WAIT, client.read_exact(&mut more)).await.unwrap().unwrap();
    assert_eq!(&more, b"more");
    drop(client);
    let report = timeout(WAIT, closed.recv()).await.unwrap().unwrap();
    assert_eq!(report.bytes_up, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kick_carries_the_clients_first_bytes() {
    let (upstream_addr, mut first_reads) = raw_upstream().await;
    let destination: SocketAddr = "127.0.0.1:4243".parse().unwrap();
    let mut h = Harness::new(RelaySettings::default()).await;
    let (mut client, _) = h.connect_via(Metadata::new(destination.into()), socks5(upstream_addr)).await;
    client.write_all(b"first").await.unwrap();
    let first = timeout(WAIT, first_reads.recv()).await.unwrap().unwrap();
    let mut expected = expected_request(destination);
    expected.extend_from_slice(b"first");
    assert_eq!(first, expected);
    let mut echoed = [0u8; 5];
    timeout(WAIT, client.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"first");
    drop(client);
    assert!(h.next_closed().await.bytes_up == 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_banner_arrives_after_the_kick_wait() {
    let (up, _up_manager) = upstream().await;
    let banner_server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let banner_addr = banner_server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = banner_server.accept().await.unwrap();
        s.write_all(b"220 smtp.example ESMTP ready\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let mut h = Harness::new(RelaySettings::default()).await;
    let started = Instant::now();
    let (mut client, _) = h.connect_via(Metadata::new(banner_addr.into()), socks5(up.local_addr())).await;
    let mut banner = [0u8; 30];
    timeout(WAIT, client.read_exact(&mut banner)).await.unwrap().unwrap();
    assert_eq!(&banner, b"220 smtp.example ESMTP ready\r\n");
    assert!(started.elapsed() >= Duration::from_millis(300), "the kick waits 300 ms for client bytes first");
    drop(client);
    let closed = h.next_closed().await;
    assert_eq!(closed.bytes_down, 30);
}

/// An ingress reply that records which outcome the manager reported.
struct RecordingReply(mpsc::UnboundedSender<Result<(), FailureKind>>);

impl InboundHandshake for RecordingReply {
    fn succeed<'a>(&'a mut self, _: &'a ClientStream, _: SocketAddr) -> BoxFuture<'a, io::Result<()>> {
        let _ = self.0.send(Ok(()));
        Box::pin(async { Ok(()) })
    }

    fn fail<'a>(&'a mut self, _: &'a ClientStream, error: &'a DialError) -> BoxFuture<'a, io::Result<()>> {
        let _ = self.0.send(Err(error.kind()));
        Box::pin(async { Ok(()) })
    }
}

/// Runs one connection with a recording reply; returns the replies and the on_close reports.
async fn refused_case(
    outbound: Arc<Socks5Outbound>,
    destination: SocketAddr,
    early: &[u8],
) -> (Vec<Result<(), FailureKind>>, Vec<netswitch::ClosedConnection>) {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
    let (accepted, _) = front.accept().await.unwrap();
    let manager = ConnectionManager::new(RelaySettings::default());
    let (reply_tx, mut replies) = mpsc::unbounded_channel();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let inbound = Inbound {
        stream: accepted.into(),
        early_data: early.to_vec(),
        handshake: Some(Box::new(RecordingReply(reply_tx))),
    };
    manager.new_connection(inbound, Metadata::new(destination.into()), outbound, move |c| {
        let _ = closed_tx.send(c);
    });
    let first = timeout(WAIT, closed.recv()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut reports = vec![first];
    while let Ok(more) = closed.try_recv() {
        reports.push(more);
    }
    let mut seen = Vec::new();
    while let Ok(reply) = replies.try_recv() {
        seen.push(reply);
    }
    drop(client);
    (seen, reports)
}

fn dial_kind(report: &netswitch::ClosedConnection) -> FailureKind {
    match error_of(report) {
        ConnectionError::Dial(e) => e.kind(),
        other => panic!("expected a dial error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_and_destination_are_reported_once() {
    // The upstream SOCKS server itself refuses.
    let (replies, reports) =
        refused_case(socks5(closed_port().await), "127.0.0.1:9".parse().unwrap(), b"").await;
    assert_eq!(replies, [Err(FailureKind::Refused)]);
    assert_eq!(reports.len(), 1);
    assert_eq!(dial_kind(&reports[0]), FailureKind::Refused);
    // The upstream answers 0x05 for the destination; the early data lets the reply wait for it.
    let (up, _up_manager) = upstream().await;
    let (replies, reports) = refused_case(socks5(up.local_addr()), closed_port().await, b"hello").await;
    assert_eq!(replies, [Err(FailureKind::Refused)]);
    assert_eq!(reports.len(), 1);
    assert_eq!(dial_kind(&reports[0]), FailureKind::Refused);
    // Without early data the client was already told "connected": the refusal closes it and
    // still reaches on_close, once.
    let (replies, reports) = refused_case(socks5(up.local_addr()), closed_port().await, b"").await;
    assert_eq!(replies, [Ok(())]);
    assert_eq!(reports.len(), 1);
    assert_eq!(dial_kind(&reports[0]), FailureKind::Refused);
}

/// End to end through a netswitch SOCKS ingress: the client sends its request and first bytes
/// together and gets reply 0x05 when the upstream's destination refuses, 0x05 as well when the
/// upstream itself is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_client_gets_the_refusal_code() {
    let (up, _up_manager) = upstream().await;
    for upstream_addr in [up.local_addr(), closed_port().await] {
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let mut settings = SocksSettings::default();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let front = SocksServer::start(settings, manager.clone(), socks5(upstream_addr)).await.unwrap();
        let refused = closed_port().await;
        let SocketAddr::V4(v4) = refused else { unreachable!() };
        let mut client = TcpStream::connect(front.local_addr()).await.unwrap();
        let mut message = vec![5, 1, 0, 5, 1, 0, 1];
        message.extend_from_slice(&v4.ip().octets());
        message.extend_from_slice(&v4.port().to_be_bytes());
        message.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        client.write_all(&message).await.unwrap();
        let mut replies = [0u8; 12];
        timeout(WAIT, client.read_exact(&mut replies)).await.unwrap().unwrap();
        assert_eq!(&replies[..2], &[5, 0], "method choice");
        assert_eq!(&replies[2..4], &[5, 0x05], "reply code for upstream {upstream_addr}");
        let deadline = Instant::now() + WAIT;
        while !manager.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(manager.is_empty());
    }
}

/// Reads a client's greeting and CONNECT request (the first bytes may carry payload behind them);
/// returns the bytes that followed the request. Parsed with the codec, as a server would.
async fn read_greeting_and_request(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut received = Vec::new();
    loop {
        if let Ok(Parsed::Complete(_, greeting)) = socks5::parse_greeting(&received) {
            if let Ok(Parsed::Complete(_, request)) = socks5::parse_request(&received[greeting..]) {
                return Ok(received[greeting + request..].to_vec());
            }
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&chunk[..n]);
    }
}

/// A raw upstream that answers every CONNECT with `answer` (method choice and reply, plus
/// anything else in the same write) and then echoes; reports each client's address.
async fn scripted_upstream(answer: Vec<u8>) -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, peers) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let _ = tx.send(peer);
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(payload) = read_greeting_and_request(&mut s).await else { return };
                s.write_all(&answer).await.unwrap();
                s.write_all(&payload).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (address, peers)
}

/// Method choice "no authentication" and a reply with `code`.
fn answer(code: u8) -> Vec<u8> {
    let mut answer = socks5::encode_method_choice(socks5::METHOD_NO_AUTH).to_vec();
    answer.extend_from_slice(&socks5::encode_reply(code.into(), socks5::UNSPECIFIED_BOUND));
    answer
}

/// Every failure code an upstream answers reaches a SOCKS client in front unchanged (0x02 "not
/// allowed" included), through `DialError::ProxyRefused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_reply_code_reaches_the_socks_client_unchanged() {
    for code in 0x01..=0x08u8 {
        let (upstream_addr, _) = scripted_upstream(answer(code)).await;
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let mut settings = SocksSettings::default();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let front = SocksServer::start(settings, manager.clone(), socks5(upstream_addr)).await.unwrap();
        let mut client = TcpStream::connect(front.local_addr()).await.unwrap();
        let mut message = vec![5, 1, 0];
        socks5::encode_request(
            socks5::Command::Connect,
            &Destination::domain("a..invalid", 80),
            &mut message,
        )
        .unwrap();
        message.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        client.write_all(&message).await.unwrap();
        let mut replies = [0u8; 12];
        timeout(WAIT, client.read_exact(&mut replies)).await.unwrap().unwrap();
        assert_eq!(&replies[..2], &[5, 0], "method choice");
        assert_eq!(&replies[2..4], &[5, code], "the upstream's code {code:#04x}");
    }
}

/// A bound address given as a domain, with payload right behind the reply in the same segment:
/// the handshake reads the reply exactly and the payload reaches the client whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_bound_address_is_read_exactly() {
    let mut answer = socks5::encode_method_choice(socks5::METHOD_NO_AUTH).to_vec();
    answer.extend_from_slice(b"\x05\x00\x00\x03\x0aproxy.test\x04\x38");
    answer.extend_from_slice(b"BANNER");
    let (upstream_addr, _) = scripted_upstream(answer).await;
    let h = Harness::new(RelaySettings::default()).await;
    let (mut client, _) =
        h.connect_via(Metadata::new(Destination::domain("a..invalid", 25)), socks5(upstream_addr)).await;
    client.write_all(b"HELO").await.unwrap();
    let mut got = [0u8; 10];
    timeout(WAIT, client.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"BANNERHELO", "nothing of the reply leaked, nothing of the payload lost");
}

const WIFI: u32 = 2;
const CELL: u32 = 3;

/// wifi0 (127.0.0.2, the default) and cell0 (127.0.0.3): simulated networks on loopback.
fn networks() -> InterfaceSnapshot {
    let interface = |name: &str, index: u32, kind| {
        NetworkInterface::new(name, index, kind).with_address(IpAddr::from([127, 0, 0, index as u8]), 8)
    };
    let interfaces =
        vec![interface("wifi0", WIFI, NetworkType::Wifi), interface("cell0", CELL, NetworkType::Cellular)];
    InterfaceSnapshot::new(interfaces, Some(WIFI)).unwrap()
}

/// The simulated binder, recording every socket offered to it: (protect or bind, interface,
/// destination).
#[derive(Debug, Default)]
struct RecordingBinder {
    simulated: SimulatedBinder,
    offered: Mutex<Vec<(&'static str, String, SocketAddr)>>,
}

impl RecordingBinder {
    fn record(&self, action: &'static str, interface: &NetworkInterface, destination: SocketAddr) {
        self.offered.lock().unwrap().push((action, interface.name.clone(), destination));
    }

    fn take(&self) -> Vec<(&'static str, String, SocketAddr)> {
        std::mem::take(&mut *self.offered.lock().unwrap())
    }
}

impl SocketBinder for RecordingBinder {
    fn protect(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        self.record("protect", interface, destination);
        self.simulated.protect(socket, interface, destination)
    }

    fn bind_to_interface(
        &self,
        socket: &Socket,
        interface: &NetworkInterface,
        destination: SocketAddr,
    ) -> Result<(), BindError> {
        self.record("bind", interface, destination);
        self.simulated.bind_to_interface(socket, interface, destination)
    }

    fn networks_on_loopback(&self) -> bool {
        true
    }
}

/// A harness on the simulated networks, and a SOCKS5 outbound to `server` whose inner outbound is
/// the strategy-aware direct one with the recording binder.
async fn platform_world(server: SocketAddr) -> (Harness, Arc<RecordingBinder>, Arc<dyn Outbound>) {
    let h = Harness::new(RelaySettings::default()).await;
    h.manager.update_interfaces(networks());
    let binder = Arc::new(RecordingBinder::default());
    let direct = DirectOutbound::default().with_networks(h.manager.networks().clone(), binder.clone());
    let outbound: Arc<dyn Outbound> = Arc::new(Socks5Outbound::new(server, None, Arc::new(direct)));
    (h, binder, outbound)
}

/// Waits for the echo of `bytes` through the relay.
async fn round_trip(client: &mut TcpStream, bytes: &[u8]) {
    client.write_all(bytes).await.unwrap();
    let mut echoed = vec![0u8; bytes.len()];
    timeout(WAIT, client.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(echoed, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_socket_goes_through_the_platform_binder_and_the_tracker_shows_its_network() {
    let (upstream_addr, mut peers) = scripted_upstream(answer(0x00)).await;
    let (h, binder, outbound) = platform_world(upstream_addr).await;
    let metadata = Metadata::new(Destination::domain("a..invalid", 443));

    // The default network: protected (not bound), and the upstream sees wifi0's address.
    let (mut client, id) = h.connect_via(metadata.clone(), outbound.clone()).await;
    round_trip(&mut client, b"over wifi").await;
    assert_eq!(binder.take(), [("protect", "wifi0".to_string(), upstream_addr)]);
    assert_eq!(timeout(WAIT, peers.recv()).await.unwrap().unwrap().ip(), IpAddr::from([127, 0, 0, 2]));
    let egress = h.manager.get(id).expect("tracked").egress;
    assert_eq!((egress.interface.as_deref(), egress.network_type), (Some("wifi0"), Some(NetworkType::Wifi)));

    // A per-connection network override reaches the dial to the upstream.
    let mut on_cell = metadata;
    on_cell.options.network_type = Some(vec![NetworkType::Cellular]);
    let (mut client, id) = h.connect_via(on_cell, outbound).await;
    round_trip(&mut client, b"over cellular").await;
    assert_eq!(binder.take(), [("bind", "cell0".to_string(), upstream_addr)]);
    assert_eq!(timeout(WAIT, peers.recv()).await.unwrap().unwrap().ip(), IpAddr::from([127, 0, 0, 3]));
    let egress = h.manager.get(id).expect("tracked").egress;
    assert_eq!(
        (egress.interface.as_deref(), egress.network_type),
        (Some("cell0"), Some(NetworkType::Cellular))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binder_failure_fails_the_dial_and_nothing_reaches_the_upstream() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    upstream.set_nonblocking(true).unwrap();
    let (mut h, binder, outbound) = platform_world(upstream.local_addr().unwrap()).await;
    binder.simulated.set_failing(WIFI, true);
    let (_client, _) = h.connect_via(Metadata::new(Destination::domain("a..invalid", 443)), outbound).await;
    let closed = h.next_closed().await;
    match error_of(&closed) {
        ConnectionError::Dial(DialError::Connect { attempts, .. }) => {
            assert_eq!(attempts.len(), 1, "{attempts:?}");
            assert_eq!(attempts[0].address, Some(upstream.local_addr().unwrap()));
            assert!(
                matches!(&attempts[0].error, AttemptError::Bind(e) if e.interface() == "wifi0"),
                "{attempts:?}"
            );
        }
        other => panic!("expected the bind failure, got {other}"),
    }
    assert_eq!(binder.take(), [("protect", "wifi0".to_string(), upstream.local_addr().unwrap())]);
    let accepted = upstream.accept().map(|(_, peer)| peer);
    assert!(
        matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "no unbound socket reached the upstream: {accepted:?}"
    );
}

/// Two netswitch SOCKS servers in a row (the outer outbound reaches the second through an
/// outbound that goes through the first): bytes flow end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbounds_chain_through_two_upstreams() {
    let (first, _first_manager) = upstream().await;
    let (second, _second_manager) = upstream().await;
    let echo = echo_server().await;
    let through_first: Arc<dyn Outbound> = socks5(first.local_addr());
    let chained = Arc::new(Socks5Outbound::new(second.local_addr(), None, through_first));
    let mut h = Harness::new(RelaySettings::default()).await;
    let (mut client, _) = h.connect_via(Metadata::new(echo.into()), chained).await;
    round_trip(&mut client, b"through two hops").await;
    drop(client);
    let closed = h.next_closed().await;
    assert!(closed.error.is_none(), "{:?}", closed.error);
    assert_eq!(closed.bytes_up, 16);
}

/// A chain of two SOCKS5 outbounds: the first upstream's first read holds both greetings and
/// requests (to the second upstream, then to the destination) and the client's first bytes.
/// The raw upstream answers for both hops, then echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_two_handshakes_leaves_in_one_write() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first = listener.local_addr().unwrap();
    let second: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let destination: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let (tx, mut first_reads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut first_read = vec![0u8; 4096];
        let n = s.read(&mut first_read).await.unwrap();
        first_read.truncate(n);
        let _ = tx.send(first_read);
        s.write_all(&[answer(0x00), answer(0x00)].concat()).await.unwrap();
        s.write_all(b"first").await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let through_first: Arc<dyn Outbound> = socks5(first);
    let chained = Arc::new(Socks5Outbound::new(second, None, through_first));
    let h = Harness::new(RelaySettings::default()).await;
    let (mut client, _) = h.connect_via(Metadata::new(destination.into()), chained).await;
    client.write_all(b"first").await.unwrap();
    let mut expected = expected_request(second);
    expected.extend_from_slice(&expected_request(destination));
    expected.extend_from_slice(b"first");
    assert_eq!(timeout(WAIT, first_reads.recv()).await.unwrap().unwrap(), expected);
    let mut echoed = [0u8; 5];
    timeout(WAIT, client.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"first", "both replies were read exactly");
    round_trip(&mut client, b"more").await;
}
