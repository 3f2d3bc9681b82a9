//! The userspace stack against a hostile or odd app: crafted segments (a SYN never acknowledged,
//! random segments of every kind on a live flow), an app silent for longer than smoltcp's
//! timeouts. Same in-memory harness as `tests.rs` (its client, wire and stack); the manager
//! dials real servers on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use etherparse::{PacketBuilder, TcpSlice};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::connection::{Connection, ACK_TIMEOUT};
use super::tests::{echo, pattern, stack, App, Wire, APP};
use super::Userspace;
use crate::tun::packet::{self, Packet};
use crate::tun::test_support::eventually;

/// An echo server on loopback: every connection echoes until its client's FIN.
async fn echo_server() -> SocketAddr {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = server.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    address
}

/// The stack's only connection.
fn only_connection(stack: &Userspace) -> Arc<Connection> {
    let flows = stack.lock();
    assert_eq!(flows.len(), 1, "one connection");
    flows.values().next().map(|flow| flow.connection.clone()).unwrap()
}

/// TCP flags of a crafted segment.
#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    psh: bool,
}

/// A TCP segment from the app's `port` to `to` (checksums right), from [`APP`] or, to an IPv6
/// destination, from [`APP6`].
fn segment(
    port: u16,
    to: SocketAddr,
    seq: u32,
    ack: u32,
    window: u16,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let app = match to {
        SocketAddr::V4(_) => Ipv4Addr::from(APP.octets()).into(),
        SocketAddr::V6(_) => APP6.into(),
    };
    segment_from(SocketAddr::new(app, port), to, (seq, ack, window), flags, payload)
}

/// [`segment`] from any address (one the app's client does not have: what the stack sends there
/// reaches nobody), with its sequence number, acknowledgement number and window.
fn segment_from(
    from: SocketAddr,
    to: SocketAddr,
    numbers: (u32, u32, u16),
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let ip = match (from, to) {
        (SocketAddr::V4(from), SocketAddr::V4(to)) => {
            PacketBuilder::ipv4(from.ip().octets(), to.ip().octets(), 64)
        }
        (SocketAddr::V6(from), SocketAddr::V6(to)) => {
            PacketBuilder::ipv6(from.ip().octets(), to.ip().octets(), 64)
        }
        _ => panic!("one family"),
    };
    let (seq, ack, window) = numbers;
    let mut builder = ip.tcp(from.port(), to.port(), seq, window);
    if flags.syn {
        builder = builder.syn();
    }
    if flags.ack {
        builder = builder.ack(ack);
    }
    if flags.fin {
        builder = builder.fin();
    }
    if flags.rst {
        builder = builder.rst();
    }
    if flags.psh {
        builder = builder.psh();
    }
    let mut packet = Vec::new();
    builder.write(&mut packet, payload).unwrap();
    packet
}

/// The app's IPv6 address.
const APP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// The TCP segment of an IP packet the stack sent (smoltcp writes no IPv4 options and no IPv6
/// extension headers).
fn tcp_of(packet: &[u8]) -> TcpSlice<'_> {
    let header = if packet[0] >> 4 == 6 { 40 } else { 20 };
    TcpSlice::from_slice(&packet[header..]).unwrap()
}

/// Hands one IP packet of the app to the stack, as the tunnel's reader does.
fn feed(stack: &Arc<Userspace>, mut packet: Vec<u8>) {
    match packet::parse(&packet) {
        Packet::Tcp(tcp) => stack.input(&mut packet, &tcp),
        other => panic!("not a TCP packet: {other:?}"),
    }
}

/// The sequence number of the next segment of the stack on the wire to the app's `port`, and
/// its flags (SYN, ACK, RST, FIN), skipping others.
fn next_from_stack(wire: &Wire, port: u16) -> Option<(u32, [bool; 4])> {
    let mut packets = wire.packets.lock().unwrap();
    while let Some(packet) = packets.pop_front() {
        let tcp = tcp_of(&packet);
        if tcp.destination_port() == port {
            return Some((tcp.sequence_number(), [tcp.syn(), tcp.ack(), tcp.rst(), tcp.fin()]));
        }
    }
    None
}

