//! Binders and socket options over real loopback sockets, the way the dialer uses them:
//! socket2 socket -> options -> `bind_socket` -> tokio `TcpSocket` -> connect.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use netswitch::network::{NetworkInterface, NetworkType};
use netswitch::platform::{
    bind_socket, BindError, Binding, KeepaliveOptions, SimulatedBinder, SocketBinder, TcpSocketOptions,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

fn tcp_socket_for(destination: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::for_address(destination), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

async fn connect(socket: Socket, destination: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    tokio::time::timeout(WAIT, socket.connect(destination)).await.expect("connect hung")
}

/// Connects through `binder` to a fresh loopback listener and returns the peer address the
/// server saw, plus the binding outcome.
async fn peer_seen_by_server(
    binder: &dyn SocketBinder,
    interface: &NetworkInterface,
    is_default: bool,
    listen: &str,
) -> (IpAddr, Binding) {
    let listener = TcpListener::bind(listen).await.unwrap();
    let destination = listener.local_addr().unwrap();
    let socket = tcp_socket_for(destination);
    let binding = bind_socket(binder, &socket, interface, destination, is_default).unwrap();
    let client = connect(socket, destination).await.unwrap();
    let (_server_side, peer) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    (peer.ip(), binding)
}

fn sim(name: &str, index: u32, kind: NetworkType, v4: &str) -> NetworkInterface {
    NetworkInterface::new(name, index, kind).with_address(v4.parse().unwrap(), 8)
}

#[tokio::test]
async fn simulated_networks_arrive_from_their_own_address() {
    let binder = SimulatedBinder::new();
    let wifi = sim("sim-wifi", 1, NetworkType::Wifi, "127.0.0.2");
    let cell = sim("sim-cell", 2, NetworkType::Cellular, "127.0.0.3");

    let (from_wifi, binding) = peer_seen_by_server(&binder, &wifi, false, "127.0.0.1:0").await;
    assert_eq!((from_wifi, binding), ("127.0.0.2".parse().unwrap(), Binding::Bound));
    let (from_cell, _) = peer_seen_by_server(&binder, &cell, false, "127.0.0.1:0").await;
    assert_eq!(from_cell, "127.0.0.3".parse::<IpAddr>().unwrap());
    // The default interface is "protected", which for simulated networks still means leaving
    // from its address (as the system route would on a device).
    let (from_default, binding) = peer_seen_by_server(&binder, &cell, true, "127.0.0.1:0").await;
    assert_eq!((from_default, binding), ("127.0.0.3".parse().unwrap(), Binding::Protected));
}

#[tokio::test]
async fn simulated_bind_reserves_no_port_so_many_connections_share_a_source() {
    // 300 connections from one simulated address to one listener: each gets its own port at
    // connect time (IP_BIND_ADDRESS_NO_PORT), none fails with EADDRINUSE.
    let binder = SimulatedBinder::new();
    let wifi = sim("sim-wifi", 1, NetworkType::Wifi, "127.0.0.2");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let destination = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let mut kept = Vec::new();
        for _ in 0..300 {
            kept.push(listener.accept().await.unwrap());
        }
        kept
    });
    let mut clients = Vec::new();
    for _ in 0..300 {
        let socket = tcp_socket_for(destination);
        bind_socket(&binder, &socket, &wifi, destination, false).unwrap();
        assert_eq!(socket.local_addr().unwrap().as_socket().unwrap().port(), 0);
        clients.push(connect(socket, destination).await.unwrap());
    }
    let accepted = tokio::time::timeout(WAIT, accept).await.unwrap().unwrap();
    assert!(accepted.iter().all(|(_, peer)| peer.ip() == "127.0.0.2".parse::<IpAddr>().unwrap()));
    let mut ports: Vec<u16> = clients.iter().map(|c| c.local_addr().unwrap().port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 300);
}

#[tokio::test]
async fn simulated_ipv6_uses_the_v6_address() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let binder = SimulatedBinder::new();
    let wifi = sim("sim-wifi", 1, NetworkType::Wifi, "127.0.0.2").with_address("::1".parse().unwrap(), 128);
    let (from, binding) = peer_seen_by_server(&binder, &wifi, false, "[::1]:0").await;
    assert_eq!((from, binding), ("::1".parse().unwrap(), Binding::Bound));
}

#[cfg(target_os = "linux")]
mod linux {
    use netswitch::platform::linux::LinuxBinder;

    use super::*;

    fn lo() -> NetworkInterface {
        let index = nix::net::if_::if_nametoindex("lo").expect("no lo interface");
        NetworkInterface::new("lo", index, NetworkType::Other)
    }

