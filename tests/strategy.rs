//! The network-strategy dialer inside the manager, over simulated networks on loopback: each
//! simulated interface is a loopback source address (wifi0 = 127.0.0.2, cell0 = 127.0.0.3,
//! eth0 = 127.0.0.4), so the server sees which network a connection used.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use netswitch::dial::direct::DialSettings;
use netswitch::network::strategy::NetworkStrategy;
use netswitch::network::{InterfaceSnapshot, NetworkInterface, NetworkType};
use netswitch::platform::SimulatedBinder;
use netswitch::{ConnectionError, DialError, DirectOutbound, Metadata, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WIFI: u32 = 2;
const CELL: u32 = 3;
const ETH: u32 = 4;

fn interface(name: &str, index: u32, kind: NetworkType) -> NetworkInterface {
    NetworkInterface::new(name, index, kind).with_address(IpAddr::from([127, 0, 0, index as u8]), 8)
}

fn wifi() -> NetworkInterface {
    interface("wifi0", WIFI, NetworkType::Wifi)
}
fn cell() -> NetworkInterface {
    interface("cell0", CELL, NetworkType::Cellular)
}
fn eth() -> NetworkInterface {
    interface("eth0", ETH, NetworkType::Ethernet)
}

fn hybrid() -> DialSettings {
    let mut settings = DialSettings::default();
    settings.network_strategy = NetworkStrategy::Hybrid;
    settings
}

fn snapshot(interfaces: Vec<NetworkInterface>, default: Option<u32>) -> InterfaceSnapshot {
    InterfaceSnapshot::new(interfaces, default).unwrap()
}

struct World {
    h: Harness,
    binder: Arc<SimulatedBinder>,
    outbound: Arc<DirectOutbound>,
    server: TcpListener,
}

impl World {
    async fn new(settings: DialSettings) -> World {
        let h = Harness::new(RelaySettings::default()).await;
        let binder = Arc::new(SimulatedBinder::new());
        let outbound = Arc::new(
            DirectOutbound::with_settings(settings)
                .with_networks(h.manager.networks().clone(), binder.clone()),
        );
        h.manager.update_interfaces(snapshot(vec![wifi(), cell()], Some(WIFI)));
        World { h, binder, outbound, server: TcpListener::bind("127.0.0.1:0").await.unwrap() }
    }

    fn server_addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap()
    }

    /// Opens a relayed connection and returns (client, server end, source IP the server saw, id).
    async fn open(&self, metadata: Metadata) -> (TcpStream, TcpStream, IpAddr, u64) {
        let (client, id) = self.h.connect_via(metadata, self.outbound.clone()).await;
        let (server_end, peer) = timeout(WAIT, self.server.accept()).await.unwrap().unwrap();
        (client, server_end, peer.ip(), id)
    }

    fn metadata(&self) -> Metadata {
        Metadata::new(self.server_addr().into())
    }
}

