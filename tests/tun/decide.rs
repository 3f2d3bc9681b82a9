//! The decision hook through the tunnel (root only, see `main.rs`): a decider blocks one
//! destination port (the app's TCP connection is reset, its UDP datagrams dropped, both
//! counted), sends the app sources of a port range over cellular instead of Wi-Fi (the server
//! sees cell0's address), leaves the rest on the default; a decision past the deadline gets the
//! default. The tracker shows each connection's decision.

use std::ops::RangeInclusive;

use netswitch::tun::{BlockingDecider, DecisionHook, Stack, TunDecision, TunFlow};
use netswitch::TransportProtocol;

use super::*;

/// App source ports the decider sends over cellular. Above the kernel's ephemeral range
/// (32768-60999), so that no other socket of the namespace is given one of them (a bind of
/// SLOW_PORT once failed with AddrInUse).
const CELL_PORTS: RangeInclusive<u16> = 61000..=61099;
/// The app source port whose decision takes longer than the deadline.
const SLOW_PORT: u16 = 61200;
/// The deadline of every decision in this test.
const DEADLINE: Duration = Duration::from_secs(1);

/// The host's decider, synchronous like a binder lookup (run on blocking threads).
fn decide(flow: TunFlow) -> TunDecision {
    let blocked_port = match flow.protocol {
        TransportProtocol::Tcp => server::LAST_COUNT,
        _ => server::WHOAMI_B,
    };
    if flow.destination.port() == blocked_port {
        TunDecision::block().with_label("blocked port")
    } else if CELL_PORTS.contains(&flow.source.port()) {
        TunDecision::allow().with_network_type(vec![NetworkType::Cellular]).with_label("cell app")
    } else if flow.source.port() == SLOW_PORT {
        std::thread::sleep(DEADLINE * 5);
        TunDecision::block().with_label("too late")
    } else {
        TunDecision::allow()
    }
}

/// An app TCP connection from source port `port` (0: any) to `to`.
fn connect_from(port: u16, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    socket.connect_timeout(&to.into(), TIMEOUT)?;
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// What the PEER service saw as the connection's source.
fn peer_from(port: u16) -> std::io::Result<String> {
    let mut stream = connect_from(port, server(server::PEER))?;
    let mut line = String::new();
    stream.read_to_string(&mut line)?;
    Ok(line.trim().to_string())
}

/// An echo connection from `port` that has echoed one message (so it is relaying).
fn echoing_from(port: u16) -> std::io::Result<TcpStream> {
    let mut stream = connect_from(port, server(server::ECHO))?;
    stream.write_all(b"hello")?;
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf)?;
    assert_eq!(&buf, b"hello");
    Ok(stream)
}

/// The tracker's snapshot of the connection from app source port `port`.
fn tracked(device: &Device, port: u16) -> netswitch::ConnectionInfo {
    let list = device.netswitch.manager().list();
    let found = list.iter().find(|c| c.metadata.source.map(|s| s.port()) == Some(port)).cloned();
    found.unwrap_or_else(|| panic!("no tracked connection from port {port}: {list:?}"))
}

#[test]
fn tun_decider_blocks_reroutes_and_defaults() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("decide::tun_decider_blocks_reroutes_and_defaults");
    }
    blocks_reroutes_and_defaults(Stack::System);
}