/// Completes a handshake with crafted segments from the app's `port`: returns the app's next
/// sequence number and the stack's.
fn handshake(stack: &Arc<Userspace>, wire: &Wire, port: u16, to: SocketAddr) -> (u32, u32) {
    let syn = Flags { syn: true, ..Flags::default() };
    feed(stack, segment(port, to, 1000, 0, 64240, syn, &[]));
    let (theirs, [is_syn, is_ack, ..]) = next_from_stack(wire, port).expect("a SYN-ACK");
    assert!(is_syn && is_ack, "a SYN-ACK");
    let ack = Flags { ack: true, ..Flags::default() };
    feed(stack, segment(port, to, 1001, theirs.wrapping_add(1), 64240, ack, &[]));
    (1001, theirs.wrapping_add(1))
}

/// An app idle for longer than smoltcp's ACK timeout (nothing queued either way, nothing in
/// flight) keeps its connection, as with a kernel socket: the timeout is for an app that stops
/// acknowledging our bytes, not for silence.
#[tokio::test]
async fn an_idle_connection_outlives_the_ack_timeout() {
    let address = echo_server().await;
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 41001);
    echo(&mut app, b"hello").await;
    // The app's last ACK arrives; then nothing happens for longer than the timeout.
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.run(|_| true).await;
    let connection = only_connection(&stack);
    connection.skip(ACK_TIMEOUT + Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let state = connection.lock().socket().state();
    assert_eq!(state, smoltcp::socket::tcp::State::Established, "an idle connection was aborted");
    assert_eq!(connection.wakes_at(), None, "an idle connection holds no timer (its rings given back)");
    assert_eq!(connection.rings_resident(), 0);
    echo(&mut app, &pattern(10_000)).await;
}

/// A SYN the app never acknowledges makes no outbound connection: the manager dials once the
/// app's handshake completed (as with the system stack, where the kernel accepts only then), so
/// a flood of SYNs from many ports dials nothing.
#[tokio::test]
async fn a_half_open_connection_dials_nothing_until_the_handshake_completes() {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    // Half-open flows from 20 ports: their SYN-ACKs go out, no ACK comes back.
    for port in 42000..42020 {
        let syn = Flags { syn: true, ..Flags::default() };
        feed(&stack, segment(port, address, 7, 0, 64240, syn, &[]));
    }
    assert_eq!(stack.connections(), 20);
    let accepted = tokio::time::timeout(Duration::from_millis(300), server.accept()).await;
    assert!(accepted.is_err(), "a half-open connection was dialed");
    assert_eq!(manager.len(), 0, "no connection in the manager before the handshake completed");
    // One app completes its handshake: now (and only now) its connection is dialed.
    wire.packets.lock().unwrap().clear();
    let (seq, ack) = handshake(&stack, &wire, 42100, address);
    let (mut socket, _) =
        tokio::time::timeout(Duration::from_secs(5), server.accept()).await.unwrap().unwrap();
    let push = Flags { ack: true, psh: true, ..Flags::default() };
    feed(&stack, segment(42100, address, seq, ack, 64240, push, b"ping"));
    let mut got = [0u8; 4];
    socket.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    socket.write_all(b"pong").await.unwrap();
    eventually("one connection in the manager", || manager.len() == 1).await;
}

/// An app that stops acknowledging our bytes is still given up on after [`ACK_TIMEOUT`], and so
/// is a SYN never acknowledged: the connection is reset and its flow leaves (the timeout that an
/// idle connection must not see is still there for these).
#[tokio::test]
async fn an_app_that_stops_acknowledging_is_given_up_after_the_ack_timeout() {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    let syn = Flags { syn: true, ..Flags::default() };
    feed(&stack, segment(43000, address, 7, 0, 64240, syn, &[]));
    wire.packets.lock().unwrap().clear();
    handshake(&stack, &wire, 43001, address);
    let (mut socket, _) =
        tokio::time::timeout(Duration::from_secs(5), server.accept()).await.unwrap().unwrap();
    socket.write_all(b"are you there?").await.unwrap();
    eventually("the server's bytes sent to the app", || {
        next_from_stack(&wire, 43001).is_some_and(|(_, [.., rst, _])| !rst)
    })
    .await;
    // Neither app answers: both connections are given up once the timeout passed.
    let connections: Vec<_> = stack.lock().values().map(|flow| flow.connection.clone()).collect();
    for connection in &connections {
        connection.skip(ACK_TIMEOUT + Duration::from_secs(1));
    }
    eventually("both flows left", || stack.connections() == 0).await;
    eventually("the manager's connection ended", || manager.is_empty()).await;
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await.unwrap();
    assert!(ended.is_err() || rest.is_empty(), "the server's connection ended: {ended:?}");
}

