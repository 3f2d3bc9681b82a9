//! SOCKS5 UDP ASSOCIATE over loopback: a DNS-shaped query to a domain, 100,000 echoed datagrams
//! all accounted for, and bad input (malformed headers, fragments, strangers, control close).

mod common;

use common::{dns_query, udp_echo_server};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netswitch::inbound::socks::udp::{encode_udp_header, parse_udp_header};
use netswitch::inbound::socks::{SocksServer, SocksSettings};
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
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let settings = SocksSettings { listen: "127.0.0.1:0".parse().unwrap(), ..SocksSettings::default() };
    let server =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    Proxy { server, manager }
}

/// Opens a control connection, asks for UDP ASSOCIATE announcing `announced`, returns it and the
/// relay address from the reply.
async fn associate(proxy: &Proxy, announced: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut control = TcpStream::connect(proxy.server.local_addr()).await.unwrap();
    control.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    timeout(WAIT, control.read_exact(&mut method)).await.unwrap().unwrap();
    assert_eq!(method, [5, 0]);
    let mut request = vec![5, 3, 0, 1];
    let IpAddr::V4(ip) = announced.ip() else { panic!("IPv4 only here") };
    request.extend_from_slice(&ip.octets());
    request.extend_from_slice(&announced.port().to_be_bytes());
    control.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    timeout(WAIT, control.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply[..4], [5, 0, 0, 1], "success with an IPv4 relay address");
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    (control, relay)
}

fn wrap(destination: &Destination, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    encode_udp_header(destination, &mut datagram);
    datagram.extend_from_slice(payload);
    datagram
}

async fn recv_wrapped(socket: &UdpSocket, wait: Duration) -> Option<(Destination, Vec<u8>)> {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = timeout(wait, socket.recv_from(&mut buf)).await.ok()?.unwrap();
    let (source, at) = parse_udp_header(&buf[..n]).unwrap();
    Some((source, buf[at..n].to_vec()))
}

/// A DNS-shaped server: answers each query with the query id and "answer:" + the question.
async fn dns_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
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
    let (server, mut seen) = dns_server().await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(&proxy, client.local_addr().unwrap()).await;
    // "localhost" is resolved by the system resolver (hosts file); the SOCKS ingress has no
    // resolver hook yet. The server listens on 127.0.0.1.
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
    let (server, mut seen) = dns_server().await;
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
