//! SOCKS5 UDP ASSOCIATE over loopback: a DNS-shaped query to a domain, 100,000 echoed datagrams
//! all accounted for, bad input (malformed headers, fragments, strangers, control close), the caps
//! on associations and outbound sockets, and associations under authentication.

mod common;

use common::{dns_query, udp_echo_server};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netswitch::inbound::socks::{SocksServer, SocksSettings, SocksUser};
use netswitch::socks5::{encode_udp_header, parse_udp_header};
use netswitch::tracker::TransportProtocol;
use netswitch::{ConnectionManager, Destination, DirectOutbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);

struct Proxy {
    server: SocksServer,
    manager: Arc<ConnectionManager>,
}

async fn proxy() -> Proxy {
    proxy_with(SocksSettings::default()).await
}

/// A proxy on 127.0.0.1 with `settings` (their listen address is replaced).
async fn proxy_with(mut settings: SocksSettings) -> Proxy {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    Proxy { server, manager }
}

/// Opens a control connection, asks for UDP ASSOCIATE announcing `announced`, returns it and the
/// relay address from the reply.
async fn associate(proxy: &Proxy, announced: SocketAddr) -> (TcpStream, SocketAddr) {
    match request_association(proxy, announced, None).await {
        (control, Ok(relay)) => (control, relay),
        (_, Err(code)) => panic!("UDP ASSOCIATE refused with reply {code:#04x}"),
    }
}

/// Asks for UDP ASSOCIATE announcing `announced`, authenticating with `user` when given; returns
/// the control connection and the relay address, or the reply code of a refusal.
async fn request_association(
    proxy: &Proxy,
    announced: SocketAddr,
    user: Option<(&str, &str)>,
) -> (TcpStream, Result<SocketAddr, u8>) {
    let mut control = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    let method = if user.is_some() { 2 } else { 0 };
    control.write_all(&[5, 1, method]).await.unwrap();
    let mut chosen = [0u8; 2];
    timeout(WAIT, control.read_exact(&mut chosen)).await.unwrap().unwrap();
    assert_eq!(chosen, [5, method]);
    if let Some((name, password)) = user {
        let mut credentials = vec![1, name.len() as u8];
        credentials.extend_from_slice(name.as_bytes());
        credentials.push(password.len() as u8);
        credentials.extend_from_slice(password.as_bytes());
        control.write_all(&credentials).await.unwrap();
        let mut status = [0u8; 2];
        timeout(WAIT, control.read_exact(&mut status)).await.unwrap().unwrap();
        assert_eq!(status, [1, 0], "authenticated");
    }
    let mut request = vec![5, 3, 0, 1];
    let IpAddr::V4(ip) = announced.ip() else { panic!("IPv4 only here") };
    request.extend_from_slice(&ip.octets());
    request.extend_from_slice(&announced.port().to_be_bytes());
    control.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    timeout(WAIT, control.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply[..2], [5, reply[1]]);
    if reply[1] != 0 {
        return (control, Err(reply[1]));
    }
    assert_eq!(reply[2..4], [0, 1], "success with an IPv4 relay address");
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    (control, Ok(relay))
}

/// Reads the control connection until the server closes it (it must, within WAIT).
async fn closed_by_server(control: &mut TcpStream) {
    let mut rest = Vec::new();
    timeout(WAIT, control.read_to_end(&mut rest))
        .await
        .expect("the server closes the control connection")
        .ok();
}

/// Sends `payload` to the echo server `destination` through the association and checks that the
/// echo comes back.
async fn echoed(client: &UdpSocket, relay: SocketAddr, destination: SocketAddr, payload: &[u8]) {
    client.send_to(&wrap(&destination.into(), payload), relay).await.unwrap();
    let (source, echo) = recv_wrapped(client, WAIT).await.expect("an echo");
    assert_eq!((source, echo.as_slice()), (Destination::from(destination), payload));
}