/// A random segment from the app's `port` to `to`: any flags, sequence and acknowledgement
/// numbers near `seq`/`ack` or anywhere, any window, options of random bytes, payloads up to
/// past the MTU (checksums right, so that smoltcp reads it).
fn random_segment(rng: &mut rand::rngs::StdRng, port: u16, to: SocketAddr, seq: u32, ack: u32) -> Vec<u8> {
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let near = |rng: &mut rand::rngs::StdRng, base: u32| match rng.random_range(0..6) {
        0 => rng.random(),
        1 => base.wrapping_add(rng.random_range(0..200_000)),
        2 => base.wrapping_sub(rng.random_range(0..200_000)),
        3 => base.wrapping_add(1u32 << 31),
        _ => base.wrapping_add(rng.random_range(0..3)),
    };
    let mut header = etherparse::TcpHeader::new(port, to.port(), near(rng, seq), rng.random());
    header.acknowledgment_number = near(rng, ack);
    header.syn = rng.random_ratio(1, 8);
    header.ack = rng.random_ratio(3, 4);
    header.fin = rng.random_ratio(1, 6);
    header.rst = rng.random_ratio(1, 10);
    header.psh = rng.random();
    header.urg = rng.random_ratio(1, 10);
    header.urgent_pointer = rng.random();
    header.ece = rng.random_ratio(1, 10);
    header.cwr = rng.random_ratio(1, 10);
    if rng.random_ratio(1, 3) {
        let words = rng.random_range(0..=10);
        let options: Vec<u8> = (0..words * 4).map(|_| rng.random()).collect();
        header.set_options_raw(&options).unwrap();
    }
    let len = match rng.random_range(0..4) {
        0 => 0,
        1 => rng.random_range(0..20),
        2 => rng.random_range(0..1460),
        _ => rng.random_range(1460..4000),
    };
    let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    let mut packet = Vec::new();
    PacketBuilder::ipv4(APP.octets(), to.ip().octets(), 64)
        .tcp_header(header)
        .write(&mut packet, &payload)
        .unwrap();
    packet
}

/// Thousands of random segments (out of the window, RST and FIN and SYN anywhere, data after a
/// FIN, odd options, zero windows, segments past the MTU) on half-open and established flows
/// whose relay runs: nothing panics, and afterwards a well-behaved app still gets its echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_segments_on_live_flows_panic_nothing() {
    use rand::SeedableRng;
    let address = echo_server().await;
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let seed = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for port in 44000..44040 {
        let (seq, ack) = if port % 4 == 0 {
            let syn = Flags { syn: true, ..Flags::default() };
            feed(&stack, segment(port, address, 7, 0, 64240, syn, &[]));
            let (theirs, _) = next_from_stack(&wire, port).unwrap_or_default();
            (8, theirs.wrapping_add(1))
        } else {
            let (seq, ack) = handshake(&stack, &wire, port, address);
            let push = Flags { ack: true, psh: true, ..Flags::default() };
            feed(&stack, segment(port, address, seq, ack, 64240, push, b"hello"));
            (seq + 5, ack)
        };
        for _ in 0..400 {
            feed(&stack, random_segment(&mut rng, port, address, seq, ack));
        }
        tokio::task::yield_now().await;
        wire.packets.lock().unwrap().clear();
    }
    let mut app = App::connect(stack.clone(), wire, address, 45000);
    echo(&mut app, &pattern(50_000)).await;
}

