//! SOCKS5 ingress over real loopback sockets: CONNECT by IPv4, IPv6 and domain, early data,
//! username/password, a table of bad input, the handshake timeout, refused destinations and the
//! loopback-only listen rule. Every wait is bounded by a timeout.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netswitch::inbound::socks::{SocksError, SocksServer, SocksSettings, SocksUser};
use netswitch::{ConnectionManager, DirectOutbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on every single wait in these tests.
const WAIT: Duration = Duration::from_secs(5);

/// An echo server that reports the peer address of every connection it accepts.
struct Echo {
    addr: SocketAddr,
    peers: mpsc::UnboundedReceiver<SocketAddr>,
}

async fn echo_server(ip: IpAddr) -> io::Result<Echo> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
    let addr = listener.local_addr()?;
    let (tx, peers) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = tx.send(peer);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    Ok(Echo { addr, peers })
}

struct Proxy {
    server: SocksServer,
    _manager: Arc<ConnectionManager>,
}

async fn proxy(users: Vec<SocksUser>, handshake_timeout: Duration) -> Proxy {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.users = users;
    settings.handshake_timeout = handshake_timeout;
    settings.allow_non_loopback = false;
    let server =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    Proxy { server, _manager: manager }
}

async fn no_auth_proxy() -> Proxy {
    proxy(Vec::new(), Duration::from_secs(5)).await
}

fn alice() -> Vec<SocksUser> {
    vec![SocksUser { username: "alice".into(), password: "wonderland".into() }]
}

async fn connect(proxy: &Proxy) -> TcpStream {
    timeout(WAIT, TcpStream::connect(proxy.server.local_addr())).await.unwrap().unwrap()
}

async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(WAIT, stream.read_exact(&mut buf)).await.expect("timed out reading").unwrap();
    buf
}

/// Reads until the peer closes and returns everything received. A reset also counts as a close.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match timeout(WAIT, stream.read(&mut chunk)).await.expect("the server did not close the connection") {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}

fn connect_request(destination: SocketAddr) -> Vec<u8> {
    let mut request = vec![5, 1, 0];
    match destination.ip() {
        IpAddr::V4(ip) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
    }
    request.extend_from_slice(&destination.port().to_be_bytes());
    request
}

fn domain_request(name: &str, port: u16) -> Vec<u8> {
    let mut request = vec![5, 1, 0, 3, name.len() as u8];
    request.extend_from_slice(name.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    request
}

/// Reads a complete CONNECT reply; returns its code and bound address.
async fn read_reply(stream: &mut TcpStream) -> (u8, SocketAddr) {
    let head = read_exact(stream, 4).await;
    assert_eq!((head[0], head[2]), (5, 0), "reply header {head:?}");
    let ip = match head[3] {
        1 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(read_exact(stream, 4).await).unwrap())),
        4 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(read_exact(stream, 16).await).unwrap())),
        other => panic!("unexpected address type {other} in reply"),
    };
    let port = read_exact(stream, 2).await;
    (head[1], SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

/// Sends the no-auth greeting and checks the method reply.
async fn greet(stream: &mut TcpStream) {
    stream.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_exact(stream, 2).await, [5, 0]);
}

/// Sends a message through an established tunnel and expects it echoed back.
async fn assert_echoes(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    assert_eq!(read_exact(stream, message.len()).await, message);
}

/// CONNECT through `proxy` to `request`; the reply must be success carrying the address the echo
/// server saw as its peer, and data must be echoed.
async fn connect_and_echo(proxy: &Proxy, echo: &mut Echo, request: &[u8]) {
    let mut client = connect(proxy).await;
    greet(&mut client).await;
    client.write_all(request).await.unwrap();
    let (code, bound) = read_reply(&mut client).await;
    assert_eq!(code, 0, "CONNECT failed");
    let seen = timeout(WAIT, echo.peers.recv()).await.unwrap().unwrap();
    assert_eq!(bound, seen, "the reply's bound address is the outbound socket's local address");
    assert_echoes(&mut client, b"hello through socks").await;
}