/// Sends `payload` to the echo server `destination` through the association and checks that
/// nothing comes back within a second.
async fn not_echoed(client: &UdpSocket, relay: SocketAddr, destination: SocketAddr, payload: &[u8]) {
    client.send_to(&wrap(&destination.into(), payload), relay).await.unwrap();
    let reply = recv_wrapped(client, Duration::from_secs(1)).await;
    assert!(reply.is_none(), "{payload:?} was answered: {reply:?}");
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn wrap(destination: &Destination, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    encode_udp_header(destination, &mut datagram).unwrap();
    datagram.extend_from_slice(payload);
    datagram
}

async fn recv_wrapped(socket: &UdpSocket, wait: Duration) -> Option<(Destination, Vec<u8>)> {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = timeout(wait, socket.recv_from(&mut buf)).await.ok()?.unwrap();
    let (source, at) = parse_udp_header(&buf[..n]).unwrap();
    Some((source, buf[at..n].to_vec()))
}

/// A DNS-shaped server on `ip`: answers each query with the query id and "answer:" + the question.
async fn dns_server(ip: IpAddr) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    let address = socket.local_addr().unwrap();
    let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = seen_tx.send(buf[..n].to_vec());
            let mut answer = buf[..2].to_vec();
            answer.extend_from_slice(&[0x81, 0x80]);
            answer.extend_from_slice(&buf[4..n]);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    (address, seen)
}

#[tokio::test]
async fn dns_query_to_a_domain_gets_the_reply_from_the_domain() {
    let proxy = proxy().await;
    // "localhost" is answered without a resolver (RFC 6761): ::1 and 127.0.0.1, the preferred
    // family (IPv6) first when the host has IPv6 loopback. The server listens on that address.
    let loopback: IpAddr = if std::net::UdpSocket::bind("[::1]:0").is_ok() {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let (server, mut seen) = dns_server(loopback).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, client.local_addr().unwrap()).await;
    let destination = Destination::domain("localhost", server.port());
    let query = dns_query(0x1234, "example.test");
    client.send_to(&wrap(&destination, &query), relay).await.unwrap();
    let (source, answer) = recv_wrapped(&client, WAIT).await.expect("a DNS answer");
    assert_eq!(timeout(WAIT, seen.recv()).await.unwrap().unwrap(), query, "the server got the query as sent");
    assert_eq!(source, destination, "the reply carries the domain the client asked for");
    assert_eq!(answer[..4], [0x12, 0x34, 0x81, 0x80]);
    let session = proxy.manager.list().into_iter().find(|c| c.protocol == TransportProtocol::Udp).unwrap();
    assert_eq!(session.udp_timeout, Some(Duration::from_secs(10)), "recognised as DNS");
    assert_eq!((session.packets_up, session.packets_down), (1, 1));
}

#[tokio::test]
async fn ip_destinations_v4_and_v6_are_relayed() {
    let proxy = proxy().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, "0.0.0.0:0".parse().unwrap()).await;
    let v4 = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let mut destinations = vec![Destination::from(v4)];
    if let Ok(socket) = std::net::UdpSocket::bind("[::1]:0") {
        drop(socket);
        destinations.push(udp_echo_server("::1".parse().unwrap()).await.into());
    }
    for destination in destinations {
        client.send_to(&wrap(&destination, b"ping"), relay).await.unwrap();
        let (source, payload) = recv_wrapped(&client, WAIT).await.expect("an echo");
        assert_eq!((source, payload.as_slice()), (destination, &b"ping"[..]));
    }
}

/// Sends `count` datagrams of `size` bytes in windows and returns (received, drops counted by
/// the proxy for this association's session).
async fn echo_many(proxy: &Proxy, count: u32, size: usize) -> (u64, u64) {
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(proxy, client.local_addr().unwrap()).await;
    let destination = Destination::from(server);
    let mut datagram = wrap(&destination, &vec![0xA5; size]);
    let header = datagram.len() - size;
    let mut seen = vec![false; count as usize];
    let mut received = 0u64;
    let mut buf = vec![0u8; 65_536];
    const WINDOW: u32 = 32;
    let mut next = 0u32;
    let mut drops = 0u64;
    while next < count {
        let batch = WINDOW.min(count - next);
        for seq in next..next + batch {
            datagram[header..header + 4].copy_from_slice(&seq.to_be_bytes());
            client.send_to(&datagram, relay).await.unwrap();
        }
        next += batch;
        let mut got = 0;
        while got < batch {
            match timeout(Duration::from_secs(1), client.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => {
                    let (source, at) = parse_udp_header(&buf[..n]).unwrap();
                    assert_eq!(source, destination);
                    assert_eq!(n - at, size);
                    let seq = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                    assert!(!seen[seq], "datagram {seq} echoed twice");
                    seen[seq] = true;
                    received += 1;
                    got += 1;
                }
                _ => break,
            }
        }
        if got < batch {
            // Some of this window did not come back: they must be counted as drops.
            drops = udp_drops(proxy);
            assert_eq!(received + drops, u64::from(next), "a datagram was lost without being counted");
        }
    }
    drops = drops.max(udp_drops(proxy));
    (received, drops)
}