async fn wait_relaying(world: &World, id: u64) -> netswitch::ConnectionInfo {
    timeout(WAIT, async {
        loop {
            if let Some(info) = world.h.manager.get(id) {
                if info.state == netswitch::tracker::ConnectionState::Relaying {
                    return info;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap()
}

async fn echo_once(client: &mut TcpStream, server_end: &mut TcpStream) {
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(WAIT, server_end.read_exact(&mut buf)).await.unwrap().unwrap();
    server_end.write_all(b"pong").await.unwrap();
    timeout(WAIT, client.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_strategy_uses_default_interface_and_tracker_shows_it() {
    let world = World::new(DialSettings::default()).await;
    let (_client, _s, source, id) = world.open(world.metadata()).await;
    assert_eq!(source, IpAddr::from([127, 0, 0, 2]), "left through wifi0");
    let info = wait_relaying(&world, id).await;
    assert_eq!(info.egress.interface.as_deref(), Some("wifi0"));
    assert_eq!(info.egress.network_type, Some(NetworkType::Wifi));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_connection_override_wins_for_ip_destinations() {
    let world = World::new(DialSettings::default()).await;
    let mut metadata = world.metadata();
    metadata.options.network_type = Some(vec![NetworkType::Cellular]);
    let (_client, _s, source, id) = world.open(metadata).await;
    assert_eq!(source, IpAddr::from([127, 0, 0, 3]), "the per-connection network_type chose cell0");
    assert_eq!(wait_relaying(&world, id).await.egress.network_type, Some(NetworkType::Cellular));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_goes_over_cellular_at_once_when_wifi_fails() {
    let mut settings = DialSettings::default();
    settings.network_strategy = NetworkStrategy::Fallback;
    settings.network_type = vec![NetworkType::Wifi];
    settings.fallback_network_type = vec![NetworkType::Cellular];
    settings.fallback_delay = Duration::from_secs(5);
    let world = World::new(settings).await;
    world.binder.set_failing(WIFI, true);
    let started = Instant::now();
    let (_client, _s, source, id) = world.open(world.metadata()).await;
    assert_eq!(source, IpAddr::from([127, 0, 0, 3]));
    assert!(started.elapsed() < Duration::from_secs(5), "fallback did not wait for the 5 s delay");
    assert_eq!(wait_relaying(&world, id).await.egress.interface.as_deref(), Some("cell0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bind_fails_the_attempt_naming_the_interface() {
    let world = World::new(DialSettings::default()).await;
    world.binder.set_failing(WIFI, true);
    let mut h = world.h;
    let (_client, _) =
        h.connect_via(Metadata::new(world.server.local_addr().unwrap().into()), world.outbound.clone()).await;
    let closed = h.next_closed().await;
    let message = closed.error.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(closed.error, Some(ConnectionError::Dial(DialError::Connect { .. }))), "{message}");
    assert!(message.contains("wifi0"), "error names the interface: {message}");
    assert!(
        timeout(Duration::from_millis(100), world.server.accept()).await.is_err(),
        "no unbound socket reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_loss_closes_exactly_its_connections() {
    let world = World::new(hybrid()).await;
    world.h.manager.update_interfaces(snapshot(vec![wifi(), cell(), eth()], Some(WIFI)));
    let mut on_wifi = world.metadata();
    on_wifi.options.network_type = Some(vec![NetworkType::Wifi]);
    let mut on_cell = world.metadata();
    on_cell.options.network_type = Some(vec![NetworkType::Cellular]);
    let (mut wc, mut ws, _, wid) = world.open(on_wifi).await;
    let (mut cc, mut cs, _, cid) = world.open(on_cell.clone()).await;
    wait_relaying(&world, wid).await;
    wait_relaying(&world, cid).await;
    let mut h = world.h;
    // Cellular disappears.
    let started = Instant::now();
    let change = h.manager.update_interfaces(snapshot(vec![wifi(), eth()], Some(WIFI)));
    assert_eq!(change.removed.len(), 1);
    let closed = h.next_closed().await;
    let latency = started.elapsed();
    assert_eq!(closed.id, cid);
    assert!(matches!(closed.error, Some(ConnectionError::Closed)));
    println!("close latency after interface loss: {latency:?}");
    h.assert_no_more_closed().await;
    let mut buf = [0u8; 1];
    assert!(matches!(timeout(WAIT, cc.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
    assert!(matches!(timeout(WAIT, cs.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
    echo_once(&mut wc, &mut ws).await;
    assert_eq!(h.manager.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_change_closes_connections_on_the_old_default() {
    let world = World::new(DialSettings::default()).await;
    let (mut c1, mut s1, source, id) = world.open(world.metadata()).await;
    assert_eq!(source, IpAddr::from([127, 0, 0, 2]));
    wait_relaying(&world, id).await;
    let identical = world.h.manager.update_interfaces(snapshot(vec![wifi(), cell()], Some(WIFI)));
    assert!(identical.identical, "an identical snapshot is a no-op");
    echo_once(&mut c1, &mut s1).await;
    // The default moves to cellular: the Wi-Fi connection goes, the next dial uses cellular.
    world.h.manager.update_interfaces(snapshot(vec![wifi(), cell()], Some(CELL)));
    let (_c2, _s2, source, _) = world.open(world.metadata()).await;
    assert_eq!(source, IpAddr::from([127, 0, 0, 3]));
    let mut h = world.h;
    let closed = h.next_closed().await;
    assert_eq!(closed.id, id);
    assert!(matches!(closed.error, Some(ConnectionError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_pauses_dialing_and_closes_nothing() {
    let world = World::new(DialSettings::default()).await;
    let (mut c1, mut s1, _, id) = world.open(world.metadata()).await;
    wait_relaying(&world, id).await;
    let change = world.h.manager.update_interfaces(InterfaceSnapshot::empty());
    assert!(change.no_network);
    echo_once(&mut c1, &mut s1).await;
    assert_eq!(world.h.manager.len(), 1, "a pause closes nothing");
    let mut h = world.h;
    let started = Instant::now();
    let (_client, _) =
        h.connect_via(Metadata::new(world.server.local_addr().unwrap().into()), world.outbound.clone()).await;
    let closed = h.next_closed().await;
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    let message = closed.error.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(closed.error, Some(ConnectionError::Dial(DialError::Network { .. }))), "{message}");
    assert!(message.contains("no network"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_latency_after_interface_loss_median_of_20() {
    let world = World::new(hybrid()).await;
    let mut on_cell = world.metadata();
    on_cell.options.network_type = Some(vec![NetworkType::Cellular]);
    let mut latencies = Vec::new();
    let mut h_opt = Some(world);
    for _ in 0..20 {
        let world = h_opt.take().unwrap();
        world.h.manager.update_interfaces(snapshot(vec![wifi(), cell()], Some(WIFI)));
        let (_c, _s, _, id) = world.open(on_cell.clone()).await;
        wait_relaying(&world, id).await;
        let mut world = world;
        let started = Instant::now();
        world.h.manager.update_interfaces(snapshot(vec![wifi()], Some(WIFI)));
        let closed = world.h.next_closed().await;
        latencies.push(started.elapsed());
        assert_eq!(closed.id, id);
        h_opt = Some(world);
    }
    latencies.sort();
    println!(
        "close latency after interface loss over 20 runs: median {:?}, max {:?}",
        latencies[10], latencies[19]
    );
}

/// Replies of a UDP session are ignored; the test watches the server side instead.
struct NoSink;

impl netswitch::client::PacketSink for NoSink {
    fn send_to_client<'a>(
        &'a self,
        _payload: &'a [u8],
        _source: &'a netswitch::Destination,
    ) -> netswitch::dial::BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_use_the_strategy_and_close_on_interface_loss() {
    use netswitch::client::udp_timeout::UdpTimeouts;
    use netswitch::client::{Datagram, PacketInbound};

    let world = World::new(hybrid()).await;
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut metadata = Metadata::new(server.local_addr().unwrap().into());
    metadata.options.network_type = Some(vec![NetworkType::Cellular]);
    let (uplink, inbound) = PacketInbound::channel(Arc::new(NoSink), UdpTimeouts::default(), 8);
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let id =
        world.h.manager.new_packet_connection(inbound, metadata.clone(), world.outbound.clone(), move |c| {
            let _ = closed_tx.send(c);
        });
    uplink
        .send(Datagram { destination: metadata.destination.clone(), payload: b"hello".to_vec() })
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = timeout(WAIT, server.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 3]), "the UDP socket was bound to cell0");
    assert_eq!(wait_relaying(&world, id).await.egress.interface.as_deref(), Some("cell0"));
    world.h.manager.update_interfaces(snapshot(vec![wifi()], Some(WIFI)));
    let closed = timeout(WAIT, closed_rx.recv()).await.unwrap().unwrap();
    assert_eq!(closed.id, id);
    assert!(matches!(closed.error, Some(ConnectionError::Closed)), "{:?}", closed.error);
}
