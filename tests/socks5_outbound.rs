//! The lazy upstream SOCKS5 outbound and the kick, over loopback: chained to a second netswitch
//! SOCKS ingress (echo round trip, server-speaks-first banner after the kick's wait), early data
//! in the same write as the handshake (seen by a raw upstream), and refusals reported with the
//! right SOCKS code and on_close exactly once.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use netswitch::client::{ClientStream, InboundHandshake};
use netswitch::dial::socks5::Socks5Outbound;
use netswitch::dial::{BoxFuture, DialError, FailureKind};
use netswitch::inbound::socks::{SocksServer, SocksSettings};
use netswitch::{ConnectionError, ConnectionManager, DirectOutbound, Inbound, Metadata, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A second netswitch acting as the upstream SOCKS5 server (direct outbound).
async fn upstream() -> (SocksServer, Arc<ConnectionManager>) {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let settings = SocksSettings { listen: "127.0.0.1:0".parse().unwrap(), ..SocksSettings::default() };
    let server =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    (server, manager)
}

fn socks5(server: SocketAddr) -> Arc<Socks5Outbound> {
    Arc::new(Socks5Outbound::new(server, None, Duration::from_secs(5)))
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
        let settings = SocksSettings { listen: "127.0.0.1:0".parse().unwrap(), ..SocksSettings::default() };
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