    async fn bound_connect(destination_host: &str) {
        let listener = TcpListener::bind(format!("{destination_host}:0")).await.unwrap();
        let destination = listener.local_addr().unwrap();
        let socket = tcp_socket_for(destination);
        LinuxBinder.bind_to_interface(&socket, &lo(), destination).unwrap();
        let bound = if destination.is_ipv4() { socket.device_index_v4() } else { socket.device_index_v6() };
        assert_eq!(bound.unwrap(), NonZeroU32::new(lo().index), "socket reads back bound to lo");
        let mut client = connect(socket, destination).await.unwrap();
        let (mut server, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(WAIT, server.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn binds_to_lo_by_index_and_connects() {
        bound_connect("127.0.0.1").await;
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            bound_connect("[::1]").await;
        }
    }

    #[tokio::test]
    async fn nonexistent_index_fails_naming_the_interface() {
        // An index no interface has: the highest existing one plus a margin.
        let highest = nix::net::if_::if_nameindex().unwrap().iter().map(|i| i.index()).max().unwrap_or(1);
        let ghost = NetworkInterface::new("ghost0", highest + 1000, NetworkType::Cellular);
        let destination: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let socket = tcp_socket_for(destination);
        let err = LinuxBinder.bind_to_interface(&socket, &ghost, destination).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("ghost0 (index {})", highest + 1000)), "{text}");
        assert!(matches!(err, BindError::NoSuchInterface { found: None, .. }), "{text}");
        assert_eq!(socket.device_index_v4().unwrap(), None, "a failed bind leaves nothing half-done");
        assert!(!LinuxBinder::binds_by_name(), "ENODEV must not switch to SO_BINDTODEVICE");
    }

    #[tokio::test]
    async fn stale_index_for_a_known_name_fails() {
        // The snapshot says "lo" has an index it does not have: binding must not go to whatever
        // interface has that index now.
        let real = lo().index;
        let stale = NetworkInterface::new("lo", real + 1000, NetworkType::Other);
        let destination: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let socket = tcp_socket_for(destination);
        let err = LinuxBinder.bind_to_interface(&socket, &stale, destination).unwrap_err();
        assert!(matches!(err, BindError::NoSuchInterface { found: Some(i), .. } if i == real), "{err}");
        assert_eq!(socket.device_index_v4().unwrap(), None);
    }

    #[tokio::test]
    async fn loopback_destinations_are_never_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let destination = listener.local_addr().unwrap();
        let socket = tcp_socket_for(destination);
        // Even an interface that does not exist is not touched for a loopback destination.
        let ghost = NetworkInterface::new("ghost0", 999_999, NetworkType::Cellular);
        assert_eq!(bind_socket(&LinuxBinder, &socket, &ghost, destination, false).unwrap(), Binding::Skipped);
        assert_eq!(socket.device_index_v4().unwrap(), None);
        connect(socket, destination).await.unwrap();
    }

    #[tokio::test]
    async fn default_interface_is_protected_not_bound() {
        let destination: SocketAddr = "192.0.2.1:443".parse().unwrap(); // never connected
        let socket = tcp_socket_for(destination);
        assert_eq!(bind_socket(&LinuxBinder, &socket, &lo(), destination, true).unwrap(), Binding::Protected);
        assert_eq!(socket.device_index_v4().unwrap(), None);
        assert_eq!(bind_socket(&LinuxBinder, &socket, &lo(), destination, false).unwrap(), Binding::Bound);
        assert_eq!(socket.device_index_v4().unwrap(), NonZeroU32::new(lo().index));
    }

    #[test]
    fn socket_options_read_back() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        TcpSocketOptions::default().apply(&socket).unwrap();
        assert!(socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(300));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(75));
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_secs(60)));

        let mut keepalive = KeepaliveOptions::default();
        keepalive.idle = Duration::from_secs(30);
        keepalive.interval = Duration::from_secs(7);
        let mut custom = TcpSocketOptions::default();
        custom.nodelay = false;
        custom.keepalive = Some(keepalive);
        custom.user_timeout = Some(Duration::from_millis(12_500));
        let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).unwrap();
        custom.apply(&socket).unwrap();
        assert!(!socket.tcp_nodelay().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_millis(12_500)));

        let mut off = TcpSocketOptions::default();
        off.keepalive = None;
        off.user_timeout = None;
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_keepalive(true).unwrap();
        off.apply(&socket).unwrap();
        assert!(!socket.keepalive().unwrap());
        assert_eq!(socket.tcp_user_timeout().unwrap(), None);
    }

    #[test]
    fn socket_option_errors_name_the_option() {
        // A UDP socket refuses TCP_NODELAY.
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        let err = TcpSocketOptions::default().apply(&socket).unwrap_err();
        assert!(err.to_string().starts_with("set TCP_NODELAY on TCP socket"), "{err}");
    }
}