/// A server for one connection: accepts it and hands it over.
async fn one_connection() -> (SocketAddr, tokio::sync::oneshot::Receiver<tokio::net::TcpStream>) {
    one_connection_on(Ipv4Addr::LOCALHOST.into()).await
}

/// [`one_connection`] on `ip`.
async fn one_connection_on(
    ip: std::net::IpAddr,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<tokio::net::TcpStream>) {
    let server = TcpListener::bind((ip, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    let (give, taken) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = server.accept().await.unwrap();
        let _ = give.send(socket);
    });
    (address, taken)
}

/// The app resets its connection: the server's side ends at once (a reset or an end of file,
/// not a connection left open), the flow leaves, and so does the manager's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_reset_ends_the_servers_connection_at_once() {
    let (address, taken) = one_connection().await;
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 46000);
    let mut said = false;
    app.run(|socket| {
        if socket.can_send() && !said {
            said = socket.send_slice(b"hello").unwrap() == 5;
        }
        said && socket.send_queue() == 0
    })
    .await;
    let mut socket = tokio::time::timeout(Duration::from_secs(5), taken).await.unwrap().unwrap();
    let mut hello = [0u8; 5];
    socket.read_exact(&mut hello).await.unwrap();
    app.socket().abort();
    app.run(|_| true).await;
    let ended = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut [0u8; 16])).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "the server's connection still open: {ended:?}");
    eventually("the flow and the manager's connection left", || {
        stack.connections() == 0 && manager.is_empty()
    })
    .await;
}

/// The manager closes a connection (the host's `close(id)`, a network change): the app's side is
/// reset at once and the flow leaves, while the app is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_managers_close_resets_the_apps_connection_at_once() {
    let address = echo_server().await;
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 46001);
    echo(&mut app, b"hello").await;
    let ids = stack.connection_ids();
    assert_eq!(ids.len(), 1);
    assert!(manager.close(ids[0]));
    let started = std::time::Instant::now();
    app.run(|socket| socket.state() == smoltcp::socket::tcp::State::Closed).await;
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
    eventually("the flow and the manager's connection left", || {
        stack.connections() == 0 && manager.is_empty()
    })
    .await;
}