#[tokio::test]
async fn connect_ipv4() {
    let proxy = no_auth_proxy().await;
    let mut echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let request = connect_request(echo.addr);
    connect_and_echo(&proxy, &mut echo, &request).await;
}

#[tokio::test]
async fn connect_ipv6() {
    let Ok(mut echo) = echo_server(Ipv6Addr::LOCALHOST.into()).await else {
        println!("skipped: cannot listen on [::1] on this machine");
        return;
    };
    let proxy = no_auth_proxy().await;
    let request = connect_request(echo.addr);
    connect_and_echo(&proxy, &mut echo, &request).await;
}

#[tokio::test]
async fn connect_domain_localhost() {
    let proxy = no_auth_proxy().await;
    let mut echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let request = domain_request("localhost", echo.addr.port());
    connect_and_echo(&proxy, &mut echo, &request).await;
}

#[tokio::test]
async fn early_data_after_the_request_reaches_the_destination() {
    let proxy = no_auth_proxy().await;
    let echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();

    // Greeting, request and payload in one write, before reading anything.
    let mut client = connect(&proxy).await;
    let mut burst = vec![5, 1, 0];
    burst.extend_from_slice(&connect_request(echo.addr));
    burst.extend_from_slice(b"early bytes");
    client.write_all(&burst).await.unwrap();
    assert_eq!(read_exact(&mut client, 2).await, [5, 0]);
    assert_eq!(read_reply(&mut client).await.0, 0);
    assert_eq!(read_exact(&mut client, 11).await, b"early bytes");

    // Request and payload in one write after the method reply.
    let mut client = connect(&proxy).await;
    greet(&mut client).await;
    let mut burst = connect_request(echo.addr);
    burst.extend_from_slice(b"right after the request");
    client.write_all(&burst).await.unwrap();
    assert_eq!(read_reply(&mut client).await.0, 0);
    assert_eq!(read_exact(&mut client, 23).await, b"right after the request");
    assert_echoes(&mut client, b"and more later").await;
}

#[tokio::test]
async fn auth_right_password_works() {
    let proxy = proxy(alice(), Duration::from_secs(5)).await;
    let echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let mut client = connect(&proxy).await;
    // Offering both methods: the auth server must pick username/password.
    client.write_all(&[5, 2, 0, 2]).await.unwrap();
    assert_eq!(read_exact(&mut client, 2).await, [5, 2]);
    client.write_all(b"\x01\x05alice\x0awonderland").await.unwrap();
    assert_eq!(read_exact(&mut client, 2).await, [1, 0]);
    client.write_all(&connect_request(echo.addr)).await.unwrap();
    assert_eq!(read_reply(&mut client).await.0, 0);
    assert_echoes(&mut client, b"authenticated").await;
}

#[tokio::test]
async fn auth_wrong_password_gets_status_1_and_close() {
    let proxy = proxy(alice(), Duration::from_secs(5)).await;
    let echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    for (username, password) in [("alice", "wonderlanD"), ("alice", "wonderland!"), ("bob", "wonderland")] {
        let mut client = connect(&proxy).await;
        client.write_all(&[5, 1, 2]).await.unwrap();
        assert_eq!(read_exact(&mut client, 2).await, [5, 2]);
        let mut auth = vec![1, username.len() as u8];
        auth.extend_from_slice(username.as_bytes());
        auth.push(password.len() as u8);
        auth.extend_from_slice(password.as_bytes());
        // The request is pipelined: it must not be served.
        auth.extend_from_slice(&connect_request(echo.addr));
        client.write_all(&auth).await.unwrap();
        assert_eq!(read_until_closed(&mut client).await, [1, 1], "{username}/{password}");
    }
}

#[tokio::test]
async fn auth_server_refuses_the_no_auth_method() {
    let proxy = proxy(alice(), Duration::from_secs(5)).await;
    let mut client = connect(&proxy).await;
    client.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await, [5, 0xff]);
}

