//! The strategy dialer and the manager over real links: fallback to cellular while Wi-Fi drops
//! everything, interface loss closing exactly the Wi-Fi connections, and `netswitch dial`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::dial::direct::{DialSettings, DirectOutbound};
use netswitch::network::strategy::NetworkStrategy;
use netswitch::network::{InterfaceSnapshot, NetworkType};
use netswitch::platform::linux::LinuxBinder;
use netswitch::{ConnectionError, ConnectionManager, Inbound, Metadata, RelaySettings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::topology::{Link, Topology, ECHO_PORT, PORT, SERVER_V4};
use super::{interface, role, run_in_namespace, server_command, wait_until_reachable};

const WAIT: Duration = Duration::from_secs(10);
const FALLBACK_DELAY: Duration = Duration::from_millis(300);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn fallback_settings() -> DialSettings {
    let mut settings = DialSettings::default();
    settings.network_strategy = NetworkStrategy::Fallback;
    settings.network_type = vec![NetworkType::Wifi];
    settings.fallback_network_type = vec![NetworkType::Cellular];
    settings.fallback_delay = FALLBACK_DELAY;
    settings
}

/// Reads the `peer=<ip>` line the server sends first.
async fn read_peer(stream: &mut BufReader<TcpStream>) -> IpAddr {
    let mut line = String::new();
    timeout(WAIT, stream.read_line(&mut line)).await.unwrap().unwrap();
    line.trim()
        .strip_prefix("peer=")
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"))
}

#[test]
fn fallback_goes_cellular_while_wifi_drops_everything() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("strategy::fallback_goes_cellular_while_wifi_drops_everything");
    }
    let topology = Topology::up(server_command()).unwrap();
    let server = SocketAddr::new(SERVER_V4.parse().unwrap(), PORT);
    wait_until_reachable(server);
    let wifi = interface(Link::Wifi, NetworkType::Wifi);
    let cell = interface(Link::Cell, NetworkType::Cellular);
    let snapshot = InterfaceSnapshot::new(vec![wifi.clone(), cell], Some(wifi.index)).unwrap();
    runtime().block_on(async {
        let manager = ConnectionManager::new(RelaySettings::default());
        manager.update_interfaces(snapshot);
        let outbound = DirectOutbound::with_settings(fallback_settings())
            .with_networks(manager.networks().clone(), Arc::new(LinuxBinder));
        // Round trip over cellular, for reference.
        let started = Instant::now();
        let probe = cell_probe(server).await;
        let rtt = started.elapsed();
        drop(probe);

        topology.set_blackhole(Link::Wifi, true).unwrap();
        let started = Instant::now();
        let report = timeout(WAIT, outbound.dial_with_report(&Metadata::new(server.into()))).await.unwrap().unwrap();
        let took = started.elapsed();
        assert_eq!(report.stream.egress.interface.as_deref(), Some("cell0"));
        assert!(report.was_fallback);
        let mut stream = BufReader::new(report.stream.stream);
        assert_eq!(read_peer(&mut stream).await, Link::Cell.client_v4().parse::<IpAddr>().unwrap());
        println!(
            "fallback under Wi-Fi packet drop: connected over cell0 in {took:?} (fallback delay {FALLBACK_DELAY:?} + cellular connect {rtt:?})"
        );
        assert!(took >= FALLBACK_DELAY, "the fallback started before the fallback delay ({took:?})");
        assert!(took < Duration::from_secs(3), "the fallback waited for the Wi-Fi connect timeout ({took:?})");
    });
}

/// A plain connection bound to cell0 (to measure the cellular connect time).
async fn cell_probe(server: SocketAddr) -> BufReader<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind_device(Some(b"cell0")).unwrap();
    BufReader::new(timeout(WAIT, socket.connect(server)).await.unwrap().unwrap())
}