/// An app that holds a zero window for minutes (it reads nothing) while the server has more to
/// send: the server's writes stall (nothing between them grows without bound), the app's
/// answers to the stack's probes keep the connection alive past [`ACK_TIMEOUT`], and once the
/// app reads again every byte arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_holding_a_zero_window_stalls_the_server_and_keeps_its_connection() {
    const TOTAL: usize = 2 << 20;
    let (address, taken) = one_connection().await;
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 46002);
    app.run(|socket| socket.state() == smoltcp::socket::tcp::State::Established).await;
    let mut socket = tokio::time::timeout(Duration::from_secs(5), taken).await.unwrap().unwrap();
    // The server's kernel buffers little, so that a stall shows well before TOTAL.
    socket2::SockRef::from(&socket).set_send_buffer_size(64 * 1024).unwrap();
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = written.clone();
    tokio::spawn(async move {
        let bytes = pattern(TOTAL);
        for chunk in bytes.chunks(16 * 1024) {
            socket.write_all(chunk).await.unwrap();
            counted.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
        socket.shutdown().await.unwrap();
    });
    // The app reads nothing: its receive buffer fills, its window closes, the server stalls.
    // (Full to the window's granularity: its scale may leave a few bytes unannounced.)
    let closed =
        |socket: &mut smoltcp::socket::tcp::Socket| socket.recv_capacity() - socket.recv_queue() < 1024;
    app.run(closed).await;
    let mut last = usize::MAX;
    loop {
        let until = std::time::Instant::now() + Duration::from_millis(300);
        app.run(|_| std::time::Instant::now() > until).await;
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(last < TOTAL, "the server wrote everything to an app that reads nothing");
    println!("stalled after {last} bytes of {TOTAL}");
    // Minutes pass on the stack's clock, a second at a time; the app answers the probes.
    let connection = only_connection(&stack);
    for _ in 0..(ACK_TIMEOUT.as_secs() + 10) {
        connection.skip(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(2)).await;
        app.run(|_| true).await;
    }
    assert_eq!(connection.lock().socket().state(), smoltcp::socket::tcp::State::Established);
    let mut received = Vec::new();
    app.run(|socket| {
        while socket.can_recv() {
            socket.recv(|bytes| (bytes.len(), received.extend_from_slice(bytes))).unwrap();
        }
        matches!(socket.recv_slice(&mut [0u8; 1]), Err(smoltcp::socket::tcp::RecvError::Finished))
    })
    .await;
    assert!(received == pattern(TOTAL), "{} bytes of {TOTAL}, or not in order", received.len());
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}

/// SYNs from as many ports as the stack holds connections, none ever acknowledged (a SYN flood,
/// a buggy scanner): a well-behaved app still connects and gets its echo, and the half-open
/// connections cost bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syn_flood_does_not_lock_out_a_well_behaved_app() {
    let address = echo_server().await;
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    let before = rss_kib();
    let started = std::time::Instant::now();
    let syn = Flags { syn: true, ..Flags::default() };
    for i in 0..super::MAX_CONNECTIONS + 100 {
        // From addresses the app's client does not have: no RST answers the SYN-ACKs.
        let from = SocketAddr::new(Ipv4Addr::new(10, 0, 1, (i % 200) as u8).into(), 1024 + (i / 200) as u16);
        feed(&stack, segment_from(from, address, (7, 0, 64240), syn, &[]));
        if i % 1024 == 0 {
            wire.packets.lock().unwrap().clear();
        }
    }
    wire.packets.lock().unwrap().clear();
    let held = stack.connections();
    println!(
        "{} SYNs in {:?}: {held} connections held, RSS {} -> {} KiB",
        super::MAX_CONNECTIONS + 100,
        started.elapsed(),
        before,
        rss_kib()
    );
    assert_eq!(manager.len(), 0, "nothing dialed");
    // The oldest half-open connections were reset to make room; their flows leave.
    eventually("half-open connections within their cap", || stack.connections() <= super::MAX_HANDSHAKES)
        .await;
    let mut app = App::connect(stack.clone(), wire, address, 60500);
    echo(&mut app, b"still welcome").await;
}

/// Bytes the app sent out of order (a segment lost, the next one arrived) wait in the receive
/// ring beyond what smoltcp counts as queued: a connection idle long enough to give its rings'
/// pages back must not give those away, or the bytes arrive as zeros once the lost segment is
/// retransmitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_received_out_of_order_survive_an_idle_release() {
    out_of_order_through_an_idle_release(Ipv4Addr::LOCALHOST.into()).await;
    out_of_order_through_an_idle_release(std::net::Ipv6Addr::LOCALHOST.into()).await;
}

/// The body of [`bytes_received_out_of_order_survive_an_idle_release`], to a server on `ip`.
async fn out_of_order_through_an_idle_release(ip: std::net::IpAddr) {
    use super::IDLE_RELEASE;
    let (address, taken) = one_connection_on(ip).await;
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let (seq, ack) = handshake(&stack, &wire, 47000, address);
    let push = Flags { ack: true, psh: true, ..Flags::default() };
    feed(&stack, segment(47000, address, seq, ack, 64240, push, b"hello"));
    let mut socket = tokio::time::timeout(Duration::from_secs(5), taken).await.unwrap().unwrap();
    let mut hello = [0u8; 5];
    socket.read_exact(&mut hello).await.unwrap();
    // The first 1000 bytes are "lost"; the next 1000 arrive; then the app's retransmission
    // comes late (after the idle release).
    let message = pattern(2000);
    let seq = seq + 5;
    feed(&stack, segment(47000, address, seq + 1000, ack, 64240, push, &message[1000..]));
    let connection = only_connection(&stack);
    connection.skip(IDLE_RELEASE * 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    feed(&stack, segment(47000, address, seq, ack, 64240, push, &message[..1000]));
    let mut received = vec![0u8; 2000];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut received)).await.unwrap().unwrap();
    let zeros = received.iter().zip(&message).filter(|(got, sent)| got != sent).count();
    assert_eq!(zeros, 0, "{ip}: {zeros} of 2000 bytes changed on their way");
}