#[tokio::test]
async fn no_auth_server_refuses_the_user_pass_method() {
    let proxy = no_auth_proxy().await;
    let mut client = connect(&proxy).await;
    client.write_all(&[5, 1, 2]).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await, [5, 0xff]);
}

/// Sends `input`, optionally half-closes, and expects exactly `expected` followed by a close.
async fn expect_reply_then_close(proxy: &Proxy, name: &str, input: &[u8], half_close: bool, expected: &[u8]) {
    let mut client = connect(proxy).await;
    client.write_all(input).await.unwrap();
    if half_close {
        client.shutdown().await.unwrap();
    }
    let received = read_until_closed(&mut client).await;
    assert_eq!(received, expected, "case {name:?}");
}

const FAILED_7: [u8; 10] = [5, 7, 0, 1, 0, 0, 0, 0, 0, 0];
const FAILED_8: [u8; 10] = [5, 8, 0, 1, 0, 0, 0, 0, 0, 0];
const FAILED_1: [u8; 10] = [5, 1, 0, 1, 0, 0, 0, 0, 0, 0];

#[tokio::test]
async fn bad_input_table_then_a_good_client() {
    let proxy = no_auth_proxy().await;
    let mut echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let method: &[u8] = &[5, 0];
    let with_method = |rest: &[u8]| [method, rest].concat();
    let cases: Vec<(&str, Vec<u8>, bool, Vec<u8>)> = vec![
        // (name, bytes sent after the greeting [5,1,0] unless noted, half-close, expected reply)
        ("HTTP request instead of SOCKS", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false, vec![]),
        ("SOCKS4 greeting", vec![4, 1, 0, 80, 127, 0, 0, 1, 0], false, vec![]),
        ("empty then EOF", vec![], true, vec![]),
        ("version only then EOF", vec![5], true, vec![]),
        ("truncated method list then EOF", vec![5, 3, 0], true, vec![]),
        ("zero methods", vec![5, 0], false, vec![5, 0xff]),
        ("only GSSAPI offered", vec![5, 1, 1], false, vec![5, 0xff]),
        (
            "request with version 4",
            [&[5, 1, 0][..], &[4, 1, 0, 1, 127, 0, 0, 1, 0, 80]].concat(),
            false,
            with_method(&[]),
        ),
        (
            "BIND",
            [&[5, 1, 0][..], &[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]].concat(),
            false,
            with_method(&FAILED_7),
        ),
        (
            "unknown command 0x09",
            [&[5, 1, 0][..], &[5, 9, 0, 1, 127, 0, 0, 1, 0, 80]].concat(),
            false,
            with_method(&FAILED_7),
        ),
        (
            "unknown command 0x00, rest never sent",
            [&[5, 1, 0][..], &[5, 0]].concat(),
            false,
            with_method(&FAILED_7),
        ),
        (
            "address type 0x02",
            [&[5, 1, 0][..], &[5, 1, 0, 2, 1, 2, 3, 4, 0, 80]].concat(),
            false,
            with_method(&FAILED_8),
        ),
        ("address type 0xff", [&[5, 1, 0][..], &[5, 1, 0, 0xff]].concat(), false, with_method(&FAILED_8)),
        ("empty domain", [&[5, 1, 0][..], &[5, 1, 0, 3, 0, 0, 80]].concat(), false, with_method(&FAILED_1)),
        (
            "non-UTF-8 domain",
            [&[5, 1, 0][..], &[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80]].concat(),
            false,
            with_method(&FAILED_1),
        ),
        (
            "CONNECT to port 0",
            [&[5, 1, 0][..], &[5, 1, 0, 1, 127, 0, 0, 1, 0, 0]].concat(),
            false,
            with_method(&FAILED_1),
        ),
        (
            "truncated IPv4 request then EOF",
            [&[5, 1, 0][..], &[5, 1, 0, 1, 127, 0]].concat(),
            true,
            with_method(&[]),
        ),
        (
            "truncated IPv6 request then EOF",
            [&[5, 1, 0][..], &[5, 1, 0, 4, 0, 0, 0]].concat(),
            true,
            with_method(&[]),
        ),
        (
            "truncated domain then EOF",
            [&[5, 1, 0][..], &[5, 1, 0, 3, 9, b'l', b'o']].concat(),
            true,
            with_method(&[]),
        ),
        (
            "request without port then EOF",
            [&[5, 1, 0][..], &[5, 1, 0, 1, 127, 0, 0, 1]].concat(),
            true,
            with_method(&[]),
        ),
        (
            "BIND with trailing garbage",
            [&[5, 1, 0][..], &[5, 2, 0, 1, 127, 0, 0, 1, 0, 80], &[0xaa; 3000]].concat(),
            false,
            with_method(&FAILED_7),
        ),
    ];
    for (name, input, half_close, expected) in &cases {
        expect_reply_then_close(&proxy, name, input, *half_close, expected).await;
    }
    // Several bad clients at once, one of them silent, do not stop a good one.
    let _silent = connect(&proxy).await;
    let request = connect_request(echo.addr);
    connect_and_echo(&proxy, &mut echo, &request).await;
}