#[test]
fn wifi_loss_closes_wifi_connections_and_keeps_cellular() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("strategy::wifi_loss_closes_wifi_connections_and_keeps_cellular");
    }
    let topology = Topology::up(server_command()).unwrap();
    let server = SocketAddr::new(SERVER_V4.parse().unwrap(), ECHO_PORT);
    wait_until_reachable(SocketAddr::new(SERVER_V4.parse().unwrap(), PORT));
    let wifi = interface(Link::Wifi, NetworkType::Wifi);
    let cell = interface(Link::Cell, NetworkType::Cellular);
    runtime().block_on(async {
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        manager.update_interfaces(
            InterfaceSnapshot::new(vec![wifi.clone(), cell.clone()], Some(wifi.index)).unwrap(),
        );
        let mut hybrid = DialSettings::default();
        hybrid.network_strategy = NetworkStrategy::Hybrid;
        let outbound = Arc::new(
            DirectOutbound::with_settings(hybrid)
                .with_networks(manager.networks().clone(), Arc::new(LinuxBinder)),
        );
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        let open = |kind: Option<NetworkType>| {
            let (manager, outbound, closed_tx, front) =
                (manager.clone(), outbound.clone(), closed_tx.clone(), &front);
            async move {
                let client = TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
                let (accepted, _) = front.accept().await.unwrap();
                let mut metadata = Metadata::new(server.into());
                metadata.options.network_type = kind.map(|k| vec![k]);
                let id = manager.new_connection(Inbound::plain(accepted), metadata, outbound, move |c| {
                    let _ = closed_tx.send(c);
                });
                let mut client = BufReader::new(client);
                let peer = read_peer(&mut client).await;
                (client, id, peer)
            }
        };
        let (mut over_wifi, wifi_id, wifi_peer) = open(Some(NetworkType::Wifi)).await;
        let (mut over_cell, cell_id, cell_peer) = open(Some(NetworkType::Cellular)).await;
        assert_eq!(wifi_peer, Link::Wifi.client_v4().parse::<IpAddr>().unwrap());
        assert_eq!(cell_peer, Link::Cell.client_v4().parse::<IpAddr>().unwrap());

        // Wi-Fi goes down; the host reports the new snapshot (cellular only, now the default).
        topology.set_link(Link::Wifi, false).unwrap();
        let started = Instant::now();
        manager.update_interfaces(InterfaceSnapshot::new(vec![cell.clone()], Some(cell.index)).unwrap());
        let closed = timeout(WAIT, closed_rx.recv()).await.unwrap().unwrap();
        println!("Wi-Fi loss: its connection closed {:?} after update_interfaces", started.elapsed());
        assert_eq!(closed.id, wifi_id);
        assert!(matches!(closed.error, Some(ConnectionError::Closed)), "{:?}", closed.error);
        let mut buf = [0u8; 1];
        assert!(matches!(timeout(WAIT, over_wifi.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));

        // Cellular keeps flowing.
        over_cell.write_all(b"still here").await.unwrap();
        let mut echo = [0u8; 10];
        timeout(WAIT, over_cell.read_exact(&mut echo)).await.unwrap().unwrap();
        assert_eq!(&echo, b"still here");
        assert!(manager.get(cell_id).is_some());

        // The next dial goes over cellular.
        let (_next, _, next_peer) = open(None).await;
        assert_eq!(next_peer, Link::Cell.client_v4().parse::<IpAddr>().unwrap());
    });
}

#[test]
fn cli_dial_shows_the_fallback() {
    if role().as_deref() != Some("client") {
        return run_in_namespace("strategy::cli_dial_shows_the_fallback");
    }
    let topology = Topology::up(server_command()).unwrap();
    let server = SocketAddr::new(SERVER_V4.parse().unwrap(), PORT);
    wait_until_reachable(server);
    topology.set_blackhole(Link::Wifi, true).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_netswitch"))
        .args(["dial", &server.to_string(), "--network-strategy", "fallback", "--network-type", "wifi"])
        .args(["--fallback-network-type", "cellular", "--fallback-delay", "300ms"])
        .args(["--interface-type", "wifi0=wifi", "--interface-type", "cell0=cellular"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "netswitch dial failed");
    assert!(stdout.contains("wifi0") && stdout.contains("cell0"), "interfaces listed");
    assert!(stdout.contains("won: cell0 (cellular)"), "cellular won");
    assert!(stdout.contains("(fallback network)"));
    assert!(
        stdout.contains("attempt via wifi0: no answer yet, cancelled"),
        "the silent Wi-Fi attempt is shown"
    );
}