fn udp_drops(proxy: &Proxy) -> u64 {
    proxy.manager.list().iter().filter(|c| c.protocol == TransportProtocol::Udp).map(|c| c.drops).sum()
}

#[tokio::test]
async fn a_hundred_thousand_echoed_datagrams_are_all_accounted_for() {
    for size in [64, 1200] {
        let proxy = proxy().await;
        let (received, drops) = echo_many(&proxy, 100_000, size).await;
        assert_eq!(received + drops, 100_000, "size {size}: received {received}, drops {drops}");
        eprintln!("size {size}: received {received}, counted drops {drops}");
    }
}

#[tokio::test]
async fn bad_input_is_dropped_and_the_association_goes_on() {
    let proxy = proxy().await;
    let (server, mut seen) = dns_server(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, client.local_addr().unwrap()).await;
    let destination = Destination::from(server);
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A stranger (another port than the one announced) is ignored, even with a valid header.
    stranger.send_to(&wrap(&destination, b"stranger"), relay).await.unwrap();
    let mut fragment = wrap(&destination, b"fragment");
    fragment[2] = 1;
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0, 0],
        vec![0, 0, 0, 9, 1, 2, 3, 4, 0, 53],
        vec![0, 0, 0, 1, 127, 0, 0],
        vec![0, 0, 0, 3, 0, 0, 53],
        vec![0, 0, 0, 3, 2, 0xff, 0xfe, 0, 53],
        vec![0, 0, 0, 1, 127, 0, 0, 1, 0, 0, b'x'],
        fragment,
    ];
    for datagram in &bad {
        client.send_to(datagram, relay).await.unwrap();
    }
    client.send_to(&wrap(&destination, &dns_query(7, "ok.test")), relay).await.unwrap();
    let (source, answer) = recv_wrapped(&client, WAIT).await.expect("the good query is answered");
    assert_eq!((source, &answer[..2]), (destination, &[0, 7][..]));
    assert_eq!(
        timeout(WAIT, seen.recv()).await.unwrap().unwrap(),
        dns_query(7, "ok.test"),
        "only the good query"
    );
    assert!(seen.try_recv().is_err(), "nothing else reached the server");
    assert!(recv_wrapped(&stranger, Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn the_association_ends_with_its_control_connection() {
    let proxy = proxy().await;
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (control, relay) = associate(&proxy, "0.0.0.0:0".parse().unwrap()).await;
    for _ in 0..3 {
        client.send_to(&wrap(&server.into(), b"live"), relay).await.unwrap();
        assert!(recv_wrapped(&client, WAIT).await.is_some());
    }
    assert_eq!(proxy.manager.len(), 1);
    drop(control);
    let deadline = Instant::now() + WAIT;
    while !proxy.manager.is_empty() {
        assert!(Instant::now() < deadline, "the session outlived its control connection");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The relay socket is gone with the association: nothing answers any more.
    client.send_to(&wrap(&server.into(), b"late"), relay).await.ok();
    assert!(recv_wrapped(&client, Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn bind_is_still_refused() {
    let proxy = proxy().await;
    let mut control = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    control.write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await.unwrap();
    let mut reply = [0u8; 12];
    timeout(WAIT, control.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply[2..4], [5, 7]);
}

#[tokio::test]
async fn past_the_association_cap_requests_are_refused_counted_and_the_others_keep_working() {
    let mut settings = SocksSettings::default();
    settings.udp.max_associations = 3;
    let proxy = proxy_with(settings).await;
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (control, relay) = associate(&proxy, client.local_addr().unwrap()).await;
        open.push((client, control, relay));
    }
    let limits = proxy.server.udp_limits();
    assert_eq!((limits.associations.in_use(), limits.associations.refused()), (3, 0));
    for _ in 0..2 {
        let late = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (mut control, outcome) = request_association(&proxy, late.local_addr().unwrap(), None).await;
        assert_eq!(outcome, Err(1), "general SOCKS server failure past the cap");
        closed_by_server(&mut control).await;
    }
    assert_eq!((limits.associations.in_use(), limits.associations.refused()), (3, 2));
    for (client, _, relay) in &open {
        echoed(client, *relay, server, b"still here").await;
    }
    // One association ends: its place is free again.
    let (_, control, _) = open.remove(0);
    drop(control);
    wait_until("the closed association to give its place back", || limits.associations.in_use() == 2).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, client.local_addr().unwrap()).await;
    echoed(&client, relay, server, b"new").await;
    assert_eq!(limits.associations.refused(), 2);
}

#[tokio::test]
async fn past_the_socket_cap_new_destinations_are_dropped_counted_and_the_others_keep_working() {
    let mut settings = SocksSettings::default();
    settings.udp.max_sockets = 2;
    let proxy = proxy_with(settings).await;
    let servers = [
        udp_echo_server(Ipv4Addr::LOCALHOST.into()).await,
        udp_echo_server(Ipv4Addr::LOCALHOST.into()).await,
        udp_echo_server(Ipv4Addr::LOCALHOST.into()).await,
    ];
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (first_control, first_relay) = associate(&proxy, first.local_addr().unwrap()).await;
    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_second_control, second_relay) = associate(&proxy, second.local_addr().unwrap()).await;
    // Two sessions, one per association: the budget is spent.
    echoed(&first, first_relay, servers[0], b"a").await;
    echoed(&second, second_relay, servers[1], b"b").await;
    let limits = proxy.server.udp_limits();
    assert_eq!((limits.sockets.in_use(), limits.sockets.refused()), (2, 0));
    // A new destination needs a new socket, in either association: dropped and counted.
    not_echoed(&first, first_relay, servers[2], b"c").await;
    not_echoed(&second, second_relay, servers[0], b"d").await;
    assert_eq!((limits.sockets.in_use(), limits.sockets.refused()), (2, 2));
    assert_eq!(proxy.manager.len(), 2);
    // The existing sessions go on.
    echoed(&first, first_relay, servers[0], b"e").await;
    echoed(&second, second_relay, servers[1], b"f").await;
    // When the first association ends, its socket goes back to the budget.
    drop(first_control);
    wait_until("the first association's session to end", || limits.sockets.in_use() == 1).await;
    echoed(&second, second_relay, servers[2], b"g").await;
    assert_eq!((limits.sockets.in_use(), limits.sockets.refused()), (2, 2));
}

fn with_user() -> SocksSettings {
    let mut settings = SocksSettings::default();
    settings.users = vec![SocksUser { username: "user".into(), password: "secret".into() }];
    settings
}

#[tokio::test]
async fn under_auth_an_association_announcing_port_zero_is_refused() {
    let proxy = proxy_with(with_user()).await;
    for announced in ["0.0.0.0:0", "127.0.0.1:0"] {
        let (mut control, outcome) =
            request_association(&proxy, announced.parse().unwrap(), Some(("user", "secret"))).await;
        assert_eq!(outcome, Err(2), "announcing {announced}: connection not allowed by ruleset");
        closed_by_server(&mut control).await;
    }
    assert_eq!(proxy.server.udp_limits().associations.in_use(), 0);
    // Without users, port 0 is still accepted (any local process could open its own anyway).
    let open = proxy_with(SocksSettings::default()).await;
    let (_control, outcome) = request_association(&open, "0.0.0.0:0".parse().unwrap(), None).await;
    assert!(outcome.is_ok());
}

#[tokio::test]
async fn under_auth_a_local_socket_sending_first_cannot_take_the_association_over() {
    let proxy = proxy_with(with_user()).await;
    let server = udp_echo_server(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // The client announces its port, with the IP left unspecified (the control connection's).
    let announced = SocketAddr::from(([0, 0, 0, 0], client.local_addr().unwrap().port()));
    let (_control, outcome) = request_association(&proxy, announced, Some(("user", "secret"))).await;
    let relay = outcome.expect("an association announcing its port is accepted");
    // An unauthenticated local socket sends first, as the client would.
    let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    not_echoed(&intruder, relay, server, b"intruder").await;
    // The real client is served, and its replies reach it only.
    echoed(&client, relay, server, b"mine").await;
    not_echoed(&intruder, relay, server, b"again").await;
    assert!(
        recv_wrapped(&intruder, Duration::from_millis(300)).await.is_none(),
        "no reply leaked to the intruder"
    );
    echoed(&client, relay, server, b"still mine").await;
}