#[tokio::test]
async fn bad_auth_messages_are_closed() {
    let proxy = proxy(alice(), Duration::from_secs(5)).await;
    let auth_method: &[u8] = &[5, 2];
    let cases: Vec<(&str, Vec<u8>, bool, Vec<u8>)> = vec![
        (
            "sub-negotiation version 5",
            b"\x05\x01\x02\x05\x05alice\x0awonderland".to_vec(),
            false,
            auth_method.to_vec(),
        ),
        (
            "sub-negotiation version 0",
            b"\x05\x01\x02\x00\x05alice\x0awonderland".to_vec(),
            false,
            auth_method.to_vec(),
        ),
        ("truncated username then EOF", b"\x05\x01\x02\x01\x05ali".to_vec(), true, auth_method.to_vec()),
        ("missing password then EOF", b"\x05\x01\x02\x01\x05alice".to_vec(), true, auth_method.to_vec()),
        ("empty username and password", b"\x05\x01\x02\x01\x00\x00".to_vec(), false, vec![5, 2, 1, 1]),
    ];
    for (name, input, half_close, expected) in &cases {
        expect_reply_then_close(&proxy, name, input, *half_close, expected).await;
    }
}

#[tokio::test]
async fn handshake_timeout_closes_silent_clients() {
    let proxy = proxy(Vec::new(), Duration::from_millis(300)).await;
    // Silent from the start.
    let mut silent = connect(&proxy).await;
    assert_eq!(read_until_closed(&mut silent).await, b"");
    // Greeted, then silent before the request.
    let mut half = connect(&proxy).await;
    half.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(read_until_closed(&mut half).await, [5, 0]);
    // Part of a request, then silent.
    let mut partial = connect(&proxy).await;
    partial.write_all(&[5, 1, 0, 5, 1, 0, 1, 127]).await.unwrap();
    assert_eq!(read_until_closed(&mut partial).await, [5, 0]);
}

#[tokio::test]
async fn refused_destination_gets_reply_5() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = no_auth_proxy().await;
    let mut client = connect(&proxy).await;
    greet(&mut client).await;
    client.write_all(&connect_request(SocketAddr::from(([127, 0, 0, 1], port)))).await.unwrap();
    let (code, _) = read_reply(&mut client).await;
    assert_eq!(code, 5);
    assert_eq!(read_until_closed(&mut client).await, b"");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_gets_reply_4() {
    // An empty label: the resolver refuses it locally, without sending a query anywhere.
    let proxy = no_auth_proxy().await;
    let mut client = connect(&proxy).await;
    greet(&mut client).await;
    client.write_all(&domain_request("a..invalid", 80)).await.unwrap();
    let (code, _) = read_reply(&mut client).await;
    assert_eq!(code, 4, "host unreachable tells the client the name did not resolve");
    assert_eq!(read_until_closed(&mut client).await, b"");
}

