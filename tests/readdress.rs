//! An interface whose address changes under the same name and index (a Wi-Fi that gets a new
//! lease): connections whose socket is bound to the address that went away are closed, those on
//! an address the interface kept survive. Over real sockets on loopback: the simulated wifi0
//! (index 2) holds 127.0.0.2 and/or 127.0.0.3, and the simulated binder binds a socket to the
//! interface's first address, so the server sees which address a connection uses.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use netswitch::client::udp_timeout::UdpTimeouts;
use netswitch::client::{Datagram, PacketInbound, PacketSink};
use netswitch::dial::BoxFuture;
use netswitch::{
    CloseReason, Config, ConnectionError, ConnectionInfo, ConnectionManager, ConnectionState, Destination,
    InterfaceSnapshot, Metadata, Netswitch, NetworkInterface, NetworkType, NetworkUpdate, RelaySettings,
    SimulatedBinder,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WIFI: u32 = 2;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// wifi0, the default interface, with these addresses in this order (the first one is bound).
fn wifi_at(addresses: &[u8]) -> InterfaceSnapshot {
    let mut wifi = NetworkInterface::new("wifi0", WIFI, NetworkType::Wifi);
    for &last in addresses {
        wifi = wifi.with_address(ip(last), 8);
    }
    InterfaceSnapshot::new(vec![wifi], Some(WIFI)).unwrap()
}

/// A harness whose manager and outbound come from the composition root with the simulated
/// binder, and the network updates its observer saw.
async fn world() -> (Harness, Netswitch, mpsc::UnboundedReceiver<NetworkUpdate>) {
    let (updates_tx, updates) = mpsc::unbounded_channel();
    let netswitch = Netswitch::builder(Config::default())
        .binder(Arc::new(SimulatedBinder::new()))
        .network_observer(Arc::new(move |update: &NetworkUpdate| {
            let _ = updates_tx.send(update.clone());
        }))
        .build()
        .unwrap();
    let mut h = Harness::new(RelaySettings::default()).await;
    h.manager = netswitch.manager().clone();
    (h, netswitch, updates)
}

async fn wait_relaying(manager: &ConnectionManager, id: u64) -> ConnectionInfo {
    timeout(WAIT, async {
        loop {
            match manager.get(id) {
                Some(info) if info.state == ConnectionState::Relaying => return info,
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    })
    .await
    .expect("the connection reached its destination")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_on_a_lost_address_close_and_those_on_a_kept_one_survive() {
    let (mut h, netswitch, mut updates) = world().await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metadata = Metadata::new(server.local_addr().unwrap().into());
    let outbound = netswitch.outbound().clone();

    // wifi0 has 127.0.0.2: the first connection is bound to it.
    h.manager.update_interfaces(wifi_at(&[2]));
    let (mut old_client, old_id) = h.connect_via(metadata.clone(), outbound.clone()).await;
    let (mut old_server, peer) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    assert_eq!(peer.ip(), ip(2));
    let old = wait_relaying(&h.manager, old_id).await;
    assert_eq!(old.egress.local_address, Some(ip(2)), "the tracker records the local address");

    // wifi0 gains 127.0.0.3 and prefers it: nothing is lost, nothing closes.
    let change = h.manager.update_interfaces(wifi_at(&[3, 2]));
    assert!(change.lost_addresses.is_empty() && change.readdressed.is_empty(), "{change:?}");
    let (mut new_client, new_id) = h.connect_via(metadata.clone(), outbound.clone()).await;
    let (mut new_server, peer) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    assert_eq!(peer.ip(), ip(3));
    let new = wait_relaying(&h.manager, new_id).await;
    assert_eq!(new.egress.local_address, Some(ip(3)));

    // wifi0 drops 127.0.0.2: same name, same index, same default.
    let change = h.manager.update_interfaces(wifi_at(&[3]));
    assert!(change.removed.is_empty() && change.default_change.is_none(), "{change:?}");
    assert_eq!(change.lost_addresses, vec![ip(2)]);
    assert_eq!(change.readdressed.len(), 1);
    assert_eq!(change.close_reason(&old.egress), Some(CloseReason::LocalAddressGone));
    assert_eq!(change.close_reason(&new.egress), None);

    let closed = h.next_closed().await;
    assert_eq!(closed.id, old_id);
    assert!(matches!(closed.error, Some(ConnectionError::Closed)), "{:?}", closed.error);
    assert_eq!(closed.egress.local_address, Some(ip(2)));
    h.assert_no_more_closed().await;
    let mut update = updates.try_recv().expect("the observer saw the first snapshot");
    while let Ok(next) = updates.try_recv() {
        update = next;
    }
    assert_eq!(
        (update.closed_local_address_gone, update.closed_interface_gone, update.closed_default_changed),
        (1, 0, 0),
        "the update says why it closed the connection"
    );

    // Both ends of the closed connection see it end; the other one still relays.
    let mut buf = [0u8; 4];
    assert!(matches!(timeout(WAIT, old_client.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
    assert!(matches!(timeout(WAIT, old_server.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
    echo(&mut new_client, &mut new_server).await;
    assert_eq!(h.manager.len(), 1);
}

async fn echo(client: &mut tokio::net::TcpStream, server: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(WAIT, server.read_exact(&mut buf)).await.unwrap().unwrap();
    server.write_all(b"pong").await.unwrap();
    timeout(WAIT, client.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"pong");
}

/// Replies of a UDP session are ignored; the test watches the server side.
struct NoSink;

impl PacketSink for NoSink {
    fn send_to_client<'a>(&'a self, _: &'a [u8], _: &'a Destination) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_on_a_lost_address_close_and_those_on_a_kept_one_survive() {
    let (h, netswitch, _updates) = world().await;
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let destination = Destination::from(server.local_addr().unwrap());
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let open = || {
        let (uplink, inbound) = PacketInbound::channel(Arc::new(NoSink), UdpTimeouts::default(), 8);
        let closed_tx = closed_tx.clone();
        let id = h.manager.new_packet_connection(
            inbound,
            Metadata::new(destination.clone()),
            netswitch.outbound().clone(),
            move |c| {
                let _ = closed_tx.send(c);
            },
        );
        (uplink, id)
    };
    let send =
        |payload: &'static [u8]| Datagram { destination: destination.clone(), payload: payload.to_vec() };
    let received = || async {
        let mut buf = [0u8; 16];
        let (n, from): (usize, SocketAddr) =
            timeout(WAIT, server.recv_from(&mut buf)).await.unwrap().unwrap();
        (buf[..n].to_vec(), from.ip())
    };

    h.manager.update_interfaces(wifi_at(&[2]));
    let (old_uplink, old_id) = open();
    old_uplink.send(send(b"old")).await.unwrap();
    assert_eq!(received().await, (b"old".to_vec(), ip(2)));
    assert_eq!(wait_relaying(&h.manager, old_id).await.egress.local_address, Some(ip(2)));

    h.manager.update_interfaces(wifi_at(&[3, 2]));
    let (new_uplink, new_id) = open();
    new_uplink.send(send(b"new")).await.unwrap();
    assert_eq!(received().await, (b"new".to_vec(), ip(3)));
    assert_eq!(wait_relaying(&h.manager, new_id).await.egress.local_address, Some(ip(3)));

    h.manager.update_interfaces(wifi_at(&[3]));
    let report = timeout(WAIT, closed.recv()).await.unwrap().unwrap();
    assert_eq!(report.id, old_id);
    assert!(matches!(report.error, Some(ConnectionError::Closed)), "{:?}", report.error);
    new_uplink.send(send(b"still")).await.unwrap();
    assert_eq!(received().await, (b"still".to_vec(), ip(3)), "the session on the kept address relays");
    assert!(h.manager.get(new_id).is_some() && h.manager.get(old_id).is_none());
    assert!(closed.try_recv().is_err(), "only the session on the lost address closed");
}