/// The body of [`tun_decider_blocks_reroutes_and_defaults`], TCP ending in `stack`.
pub(super) fn blocks_reroutes_and_defaults(stack: Stack) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| {
            let hook = DecisionHook::new(Arc::new(BlockingDecider::new(decide))).with_deadline(DEADLINE);
            settings.decision = Some(hook);
            settings.stack = stack;
        })
        .await;

        // Blocked TCP: the app's connection is reset (the kernel accepted it, netswitch reset it).
        let error = blocking(|| {
            let mut stream = match connect(server::LAST_COUNT) {
                Ok(stream) => stream,
                Err(error) => return error,
            };
            let mut buf = [0u8; 16];
            match stream.read(&mut buf) {
                Ok(n) => panic!("read {n} bytes from a blocked connection instead of a reset"),
                Err(error) => error,
            }
        })
        .await;
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
        assert_eq!(device.tun.counters().tcp_blocked, 1);
        println!("blocked TCP port {}: the app's socket reads ConnectionReset", server::LAST_COUNT);

        // The cellular app's connection leaves through cell0; another one through Wi-Fi.
        let cell = blocking(|| peer_from(*CELL_PORTS.start())).await.unwrap();
        assert_eq!(cell, format!("peer={}", Link::Cell.client_v4()));
        let default = blocking(|| peer_from(0)).await.unwrap();
        assert_eq!(default, format!("peer={}", Link::Wifi.client_v4()));
        println!("TCP from source port {}: {cell}; from another port: {default}", CELL_PORTS.start());

        // The tracker shows the decisions of live connections.
        let cell_port = CELL_PORTS.start() + 1;
        let streams = blocking(move || (echoing_from(cell_port).unwrap(), echoing_from(0).unwrap())).await;
        let default_port = streams.1.local_addr().unwrap().port();
        let cell = tracked(&device, cell_port);
        assert_eq!(cell.metadata.decision.as_deref(), Some("cell app: network=cellular"));
        assert_eq!(cell.metadata.options.network_type, Some(vec![NetworkType::Cellular]));
        assert_eq!(cell.egress.network_type, Some(NetworkType::Cellular));
        let default = tracked(&device, default_port);
        assert_eq!(default.metadata.decision.as_deref(), Some("default"));
        assert_eq!(default.egress.network_type, Some(NetworkType::Wifi));
        println!(
            "tracker: port {cell_port} {:?} via {}, port {default_port} {:?} via {}",
            cell.metadata.decision, cell.egress, default.metadata.decision, default.egress
        );
        drop(streams);

        // UDP: the cellular app's session leaves through cell0, another one through Wi-Fi.
        let seen = blocking(|| {
            let mut seen = Vec::new();
            for port in [CELL_PORTS.start() + 2, 0] {
                let socket = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))).unwrap();
                let (answer, _) = udp_roundtrip(&socket, b"who", server(server::WHOAMI_A));
                seen.push(String::from_utf8_lossy(&answer).to_string());
            }
            seen
        })
        .await;
        assert!(seen[0].starts_with(&format!("{}:", Link::Cell.client_v4())), "{seen:?}");
        assert!(seen[1].starts_with(&format!("{}:", Link::Wifi.client_v4())), "{seen:?}");
        println!(
            "UDP from source port {}: seen as {}; from another port: {}",
            CELL_PORTS.start() + 2,
            seen[0],
            seen[1]
        );

        // Blocked UDP: the datagrams are dropped and counted; nothing comes back.
        let before = device.tun.counters().dropped_blocked;
        let socket = blocking(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..3 {
                socket.send_to(b"who", server(server::WHOAMI_B)).unwrap();
            }
            socket
        })
        .await;
        let deadline = Instant::now() + TIMEOUT;
        while device.tun.counters().dropped_blocked < before + 3 {
            assert!(Instant::now() < deadline, "blocked datagrams not counted: {:?}", device.tun.counters());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let nothing = socket.recv_from(&mut buf).map(|(n, _)| n).unwrap_err();
        assert_eq!(nothing.kind(), ErrorKind::WouldBlock, "an answer came to a blocked source");
        let source = socket.local_addr().unwrap().port();
        let sessions = device.netswitch.manager().list();
        let blocked = sessions.iter().filter(|c| c.metadata.source.map(|s| s.port()) == Some(source));
        assert_eq!(blocked.count(), 0, "a blocked source has no session");
        println!("blocked UDP port {}: 3 datagrams dropped and counted", server::WHOAMI_B);

        // Too slow: the decision past the deadline is the default (not the late block).
        let stream = blocking(|| echoing_from(SLOW_PORT).unwrap()).await;
        let slow = tracked(&device, SLOW_PORT);
        assert_eq!(slow.metadata.decision.as_deref(), Some("default (decider timed out)"));
        assert_eq!(slow.egress.network_type, Some(NetworkType::Wifi));
        drop(stream);

        let counters = device.tun.counters();
        println!("counters: {counters:?}");
        assert_eq!(
            (counters.tcp_blocked, counters.decisions_timed_out, counters.decisions_panicked),
            (1, 1, 0)
        );
        // Every connection and UDP session asked once: TCP 1 blocked + 2 peer + 2 echo + 1 slow,
        // UDP 2 whoami + 1 blocked.
        assert_eq!(counters.decisions, 9, "{counters:?}");
        device.wait_idle().await;
    });
}