#[tokio::test]
async fn refuses_non_loopback_and_bad_users() {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let outbound = Arc::new(DirectOutbound::default());
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:1080"] {
        let mut settings = SocksSettings::default();
        settings.listen = listen.parse().unwrap();
        let result = SocksServer::start(settings, manager.clone(), outbound.clone()).await;
        assert!(matches!(result, Err(SocksError::NotLoopback(_))), "{listen}: {result:?}");
    }
    let long = "x".repeat(256);
    for (username, password) in [("", "p"), ("u", ""), (long.as_str(), "p"), ("u", long.as_str())] {
        let mut settings = SocksSettings::default();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.users = vec![SocksUser { username: username.into(), password: password.into() }];
        let result = SocksServer::start(settings, manager.clone(), outbound.clone()).await;
        assert!(matches!(result, Err(SocksError::BadUser(_))), "{result:?}");
    }
}

#[tokio::test]
async fn stop_stops_accepting_but_keeps_relayed_connections() {
    let proxy = no_auth_proxy().await;
    let echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let mut client = connect(&proxy).await;
    greet(&mut client).await;
    client.write_all(&connect_request(echo.addr)).await.unwrap();
    assert_eq!(read_reply(&mut client).await.0, 0);

    proxy.server.stop();
    proxy.server.stop();
    // The listener goes away once the runtime drops the accept task: poll until refused.
    let addr = proxy.server.local_addr();
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the listener still accepts after stop()");
    assert_echoes(&mut client, b"still relayed after stop").await;
}

#[tokio::test]
async fn an_unbounded_handshake_timeout_still_serves() {
    let proxy = proxy(Vec::new(), Duration::MAX).await;
    let mut echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let request = connect_request(echo.addr);
    connect_and_echo(&proxy, &mut echo, &request).await;
}

async fn proxy_with_two_slots() -> Proxy {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.max_pending_handshakes = 2;
    let server =
        SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
    Proxy { server, _manager: manager }
}

#[tokio::test]
async fn clients_beyond_the_pending_handshake_cap_wait_in_the_backlog() {
    let proxy = proxy_with_two_slots().await;
    let mut echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    // Two clients in the middle of their handshake (greeted, no request yet) hold both slots.
    let mut talking = [connect(&proxy).await, connect(&proxy).await];
    for client in &mut talking {
        greet(client).await;
    }
    // A third client is neither served nor reset while they hold the slots: it waits.
    let mut third = connect(&proxy).await;
    third.write_all(&[5, 1, 0]).await.unwrap();
    let mut byte = [0u8; 1];
    let early = timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "the third client got an answer while every slot was taken: {early:?}");
    // Once one of them finishes, the third is served.
    let [first, mut second] = talking;
    drop(first);
    assert_eq!(read_exact(&mut third, 2).await, [5, 0]);
    third.write_all(&connect_request(echo.addr)).await.unwrap();
    assert_eq!(read_reply(&mut third).await.0, 0);
    assert_echoes(&mut third, b"served from the backlog").await;
    // The other talking client was never evicted: it can finish its handshake.
    second.write_all(&connect_request(echo.addr)).await.unwrap();
    assert_eq!(read_reply(&mut second).await.0, 0);
    timeout(WAIT, echo.peers.recv()).await.unwrap().unwrap();
}

#[tokio::test]
async fn idle_clients_give_their_handshake_slot_to_a_waiting_client() {
    let proxy = proxy_with_two_slots().await;
    let mut echo = echo_server(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    // Two clients that never send a byte hold both slots.
    let mut silent = [connect(&proxy).await, connect(&proxy).await];
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A valid client is served (an idle handshake yields its slot, or times out).
    let request = connect_request(echo.addr);
    connect_and_echo(&proxy, &mut echo, &request).await;
    // The idle clients are closed without a reply.
    for client in &mut silent {
        assert_eq!(read_until_closed(client).await, b"");
    }
}