/// The app opens a new connection on the ports of one the stack still holds (its reset of the old
/// one was lost, or it reuses the port after forgetting it): a SYN with a new sequence number.
/// The old connection is reset and the new one answered at once, as the kernel's challenge ACK
/// and the app's reset would end the old one there; a duplicate of the first SYN changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_syn_on_the_ports_of_a_held_connection_replaces_it() {
    let address = echo_server().await;
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    let (seq, ack) = handshake(&stack, &wire, 48000, address);
    let push = Flags { ack: true, psh: true, ..Flags::default() };
    feed(&stack, segment(48000, address, seq, ack, 64240, push, b"first"));
    eventually("the echo of the first connection", || {
        wire.packets.lock().unwrap().iter().any(|packet| packet.ends_with(b"first"))
    })
    .await;
    let old = only_connection(&stack);
    // A duplicate of the first SYN: nothing changes.
    let syn = Flags { syn: true, ..Flags::default() };
    feed(&stack, segment(48000, address, 1000, 0, 64240, syn, &[]));
    assert!(Arc::ptr_eq(&old, &only_connection(&stack)), "a duplicate SYN replaced the connection");
    wire.packets.lock().unwrap().clear();
    // A new SYN: the old connection is reset, the new one answered and carried.
    feed(&stack, segment(48000, address, 500_000, 0, 64240, syn, &[]));
    let (_, [.., rst, _]) = next_from_stack(&wire, 48000).expect("a reset of the old connection");
    assert!(rst, "the old connection reset first");
    let (theirs, [is_syn, is_ack, ..]) = next_from_stack(&wire, 48000).expect("an answer to the new SYN");
    assert!(is_syn && is_ack, "a SYN-ACK for the new connection");
    assert_eq!(old.lock().socket().state(), smoltcp::socket::tcp::State::Closed, "the old one was reset");
    let ack_only = Flags { ack: true, ..Flags::default() };
    feed(&stack, segment(48000, address, 500_001, theirs.wrapping_add(1), 64240, ack_only, &[]));
    feed(&stack, segment(48000, address, 500_001, theirs.wrapping_add(1), 64240, push, b"second"));
    eventually("the echo of the new connection", || {
        wire.packets.lock().unwrap().iter().any(|packet| packet.ends_with(b"second"))
    })
    .await;
    eventually("one connection left in the manager", || manager.len() == 1).await;
}

/// A burst of SYNs past [`super::MAX_HANDSHAKES`] at once (an app opening more connections than
/// that in one go): the ones past the cap are dropped and counted, none of the handshakes under
/// way is reset; once the oldest waited [`super::HANDSHAKE_GRACE`], a new SYN takes its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_syns_past_the_cap_resets_no_handshake_under_way() {
    let address = echo_server().await;
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let syn = Flags { syn: true, ..Flags::default() };
    let from =
        |i: usize| SocketAddr::new(Ipv4Addr::new(10, 0, 2, (i % 200) as u8).into(), 1024 + (i / 200) as u16);
    for i in 0..super::MAX_HANDSHAKES + 76 {
        feed(&stack, segment_from(from(i), address, (7, 0, 64240), syn, &[]));
    }
    let resets = |wire: &Wire| {
        let packets = wire.packets.lock().unwrap();
        packets.iter().filter(|packet| tcp_of(packet).rst()).count()
    };
    assert_eq!(stack.connections(), super::MAX_HANDSHAKES);
    assert_eq!(stack.counters.snapshot().dropped_nat_full, 76);
    assert_eq!(resets(&wire), 0, "a handshake under way was reset");
    tokio::time::sleep(super::HANDSHAKE_GRACE).await;
    feed(&stack, segment_from(from(5000), address, (7, 0, 64240), syn, &[]));
    eventually("the oldest handshake reset", || resets(&wire) == 1).await;
    eventually("its flow left", || stack.connections() == super::MAX_HANDSHAKES).await;
}
